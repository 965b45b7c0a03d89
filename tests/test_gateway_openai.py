"""The HTTP gateway seen by a client nobody here wrote: OpenAI's own `openai` package, pointed at the
gateway with `base_url`. Audio must be valid in every response_format, whole and streamed, equal to
what the same request gives over gRPC, and streamed bytes must arrive while synthesis still runs.
"""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import openai
import pytest

from barkstream.services.gateway.config import GatewayConfig
from barkstream.v1 import tts_pb2

from .gateway_helpers import GatewayThread
from .service_helpers import MAX_DURATION_S, ONE_SEGMENT, SEED, THREE_SEGMENTS, engine_load, synth_request, synthesize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ALIASES = "alloy=v2/en_speaker_0,echo=v2/en_speaker_1"
EXTRA = {"seed": SEED, "greedy": True, "max_duration": MAX_DURATION_S}


@pytest.fixture(scope="module")
def gateway(embedded_server):
    gw = GatewayThread(embedded_server.target, GatewayConfig(http_host="127.0.0.1", voice_aliases=ALIASES))
    yield gw
    gw.stop()


@pytest.fixture()
def client(gateway, server):
    """OpenAI's client on the gateway; `server` checks the orchestrator is idle before and after."""
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def grpc_pcm(target: str, text: str, voice: str, max_duration_s: float | None = MAX_DURATION_S) -> bytes:
    """The same request over gRPC (the server's default segment schedule, as the gateway's requests have):
    the reference the gateway's audio must equal."""
    request = synth_request(text, voice, encoding=tts_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=24000,
                            max_duration_s=max_duration_s, schedule=tts_pb2.SEGMENT_SCHEDULE_UNSPECIFIED)
    return synthesize(target, request).data


def wav_pcm(data: bytes) -> bytes:
    """PCM of a streamed WAV (RIFF/data sizes 0xFFFFFFFF: 'until the end of the stream')."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    channels, rate, _, _, bits = struct.unpack("<HIIHH", data[22:36])
    assert (channels, rate, bits) == (1, 24000, 16)
    assert data[36:40] == b"data"
    return data[44:]


def test_pcm_and_wav_whole_equal_grpc(client, embedded_server):
    reference = grpc_pcm(embedded_server.target, ONE_SEGMENT, "v2/en_speaker_0")
    assert len(reference) > 24000  # about 1 s of 16-bit audio
    pcm = client.audio.speech.create(model="tts-1", voice="alloy", input=ONE_SEGMENT, response_format="pcm",
                                     extra_body=EXTRA)
    assert pcm.content == reference
    wav = client.audio.speech.create(model="bark", voice="v2/en_speaker_0", input=ONE_SEGMENT,
                                     response_format="wav", extra_body=EXTRA)
    assert wav_pcm(wav.content) == reference
    # Python's own WAV reader opens it too (it reads up to the end of the data).
    with wave.open(io.BytesIO(wav.content)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (1, 24000, 2)
        assert w.readframes(10**9) == reference


# Bytes a stream may hold before any audio: its container header (WAV's RIFF header, Ogg Opus's header
# pages, FLAC's STREAMINFO), sent with the stream's header, before the first segment is made.
CONTAINER_BYTES = {"pcm": 0, "wav": 44, "opus": 4096, "flac": 4096, "mp3": 0, "aac": 0}


@pytest.mark.parametrize("fmt", sorted(CONTAINER_BYTES))
def test_streamed_bytes_arrive_before_synthesis_ends(client, server, fmt):
    """When the first audio bytes reach the caller, the stages are still generating the later segments
    (their engines hold rows): the audio is streamed as it is made, whatever the machine's speed."""
    extra = {**EXTRA, "max_duration": 3.0}
    received, busy_at_first_audio, pieces = 0, None, 0
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="echo", input=THREE_SEGMENTS, response_format=fmt, extra_body=extra) as response:
        assert "content-length" not in response.headers  # chunked: sent as it is produced
        for piece in response.iter_bytes():
            received += len(piece)
            pieces += 1
            if busy_at_first_audio is None and received > CONTAINER_BYTES[fmt]:
                busy_at_first_audio = {k: v for k, v in engine_load(server.app).items() if "." in k and v}
    assert busy_at_first_audio, "the first audio arrived after every stage had finished"
    assert pieces > 10 and received > 10_000


def test_streamed_wav_equals_whole(client):
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=ONE_SEGMENT, response_format="wav", extra_body=EXTRA) as response:
        streamed = b"".join(response.iter_bytes())
    whole = client.audio.speech.create(model="tts-1", voice="alloy", input=ONE_SEGMENT, response_format="wav",
                                       extra_body=EXTRA).content
    assert streamed == whole and len(wav_pcm(streamed)) > 0


def test_sse_events(gateway, server, embedded_server):
    """stream_format=sse: OpenAI's event shapes, base64 audio deltas that add up to the same audio."""
    import base64
    import json
    import urllib.request

    body = {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": ONE_SEGMENT, "response_format": "pcm",
            "stream_format": "sse", **EXTRA}
    req = urllib.request.Request(gateway.url + "/v1/audio/speech", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = [json.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "speech.audio.done" and set(events[-1]["usage"]) == {
        "input_tokens", "output_tokens", "total_tokens"}
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert audio == grpc_pcm(embedded_server.target, ONE_SEGMENT, "v2/en_speaker_0")


def test_models_and_voices(client, gateway):
    import json
    import urllib.request

    assert {m.id for m in client.models.list()} == {"bark", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"}
    assert client.models.retrieve("bark").id == "bark"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("whisper-1")
    voices = json.load(urllib.request.urlopen(gateway.url + "/v1/audio/voices"))
    assert "v2/en_speaker_0" in voices["voices"]
    assert voices["aliases"] == {"alloy": "v2/en_speaker_0", "echo": "v2/en_speaker_1"}
    assert {"name", "language", "description"} <= set(voices["details"][0])


@pytest.mark.parametrize("body, param", [
    ({"voice": "nobody"}, None),  # unknown voice: the orchestrator's INVALID_ARGUMENT
    ({"speed": 1.5}, "speed"),
    ({"instructions": "whisper it"}, "instructions"),
    ({"response_format": "ogg"}, "response_format"),
    ({"model": "whisper-1"}, "model"),
    ({"input": "   "}, "input"),
])
def test_openai_client_gets_400(client, body, param):
    args = {"model": "tts-1", "voice": "alloy", "input": "Hello.", "response_format": "pcm", **body}
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.speech.create(**args)
    assert info.value.status_code == 400
    error = info.value.body
    assert error["message"] and error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param


def test_speed_one_is_accepted(client):
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input=ONE_SEGMENT, response_format="pcm",
                                       speed=1.0, extra_body=EXTRA)
    assert len(audio.content) > 0 and np.frombuffer(audio.content, "<i2").size == len(audio.content) // 2


def ffmpeg_pcm(data: bytes) -> np.ndarray:
    """Decode with FFmpeg's command-line tool (not the encoder the orchestrator used) to 24 kHz mono s16."""
    import subprocess

    proc = subprocess.run(["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "24000",
                           "pipe:1"], input=data, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return np.frombuffer(proc.stdout, "<i2")


# response_format -> what the bytes start with (a container or frame sync).
COMPRESSED = {"mp3": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"), "opus": (b"OggS",),
              "aac": (b"\xff\xf1", b"\xff\xf9"), "flac": (b"fLaC",)}


@pytest.mark.parametrize("fmt", sorted(COMPRESSED))
def test_compressed_formats_whole_and_streamed(client, embedded_server, fmt):
    """Valid audio in every compressed format: an independent decoder reads it, with the duration of the
    PCM the same request gives (within 0.1 s: encoder delay and padding of one or two codec frames)."""
    reference = np.frombuffer(grpc_pcm(embedded_server.target, ONE_SEGMENT, "v2/en_speaker_0"), "<i2")
    whole = client.audio.speech.create(model="tts-1", voice="alloy", input=ONE_SEGMENT, response_format=fmt,
                                       extra_body=EXTRA).content
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=ONE_SEGMENT, response_format=fmt, extra_body=EXTRA) as response:
        streamed = b"".join(response.iter_bytes())
    for data in (whole, streamed):
        assert data.startswith(COMPRESSED[fmt]), data[:8]
        decoded = ffmpeg_pcm(data)
        assert abs(len(decoded) - len(reference)) / 24000 < 0.1, (len(decoded), len(reference))
        assert np.abs(decoded.astype(np.float64)).max() > 0

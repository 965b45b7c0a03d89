"""The SDK and `barkstream say` with the compressed encodings, against the embedded server.

Audio.samples of a compressed stream decodes it (PyAV) and lines up with the PCM of the same
request; Audio.save writes any format by suffix (as received, or transcoded); the CLI writes
.ogg/.mp3/.flac files ffmpeg reads, and streams G.711 on `-o -`.
"""

from __future__ import annotations

import numpy as np
import pytest

import barkstream.client as bc
from barkstream.client.audio import to_pcm16
from barkstream.v1 import tts_pb2

from .codec_helpers import SNR_FLOOR_DB, best_lag, ffmpeg_decode, snr_db
from .service_helpers import ONE_SEGMENT, VOICE
from .test_client_cli import FAST as CLI_FAST
from .test_client_cli import run

pytestmark = pytest.mark.timeout(180)

E = tts_pb2
FAST = {"greedy": True, "max_duration": 0.5, "seed": 1234, "voice": VOICE}


@pytest.fixture()
def client(server):
    with bc.TTSClient(server.target, timeout=120) as c:
        yield c


@pytest.fixture()
def pcm_at(client):
    cache: dict[int, np.ndarray] = {}

    def get(rate: int) -> np.ndarray:
        if rate not in cache:
            cache[rate] = client.synthesize(ONE_SEGMENT, format="f32", sample_rate=rate, **FAST).samples
        return cache[rate]

    return get


@pytest.mark.parametrize("fmt", ["mulaw", "alaw", "ogg", "opus", "mp3", "flac", "aac"])
def test_audio_samples_decode_in_line_with_the_pcm(client, pcm_at, fmt: str):
    audio = client.synthesize(ONE_SEGMENT, format=fmt, **FAST)
    expected = pcm_at(audio.sample_rate)
    assert len(audio) == len(audio.samples) == len(expected)
    if fmt == "flac":
        np.testing.assert_array_equal(audio.pcm16(), to_pcm16(expected))
    elif fmt in ("mulaw", "alaw"):
        assert snr_db(audio.samples, expected) >= SNR_FLOOR_DB[audio.encoding]
    else:  # the codec's delay is dropped: shifting the decoded samples by 50 is found again
        assert best_lag(np.concatenate([np.zeros(50, np.float32), audio.samples]), expected, 200) == 50
    with pytest.raises(ValueError, match="whole stream"):
        bc.audio.decode(audio.data, audio.encoding)


def test_save_writes_the_received_stream_or_transcodes_by_suffix(client, tmp_path):
    mp3 = client.synthesize(ONE_SEGMENT, format="mp3", **FAST)
    assert mp3.save(tmp_path / "a.mp3").read_bytes() == mp3.data  # as received: no container header
    ogg = client.synthesize(ONE_SEGMENT, format="ogg", **FAST)
    assert ogg.save(tmp_path / "a.opus").read_bytes() == ogg.header.container_header + ogg.data

    pcm = client.synthesize(ONE_SEGMENT, format="pcm16", **FAST)
    for suffix, encoding, slack in ((".ogg", E.AUDIO_ENCODING_OGG_OPUS, 960), (".flac", E.AUDIO_ENCODING_FLAC, 0),
                                    (".mp3", E.AUDIO_ENCODING_MP3, 1152), (".aac", E.AUDIO_ENCODING_AAC, 2048),
                                    (".ulaw", E.AUDIO_ENCODING_MULAW, 0)):
        data = pcm.save(tmp_path / f"b{suffix}").read_bytes()
        decoded = ffmpeg_decode(data, encoding, 24_000, "s16le")
        assert len(pcm) <= len(decoded) <= len(pcm) + slack, (suffix, len(decoded), len(pcm))
        if encoding == E.AUDIO_ENCODING_FLAC:
            np.testing.assert_array_equal(decoded, pcm.pcm16())
    mp3.save(tmp_path / "c.wav")  # a compressed stream to WAV: decoded
    assert (tmp_path / "c.wav").stat().st_size == 44 + 2 * len(mp3)


def test_say_writes_compressed_files_ffmpeg_reads(server, tmp_path):
    for name, encoding, rate in (("x.ogg", E.AUDIO_ENCODING_OGG_OPUS, 48_000), ("x.mp3", E.AUDIO_ENCODING_MP3, 24_000),
                                 ("x.flac", E.AUDIO_ENCODING_FLAC, 24_000)):
        out = tmp_path / name
        done = run("say", ONE_SEGMENT, "--voice", VOICE, *CLI_FAST, "-o", str(out), target=server.target)
        assert done.returncode == 0, done.stderr
        assert len(ffmpeg_decode(out.read_bytes(), encoding, rate)) > rate // 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.flac", "x.mp3", "x.ogg"]  # no .part left


def test_say_streams_mulaw_on_stdout(server):
    done = run("say", ONE_SEGMENT, "--voice", VOICE, *CLI_FAST, "--format", "mulaw", "--sample-rate", "8000",
               "-o", "-", target=server.target)
    assert done.returncode == 0, done.stderr
    decoded = ffmpeg_decode(done.stdout, E.AUDIO_ENCODING_MULAW, 8_000)
    assert len(decoded) == len(done.stdout) > 800  # one byte per sample at 8 kHz


def test_codec_limits_reach_the_sdk_as_invalid_request(client):
    with pytest.raises(bc.InvalidRequest, match="bit_rate_bps=1000"):
        client.synthesize(ONE_SEGMENT, format="mp3", bit_rate=1000, **FAST)
    with pytest.raises(bc.InvalidRequest, match="sample_rate_hz=44100"):
        client.synthesize(ONE_SEGMENT, format="ogg", sample_rate=44_100, **FAST)

"""The embedded server (all five services, one process, one port) over real gRPC on loopback.

Greedy + seed makes the stream deterministic, so it must equal the offline Synthesizer's
audio for the same text, voice and checkpoint. The same server is used to check the stream's
shape (sequence numbers, start samples, segment order, encodings), streaming itself, errors,
cancellation and deadlines. Tiny random checkpoint, 1 s per segment.
"""

from __future__ import annotations

import contextlib
import math
import struct
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import soxr
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from barkstream.services.bark.voices import VoiceLibrary
from barkstream.services.checkpoint.random_writer import VOICES
from barkstream.v1 import stages_pb2, tts_pb2, tts_pb2_grpc

from .service_helpers import (
    MAX_DURATION_S,
    ONE_SEGMENT,
    THREE_SEGMENTS,
    VOICE,
    Received,
    engine_load,
    idle,
    offline_synthesis,
    poll,
    rpc_error,
    synth_request,
    synthesize,
)

pytestmark = pytest.mark.timeout(300)

FLOAT32 = tts_pb2.AUDIO_ENCODING_FLOAT32_LE
PCM16 = tts_pb2.AUDIO_ENCODING_PCM_S16LE
WAV = tts_pb2.AUDIO_ENCODING_WAV


@pytest.fixture(scope="module")
def voices(tiny_checkpoint) -> VoiceLibrary:
    return VoiceLibrary([tiny_checkpoint.voices_dir])


@pytest.fixture(scope="module")
def reference(synthesizer_module, voices):
    """The offline Synthesis (audio, per-segment codes) per (text, voice name), computed once per module."""
    cache: dict[tuple[str, str], object] = {}

    def get(text: str, voice: str):
        if (text, voice) not in cache:
            cache[text, voice] = offline_synthesis(synthesizer_module, text, voices.load(voice) if voice else None)
        return cache[text, voice]

    return get


@pytest.fixture(scope="module")
def synthesizer_module(tiny_models, tokenizer):
    from barkstream.services.stages.pipeline import Synthesizer

    return Synthesizer(tiny_models, tokenizer)


def check_stream_shape(r: Received, segments: int | None = None) -> None:
    """Header/chunk/summary invariants every stream must satisfy."""
    assert r.header is not None and r.summary is not None
    assert r.chunks, "no audio"
    assert [c.sequence_number for c in r.chunks] == list(range(len(r.chunks)))
    starts = np.cumsum([0] + [c.num_samples for c in r.chunks])
    assert [c.start_sample for c in r.chunks] == starts[:-1].tolist()
    bps = 4 if r.header.encoding == FLOAT32 else 2
    assert all(len(c.data) == c.num_samples * bps for c in r.chunks)
    indexes = [c.segment_index for c in r.chunks]
    assert indexes == sorted(indexes)
    assert sorted(set(indexes)) == list(range(r.header.segment_count))
    if segments is not None:
        assert r.header.segment_count == segments == r.summary.segment_count
    # Every chunk is full except the last of each segment.
    for c, nxt in zip(r.chunks, r.chunks[1:], strict=False):
        if c.segment_index == nxt.segment_index:
            assert c.num_samples == r.header.samples_per_chunk
    assert r.summary.total_samples == starts[-1]
    assert r.summary.chunk_count == len(r.chunks)
    assert r.summary.audio_seconds == pytest.approx(starts[-1] / r.header.sample_rate_hz)


@contextlib.contextmanager
def stalled(app, stages=("semantic", "coarse", "fine", "codec")) -> Iterator[None]:
    """Block the engine threads of `stages` (each runs a call that waits) until the block exits."""
    gate = threading.Event()
    try:
        for stage in stages:
            app.runners[stage].call(gate.wait)
        yield
    finally:
        gate.set()


# ------------------------------------------------------------------------------------ equality


@pytest.mark.parametrize("voice", [VOICE, ""], ids=["voice", "no-voice"])
@pytest.mark.parametrize(("text", "segments"), [(ONE_SEGMENT, 1), (THREE_SEGMENTS, 3)], ids=["1seg", "3seg"])
def test_stream_equals_offline_synthesis(server, reference, text: str, segments: int, voice: str):
    r = synthesize(server.target, synth_request(text, voice))
    check_stream_shape(r, segments)
    assert r.header.encoding == FLOAT32 and r.header.sample_rate_hz == 24000 and r.header.channels == 1
    assert r.header.voice == voice and r.header.container_header == b""
    expected = reference(text, voice).audio
    got = r.float32()
    assert got.shape == expected.shape
    assert float(np.max(np.abs(got - expected))) < 1e-4
    # Each segment speaks at most max_gen_duration_s (+ one token), so the cap reached the stages.
    assert len(got) <= segments * (MAX_DURATION_S + 0.1) * 24000


def test_pcm16_wav_and_resampled_rate(server, reference):
    offline = reference(THREE_SEGMENTS, VOICE)
    expected = offline.audio
    pcm16 = np.rint(np.clip(expected, -1, 1) * 32767)

    r = synthesize(server.target, synth_request(THREE_SEGMENTS, VOICE, encoding=PCM16))
    check_stream_shape(r, 3)
    assert r.header.encoding == PCM16 and r.header.container_header == b""
    assert len(r.data) == 2 * len(expected)
    assert np.max(np.abs(r.int16() - pcm16)) <= 1

    r = synthesize(server.target, synth_request(THREE_SEGMENTS, VOICE, encoding=0))
    assert r.header.encoding == PCM16, "UNSPECIFIED means PCM_S16LE"

    r = synthesize(server.target, synth_request(THREE_SEGMENTS, VOICE, encoding=WAV, chunk_duration_ms=40))
    check_stream_shape(r, 3)
    head = r.header.container_header
    assert r.header.encoding == WAV and len(head) == 44 and r.header.samples_per_chunk == 960
    riff, riff_size, wave, fmt, fmt_size, pcm, channels, rate, byte_rate, align, bits, data, data_size = \
        struct.unpack("<4sI4s4sIHHIIHH4sI", head)
    assert (riff, wave, fmt, data) == (b"RIFF", b"WAVE", b"fmt ", b"data")
    assert (fmt_size, pcm, channels, rate, byte_rate, align, bits) == (16, 1, 1, 24000, 48000, 2, 16)
    assert riff_size == data_size == 0xFFFFFFFF
    assert np.max(np.abs(r.int16() - pcm16)) <= 1

    r = synthesize(server.target, synth_request(THREE_SEGMENTS, VOICE, sample_rate_hz=16000))
    check_stream_shape(r, 3)
    assert r.header.sample_rate_hz == 16000 and r.header.samples_per_chunk == 1600
    # Each segment is resampled on its own: the stream is the segments' one-shot resamplings.
    lengths = [s.fine.shape[1] * 320 for s in offline.segments]
    pieces = np.split(expected, np.cumsum(lengths)[:-1])
    resampled = np.concatenate([soxr.resample(p, 24000, 16000) for p in pieces])
    got = r.float32()
    assert got.shape == resampled.shape
    assert abs(len(got) - len(expected) * 2 / 3) <= 3
    assert float(np.max(np.abs(got - resampled))) < 1e-4


# ------------------------------------------------------------------------------------ streaming


# Semantic decode cost per token that the streaming test simulates: bark-small on a GPU makes
# roughly 100-200 semantic tokens/s. The tiny test model makes them ~100x faster, faster than
# its (real-size) codec decodes, which would hide the pipelining behind the codec's cost.
SEMANTIC_STEP_S = 0.01


@pytest.mark.slow
@pytest.mark.parametrize("voice", [VOICE, ""], ids=["voice", "no-voice"])
def test_first_audio_arrives_before_the_last_segment_is_generated(server, monkeypatch, voice: str):
    """Pipelining: segment 0's audio is on the client while the last segment's semantic still runs.

    The semantic engine records when each of its jobs finishes (a segment's last token) and
    takes SEMANTIC_STEP_S per decode step; client and server share this process's clock.
    """
    engine = server.app.runners["semantic"].engine
    finished: list[float] = []
    add, step = engine.add, engine.step

    def recording_add(job, request):
        finish = job.finish

        def timed_finish(error=None):
            finished.append(time.monotonic())
            finish(error)

        job.finish = timed_finish
        return add(job, request)

    def gpu_paced_step() -> bool:
        worked = step()
        if worked:
            time.sleep(SEMANTIC_STEP_S)  # simulated compute, not a wait
        return worked

    monkeypatch.setattr(engine, "add", recording_add)
    monkeypatch.setattr(engine, "step", gpu_paced_step)
    r = synthesize(server.target, synth_request(THREE_SEGMENTS, voice, max_duration_s=2.0))
    check_stream_shape(r, 3)
    assert len(finished) == 3
    first_audio, last_semantic = r.chunk_times[0] - r.started, max(finished) - r.started
    assert first_audio < last_semantic, (
        f"first audio {first_audio:.3f} s after the request, last semantic token {last_semantic:.3f} s: "
        "segments were not pipelined")
    # Audio kept flowing while later segments were generated, not all at the end.
    segment_starts = [r.chunk_times[[c.segment_index for c in r.chunks].index(k)] - r.started for k in range(3)]
    assert segment_starts[0] < segment_starts[1] < segment_starts[2]
    assert r.summary.time_to_first_audio_ms < r.summary.wall_ms


# ------------------------------------------------------------------------------------ errors


def _bad(**changes) -> tts_pb2.SynthesizeRequest:
    req = synth_request(ONE_SEGMENT, VOICE)
    for key, value in changes.items():
        if key == "temperature":
            req.params.semantic.sampling.temperature = value
        elif key == "top_p":
            req.params.coarse.sampling.top_p = value
        else:
            setattr(req, key, value)
    return req


BAD_REQUESTS = {
    "empty text": (_bad(text=""), "text"),
    "whitespace text": (_bad(text="  \n\t "), "text"),
    "text over the limit": (_bad(text="hello " * 700), "4000"),
    "unknown voice": (_bad(voice="v2/xx_speaker_9"), "v2/xx_speaker_9"),
    "path traversal voice": (_bad(voice="../../etc/passwd"), "voice"),
    "negative temperature": (_bad(temperature=-0.5), "temperature"),
    "nan temperature": (_bad(temperature=math.nan), "temperature"),
    "top_p zero": (_bad(top_p=0.0), "top_p"),
    "top_p above one": (_bad(top_p=1.5), "top_p"),
    "unknown encoding": (_bad(encoding=99), "encoding"),
    "unsupported sample rate": (_bad(sample_rate_hz=12345), "sample_rate_hz"),
    "chunk too short": (_bad(chunk_duration_ms=5), "chunk_duration_ms"),
    "chunk too long": (_bad(chunk_duration_ms=1000), "chunk_duration_ms"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_invalid_argument_before_any_model_work(server, case: str):
    request, needle = BAD_REQUESTS[case]
    steps = {stage: runner.steps for stage, runner in server.app.runners.items()}
    received: list = []
    with grpc.insecure_channel(server.target) as channel:
        call = tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(request, timeout=30)
        err = rpc_error(lambda: received.extend(call))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert needle in err.details(), err.details()
    assert received == [], "the error must come before the header"
    assert {stage: runner.steps for stage, runner in server.app.runners.items()} == steps, "an engine ran"


def test_list_voices_returns_the_checkpoint_voices_with_languages(server):
    with grpc.insecure_channel(server.target) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        voices = stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=10).voices
        german = stub.ListVoices(tts_pb2.ListVoicesRequest(language="de"), timeout=10).voices
    assert sorted(v.name for v in voices) == sorted(VOICES)
    assert {v.name: v.language for v in voices} == {name: name.split("/")[-1][:2] for name in VOICES}
    assert [v.name for v in german] == [n for n in VOICES if "/de_" in n]


def test_reflection_lists_every_service(server):
    with grpc.insecure_channel(server.target) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    stage_services = {s.full_name for s in stages_pb2.DESCRIPTOR.services_by_name.values()}
    assert {"barkstream.v1.TextToSpeech", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} | stage_services <= services


# ------------------------------------------------------------------------------------ cancel, deadline

LONG = {"max_duration_s": 6.0}


def test_cancel_mid_stream_frees_every_slot(server):
    app = server.app
    with grpc.insecure_channel(server.target) as channel:
        call = tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(
            synth_request(THREE_SEGMENTS, VOICE, **LONG), timeout=120)
        it = iter(call)
        assert next(it).HasField("header")
        assert next(it).HasField("chunk")
        load = engine_load(app)
        assert load["admission:orchestrator"] == 1, load
        call.cancel()
        assert rpc_error(lambda: list(it)).code() == grpc.StatusCode.CANCELLED
    assert poll(lambda: idle(app), timeout=10), f"slots or engine rows leaked: {engine_load(app)}"


def test_deadline_mid_stream_is_deadline_exceeded_and_frees_slots(server):
    app = server.app
    got: list[str] = []
    with grpc.insecure_channel(server.target) as channel:
        # Short segments for a quick first chunk (the deadline must not pass before it); no voice,
        # so segments 1 and 2 only start once segment 0 is decoded and cannot be done yet.
        call = tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(
            synth_request(THREE_SEGMENTS, ""), timeout=6.0)
        it = iter(call)
        got.append(next(it).WhichOneof("payload"))
        got.append(next(it).WhichOneof("payload"))
        assert got == ["header", "chunk"]
        # Freeze every engine so the deadline surely passes mid-stream.
        with stalled(app):
            err = rpc_error(lambda: list(it))
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (err.code(), err.details())
            # The server side gave its slots back even though the engines are frozen.
            assert poll(lambda: all(a.active == 0 for a in app.handle.admissions), timeout=5), engine_load(app)
    assert poll(lambda: idle(app), timeout=10), f"slots or engine rows leaked: {engine_load(app)}"

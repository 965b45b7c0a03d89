"""Helpers shared by the service tests: requests, reading a Synthesize stream, offline references."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from barkstream.v1 import tts_pb2, tts_pb2_grpc

# One sentence per segment with the default 48-token budget (29, 25 and 24 tokens with the
# tiny checkpoint's vocabulary): the orchestrator and the offline synthesizer both split it in 3.
THREE_SEGMENTS = (
    "Hello world, my dog likes pizza and music, and the cute cat sighs and laughs at the voice of the text today. "
    "The music is made by Bark, the voice of Suno, and my dog clears the pizza with the cat in the world. "
    "I like the speech of the cute dog, the name of the cat, and the music of the world, hello.")
ONE_SEGMENT = "Hello world, my dog likes pizza and music."
VOICE = "v2/en_speaker_0"
SEED = 1234
MAX_DURATION_S = 1.0


FIXED = tts_pb2.SEGMENT_SCHEDULE_FIXED


def synth_request(text: str, voice: str = "", *, seed: int | None = SEED, greedy: bool = True,
                  max_duration_s: float | None = MAX_DURATION_S, encoding: int = tts_pb2.AUDIO_ENCODING_FLOAT32_LE,
                  schedule: int = FIXED, **fields) -> tts_pb2.SynthesizeRequest:
    """A Synthesize request; greedy sets argmax on all three stages (the deterministic mode).

    schedule: FIXED by default, so THREE_SEGMENTS makes the three segments the tests count on
    (offline_synthesis asks the same); 0 = the server's default (latency-aware).
    """
    req = tts_pb2.SynthesizeRequest(text=text, voice=voice, encoding=encoding, **fields)
    req.segmentation.schedule = schedule
    if seed is not None:
        req.seed = seed
    if greedy:
        req.params.semantic.sampling.greedy = True
        req.params.coarse.sampling.greedy = True
        req.params.fine.greedy = True
    if max_duration_s is not None:
        req.params.semantic.max_gen_duration_s = max_duration_s
    return req


@dataclass
class Received:
    """Everything one Synthesize stream sent, with client-side arrival times (time.monotonic)."""

    header: tts_pb2.StreamHeader | None = None
    chunks: list[tts_pb2.AudioChunk] = field(default_factory=list)
    chunk_times: list[float] = field(default_factory=list)
    summary: tts_pb2.SynthesisSummary | None = None
    started: float = 0.0

    @property
    def data(self) -> bytes:
        return b"".join(c.data for c in self.chunks)

    def float32(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype="<f4")

    def int16(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype="<i2")


def read_stream(call, on_chunk: Callable[[Received], None] | None = None, out: Received | None = None) -> Received:
    """Consume a Synthesize response iterator, checking the header/chunks/summary shape.

    `out`: what was already read from the same stream (e.g. its header), to continue.
    """
    out = Received(started=time.monotonic()) if out is None else out
    for msg in call:
        kind = msg.WhichOneof("payload")
        if kind == "header":
            assert out.header is None and not out.chunks, "header must come first, once"
            out.header = msg.header
        elif kind == "chunk":
            assert out.header is not None and out.summary is None
            out.chunks.append(msg.chunk)
            out.chunk_times.append(time.monotonic())
            if on_chunk is not None:
                on_chunk(out)
        else:
            assert kind == "summary" and out.summary is None
            out.summary = msg.summary
    return out


def synthesize(target: str, request: tts_pb2.SynthesizeRequest, timeout: float = 120.0) -> Received:
    with grpc.insecure_channel(target) as channel:
        return read_stream(tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(request, timeout=timeout))


def rpc_error(fn: Callable[[], object]) -> grpc.RpcError:
    """The RpcError `fn` raises (fails the test if it returns)."""
    try:
        fn()
    except grpc.RpcError as e:
        return e
    raise AssertionError("expected an RpcError")


def offline_synthesis(synthesizer, text: str, voice=None, seed: int | None = SEED,
                      max_duration_s: float = MAX_DURATION_S, schedule: int = FIXED):
    """The offline Synthesizer's result (`.audio`, `.segments`) for what `synth_request(text, ...)` asks."""
    from barkstream.services.bark.params import GenerationParams
    from barkstream.services.bark.schedule import Schedule, SegmentPolicy
    from barkstream.services.stages.pipeline import SynthesisRequest

    params = GenerationParams.build(greedy=True, max_duration_s=max_duration_s)
    policy = SegmentPolicy(Schedule(schedule or Schedule.LATENCY_AWARE))
    return synthesizer.generate(SynthesisRequest(text, voice, params, seed, policy))


def poll(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """True once `predicate()` holds, False if `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def engine_load(app) -> dict[str, int]:
    """Rows/members each engine of an in-process App still holds, and the admission counts."""
    load: dict[str, int] = {f"admission:{a.name}": a.active for a in app.handle.admissions}
    for stage, runner in app.runners.items():
        engine = runner.engine
        for attr in ("rows", "pending", "members"):
            if hasattr(engine, attr):
                load[f"{stage}.{attr}"] = len(getattr(engine, attr))
    return load


def idle(app) -> bool:
    return not any(engine_load(app).values())

"""Hostile input: 1,000+ generated Synthesize requests against a running server (hypothesis).

Every request must end OK or with INVALID_ARGUMENT / RESOURCE_EXHAUSTED: never INTERNAL or
UNKNOWN, never a crash or a hang, and no file outside the voice directories is ever opened.
The requests mix random unicode (control and format characters, NUL, bidi overrides, emoji),
empty, blank and oversized text, NaN / infinite / negative / subnormal / huge parameters,
unknown enum values, out-of-range integers, huge seeds, odd request ids, and voice names that
try to escape (`../../etc/passwd`, absolute paths, a valid preset planted just outside the
voice directory, a symlink inside it that points out).

File access is watched with a Python audit hook (`open` events, every thread of the process,
numpy's loads included), since the server runs in this process.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from barkstream.services.app import ServeConfig
from barkstream.services.bark.voices import VoiceError, VoiceLibrary
from barkstream.v1 import tts_pb2, tts_pb2_grpc

from .conftest import EmbeddedServer
from .service_helpers import engine_load, idle, poll

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
FORBIDDEN_FILES = ("/etc/passwd", "/etc/shadow", "/etc/hosts", str(Path.home() / ".ssh"))
NAN, INF = math.nan, math.inf


@dataclass
class FileWatch:
    """Records opens of files under `forbidden` paths while `active` (an audit hook cannot be removed)."""

    forbidden: tuple[str, ...]
    active: bool = False
    hits: list[str] = field(default_factory=list)

    def __call__(self, event: str, args: tuple) -> None:
        if not self.active or event != "open" or not args:
            return
        path = args[0]
        if isinstance(path, int) or path is None:
            return
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if any(real == f or real.startswith(f.rstrip("/") + "/") for f in self.forbidden):
            self.hits.append(real)


@dataclass(frozen=True)
class FuzzWorld:
    server: EmbeddedServer
    voice_root: Path
    outside: Path  # a directory next to the voice root, holding a valid preset the server must never read
    watch: FileWatch
    voices: tuple[str, ...]
    escapes: tuple[str, ...]  # names that point outside the voice directories


@pytest.fixture(scope="module")
def world(tiny_checkpoint, tiny_checkpoint_dir, tmp_path_factory):
    """A server with the checkpoint's voices (HF layout) and an extra `.npz` voice root."""
    base = tmp_path_factory.mktemp("fuzz")
    preset = VoiceLibrary([tiny_checkpoint.voices_dir]).load("v2/en_speaker_0").to_dict()
    root, outside = base / "voices", base / "outside"
    (root / "custom").mkdir(parents=True)
    outside.mkdir()
    np.savez(root / "custom" / "narrator.npz", **preset)
    np.savez(outside / "secret.npz", **preset)  # valid: loading it would succeed, so it would show
    os.symlink(outside / "secret.npz", root / "custom" / "link.npz")
    secret = str(outside / "secret")
    escapes = (os.path.relpath(secret, root), os.path.relpath(secret, root / "custom"), secret, secret + ".npz",
               "custom/link", "custom/../../outside/secret", "../outside/secret", "custom/./narrator",
               "../../etc/passwd", "/etc/passwd", "v2/../../../../etc/passwd", "..", ".", "~/.ssh/id_rsa",
               "C:\\Windows\\win.ini", "file:///etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "v2/en_speaker_0\x00",
               "v2//en_speaker_0", "/", "v2/en_speaker_0/..", "a" * 300)
    watch = FileWatch((str(outside), *FORBIDDEN_FILES))
    sys.addaudithook(watch)
    server = EmbeddedServer("all", ServeConfig(checkpoint=str(tiny_checkpoint_dir), voices_dir=str(root)))
    voices = tuple(VoiceLibrary([tiny_checkpoint.voices_dir, root]).list())
    assert "custom/narrator" in voices and "custom/link" not in voices
    yield FuzzWorld(server, root, outside, watch, voices, escapes)
    server.stop()


# ------------------------------------------------------------------------------------ strategies

odd_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([NAN, INF, -INF, 0.0, -0.0, -1.0, 5e-324, 1e-300, 1e-9, 1e308, 0.5, 1.0, 1.0000001]))
uint32 = st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 1000))
edge_texts = st.sampled_from([
    "", " ", "\n\t ", "\x00", "Hello\x00world.", "\u202e\u202dHello", "\ufeff", "😀" * 50, "." * 4000,
    "a" * 4001, "word " * 900, "\x07\x1b[31mred\x1b[0m", "\r\n" * 100, "Hello " * 20, "[laughs] Hi... ♪ la ♪",
    "I" + "\u0301" * 500, "\ud7ff\ue000\U0010ffff", "https://example.com/?q=<script>alert(1)</script>"])
texts = st.one_of(
    st.text(max_size=120),
    st.text(st.characters(categories=("Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "So")), max_size=60),
    st.from_regex(r"[A-Za-z][A-Za-z ,.!?']{0,150}", fullmatch=True),
    edge_texts)


valid_texts = st.from_regex(r"[A-Za-z][A-Za-z ,.!?']{0,150}", fullmatch=True)
FIELDS = ("text", "voice", "params", "encoding", "sample_rate_hz", "chunk_duration_ms", "request_id")


@st.composite
def params(draw, hostile: bool) -> tts_pb2.SynthesisParams:
    """A random subset of the fields set, to odd values when `hostile`, else to valid ones."""
    temps = odd_floats if hostile else st.floats(0.05, 3.0)
    probs = odd_floats if hostile else st.floats(0.05, 1.0)
    p = tts_pb2.SynthesisParams()
    for sampling in (p.semantic.sampling, p.coarse.sampling):
        if draw(st.booleans()):
            sampling.temperature = draw(temps)
        if draw(st.booleans()):
            sampling.top_k = draw(uint32 if hostile else st.integers(1, 200))
        if draw(st.booleans()):
            sampling.top_p = draw(probs)
        if draw(st.booleans()):
            sampling.greedy = draw(st.booleans())
    if draw(st.booleans()):
        p.semantic.min_eos_p = draw(odd_floats if hostile else st.floats(0.0, 1.0))
    if draw(st.booleans()):
        p.semantic.allow_early_stop = draw(st.booleans())
    if draw(st.booleans()):
        history = draw(st.one_of(uint32, st.integers(55, 640)) if hostile else st.integers(60, 630))
        p.coarse.max_coarse_history = history
        if draw(st.booleans()):
            p.coarse.sliding_window_len = draw(st.one_of(uint32, st.integers(0, 140)) if hostile
                                               else st.integers(1, (768 - history) // 2).map(lambda n: 2 * n))
    if draw(st.booleans()):
        p.fine.temperature = draw(temps)
    if draw(st.booleans()):
        p.fine.greedy = draw(st.booleans())
    # Always bounded: a valid duration is tiny (the fuzz is about input, not about long audio).
    p.semantic.max_gen_duration_s = draw(st.one_of(
        st.sampled_from([NAN, INF, -INF, -1.0, 0.0, -0.0, 5e-324, 1e-9, 0.001]), st.floats(0.02, 0.15))
        if hostile else st.floats(0.02, 0.15))
    return p


@st.composite
def requests(draw, voices: tuple[str, ...], escapes: tuple[str, ...]) -> tts_pb2.SynthesizeRequest:
    """A request with up to three hostile fields and valid others, so hostile values also reach
    the deeper layers instead of all being caught by the first check."""
    hostile = draw(st.sets(st.sampled_from(FIELDS), max_size=3))

    def pick(name: str, odd, valid):
        return draw(odd if name in hostile else valid)

    req = tts_pb2.SynthesizeRequest(
        text=pick("text", texts, valid_texts),
        voice=pick("voice", st.one_of(st.sampled_from(escapes), st.text(max_size=40),
                                      st.from_regex(r"[A-Za-z0-9_./-]{1,40}", fullmatch=True)),
                   st.one_of(st.just(""), st.sampled_from(voices))),
        params=draw(params("params" in hostile)),
        encoding=pick("encoding", st.one_of(st.integers(-3, 6), st.integers(-2**31, 2**31 - 1)), st.integers(0, 3)),
        sample_rate_hz=pick("sample_rate_hz", st.one_of(st.sampled_from([1, 12345, 8001, 2**32 - 1]), uint32),
                            st.sampled_from([0, 8000, 16000, 22050, 24000, 44100, 48000])),
        chunk_duration_ms=pick("chunk_duration_ms", st.one_of(st.integers(0, 600), uint32),
                               st.one_of(st.just(0), st.integers(20, 500))),
        request_id=pick("request_id", st.one_of(st.text(max_size=40), st.just("x" * 5000)),
                        st.one_of(st.just(""), st.from_regex(r"[a-z0-9-]{1,36}", fullmatch=True))))
    if draw(st.booleans()):
        req.seed = draw(st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 2**63 - 1, 2**63, 2**64 - 1])))
    return req


# ------------------------------------------------------------------------------------ the fuzz


def call(stub, request) -> tuple[grpc.StatusCode, list, str]:
    received: list = []
    try:
        for msg in stub.Synthesize(request, timeout=60):
            received.append(msg)
    except grpc.RpcError as e:
        return e.code(), received, e.details() or ""
    return grpc.StatusCode.OK, received, ""


def check_ok_stream(received: list) -> None:
    kinds = [m.WhichOneof("payload") for m in received]
    assert kinds[0] == "header" and kinds[-1] == "summary" and set(kinds[1:-1]) <= {"chunk"}, kinds[:5]
    chunks = [m.chunk for m in received[1:-1]]
    assert [c.sequence_number for c in chunks] == list(range(len(chunks)))
    assert sum(c.num_samples for c in chunks) == received[-1].summary.total_samples


def test_a_thousand_hostile_requests_end_ok_or_invalid_and_read_nothing_outside(world):
    stats: dict[str, int] = {}
    with grpc.insecure_channel(world.server.target) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)

        @settings(max_examples=1000, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(requests(world.voices, world.escapes))
        def one(request: tts_pb2.SynthesizeRequest) -> None:
            code, received, details = call(stub, request)
            stats[code.name] = stats.get(code.name, 0) + 1
            assert code in ALLOWED, (code, details, request)
            if code == grpc.StatusCode.OK:
                check_ok_stream(received)
            if request.voice in world.escapes and request.voice not in world.voices:
                assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details, request.voice)
            if code != grpc.StatusCode.OK:
                assert details, "an error must say what is wrong"

        started = time.monotonic()
        world.watch.active = True
        try:
            one()
        finally:
            world.watch.active = False
        elapsed = time.monotonic() - started
    print(f"\nfuzz: {sum(stats.values())} requests in {elapsed:.0f} s: {stats}")
    assert sum(stats.values()) >= 1000
    assert stats.get("OK", 0) >= 50 and stats.get("INVALID_ARGUMENT", 0) >= 300, stats
    assert world.watch.hits == [], f"files outside the voice directories were opened: {world.watch.hits}"
    assert poll(lambda: idle(world.server.app), timeout=10), f"work left behind: {engine_load(world.server.app)}"


def test_every_escape_is_refused_by_the_library_and_the_server(world):
    """Each escaping name, directly: the library refuses it, the server says INVALID_ARGUMENT."""
    library = VoiceLibrary([world.voice_root])
    world.watch.active = True
    try:
        for name in world.escapes:
            with pytest.raises(VoiceError):
                library.load(name)
        with grpc.insecure_channel(world.server.target) as channel:
            stub = tts_pb2_grpc.TextToSpeechStub(channel)
            for name in world.escapes:
                request = tts_pb2.SynthesizeRequest(text="Hello there.", voice=name)
                request.params.semantic.max_gen_duration_s = 0.1
                code, _, details = call(stub, request)
                assert code == grpc.StatusCode.INVALID_ARGUMENT and "voice" in details, (name, code, details)
            ok = tts_pb2.SynthesizeRequest(text="Hello there.", voice="custom/narrator", seed=1)
            ok.params.semantic.max_gen_duration_s = 0.1
            assert call(stub, ok)[0] == grpc.StatusCode.OK  # the planted preset's twin inside the root works
    finally:
        world.watch.active = False
    assert world.watch.hits == [], world.watch.hits


# ------------------------------------------------------------------------------------ sessions


@st.composite
def session_messages(draw, voices: tuple[str, ...]) -> list[tts_pb2.StreamingSynthesizeRequest]:
    """A StreamingSynthesize request stream: usually a config first, then any mix of pieces,
    flushes, clears, empty messages and extra configs."""
    def config() -> tts_pb2.StreamingSynthesizeRequest:
        hostile = draw(st.integers(0, 3)) == 0  # mostly valid, so that sequences reach the session itself
        voice = st.one_of(st.sampled_from(voices), st.text(max_size=20)) if hostile else st.sampled_from(("", *voices))
        cfg = tts_pb2.SessionConfig(voice=draw(voice), params=draw(params(hostile and draw(st.booleans()))))
        cfg.segmentation.schedule = draw(st.sampled_from([0, 1, 2, 3, -1] if hostile else [0, 1, 2]))
        cfg.segmentation.max_tokens = draw(st.sampled_from([0, 1, 5, 48, 256, 257, 2**32 - 1] if hostile
                                                           else [0, 1, 5, 48, 256]))
        cfg.segmentation.max_wait_ms = draw(st.sampled_from([0, 1, 50, 300, 10_000, 10_001] if hostile
                                                            else [0, 50, 300]))
        return tts_pb2.StreamingSynthesizeRequest(config=cfg)

    benign = st.one_of(
        texts.map(lambda t: tts_pb2.StreamingSynthesizeRequest(text=t)),
        valid_texts.map(lambda t: tts_pb2.StreamingSynthesizeRequest(text=t)),
        st.just(tts_pb2.StreamingSynthesizeRequest(flush=tts_pb2.Flush())),
        st.just(tts_pb2.StreamingSynthesizeRequest(clear=tts_pb2.Clear())))
    message = st.one_of(benign, st.just(tts_pb2.StreamingSynthesizeRequest()), st.just(None))  # None: a 2nd config
    first = [config()] if draw(st.integers(0, 9)) else []
    size = draw(st.integers(0, 12))
    # Most sequences hold only pieces, flushes and clears; some also an empty message or a second config.
    pieces = message if draw(st.integers(0, 3)) == 0 else benign
    rest = [m if m is not None else config() for m in draw(st.lists(pieces, min_size=size, max_size=size))]
    return first + rest


def check_ok_session(received: list) -> None:
    kinds = [m.WhichOneof("payload") for m in received]
    assert kinds[0] == "header" and kinds[-1] == "summary" and "header" not in kinds[1:-1], kinds[:8]
    chunks = [m.chunk for m in received if m.HasField("chunk")]
    assert [c.sequence_number for c in chunks] == list(range(len(chunks)))
    assert sum(c.num_samples for c in chunks) == received[-1].summary.total_samples
    started: set[int] = set()
    for m in received:
        if m.HasField("segment_started"):
            started.add(m.segment_started.segment_index)
        elif m.HasField("chunk"):
            assert m.chunk.segment_index in started, "audio before its segment_started"


def test_hostile_session_message_sequences_end_ok_or_with_a_clear_status(world):
    stats: dict[str, int] = {}
    with grpc.insecure_channel(world.server.target) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)

        @settings(max_examples=150, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(session_messages(world.voices))
        def one(messages: list[tts_pb2.StreamingSynthesizeRequest]) -> None:
            received: list = []
            code, details = grpc.StatusCode.OK, ""
            try:
                for msg in stub.StreamingSynthesize(iter(messages), timeout=60):
                    received.append(msg)
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
            stats[code.name] = stats.get(code.name, 0) + 1
            assert code in ALLOWED, (code, details, messages)
            if code == grpc.StatusCode.OK:
                check_ok_session(received)
            else:
                assert details, "an error must say what is wrong"

        one()
    print(f"\nsession fuzz: {stats}")
    assert stats.get("OK", 0) >= 15 and stats.get("INVALID_ARGUMENT", 0) >= 30, stats
    assert poll(lambda: idle(world.server.app), timeout=10), f"work left behind: {engine_load(world.server.app)}"

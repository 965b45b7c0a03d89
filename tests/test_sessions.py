"""Real-time sessions (StreamingSynthesize) on the embedded server: text in while audio streams out.

Greedy decoding makes a session comparable with Synthesize of the same segments; the shared
server is checked idle before and after every test (no leaked slots or engine rows).
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import grpc
import numpy as np
import pytest

import barkstream.client as bc
from barkstream.services.bark.voices import VoiceLibrary
from barkstream.v1 import tts_pb2, tts_pb2_grpc

from .service_helpers import THREE_SEGMENTS, VOICE, engine_load, poll, synth_request, synthesize

pytestmark = pytest.mark.timeout(300)

GREEDY = {"greedy": True, "max_duration": 1.0, "seed": 1234, "format": "f32"}
SENTENCES = [s + "." for s in THREE_SEGMENTS.rstrip(".").split(". ")]


@pytest.fixture()
def client(server):
    with bc.TTSClient(server.target, timeout=120) as c:
        yield c


def feed(session: bc.Session, pieces, pause: float = 0.0) -> threading.Thread:
    """Send pieces on another thread (as an LLM would), then close the input."""
    def run() -> None:
        for piece in pieces:
            session.send(piece)
            time.sleep(pause)
        session.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def words_of(text: str) -> list[str]:
    return [w + " " for w in text.split(" ")]


def audio_by_segment(items) -> dict[int, np.ndarray]:
    out: dict[int, list[bytes]] = {}
    for item in items:
        if isinstance(item, bc.AudioChunk):
            out.setdefault(item.segment_index, []).append(item.data)
    return {i: np.frombuffer(b"".join(d), "<f4") for i, d in out.items()}


def raw_call(target: str, requests, timeout: float = 60):
    """(status code, details, messages) of a StreamingSynthesize call fed `requests`."""
    received = []
    with grpc.insecure_channel(target) as channel:
        try:
            for m in tts_pb2_grpc.TextToSpeechStub(channel).StreamingSynthesize(iter(requests), timeout=timeout):
                received.append(m)
        except grpc.RpcError as e:
            return e.code(), e.details(), received
    return grpc.StatusCode.OK, "", received


def config(**fields) -> tts_pb2.StreamingSynthesizeRequest:
    cfg = bc.build_config(**{**GREEDY, **fields})
    return tts_pb2.StreamingSynthesizeRequest(config=cfg)


def text(t: str) -> tts_pb2.StreamingSynthesizeRequest:
    return tts_pb2.StreamingSynthesizeRequest(text=t)


# ------------------------------------------------------------------------------------ behaviour


def test_word_by_word_input_gets_audio_before_the_input_ends(client):
    words = words_of(THREE_SEGMENTS)
    ended = {}
    with client.session(**GREEDY) as session:
        sender = feed(session, words, pause=0.08)
        first = None
        kinds = []
        for item in session:
            kinds.append(type(item).__name__)
            if first is None and isinstance(item, bc.AudioChunk):
                first = time.monotonic()
                ended["input_open"] = sender.is_alive()
        sender.join()
    assert ended["input_open"], "the first audio came only after the whole text was sent"
    assert kinds[0] == "SegmentStarted" and kinds[-1] == "SegmentDone"
    segments = session.segments
    assert " ".join(s.text for s in segments.values()).split() == THREE_SEGMENTS.split()
    assert len(segments[0].text.split()) < len(SENTENCES[0].split())  # latency-aware: a short first segment
    starts = [s.start_sample for s in segments.values()]
    ends = [s.end_sample for s in segments.values()]
    assert starts[0] == 0 and starts[1:] == ends[:-1] and ends[-1] == session.summary.total_samples
    assert session.summary.segment_count == len(segments)


@pytest.mark.parametrize("voice", [VOICE, ""], ids=["voice", "no-voice"])
def test_greedy_session_equals_synthesize_of_the_same_segments(client, server, voice):
    """Sentences arrive in pieces; with the fixed schedule each sentence is one segment, as in Synthesize."""
    pieces = [p for s in SENTENCES for p in (s[:20], s[20:] + " ")]
    with client.session(voice=voice or None, schedule="fixed", max_wait_ms=10_000, **GREEDY) as session:
        feed(session, pieces, pause=0.02)
        items = list(session)
    reference = synthesize(server.target, synth_request(THREE_SEGMENTS, voice))
    assert [s.text for s in session.segments.values()] == SENTENCES
    got = np.concatenate(list(audio_by_segment(items).values()))
    np.testing.assert_allclose(got, reference.float32(), rtol=0, atol=1e-5)


def test_clear_stops_every_stage_frees_rows_and_the_session_goes_on(client, server):
    app = server.app
    long = {**GREEDY, "max_duration": 30.0}
    with client.session(voice=VOICE, **long) as session:
        # A clear while the semantic stage works (before any audio): its rows are freed.
        session.send(THREE_SEGMENTS)
        session.flush()
        assert poll(lambda: engine_load(app)["semantic.rows"] > 0, timeout=20), engine_load(app)
        session.clear()
        early = next(item for item in session if isinstance(item, bc.Cleared))
        assert early.at_sample == 0 and len(early.segment_indices) >= 1
        assert poll(lambda: idle_engines(app), timeout=10), f"rows held after clear: {engine_load(app)}"
        # A clear while coarse, fine and codec work on the audio being sent.
        session.send(THREE_SEGMENTS)
        session.flush()
        first_chunk = next(item for item in session if isinstance(item, bc.AudioChunk))
        busy = engine_load(app)
        cleared_at = time.monotonic()
        assert all(busy[f"admission:{stage}"] for stage in ("coarse", "fine", "codec")), busy
        session.clear()
        after = []
        for item in session:
            after.append(item)
            if isinstance(item, bc.Cleared):
                break
        freed = poll(lambda: idle_engines(app), timeout=10)
        freed_s = time.monotonic() - cleared_at
        assert freed, f"engine rows still held after clear: {engine_load(app)}"
        cleared = after[-1]
        assert list(cleared.segment_indices)[0] == first_chunk.segment_index > max(early.segment_indices)
        done = [i for i in after if isinstance(i, bc.SegmentDone)]
        assert done and done[-1].interrupted and done[-1].end_sample == cleared.at_sample
        chunks = [i for i in after if isinstance(i, bc.AudioChunk)]
        assert sum(c.num_samples for c in chunks) + first_chunk.num_samples == cleared.at_sample
        # The session stays open: new text is spoken after the clear.
        session.send("Hello world, my dog likes pizza.")
        session.close()
        rest = list(session)
    print(f"\nclear: stage work before {busy}, every engine row freed {freed_s:.2f} s after clear")
    new = [i for i in rest if isinstance(i, bc.AudioChunk)]
    assert new and min(c.segment_index for c in new) > max(cleared.segment_indices)
    assert new[0].start_sample == cleared.at_sample
    assert session.summary.total_samples == cleared.at_sample + sum(c.num_samples for c in new)


def test_returned_voice_prompt_sent_back_reproduces_the_voice(client):
    """No preset: the first segment's generation is the voice; returned, then sent back inline, the
    later segments get the same tokens (greedy), so the same audio."""
    with client.stream(THREE_SEGMENTS, return_voice_prompt=True, schedule="fixed", **GREEDY) as stream:
        first = audio_by_segment(stream)
    prompt = stream.summary.voice_prompt
    arrays = bc.voice_prompt_arrays(prompt)
    assert arrays["coarse_prompt"].shape[0] == 2 and arrays["fine_prompt"].shape[0] == 8
    with client.stream(THREE_SEGMENTS, voice_prompt=prompt, schedule="fixed", **GREEDY) as stream:
        again = audio_by_segment(stream)
    for i in (1, 2):
        np.testing.assert_allclose(again[i], first[i], rtol=0, atol=1e-5)
    assert not np.allclose(again[0][:1000], first[0][:1000])  # segment 0 now speaks with the prompt


def test_session_returns_its_voice_and_keeps_it_in_the_next_session(client):
    with client.session(return_voice_prompt=True, schedule="fixed", **GREEDY) as session:
        feed(session, [SENTENCES[0] + " "])
        list(session)
    prompt = session.summary.voice_prompt
    assert len(prompt.semantic.values) > 0
    with client.session(voice_prompt=prompt, schedule="fixed", return_voice_prompt=True, **GREEDY) as again:
        feed(again, [SENTENCES[1] + " ", SENTENCES[2]])
        items = list(again)
    assert again.summary.voice_prompt == prompt  # the voice it was given is the voice it spoke with
    reference = client.stream(" ".join(SENTENCES[1:]), voice_prompt=prompt, schedule="fixed", **GREEDY)
    np.testing.assert_allclose(np.concatenate(list(audio_by_segment(items).values())),
                               np.concatenate(list(audio_by_segment(reference).values())), rtol=0, atol=1e-5)


def test_inline_prompt_equals_the_preset(client, tiny_checkpoint):
    preset = VoiceLibrary([tiny_checkpoint.voices_dir]).load(VOICE).to_dict()
    by_name = client.synthesize(SENTENCES[0], voice=VOICE, **GREEDY)
    inline = client.synthesize(SENTENCES[0], voice_prompt=preset, **GREEDY)
    np.testing.assert_allclose(inline.samples, by_name.samples, rtol=0, atol=1e-5)  # float noise of batching only


def test_synthesize_default_schedule_is_latency_aware_and_matches_offline(server, synthesizer):
    from .service_helpers import offline_synthesis

    r = synthesize(server.target, synth_request(THREE_SEGMENTS, VOICE, schedule=0))
    offline = offline_synthesis(synthesizer, THREE_SEGMENTS, VoiceLibrary(
        [synthesizer.models.checkpoint.voices_dir]).load(VOICE), schedule=0)
    assert r.header.segment_count == len(offline.segments) > 3
    np.testing.assert_allclose(r.float32(), offline.audio, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------ bad input and limits

INVALID, EXHAUSTED, DEADLINE = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                grpc.StatusCode.DEADLINE_EXCEEDED)
EMPTY = tts_pb2.StreamingSynthesizeRequest()
CLEAR = tts_pb2.StreamingSynthesizeRequest(clear=tts_pb2.Clear())


def too_long_prompt() -> tts_pb2.VoicePrompt:
    n = 2100
    return bc.to_voice_prompt({"semantic_prompt": np.zeros(n, np.int64), "coarse_prompt": np.zeros((2, 3 * n // 2),
                               np.int64), "fine_prompt": np.zeros((8, 3 * n // 2), np.int64)})


@pytest.mark.parametrize(("requests", "code", "says"), [
    ([text("Hello.")], INVALID, "first message"),
    ([], INVALID, "ended before"),
    ([config(), text("Hello."), config()], INVALID, "one `config`"),
    ([config(), EMPTY], INVALID, "without payload"),
    ([config(), text("x" * 4001)], INVALID, "4001 characters"),
    ([config(), text("a\x00b")], INVALID, "NUL"),
    ([config(), text("a" * 3000), text("b" * 3000)], EXHAUSTED, "wait to be spoken"),
    ([config(), *[CLEAR] * 50], EXHAUSTED, "clears"),
    ([config(max_segment_tokens=300)], INVALID, "max_tokens"),
    ([config(max_wait_ms=5)], INVALID, "max_wait_ms"),
    ([config(voice=VOICE, voice_prompt={"semantic_prompt": [1, 2], "coarse_prompt": [[1, 2, 3]] * 2,
                                        "fine_prompt": [[1, 2, 3]] * 8})], INVALID, "not both"),
    ([config(voice_prompt={"semantic_prompt": [1, 2], "coarse_prompt": [[1]] * 3, "fine_prompt": [[1]] * 8})],
     INVALID, "voice_prompt.coarse"),
    ([config(voice_prompt=too_long_prompt())], INVALID, "too long"),
    ([config(voice="../../etc/passwd")], INVALID, "voice"),
], ids=["text-first", "nothing", "second-config", "empty-message", "huge-piece", "nul", "buffer-full",
        "clear-storm", "budget", "max-wait", "voice-and-prompt", "bad-prompt", "huge-prompt", "bad-voice"])
def test_bad_input_gets_a_clear_status(server, requests, code, says):
    got, details, _ = raw_call(server.target, requests)
    assert got == code and says in details, (got, details)


def test_empty_pieces_are_skipped(server):
    got, details, received = raw_call(server.target, [config(), text(""), text("Hello world."), text("")])
    assert got == grpc.StatusCode.OK, details
    kinds = [m.WhichOneof("payload") for m in received]
    assert kinds[0] == "header" and kinds[-1] == "summary" and "chunk" in kinds
    assert [m.segment_started.text for m in received if m.HasField("segment_started")] == ["Hello world."]


@pytest.fixture()
def session_limits(server, monkeypatch):
    """Set the shared server's session limits for one test (restored after it)."""
    servicer = server.app.servicers["orchestrator"]

    def apply(**limits) -> None:
        monkeypatch.setattr(servicer, "limits", replace(servicer.limits, session=replace(servicer.limits.session,
                                                                                           **limits)))
    return apply


def test_idle_session_times_out(server, session_limits):
    session_limits(idle_timeout_s=0.5)

    def requests():
        yield config()
        time.sleep(3)

    started = time.monotonic()
    got, details, received = raw_call(server.target, requests())
    assert got == DEADLINE and "idle" in details and time.monotonic() - started < 2.9
    assert received[0].HasField("header")


def test_session_length_is_bounded(server, session_limits):
    session_limits(max_session_s=1.5)

    def requests():
        yield config()
        for _ in range(100):
            yield text("la ")
            time.sleep(0.05)

    got, details, _ = raw_call(server.target, requests())
    assert got == DEADLINE and "maximum length" in details


def test_a_client_that_stops_reading_stops_generation_then_gets_everything(server):
    """Backpressure: unread audio holds no engine row; reading again resumes and completes the stream."""
    app = server.app
    # A fixed 64 KiB receive window (no BDP growth), so unread audio soon blocks the server's writes.
    small_window = bc.TTSClient(server.target, timeout=120, options=[("grpc.http2.bdp_probe", 0)])
    with small_window, small_window.session(max_segment_tokens=8, schedule="fixed", **GREEDY) as session:
        session.send(THREE_SEGMENTS)
        session.close()
        header_and_first = next(iter(session))
        assert poll(lambda: idle_engines(app), timeout=60), engine_load(app)
        time.sleep(0.5)
        assert idle_engines(app)  # nothing generates while the client does not read
        (running,) = app.servicers["orchestrator"].sessions
        stalled_at = running.stats.segments
        assert stalled_at <= 1 + running.limits.max_segments_ahead  # the one being read, and those ahead
        items = [header_and_first, *session]
    count = session.summary.segment_count
    assert count > stalled_at and sorted(session.segments) == list(range(count))
    assert sum(i.num_samples for i in items if isinstance(i, bc.AudioChunk)) == session.summary.total_samples


def idle_engines(app) -> bool:
    return not any(v for k, v in engine_load(app).items() if not k.startswith("admission"))


# ------------------------------------------------------------------------------------ CLI


def test_say_stream_input_speaks_stdin_as_it_arrives(server, tmp_path):
    """Text typed into the pipe slowly: audio reaches the output before the input ends."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("BARKSTREAM_")}
    proc = subprocess.Popen([sys.executable, "-m", "barkstream.client.cli", "say", "--stream-input", "--greedy",
                             "--max-duration", "1.0", "--target", server.target, "-o", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    os.set_blocking(proc.stdout.fileno(), False)
    got_audio_while_typing = False
    try:
        for word in words_of(THREE_SEGMENTS):
            proc.stdin.write(word.encode())
            proc.stdin.flush()
            time.sleep(0.1)
            try:
                got_audio_while_typing |= bool(os.read(proc.stdout.fileno(), 1 << 16))
            except BlockingIOError:
                pass
        proc.stdin.close()
        os.set_blocking(proc.stdout.fileno(), True)
        rest = proc.stdout.read()
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        proc.kill()
    assert got_audio_while_typing and len(rest) % 2 == 0


# ------------------------------------------------------------------------------------ asyncio SDK


def test_async_session_and_speak_an_async_llm_stream(server):
    import asyncio

    async def llm():
        for word in words_of(SENTENCES[0]):
            await asyncio.sleep(0.02)
            yield word

    async def main():
        async with bc.AsyncTTSClient(server.target, timeout=120) as client:
            spoken = [chunk async for chunk in client.speak(llm(), schedule="fixed", **GREEDY)]
            async with client.session(schedule="fixed", **GREEDY) as session:
                async for word in llm():
                    await session.send(word)
                await session.close()
                items = [item async for item in session]
            return spoken, items, session

    spoken, items, session = asyncio.run(main())
    chunks = [i for i in items if isinstance(i, bc.AudioChunk)]
    assert b"".join(c.data for c in spoken) == b"".join(c.data for c in chunks) != b""
    assert session.spoken_text() == SENTENCES[0] and session.summary.total_samples == sum(c.num_samples for c in chunks)


@pytest.mark.parametrize("encoding", [tts_pb2.AUDIO_ENCODING_OGG_OPUS, tts_pb2.AUDIO_ENCODING_MP3],
                         ids=["ogg-opus", "mp3"])
def test_a_session_with_a_clear_is_one_whole_encoded_stream(client, encoding):
    """Sessions use Synthesize's encoder: one codec stream across segments and clears, decodable whole."""
    from .codec_helpers import FRAME_SAMPLES, ffmpeg_decode

    chunks: list[bc.AudioChunk] = []

    def until(kind) -> None:
        for item in session:
            if isinstance(item, bc.AudioChunk):
                chunks.append(item)
            if isinstance(item, kind):
                return

    with client.session(**{**GREEDY, "format": encoding}) as session:
        session.send(THREE_SEGMENTS)
        session.flush()
        until(bc.AudioChunk)
        session.clear()
        until(bc.Cleared)
        session.send("Hello world, my dog likes pizza.")
        session.close()
        until(type(None))  # to the end
    header, summary = session.header, session.summary
    assert sum(c.num_samples for c in chunks) == summary.total_samples
    body = header.container_header + b"".join(c.data for c in chunks)
    decoded = ffmpeg_decode(body, encoding, header.sample_rate_hz)
    slack = 2 * FRAME_SAMPLES[encoding](header.sample_rate_hz) + header.encoder_delay_samples
    assert abs(len(decoded) - summary.total_samples) <= slack, (len(decoded), summary.total_samples)

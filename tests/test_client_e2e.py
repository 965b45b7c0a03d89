"""The SDK against the real services (embedded server, tiny random checkpoint) over loopback.

Sync and asyncio clients; cancelling an async stream mid-way (the server's admission count and
engine rows must drop while the engines are held, so the stream cannot have ended on its
own); a timeout as DeadlineExceeded; a call made before the server listens that succeeds once
it is up; and the typed errors the real server produces.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import wave
from collections.abc import Iterator

import numpy as np
import pytest

import barkstream.client as bc
from barkstream.v1 import tts_pb2

from .service_helpers import ONE_SEGMENT, THREE_SEGMENTS, VOICE, engine_load, idle, poll, synth_request, synthesize

pytestmark = pytest.mark.timeout(180)

FAST = {"greedy": True, "max_duration": 0.5, "seed": 1234, "schedule": "fixed"}  # THREE_SEGMENTS: 3 segments


@pytest.fixture()
def client(server) -> Iterator[bc.TTSClient]:
    with bc.TTSClient(server.target, timeout=120) as c:
        yield c


def orchestrator_active(app) -> int:
    return sum(a.active for a in app.handle.admissions if a.name == "orchestrator")


@contextlib.contextmanager
def engines_held(app) -> Iterator[None]:
    """Park every engine thread on a gate: no stage makes progress until the block exits."""
    gate = threading.Event()
    try:
        for runner in app.runners.values():
            runner.call(gate.wait)
        yield
    finally:
        gate.set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ sync
def test_synthesize_returns_the_same_audio_as_the_raw_api(client, server, tmp_path):
    audio = client.synthesize(THREE_SEGMENTS, voice=VOICE, format="f32", greedy=True, max_duration=1.0, seed=1234,
                              schedule="fixed")
    raw = synthesize(server.target, synth_request(THREE_SEGMENTS, VOICE))  # same request via the generated stub
    # Batching order can change float summation in the last bits; the samples must agree to float noise.
    np.testing.assert_allclose(audio.samples, raw.float32(), rtol=0, atol=1e-5)
    assert audio.sample_rate == 24000 and audio.header.segment_count == 3 and audio.summary.segment_count == 3
    assert audio.summary.total_samples == len(audio) > 0 and audio.time_to_first_audio > 0
    path = audio.save(tmp_path / "out.wav")
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (24000, 1, len(audio))


def test_stream_yields_chunks_as_they_arrive(client):
    with client.stream(THREE_SEGMENTS, format="pcm16", sample_rate=16000, chunk_ms=50, **FAST) as stream:
        chunks = list(stream)
    header, summary = stream.header, stream.summary
    assert header.sample_rate_hz == 16000 and header.encoding == tts_pb2.AUDIO_ENCODING_PCM_S16LE
    assert [c.sequence_number for c in chunks] == list(range(len(chunks)))
    assert sorted({c.segment_index for c in chunks}) == [0, 1, 2]
    assert all(c.sample_rate == 16000 and c.num_samples * 2 == len(c.data) for c in chunks)
    elapsed = [c.elapsed for c in chunks]
    assert elapsed == sorted(elapsed) and stream.time_to_first_audio == elapsed[0] > 0
    assert summary.chunk_count == len(chunks) and summary.total_samples == sum(c.num_samples for c in chunks)
    p = stream.progress()
    assert (p.segments_done, p.segment_count, p.finished) == (3, 3, True)
    assert p.audio_seconds == pytest.approx(summary.audio_seconds)


def test_wav_stream_plus_header_is_a_playable_file(client, tmp_path):
    with client.stream(ONE_SEGMENT, format="wav", **FAST) as stream:
        body = stream.wait_header().container_header + b"".join(c.data for c in stream)
    path = tmp_path / "streamed.wav"
    path.write_bytes(bc.audio.finalize_wav_header(body[:44], len(body) - 44) + body[44:])
    with wave.open(str(path)) as w:
        assert w.getnframes() == stream.summary.total_samples


def test_list_voices(client):
    names = [v.name for v in client.list_voices()]
    assert VOICE in names
    assert {v.language for v in client.list_voices("en")} == {"en"}


def test_invalid_requests_raise_invalid_request_with_the_servers_message(client):
    with pytest.raises(bc.InvalidRequest, match="voice") as info:
        client.synthesize(ONE_SEGMENT, voice="v9/nobody", **FAST)
    assert "unknown voice" in info.value.message
    with pytest.raises(bc.InvalidRequest, match="text is empty"):
        client.synthesize("   ", **FAST)
    with pytest.raises(bc.InvalidRequest, match="sample_rate_hz"):
        client.synthesize(ONE_SEGMENT, sample_rate=12345, **FAST)


def test_timeout_raises_deadline_exceeded_and_frees_the_server(client, server):
    started = time.monotonic()
    with pytest.raises(bc.DeadlineExceeded):
        client.synthesize(THREE_SEGMENTS, timeout=0.3, greedy=True, max_duration=1.0)
    assert time.monotonic() - started < 5
    with pytest.raises(TimeoutError):  # also catchable as the builtin
        for _ in client.stream(THREE_SEGMENTS, timeout=0.3, greedy=True, max_duration=1.0):
            pass


def test_unreachable_server_raises_unavailable():
    with bc.TTSClient(f"127.0.0.1:{free_port()}", retry=None) as client, pytest.raises(bc.Unavailable):
        client.synthesize(ONE_SEGMENT, timeout=10)


# ----------------------------------------------------------------------------------- async
def test_async_synthesize_stream_and_voices(server):
    async def main() -> None:
        async with bc.AsyncTTSClient(server.target, timeout=120) as client:
            voices, audio = await asyncio.gather(client.list_voices(), client.synthesize(ONE_SEGMENT, **FAST))
            assert VOICE in [v.name for v in voices] and len(audio) > 0
            async with client.stream(THREE_SEGMENTS, **FAST) as stream:
                chunks = [c async for c in stream]
            assert sum(c.num_samples for c in chunks) == stream.summary.total_samples
            assert {c.segment_index for c in chunks} == {0, 1, 2}
            with pytest.raises(bc.InvalidRequest, match="unknown voice"):
                await client.synthesize(ONE_SEGMENT, voice="v9/nobody")
            with pytest.raises(bc.DeadlineExceeded):
                await client.synthesize(THREE_SEGMENTS, timeout=0.3, greedy=True, max_duration=1.0)

    asyncio.run(main())


def test_cancelling_an_async_stream_mid_way_cancels_it_on_the_server(server):
    """The consumer task is cancelled after the first chunk, with every engine held: the stream
    cannot finish by itself, so the orchestrator's slot can only be freed by the cancel."""
    app = server.app
    text = f"{THREE_SEGMENTS} {THREE_SEGMENTS}"

    async def main() -> None:
        async with bc.AsyncTTSClient(server.target, timeout=120) as client:
            first = asyncio.Event()
            received: list[bc.AudioChunk] = []

            async def consume() -> None:
                async for chunk in client.stream(text, greedy=True, max_duration=1.0):
                    received.append(chunk)
                    first.set()

            task = asyncio.create_task(consume())
            await asyncio.wait_for(first.wait(), 60)
            with engines_held(app):
                await asyncio.sleep(0.2)
                assert orchestrator_active(app) == 1, "the stream ended before it could be cancelled"
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert await asyncio.to_thread(poll, lambda: orchestrator_active(app) == 0, 10), engine_load(app)
            assert received and received[-1].segment_index < 5  # it really stopped mid-way
        # Released engines drop the cancelled work (rows, jobs) instead of finishing it.
        assert await asyncio.to_thread(poll, lambda: idle(app), 20), engine_load(app)

    asyncio.run(main())


# ------------------------------------------------------------------- servers that come up late
def test_a_call_made_before_the_server_starts_succeeds_once_it_serves(tiny_checkpoint_dir):
    from barkstream.services.app import ServeConfig
    from barkstream.services.common.config import ServerConfig

    from .conftest import EmbeddedServer

    port = free_port()
    result: list[object] = []
    client = bc.TTSClient(f"127.0.0.1:{port}", timeout=90, wait_for_ready=True)

    def call() -> None:
        try:
            result.append(client.synthesize(ONE_SEGMENT, **FAST))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            result.append(e)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)
    assert caller.is_alive(), result  # nothing listens yet: the call waits
    warm = threading.Event()
    server = EmbeddedServer("all", ServeConfig(checkpoint=str(tiny_checkpoint_dir)),
                            ServerConfig(host="127.0.0.1", port=port, drain_grace_s=5.0), hold_warmup=warm)
    try:
        # Listening but still loading (NOT_SERVING): a fail-fast call is refused, the waiting one keeps waiting.
        with bc.TTSClient(server.target, retry=None) as impatient, pytest.raises(bc.Unavailable):
            impatient.synthesize(ONE_SEGMENT, timeout=10, **FAST)
        assert caller.is_alive(), result
        warm.set()
        caller.join(60)
        assert not caller.is_alive()
        assert isinstance(result[0], bc.Audio) and len(result[0]) > 0, result
    finally:
        warm.set()
        client.close()
        server.stop()


def test_overloaded_server_raises_overloaded_with_retry_after(tiny_checkpoint_dir):
    from barkstream.services.app import ServeConfig
    from barkstream.services.common.config import ServerConfig

    from .conftest import EmbeddedServer

    server = EmbeddedServer("all", ServeConfig(checkpoint=str(tiny_checkpoint_dir)),
                            ServerConfig(host="127.0.0.1", port=0, max_concurrent_streams=1, retry_after_ms=250,
                                         drain_grace_s=5.0))
    try:
        with bc.TTSClient(server.target, timeout=60) as client, engines_held(server.app):
            busy = client.stream(THREE_SEGMENTS, **FAST)
            busy.wait_header()  # holds the only slot while the engines are parked
            with pytest.raises(bc.Overloaded) as info:
                client.synthesize(ONE_SEGMENT, **FAST)
            assert info.value.retry_after == 0.25 and "limit" in info.value.message
            busy.cancel()
    finally:
        server.stop()

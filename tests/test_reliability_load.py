"""Load, limits and lifecycle: concurrency without cross-talk, shedding before work, no leaks.

- 32 concurrent streams through the split services: every one completes, in order, and
  equals the same request run alone (greedy + seed), so batching streams together changes
  nothing in any of them.
- Limits refuse work before it starts: a stage's queue bound and the message size limit give
  RESOURCE_EXHAUSTED (with a retry hint where retrying helps); under a burst the admission
  limit refuses the extra requests in milliseconds, and the admitted streams keep the
  real-time factor they have without the burst.
- Thousands of requests with cancellations leave nothing behind: resident memory of every
  process stays flat, every admission slot and engine row is free, no task lingers.

Figures are printed and recorded as junit properties (docs/RELIABILITY.md quotes them).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from barkstream.services.app import ServeConfig
from barkstream.services.common.admission import RETRY_AFTER_METADATA_KEY
from barkstream.services.common.config import ServerConfig
from barkstream.v1 import tts_pb2_grpc

from .conftest import EmbeddedServer, ServeProcess
from .reliability_helpers import Cluster, cpu_seconds, poll_until, rss_mb
from .service_helpers import (
    ONE_SEGMENT,
    VOICE,
    Received,
    engine_load,
    idle,
    read_stream,
    rpc_error,
    synth_request,
    synthesize,
)

pytestmark = pytest.mark.timeout(400)

@pytest.fixture()
def figure(request):
    """Attach a measured figure to the test's report (user_properties; junit shows them)."""
    return lambda key, value: request.node.user_properties.append((key, value))


TWO_SEGMENTS = ("The music is made by Bark, the voice of Suno, and my dog clears the pizza with the cat in the "
                "world. I like the speech of the cute dog, the name of the cat, and the music of the world, hello.")


def check_complete(r: Received) -> None:
    assert r.header is not None and r.summary is not None, "incomplete stream"
    assert [c.sequence_number for c in r.chunks] == list(range(len(r.chunks))), "gap or reorder"
    starts = np.cumsum([0] + [c.num_samples for c in r.chunks])[:-1].tolist()
    assert [c.start_sample for c in r.chunks] == starts
    assert r.summary.total_samples == len(r.float32()) > 0


# ------------------------------------------------------------------------------------ limits


@pytest.fixture(scope="module")
def tight_server(tiny_checkpoint_dir):
    """Embedded server whose stages batch 1 stream and queue 1 more; 64 KiB messages at most."""
    server = EmbeddedServer("all", ServeConfig(checkpoint=str(tiny_checkpoint_dir), max_batch=1, max_queued_streams=1),
                            ServerConfig(host="127.0.0.1", port=0, drain_grace_s=5.0, retry_after_ms=400,
                                         max_receive_message_bytes=64 * 1024))
    yield server
    server.stop()


def test_a_full_stage_queue_is_resource_exhausted_with_a_retry_hint(tight_server):
    app = tight_server.app
    gate = threading.Event()
    semantic = app.servicers["semantic"].admission
    assert semantic.max_streams == 2  # max_batch 1 + max_queued_streams 1
    try:
        app.runners["semantic"].call(gate.wait)  # the engine holds: admitted streams stay queued
        with ThreadPoolExecutor(2) as pool:
            held = [pool.submit(synthesize, tight_server.target, synth_request(ONE_SEGMENT, VOICE, seed=i,
                                                                               max_duration_s=0.3))
                    for i in range(2)]
            assert poll_until(lambda: semantic.active == 2, 10), engine_load(app)
            started = time.monotonic()
            err = rpc_error(lambda: synthesize(tight_server.target, synth_request(ONE_SEGMENT, VOICE)))
            refused = time.monotonic() - started
            gate.set()
            assert all(f.result(60).summary is not None for f in held)
    finally:
        gate.set()
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (err.code(), err.details())
    # The segment's four stage streams open together: whichever stage refuses first says so.
    assert "stage" in err.details() and "limit of 2" in err.details(), err.details()
    assert (RETRY_AFTER_METADATA_KEY, "400") in tuple(err.trailing_metadata())
    assert refused < 1.0, f"refused after {refused:.2f} s"
    assert poll_until(lambda: idle(app), 10), engine_load(app)


def test_an_oversized_message_is_resource_exhausted_before_any_work(tight_server):
    steps = {stage: r.steps for stage, r in tight_server.app.runners.items()}
    err = rpc_error(lambda: synthesize(tight_server.target, synth_request("word " * 20_000, VOICE)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (err.code(), err.details())
    assert {stage: r.steps for stage, r in tight_server.app.runners.items()} == steps


BURST = 12  # extra requests arriving at once while two streams are admitted
BURST_AUDIO_S = 3.0


def _rtf(r: Received) -> float:
    """Client-side real-time factor: call start to last chunk, over the audio's duration."""
    return (r.chunk_times[-1] - r.started) / (r.summary.total_samples / r.header.sample_rate_hz)


def _burst_run(target: str, burst: int) -> tuple[list[Received], list[float], list[str]]:
    """Two streams, then `burst` more requests at once; refused ones retry after the server's hint
    (as the SDK's docs advise) until the first of the two streams ends.

    Returns the two streams, the refusal latencies and every burst request's final status.
    """
    pair_done = threading.Event()
    refusals: list[float] = []
    statuses: list[str] = []

    def burster(seed: int) -> None:
        with grpc.insecure_channel(target) as channel:
            stub = tts_pb2_grpc.TextToSpeechStub(channel)
            while True:
                sent = time.monotonic()
                try:
                    read_stream(stub.Synthesize(synth_request(ONE_SEGMENT, VOICE, seed=seed,
                                                              max_duration_s=BURST_AUDIO_S), timeout=120))
                    statuses.append("OK")
                    return
                except grpc.RpcError as e:
                    refusals.append(time.monotonic() - sent)
                    hint = dict(e.trailing_metadata() or ()).get(RETRY_AFTER_METADATA_KEY)
                    if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or hint is None or pair_done.is_set():
                        statuses.append(e.code().name)
                        return
                    time.sleep(int(hint) / 1000)

    with ThreadPoolExecutor(2 + burst) as pool:
        pair = [pool.submit(synthesize, target, synth_request(ONE_SEGMENT, VOICE, seed=i, max_duration_s=BURST_AUDIO_S))
                for i in range(2)]
        time.sleep(0.2)  # the two hold their slots
        extra = [pool.submit(burster, 10 + i) for i in range(burst)]
        streams = []
        for f in pair:
            streams.append(f.result(300))
            pair_done.set()
        for f in extra:
            f.result(300)
    return streams, refusals, statuses


@pytest.mark.slow
def test_a_burst_is_refused_fast_and_admitted_streams_keep_their_real_time_rate(tiny_checkpoint_dir, tmp_path,
                                                                                  figure):
    """With an admission limit of 2, a burst of 12 requests (retrying after the hint) costs the
    two admitted streams little: their real-time factor stays near the one they have alone.
    Without the limit (contrast, reported) the burst is admitted and every stream slows down.
    The server is its own process, as it would be: the burst's clients do not share its CPU time.
    """
    args = ["--checkpoint", str(tiny_checkpoint_dir), "--retry-after-ms", "250"]
    limited = ServeProcess("all", [*args, "--max-concurrent-streams", "2"], tmp_path / "limited.log")
    try:
        limited.wait_serving()
        _burst_run(limited.target, 0)  # warm-up
        alone = [_rtf(r) for _ in range(2) for r in _burst_run(limited.target, 0)[0]]
        streams, refusals, statuses = _burst_run(limited.target, BURST)
    finally:
        assert limited.stop() == 0
    assert all(r.summary is not None for r in streams)
    assert set(statuses) <= {"RESOURCE_EXHAUSTED", "OK"}, set(statuses)
    base_rtf, burst_rtf = statistics.mean(alone), statistics.mean(_rtf(r) for r in streams)
    p95 = float(np.percentile(refusals, 95))

    unlimited = ServeProcess("all", [*args, "--max-concurrent-streams", "64"], tmp_path / "unlimited.log")
    try:
        unlimited.wait_serving()
        _burst_run(unlimited.target, 0)  # warm-up
        contrast, _, contrast_statuses = _burst_run(unlimited.target, BURST)
    finally:
        assert unlimited.stop() == 0
    assert set(contrast_statuses) == {"OK"}
    contrast_rtf = statistics.mean(_rtf(r) for r in contrast)
    figures = {"burst_refusals": len(refusals), "refusal_p95_ms": round(p95 * 1000, 1),
               "admitted_rtf_alone": round(base_rtf, 3), "admitted_rtf_under_burst": round(burst_rtf, 3),
               "rtf_under_burst_without_limit": round(contrast_rtf, 3)}
    for key, value in figures.items():
        figure(key, value)
    print(f"\nburst of {BURST}: {figures}")
    assert len(refusals) >= BURST, "the burst was not refused"
    assert p95 < 0.5, f"refusals took {p95 * 1000:.0f} ms (p95)"
    assert burst_rtf <= base_rtf * 1.5 + 0.05, f"admitted streams slowed from RTF {base_rtf:.3f} to {burst_rtf:.3f}"


# ------------------------------------------------------------------------------------ concurrency


@pytest.mark.slow
def test_32_concurrent_streams_through_split_services_each_equal_to_running_alone(tiny_checkpoint_dir, tmp_path,
                                                                                  figure):
    cluster = Cluster(tiny_checkpoint_dir, tmp_path, stage_args=["--max-concurrent-streams", "128"],
                      orchestrator_args=["--max-concurrent-streams", "32"])
    try:
        kinds = [(ONE_SEGMENT, VOICE), (ONE_SEGMENT, ""), (TWO_SEGMENTS, VOICE), (TWO_SEGMENTS, "")]
        requests = [synth_request(text, voice, seed=100 + k, max_duration_s=0.5) for k, (text, voice) in
                    enumerate(kinds)]
        alone = [synthesize(cluster.target, r) for r in requests]
        for r in alone:
            check_complete(r)
        started = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(synthesize, cluster.target, requests[i % len(requests)]) for i in range(32)]
            results = [f.result(300) for f in futures]
        wall = time.monotonic() - started
        for i, r in enumerate(results):
            check_complete(r)
            expected = alone[i % len(requests)].float32()
            got = r.float32()
            assert got.shape == expected.shape, (i, got.shape, expected.shape)
            assert float(np.max(np.abs(got - expected))) < 1e-4, f"stream {i} differs from its run alone"
        ttfa = [r.chunk_times[0] - r.started for r in results]
        audio = sum(r.summary.audio_seconds for r in results)
        figure("concurrent_streams", 32)
        figure("concurrent_wall_s", round(wall, 2))
        figure("concurrent_audio_s", round(audio, 2))
        figure("concurrent_ttfa_max_s", round(max(ttfa), 2))
        print(f"\n32 concurrent streams: {audio:.1f} s of audio in {wall:.1f} s; time to first audio "
              f"median {statistics.median(ttfa):.2f} s, max {max(ttfa):.2f} s")
    finally:
        codes = cluster.stop()
    assert set(codes.values()) == {0}, codes


# ------------------------------------------------------------------------------------ leaks


def _run_and_maybe_cancel(stub, request, cancel: str) -> str:
    """Run one request; cancel it after its header or its first chunk, or read it to the end."""
    call = stub.Synthesize(request, timeout=60)
    if not cancel:
        r = read_stream(call)
        return "OK" if r.summary is not None else "INCOMPLETE"
    it = iter(call)
    assert next(it).HasField("header")
    if cancel == "chunk":
        assert next(it).HasField("chunk")
    call.cancel()
    try:
        list(it)
    except grpc.RpcError as e:
        return "CANCELLED" if e.code() == grpc.StatusCode.CANCELLED else e.code().name
    return "NOT CANCELLED"


def _requests(n: int, offset: int = 0):
    """(request, cancel point): every third request is cancelled, alternately while the stages
    generate (after the header) and while audio flows (after the first of ~10 chunks)."""
    for i in range(offset, offset + n):
        voice = VOICE if i % 2 else ""
        cancel = "" if i % 3 != 2 else ("header" if i % 6 == 2 else "chunk")
        yield synth_request(ONE_SEGMENT, voice, seed=i % 7, max_duration_s=1.0 if cancel == "chunk" else 0.25), cancel


@pytest.mark.slow
def test_500_requests_with_cancellations_leak_no_memory_or_slots_in_any_process(tiny_checkpoint_dir, tmp_path,
                                                                                figure):
    """Sequential requests, every third cancelled mid-stream, through the five split processes.

    Each stage admits exactly 4 streams; at the end 4 concurrent streams must all be admitted
    everywhere (a single leaked slot would refuse one) and the engines must sit idle (a leaked
    row keeps an engine computing).
    """
    limit = ["--max-concurrent-streams", "4"]
    cluster = Cluster(tiny_checkpoint_dir, tmp_path, stage_args=[*limit, "--max-batch", "4"], orchestrator_args=limit)
    try:
        outcomes: dict[str, int] = {}
        with grpc.insecure_channel(cluster.target) as channel:
            stub = tts_pb2_grpc.TextToSpeechStub(channel)
            for request, cancel in _requests(60):  # warm-up: allocator pools, caches, lazy imports
                _run_and_maybe_cancel(stub, request, cancel)
            before = {name: rss_mb(cluster.pid(name)) for name in cluster.procs}
            started = time.monotonic()
            for request, cancel in _requests(500, offset=60):
                outcome = _run_and_maybe_cancel(stub, request, cancel)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            elapsed = time.monotonic() - started
        after = {name: rss_mb(cluster.pid(name)) for name in cluster.procs}
        growth = {name: after[name] - before[name] for name in before}
        cancelled = sum(1 for _, cancel in _requests(500, offset=60) if cancel)
        assert outcomes == {"OK": 500 - cancelled, "CANCELLED": cancelled}, outcomes

        with ThreadPoolExecutor(4) as pool:  # every slot free: 4 at once are admitted at every stage
            concurrent = [pool.submit(synthesize, cluster.target, r) for r, _ in _requests(4)]
            for f in concurrent:
                check_complete(f.result(60))
        time.sleep(0.5)
        busy = {name: cpu_seconds(cluster.pid(name)) for name in cluster.procs}
        time.sleep(2.0)
        busy = {name: cpu_seconds(cluster.pid(name)) - busy[name] for name in busy}
        for name in before:
            figure(f"rss_{name}_mb", f"{before[name]:.0f}->{after[name]:.0f}")
        figure("leak_requests_per_s", round(500 / elapsed, 1))
        print("\nRSS after warm-up -> after 500 requests (MB): " + ", ".join(
            f"{n} {before[n]:.0f}->{after[n]:.0f} ({growth[n]:+.1f})" for n in before)
            + f"; {500 / elapsed:.1f} requests/s; idle CPU over 2 s: "
            + ", ".join(f"{n} {busy[n]:.2f} s" for n in busy))
        for name in before:
            assert growth[name] < max(60.0, 0.15 * before[name]), f"{name} grew {growth[name]:.1f} MB"
            assert busy[name] < 0.5, f"{name} is still computing when idle ({busy[name]:.2f} s CPU in 2 s)"
    finally:
        codes = cluster.stop()
    assert set(codes.values()) == {0}, codes


@pytest.mark.slow
def test_cancellations_leave_no_task_slot_or_engine_row_behind_in_process(embedded_server):
    """The same pattern in the embedded server, where its engines and event loop can be inspected."""
    app, loop = embedded_server.app, embedded_server.loop
    assert poll_until(lambda: idle(app), 10), engine_load(app)

    async def task_count() -> int:
        return len(asyncio.all_tasks())

    def tasks() -> int:
        return asyncio.run_coroutine_threadsafe(task_count(), loop).result(10)

    with grpc.insecure_channel(embedded_server.target) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        for request, cancel in _requests(15):
            _run_and_maybe_cancel(stub, request, cancel)
        assert poll_until(lambda: idle(app), 10), engine_load(app)
        tasks_before, threads_before = tasks(), threading.active_count()
        outcomes: dict[str, int] = {}
        for request, cancel in _requests(90, offset=15):
            outcome = _run_and_maybe_cancel(stub, request, cancel)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    cancelled = sum(1 for _, cancel in _requests(90, offset=15) if cancel)
    assert outcomes == {"OK": 90 - cancelled, "CANCELLED": cancelled}, outcomes
    assert poll_until(lambda: idle(app), 10), f"slots or engine rows leaked: {engine_load(app)}"
    assert poll_until(lambda: tasks() <= tasks_before, 10), f"tasks: {tasks_before} -> {tasks()}"
    assert threading.active_count() <= threads_before + 2

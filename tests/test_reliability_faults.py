"""Faults in the split deployment: replicas killed, frozen, drained and restarted under load.

The promise: a stream either completes with every chunk, in order, equal to an undisturbed
run, or fails fast with a clear status. Greedy + seed makes the audio a function of the
request, so "complete" is checked sample by sample (1e-4: float32 noise across runs).

Which replica serves which segment: each segment picks one replica per stage in turn (a
fresh orchestrator starts at replica 0, one pick per segment). The tests freeze (SIGSTOP) the
replica a segment will use before killing it (SIGKILL), so "killed mid-stream" is a fact, not
a race.
"""

from __future__ import annotations

import re
import threading
import time

import grpc
import numpy as np
import pytest

from barkstream.v1 import stages_pb2, stages_pb2_grpc, tts_pb2_grpc

from .reliability_helpers import Cluster, poll_until
from .service_helpers import (
    ONE_SEGMENT,
    THREE_SEGMENTS,
    VOICE,
    Received,
    read_stream,
    rpc_error,
    synth_request,
    synthesize,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

@pytest.fixture()
def figure(request):
    """Attach a measured figure to the test's report (user_properties; junit shows them)."""
    return lambda key, value: request.node.user_properties.append((key, value))


RERUN = re.compile(r"request \S+ segment (\d+): (\w+) (\w+): .*?; rerunning the segment .*?skipping (\d+) samples")


def assert_same_audio(got: Received, expected: Received) -> None:
    assert got.summary is not None, "the stream did not complete"
    assert [c.sequence_number for c in got.chunks] == list(range(len(got.chunks))), "gap or reorder"
    starts = np.cumsum([0] + [c.num_samples for c in got.chunks])[:-1].tolist()
    assert [c.start_sample for c in got.chunks] == starts, "chunks do not tile the stream"
    a, b = got.float32(), expected.float32()
    assert a.shape == b.shape, f"{len(a)} samples, undisturbed run had {len(b)} (gap or duplicate)"
    assert float(np.max(np.abs(a - b))) < 1e-4


class StreamReader:
    """Reads one Synthesize stream on a thread, so the test can act while it flows."""

    def __init__(self, target: str, request, timeout: float = 120.0) -> None:
        self.channel = grpc.insecure_channel(target)
        self.call = tts_pb2_grpc.TextToSpeechStub(self.channel).Synthesize(request, timeout=timeout)
        self.received = Received(started=time.monotonic())
        self.error: grpc.RpcError | None = None
        self.ended: float | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            read_stream(self.call, out=self.received)
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.ended = time.monotonic()

    def result(self, timeout: float = 120.0) -> Received:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the stream hung"
        self.channel.close()
        return self.received


def test_killing_one_of_two_coarse_replicas_mid_stream_still_gives_the_complete_audio(tiny_checkpoint_dir, tmp_path,
                                                                                       figure):
    cluster = Cluster(tiny_checkpoint_dir, tmp_path, replicas={"coarse": 2})
    try:
        request = synth_request(THREE_SEGMENTS, VOICE)
        undisturbed = synthesize(cluster.target, request)  # segments 0, 1, 2 on coarse-0, -1, -0
        assert undisturbed.summary is not None
        # The next request's segments use coarse-1, coarse-0, coarse-1: freeze coarse-0, so
        # segment 1 is surely in flight there while segment 0 plays, then kill it.
        cluster.freeze("coarse-0")
        stream = StreamReader(cluster.target, request)
        assert poll_until(lambda: len(stream.received.chunks) >= 3, 60), "segment 0 did not play"
        time.sleep(0.3)
        assert all(c.segment_index == 0 for c in stream.received.chunks), "segment 1 was not held by coarse-0"
        killed = time.monotonic()
        cluster.kill("coarse-0")
        got = stream.result()
        assert stream.error is None, (stream.error.code(), stream.error.details())
        assert_same_audio(got, undisturbed)
        resumed = next(t for c, t in zip(got.chunks, got.chunk_times, strict=True) if c.segment_index == 1)
        figure("recovery_s", round(resumed - killed, 3))
        print(f"\ncoarse replica killed: segment 1 resumed on the other replica {resumed - killed:.2f} s later")
        reruns = RERUN.findall(cluster.log("orchestrator"))
        assert [(seg, stage, code) for seg, stage, code, _ in reruns] == [("1", "coarse", "UNAVAILABLE")], reruns
        assert resumed - killed < 5.0
    finally:
        cluster.stop()


def test_killing_a_codec_replica_mid_segment_resumes_without_gap_or_duplicate(tiny_checkpoint_dir, tmp_path):
    """The codec streams PCM: its replica dies after part of the segment reached the client.

    The rerun skips exactly the samples already sent (the log says how many), and the client's
    audio equals the undisturbed run's.
    """
    cluster = Cluster(tiny_checkpoint_dir, tmp_path, replicas={"codec": 2})
    try:
        request = synth_request(ONE_SEGMENT, VOICE, max_duration_s=4.0)
        undisturbed = synthesize(cluster.target, request)  # codec-0
        stream = StreamReader(cluster.target, request)  # codec-1
        assert poll_until(lambda: len(stream.received.chunks) >= 3, 60)
        cluster.freeze("codec-1")
        time.sleep(0.2)
        assert stream.received.summary is None, "the segment finished before the replica was frozen"
        cluster.kill("codec-1")
        got = stream.result()
        assert stream.error is None, (stream.error.code(), stream.error.details())
        assert_same_audio(got, undisturbed)
        reruns = RERUN.findall(cluster.log("orchestrator"))
        assert len(reruns) == 1 and reruns[0][:3] == ("0", "codec", "UNAVAILABLE"), reruns
        assert int(reruns[0][3]) > 0, "nothing had been sent: the test did not exercise resuming"
    finally:
        cluster.stop()


def test_one_replica_killed_is_unavailable_within_5s_and_a_restart_serves_the_next_request(
        tiny_checkpoint_dir, tmp_path, figure):
    cluster = Cluster(tiny_checkpoint_dir, tmp_path)
    try:
        request = synth_request(THREE_SEGMENTS, VOICE)
        undisturbed = synthesize(cluster.target, request)
        cluster.freeze("coarse-0")
        stream = StreamReader(cluster.target, request)
        assert poll_until(lambda: stream.received.header is not None, 30)
        killed = time.monotonic()
        cluster.kill("coarse-0")
        stream.result()
        latency = stream.ended - killed
        assert stream.error is not None and stream.error.code() == grpc.StatusCode.UNAVAILABLE, stream.error
        assert "coarse" in stream.error.details(), stream.error.details()
        assert latency < 5.0, f"UNAVAILABLE after {latency:.2f} s"

        started = time.monotonic()  # a new request while the only replica is down
        err = rpc_error(lambda: synthesize(cluster.target, request, timeout=60))
        refused = time.monotonic() - started
        assert err.code() == grpc.StatusCode.UNAVAILABLE and "coarse" in err.details(), err.details()
        assert refused < 5.0, f"a new request was refused after {refused:.2f} s"

        cluster.start("coarse-0")  # same address, as a restarted pod
        restarted = time.monotonic()
        again = synthesize(cluster.target, request)
        assert_same_audio(again, undisturbed)
        figure("unavailable_mid_stream_s", round(latency, 3))
        figure("unavailable_new_request_s", round(refused, 3))
        figure("first_request_after_restart_s", round(time.monotonic() - restarted, 3))
        print(f"\nUNAVAILABLE {latency:.2f} s after the kill (mid-stream), {refused:.2f} s for a new request; "
              f"first request after the restart took {time.monotonic() - restarted:.2f} s")
    finally:
        cluster.stop()


def test_rolling_restart_of_a_stage_under_load_loses_no_request(tiny_checkpoint_dir, tmp_path, figure):
    """SIGTERM one coarse replica (it drains its streams and exits 0), restart it, then the other.

    Two clients send requests back to back throughout; every one must succeed, and while the
    second replica is down the restarted first one carries the load (it rejoined).
    """
    cluster = Cluster(tiny_checkpoint_dir, tmp_path, replicas={"coarse": 2}, stage_args=["--drain-grace-s", "20"])
    stop = threading.Event()
    results: list[tuple[float, str]] = []

    def client(index: int) -> None:
        with grpc.insecure_channel(cluster.target) as channel:
            stub = tts_pb2_grpc.TextToSpeechStub(channel)
            while not stop.is_set():
                request = synth_request(ONE_SEGMENT, VOICE, seed=index, max_duration_s=0.5)
                try:
                    r = read_stream(stub.Synthesize(request, timeout=60))
                    results.append((time.monotonic(), "OK" if r.summary is not None else "INCOMPLETE"))
                except grpc.RpcError as e:
                    results.append((time.monotonic(), f"{e.code().name}: {e.details()}"))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(2)]
    try:
        for t in threads:
            t.start()
        time.sleep(2.0)
        for name in ("coarse-0", "coarse-1"):
            cluster.procs[name].terminate()
            assert cluster.procs[name].proc.wait(30) == 0, cluster.log(name)
            cluster.start(name)
            rejoined = time.monotonic()
            time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join(90)
        errors = [r for r in results if r[1] != "OK"]
        assert not errors, errors
        assert sum(1 for t, _ in results if t > rejoined) > 0, "no request completed after the second restart"
        figure("requests_during_rolling_restart", len(results))
        print(f"\nrolling restart of 2 coarse replicas: {len(results)} requests, none failed")
    finally:
        stop.set()
        cluster.stop()


def test_a_draining_replica_refuses_new_streams_and_the_orchestrator_reruns_them_elsewhere(tiny_checkpoint_dir,
                                                                                         tmp_path):
    """SIGTERM one of two coarse replicas while a stream keeps it draining: new segments sent
    there are refused (UNAVAILABLE, or grpc.aio's "Internal error from Core" for a bidi call
    refused mid-write) and rerun on the other replica; every request succeeds."""
    cluster = Cluster(tiny_checkpoint_dir, tmp_path, replicas={"coarse": 2}, stage_args=["--drain-grace-s", "30"])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{cluster.ports['coarse-0']}") as channel:
            held = threading.Event()

            def requests():
                yield stages_pb2.CoarseGenerateRequest(config=stages_pb2.CoarseConfig(request_id="held"))
                held.wait(60)  # no input, no end: the stream stays in flight, so the drain waits

            call = stages_pb2_grpc.CoarseServiceStub(channel).Generate(requests(), timeout=90)
            time.sleep(0.5)
            cluster.procs["coarse-0"].terminate()
            assert poll_until(lambda: "draining: NOT_SERVING" in cluster.log("coarse-0"), 10)
            results = [synthesize(cluster.target, synth_request(ONE_SEGMENT, VOICE, seed=i, max_duration_s=0.3))
                       for i in range(6)]
            assert all(r.summary is not None for r in results)
            held.set()
            call.cancel()
        assert cluster.procs["coarse-0"].proc.wait(30) == 0
        reruns = RERUN.findall(cluster.log("orchestrator"))
        assert reruns and {stage for _, stage, _, _ in reruns} == {"coarse"}, reruns
    finally:
        cluster.stop()


def test_sigterm_on_the_orchestrator_completes_the_stream_in_flight(tiny_checkpoint_dir, tmp_path):
    cluster = Cluster(tiny_checkpoint_dir, tmp_path, orchestrator_args=["--drain-grace-s", "60"])
    try:
        stream = StreamReader(cluster.target, synth_request(THREE_SEGMENTS, "", max_duration_s=2.0))
        assert poll_until(lambda: stream.received.header is not None, 30)
        cluster.procs["orchestrator"].terminate()
        got = stream.result()
        assert stream.error is None, (stream.error.code(), stream.error.details())
        assert got.summary is not None and len({c.segment_index for c in got.chunks}) == 3
        assert [c.sequence_number for c in got.chunks] == list(range(len(got.chunks)))
        assert cluster.procs["orchestrator"].proc.wait(30) == 0
    finally:
        cluster.stop()


"""Server lifecycle over real gRPC: health through warm-up and drain, admission limits, SIGTERM.

In-process servers (an App on its own thread and loop) let a test hold the warm-up or freeze
an engine, so "a stream in flight" is a fact, not a race; the SIGTERM test runs a real
`barkstream serve` process.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from barkstream.services.app import SERVICE_NAMES, ServeConfig
from barkstream.services.common.admission import RETRY_AFTER_METADATA_KEY
from barkstream.services.common.config import ServerConfig
from barkstream.v1 import tts_pb2, tts_pb2_grpc

from .conftest import EmbeddedServer, ServeProcess
from .service_helpers import (
    ONE_SEGMENT,
    THREE_SEGMENTS,
    VOICE,
    Received,
    engine_load,
    poll,
    read_stream,
    rpc_error,
    synth_request,
    synthesize,
)

pytestmark = pytest.mark.timeout(300)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ALL_NAMES = ("", *SERVICE_NAMES.values())


def health(target: str) -> dict[str, int]:
    """Health status of the server overall ("") and of each barkstream service."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return {name: stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
                for name in ALL_NAMES}


def all_health(target: str, status: int) -> bool:
    try:
        return set(health(target).values()) == {status}
    except grpc.RpcError:
        return False


def start_stream(target: str, request, pool: ThreadPoolExecutor) -> Future[Received]:
    return pool.submit(synthesize, target, request, 120.0)


def server_config(**changes) -> ServerConfig:
    return ServerConfig(host="127.0.0.1", port=0, drain_grace_s=30.0, **changes)


def test_health_through_warm_up_and_drain(tiny_checkpoint_dir):
    """NOT_SERVING (and UNAVAILABLE streams) during warm-up, SERVING after, NOT_SERVING while draining.

    The drain has a 3-segment stream without a voice in flight: its later segments start their
    stage streams after the drain began, and must still be served to the end.
    """
    hold = threading.Event()
    server = EmbeddedServer("all", ServeConfig(checkpoint=str(tiny_checkpoint_dir)), server_config(),
                            hold_warmup=hold)
    gate = threading.Event()
    try:
        assert set(health(server.target).values()) == {NOT_SERVING}
        err = rpc_error(lambda: synthesize(server.target, synth_request(ONE_SEGMENT)))
        assert err.code() == grpc.StatusCode.UNAVAILABLE and "not ready" in err.details(), err.details()
        with grpc.insecure_channel(server.target) as channel:  # not admitted, but no voices yet: UNAVAILABLE
            err = rpc_error(lambda: tts_pb2_grpc.TextToSpeechStub(channel).ListVoices(tts_pb2.ListVoicesRequest()))
        assert err.code() == grpc.StatusCode.UNAVAILABLE and "still starting" in err.details(), err.details()
        with grpc.insecure_channel(server.target) as channel:  # reflection answers before warm-up too
            assert set(SERVICE_NAMES.values()) <= set(ProtoReflectionDescriptorDatabase(channel).get_services())

        hold.set()
        server.wait_serving()
        assert set(health(server.target).values()) == {SERVING}

        app = server.app
        app.runners["semantic"].call(gate.wait)  # freeze semantic: the stream is surely in flight
        with ThreadPoolExecutor(1) as pool:
            in_flight = start_stream(server.target, synth_request(THREE_SEGMENTS, ""), pool)
            orchestrator = app.servicers["orchestrator"].admission
            assert poll(lambda: orchestrator.active == 1 or in_flight.done()), engine_load(app)
            assert not in_flight.done()
            server.loop.call_soon_threadsafe(app.handle.request_drain)
            assert poll(lambda: all_health(server.target, NOT_SERVING), timeout=5), health(server.target)
            err = rpc_error(lambda: synthesize(server.target, synth_request(ONE_SEGMENT)))
            assert err.code() == grpc.StatusCode.UNAVAILABLE and "draining" in err.details(), err.details()
            gate.set()
            done = in_flight.result(timeout=120)
        assert done.summary is not None and done.header.segment_count == 3
        assert [c.sequence_number for c in done.chunks] == list(range(len(done.chunks)))
        server.thread.join(30)
        assert not server.thread.is_alive() and server.error is None
    finally:
        hold.set()
        gate.set()
        server.stop()


def test_streams_over_the_limit_are_resource_exhausted(tiny_checkpoint_dir):
    server = EmbeddedServer("all", ServeConfig(checkpoint=str(tiny_checkpoint_dir)),
                            server_config(max_concurrent_streams=1, retry_after_ms=250))
    gate = threading.Event()
    try:
        server.app.runners["semantic"].call(gate.wait)  # the first stream holds its slot until released
        with ThreadPoolExecutor(1) as pool:
            first = start_stream(server.target, synth_request(ONE_SEGMENT, VOICE), pool)
            orchestrator = server.app.servicers["orchestrator"].admission
            assert poll(lambda: orchestrator.active == 1 or first.done())
            err = rpc_error(lambda: synthesize(server.target, synth_request(ONE_SEGMENT, VOICE)))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (err.code(), err.details())
            assert "limit of 1" in err.details()
            assert (RETRY_AFTER_METADATA_KEY, "250") in tuple(err.trailing_metadata())
            gate.set()
            assert first.result(timeout=60).summary is not None
        # The slot is free again: the retry succeeds.
        assert poll(lambda: orchestrator.active == 0)
        assert synthesize(server.target, synth_request(ONE_SEGMENT, VOICE)).summary is not None
    finally:
        gate.set()
        server.stop()


@pytest.mark.slow
def test_sigterm_drains_the_stream_in_flight_and_exits_zero(tiny_checkpoint_dir, tmp_path):
    proc = ServeProcess("all", ["--checkpoint", str(tiny_checkpoint_dir), "--drain-grace-s", "60"],
                        tmp_path / "all.log")
    try:
        proc.wait_serving()
        with grpc.insecure_channel(proc.target) as channel:
            # No voice: segments 1 and 2 start their stage streams after the signal.
            call = tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(
                synth_request(THREE_SEGMENTS, "", max_duration_s=4.0), timeout=120)
            it = iter(call)
            first = next(it)
            assert first.HasField("header")
            proc.terminate()  # SIGTERM
            assert poll(lambda: all_health(proc.target, NOT_SERVING), timeout=5), proc.log()
            err = rpc_error(lambda: synthesize(proc.target, synth_request(ONE_SEGMENT)))
            assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
            rest = read_stream(it, out=Received(header=first.header))
        assert rest.summary is not None, "the stream in flight must complete"
        assert rest.summary.segment_count == 3 and len({c.segment_index for c in rest.chunks}) == 3
        assert [c.sequence_number for c in rest.chunks] == list(range(len(rest.chunks)))
        assert len(rest.float32()) == rest.summary.total_samples and np.isfinite(rest.float32()).all()
        assert proc.proc.wait(60) == 0, proc.log()
        log = proc.log()
        drained = re.search(r"draining: NOT_SERVING, refusing new streams, (\d+) in flight", log)
        assert "SIGTERM: draining" in log and drained and int(drained.group(1)) > 0, log
        assert log.rstrip().endswith("stopped"), log
    finally:
        proc.stop()

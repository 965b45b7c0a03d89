"""Server infrastructure: config parsing, health, reflection, admission, drain, deadlines, errors.

A toy SemanticService (a counter, no model) runs on a real grpc.aio server on 127.0.0.1:0, in
the test's own event loop, so the tests can look at the server's admission counts directly.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from barkstream.services.common import convert
from barkstream.services.common.admission import RETRY_AFTER_METADATA_KEY, Admission, AdmissionState
from barkstream.services.common.config import ServerConfig, add_server_args
from barkstream.services.common.errors import InvalidRequest
from barkstream.services.common.server import ServerHandle, client_channel_options, server_options
from barkstream.services.common.status import abort_on_error
from barkstream.v1 import common_pb2, stages_pb2, stages_pb2_grpc

pytestmark = pytest.mark.timeout(60)

SEMANTIC = stages_pb2.DESCRIPTOR.services_by_name["SemanticService"].full_name
CODEC = stages_pb2.DESCRIPTOR.services_by_name["CodecService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
BASE = ServerConfig(host="127.0.0.1", port=0, max_concurrent_streams=2, retry_after_ms=250, drain_grace_s=5.0)


class ToySemantic(stages_pb2_grpc.SemanticServiceServicer):
    """Streams `chunk_size` (default 3) chunks of two tokens; optionally waits on `gate` before each.

    Special texts: "invalid" raises InvalidRequest; "relay" calls the toy codec on the same
    server with the remaining deadline and relays what it saw.
    """

    def __init__(self, admission: Admission, gate: asyncio.Event, target: Callable[[], str]) -> None:
        self.admission = admission
        self.gate = gate
        self.target = target

    async def Generate(self, request, context):
        async with self.admission.slot(context), abort_on_error(context, where="toy semantic"):
            if request.text == "invalid":
                raise InvalidRequest("text: 'invalid' is not allowed; send other text")
            if request.text == "relay":
                yield await self._relay(context)
                return
            for i in range(request.chunk_size or 3):
                await self.gate.wait()
                yield stages_pb2.SemanticGenerateResponse(chunk=convert.token_chunk(
                    np.array([2 * i, 2 * i + 1]), request_id=request.request_id, segment_index=0,
                    sequence_number=i, offset=2 * i))
            yield stages_pb2.SemanticGenerateResponse(end=common_pb2.StageEnd(
                request_id=request.request_id, total=2 * (request.chunk_size or 3),
                stop_reason=common_pb2.STOP_REASON_EOS))

    async def _relay(self, context) -> stages_pb2.SemanticGenerateResponse:
        async with grpc.aio.insecure_channel(self.target()) as channel:
            stub = stages_pb2_grpc.CodecServiceStub(channel)
            remaining = context.time_remaining()
            call = stub.Decode(iter([stages_pb2.CodecDecodeRequest(config=stages_pb2.CodecConfig())]),
                               timeout=None if remaining is None else max(0.0, remaining - 1.0))
            async for response in call:
                end = common_pb2.StageEnd(request_id=response.chunk.request_id)
                return stages_pb2.SemanticGenerateResponse(end=end)
        raise AssertionError("toy codec sent nothing")


class ToyCodec(stages_pb2_grpc.CodecServiceServicer):
    """Reports the deadline it was given (as request_id), or fails with INVALID_ARGUMENT on request."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    async def Decode(self, request_iterator, context):
        async with self.admission.slot(context):
            remaining = context.time_remaining()
            yield stages_pb2.CodecDecodeResponse(chunk=stages_pb2.PcmChunk(
                request_id="none" if remaining is None else f"{remaining:.3f}"))


class Harness:
    def __init__(self, handle: ServerHandle, semantic: ToySemantic, channel: grpc.aio.Channel) -> None:
        self.handle = handle
        self.semantic = semantic
        self.channel = channel
        self.stub = stages_pb2_grpc.SemanticServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.handle.port}"

    async def status(self, service: str = "") -> int:
        return (await self.health.Check(health_pb2.HealthCheckRequest(service=service))).status

    async def generate(self, text: str = "", chunk_size: int = 0, timeout: float | None = 10):
        call = self.stub.Generate(stages_pb2.SemanticGenerateRequest(request_id="r", text=text,
                                                                     chunk_size=chunk_size), timeout=timeout)
        return [message async for message in call]


async def with_server(test: Callable[[Harness], Awaitable[None]], config: ServerConfig = BASE,
                      warm: bool = True) -> None:
    handle = ServerHandle(config, [SEMANTIC, CODEC])
    gate = asyncio.Event()
    gate.set()
    semantic = ToySemantic(handle.admission("semantic"), gate, lambda: f"127.0.0.1:{handle.port}")
    stages_pb2_grpc.add_SemanticServiceServicer_to_server(semantic, handle.server)
    stages_pb2_grpc.add_CodecServiceServicer_to_server(ToyCodec(handle.admission("codec")), handle.server)
    await handle.start()
    try:
        if warm:
            await handle.warm_up()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            await test(Harness(handle, semantic, channel))
    finally:
        await handle.stop_now()


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def rpc_error(awaitable: Awaitable) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    return info.value


# ---------------------------------------------------------------- config



def test_config_flags_beat_env_beat_base():
    parser = argparse.ArgumentParser()
    add_server_args(parser)
    ns = parser.parse_args(["--max-concurrent-streams", "7", "--drain-grace-s", "2.5"])
    env = {"BARKSTREAM_MAX_CONCURRENT_STREAMS": "9", "BARKSTREAM_PORT": "6000", "BARKSTREAM_HOST": "::1"}
    config = ServerConfig.from_args(ns, env, base=ServerConfig(port=50052, keepalive_time_ms=1234))
    assert (config.max_concurrent_streams, config.drain_grace_s, config.port) == (7, 2.5, 6000)
    assert config.keepalive_time_ms == 1234 and config.address == "[::1]:6000"
    assert ServerConfig.from_args(parser.parse_args([]), {}) == ServerConfig()


def test_config_errors_name_the_setting():
    parser = argparse.ArgumentParser()
    add_server_args(parser)
    with pytest.raises(ValueError, match="BARKSTREAM_PORT='abc': expected int"):
        ServerConfig.from_args(parser.parse_args([]), {"BARKSTREAM_PORT": "abc"})
    with pytest.raises(ValueError, match="max_concurrent_streams=0: use 1 or more"):
        ServerConfig.from_args(parser.parse_args(["--max-concurrent-streams", "0"]), {})
    assert "BARKSTREAM_DRAIN_GRACE_S" in parser.format_help()


def test_grpc_options():
    config = replace(BASE, max_connection_age_ms=60_000, http2_max_concurrent_streams=50)
    options = dict(server_options(config))
    assert options["grpc.max_receive_message_length"] == BASE.max_receive_message_bytes
    assert options["grpc.keepalive_time_ms"] == BASE.keepalive_time_ms
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == BASE.min_client_ping_interval_ms
    assert options["grpc.max_connection_age_ms"] == 60_000 and options["grpc.max_concurrent_streams"] == 50
    client = dict(client_channel_options(replace(BASE, keepalive_time_ms=1_000)))
    assert client["grpc.keepalive_time_ms"] >= BASE.min_client_ping_interval_ms


# ---------------------------------------------------------------- health and reflection


def test_health_not_serving_until_warm_then_serving():
    async def test(h: Harness) -> None:
        assert await h.status() == NOT_SERVING
        assert await h.status(SEMANTIC) == NOT_SERVING
        err = await rpc_error(h.generate())
        assert err.code() == grpc.StatusCode.UNAVAILABLE and "not ready" in err.details()

        warmed = asyncio.Event()

        async def warmup() -> None:
            await asyncio.sleep(0.05)
            warmed.set()

        await h.handle.warm_up(warmup)
        assert warmed.is_set()
        assert [await h.status(s) for s in ("", SEMANTIC, CODEC)] == [SERVING] * 3
        assert len(await h.generate()) == 4
        assert h.handle.admission("late").state is AdmissionState.READY
        unknown = await rpc_error(h.health.Check(health_pb2.HealthCheckRequest(service="nope")))
        assert unknown.code() == grpc.StatusCode.NOT_FOUND

    asyncio.run(with_server(test, warm=False))


def test_reflection_lists_services():
    def list_services(target: str) -> tuple[set[str], list[str]]:
        with grpc.insecure_channel(target) as channel:
            db = ProtoReflectionDescriptorDatabase(channel)
            services = set(db.get_services())
            semantic_file = db.FindFileContainingSymbol(SEMANTIC)
            [service] = [s for s in semantic_file.service if s.name == "SemanticService"]
            return services, [m.name for m in service.method]

    async def test(h: Harness) -> None:
        services, methods = await asyncio.to_thread(list_services, h.target)
        assert services == {SEMANTIC, CODEC, "grpc.health.v1.Health",
                            "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
        assert methods == ["Generate"]

    asyncio.run(with_server(test))


def test_reflection_v1_answers_a_v1_client():
    """grpcurl and current clients ask grpc.reflection.v1 first: list, then describe a service and v1 itself."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    def classes() -> tuple[type, type]:
        """The v1 messages, from the descriptor pool the server's reflection registered v1 in."""
        pool = descriptor_pool.Default()
        request, response = (message_factory.GetMessageClass(pool.FindMessageTypeByName(
            f"grpc.reflection.v1.ServerReflection{kind}")) for kind in ("Request", "Response"))
        return request, response

    def ask(target: str, requests: list, response_cls: type) -> list:
        with grpc.insecure_channel(target) as channel:
            call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                         request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=response_cls.FromString)
            return list(call(iter(requests), timeout=10))

    def file_of(response) -> descriptor_pb2.FileDescriptorProto:
        proto = descriptor_pb2.FileDescriptorProto()
        proto.ParseFromString(response.file_descriptor_response.file_descriptor_proto[0])
        return proto

    async def test(h: Harness) -> None:
        request_cls, response_cls = classes()
        listed, semantic, v1 = await asyncio.to_thread(ask, h.target, [
            request_cls(list_services=""), request_cls(file_containing_symbol=SEMANTIC),
            request_cls(file_containing_symbol="grpc.reflection.v1.ServerReflection")], response_cls)
        assert {s.name for s in listed.list_services_response.service} >= {
            SEMANTIC, CODEC, "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
        assert [s.name for s in file_of(semantic).service] == ["SemanticService", "CoarseService", "FineService",
                                                               "CodecService"]
        v1_file = file_of(v1)
        assert (v1_file.name, v1_file.package) == ("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1")
        assert [m.input_type for m in v1_file.service[0].method] == [".grpc.reflection.v1.ServerReflectionRequest"]

    asyncio.run(with_server(test))


# ---------------------------------------------------------------- admission


def test_admission_over_limit_is_resource_exhausted_with_retry_hint():
    async def test(h: Harness) -> None:
        h.semantic.gate.clear()
        first = [asyncio.ensure_future(h.generate()) for _ in range(2)]
        await until(lambda: h.semantic.admission.active == 2)
        err = await rpc_error(h.generate())
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit of 2 concurrent streams" in err.details()
        assert dict(err.trailing_metadata())[RETRY_AFTER_METADATA_KEY] == "250"
        h.semantic.gate.set()
        assert [len(r) for r in await asyncio.gather(*first)] == [4, 4]
        await until(lambda: h.semantic.admission.active == 0)
        assert len(await h.generate()) == 4  # slots are given back

    asyncio.run(with_server(test))


def test_cancelled_stream_frees_its_slot():
    async def test(h: Harness) -> None:
        h.semantic.gate.clear()
        call = h.stub.Generate(stages_pb2.SemanticGenerateRequest(text="x"))
        await until(lambda: h.semantic.admission.active == 1)
        call.cancel()
        await until(lambda: h.semantic.admission.active == 0)

    asyncio.run(with_server(test))


# ---------------------------------------------------------------- drain


def test_drain_finishes_in_flight_and_refuses_new_streams():
    async def test(h: Harness) -> None:
        h.semantic.gate.clear()
        in_flight = asyncio.ensure_future(h.generate(chunk_size=5))
        await until(lambda: h.semantic.admission.active == 1)
        drain = h.handle.request_drain()
        await until(lambda: h.semantic.admission.state is AdmissionState.DRAINING)
        assert await h.status() == NOT_SERVING and await h.status(SEMANTIC) == NOT_SERVING
        err = await rpc_error(h.generate())
        assert err.code() == grpc.StatusCode.UNAVAILABLE and "draining" in err.details()
        await h.handle.warm_up()  # a late warm-up cannot bring a draining server back
        assert await h.status() == NOT_SERVING
        assert not drain.done()
        h.semantic.gate.set()
        messages = await in_flight
        assert [m.WhichOneof("payload") for m in messages] == ["chunk"] * 5 + ["end"]
        await asyncio.wait_for(drain, 5)

    asyncio.run(with_server(test))


def test_drain_cancels_streams_still_running_after_grace():
    async def test(h: Harness) -> None:
        h.semantic.gate.clear()
        in_flight = asyncio.ensure_future(h.generate())
        await until(lambda: h.semantic.admission.active == 1)
        started = time.monotonic()
        await asyncio.wait_for(h.handle.drain(), 5)
        assert 0.25 <= time.monotonic() - started < 3
        err = await rpc_error(in_flight)
        assert err.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)

    asyncio.run(with_server(test, replace(BASE, drain_grace_s=0.3)))


def test_failed_warm_up_stops_the_server_and_raises():
    async def run() -> None:
        handle = ServerHandle(BASE, [SEMANTIC])

        async def warmup() -> None:
            raise RuntimeError("checkpoint not found")

        with pytest.raises(RuntimeError, match="checkpoint not found"):
            await handle.serve(warmup, handle_signals=False)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            err = await rpc_error(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                                            timeout=2))
            assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    asyncio.run(run())


def test_drain_during_warm_up_cancels_it_and_serve_returns():
    async def run() -> None:
        handle = ServerHandle(BASE, [SEMANTIC])
        handle.admission("semantic")
        cancelled = asyncio.Event()

        async def warmup() -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        serving = asyncio.ensure_future(handle.serve(warmup, handle_signals=False))
        await until(lambda: handle.port is not None)
        await asyncio.sleep(0.05)
        handle.request_drain()
        await asyncio.wait_for(serving, 5)
        assert cancelled.is_set()

    asyncio.run(run())


def test_sigterm_drains_and_exits_cleanly():
    script = textwrap.dedent("""
        import asyncio, logging, sys
        from barkstream.services.common.config import ServerConfig
        from barkstream.services.common.server import run_server
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        async def warmup():
            await asyncio.sleep(0.01)
        asyncio.run(run_server(ServerConfig(host="127.0.0.1", port=0), lambda server, handle: None,
                               ["barkstream.v1.SemanticService"], warmup))
        print("exited", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "warm-up done" in line:
                break
        assert any("listening on 127.0.0.1:0" in line for line in lines), lines
        proc.terminate()  # SIGTERM
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "draining" in out and "stopped" in out and out.rstrip().endswith("exited")


# ---------------------------------------------------------------- deadlines and errors


def test_deadline_reaches_the_downstream_stage():
    async def test(h: Harness) -> None:
        seen = (await h.generate("relay", timeout=4.0))[0].end.request_id
        # The client's 4 s minus the 1 s margin; gRPC's wire encoding may round it up by < 0.1 s.
        assert 2.5 < float(seen) <= 3.1
        assert (await h.generate("relay", timeout=None))[0].end.request_id == "none"

    asyncio.run(with_server(test))


def test_invalid_request_is_invalid_argument_with_the_message():
    async def test(h: Harness) -> None:
        err = await rpc_error(h.generate("invalid"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details() == "text: 'invalid' is not allowed; send other text"
        assert h.semantic.admission.active == 0

    asyncio.run(with_server(test))


class DownstreamError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailing=()) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


class AbortingContext:
    def __init__(self) -> None:
        self.aborted: tuple | None = None

    async def abort(self, code, details="", trailing_metadata=()):
        self.aborted = (code, details, tuple(trailing_metadata))
        raise grpc.aio.AbortError()


@pytest.mark.parametrize(("raised", "code", "details", "trailing"), [
    (ValueError("bad voice"), grpc.StatusCode.INVALID_ARGUMENT, "bad voice", ()),
    (DownstreamError(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", [("retry-after-ms", "90"), ("x", "y")]),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "coarse stage: full", (("retry-after-ms", "90"),)),
    (DownstreamError(grpc.StatusCode.INVALID_ARGUMENT, "top_k=0"), grpc.StatusCode.INVALID_ARGUMENT,
     "coarse stage: top_k=0", ()),
    (DownstreamError(grpc.StatusCode.UNKNOWN, "boom"), grpc.StatusCode.INTERNAL,
     "coarse stage: internal error (UNKNOWN)", ()),
    (TimeoutError(), grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded", ()),
    (KeyError("bug"), grpc.StatusCode.INTERNAL, "internal error; the server log has the details", ()),
])
def test_abort_on_error_mapping(raised, code, details, trailing):
    async def run() -> tuple:
        context = AbortingContext()
        with pytest.raises(grpc.aio.AbortError):
            async with abort_on_error(context, invalid=(ValueError,), where="coarse stage"):
                raise raised
        return context.aborted

    assert asyncio.run(run()) == (code, details, trailing)


def test_abort_on_error_leaves_cancellation_alone():
    async def run() -> None:
        context = AbortingContext()
        with pytest.raises(asyncio.CancelledError):
            async with abort_on_error(context):
                raise asyncio.CancelledError()
        assert context.aborted is None

    asyncio.run(run())

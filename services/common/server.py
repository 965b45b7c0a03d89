"""Bootstrap shared by every barkstream server (grpc.aio; no torch).

Lifecycle of a server process:
  1. bind the port and start with health NOT_SERVING and admission refusing streams
     (UNAVAILABLE), so probes can see the process while the model loads;
  2. run the warm-up (load weights, one dummy pass), then health SERVING, admission open;
  3. on SIGTERM/SIGINT drain: health NOT_SERVING for good, new streams UNAVAILABLE, wait for
     in-flight streams up to `drain_grace_s`, then stop (cancelling whatever still runs).
     A second signal stops at once.

Every streaming RPC must hold a slot of an Admission made by `ServerHandle.admission`,
because that count is what the drain waits for.

    def register(server, handle):
        stages_pb2_grpc.add_SemanticServiceServicer_to_server(
            SemanticServicer(engine, handle.admission("semantic")), server)

    asyncio.run(run_server(config, register, [SEMANTIC_SERVICE_NAME], warmup=engine.warm_up))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from barkstream.services.common.admission import Admission
from barkstream.services.common.config import ServerConfig
from barkstream.services.common.health import Health
from barkstream.services.common.reflection import enable_reflection
from barkstream.services.common.request_log import RequestLog
from barkstream.services.common.tls import server_credentials
from barkstream.services.common.undecodable import RejectUndecodable

log = logging.getLogger(__name__)

Warmup = Callable[[], Awaitable[None]]
Register = Callable[[grpc.aio.Server, "ServerHandle"], None]

# After every admitted stream has finished, what still runs is unary calls (milliseconds) and
# health watches (which never end on their own): a short final grace serves the former
# without waiting on the latter.
FINAL_STOP_GRACE_S = 1.0


def server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """grpc channel arguments for the server side of `config`."""
    options = [
        ("grpc.max_send_message_length", config.max_send_message_bytes),
        ("grpc.max_receive_message_length", config.max_receive_message_bytes),
        ("grpc.keepalive_time_ms", config.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", config.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        # Server side: the shortest interval between client pings it accepts without a GOAWAY.
        ("grpc.http2.min_ping_interval_without_data_ms", config.min_client_ping_interval_ms),
        ("grpc.http2.max_pings_without_data", 0),
        # Two servers silently sharing one port would split traffic between old and new code.
        ("grpc.so_reuseport", 0),
    ]
    if config.http2_max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", config.http2_max_concurrent_streams))
    if config.max_connection_age_ms:
        options.append(("grpc.max_connection_age_ms", config.max_connection_age_ms))
        if config.max_connection_age_grace_ms:
            options.append(("grpc.max_connection_age_grace_ms", config.max_connection_age_grace_ms))
    return options


def client_channel_options(config: ServerConfig) -> list[tuple[str, int]]:
    """Options for the orchestrator's channels to the stages, consistent with their servers.

    Client pings are spaced no closer than the servers tolerate, or they would answer with
    GOAWAY (too_many_pings).
    """
    return [
        ("grpc.max_send_message_length", config.max_send_message_bytes),
        ("grpc.max_receive_message_length", config.max_receive_message_bytes),
        ("grpc.keepalive_time_ms", max(config.keepalive_time_ms, config.min_client_ping_interval_ms)),
        ("grpc.keepalive_timeout_ms", config.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


class ServerHandle:
    """One grpc.aio server with health, reflection, admission and drain.

    Construct it inside the running event loop (grpc.aio binds the server to it).
    """

    def __init__(self, config: ServerConfig, service_names: Sequence[str],
                 interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> None:
        """interceptors: e.g. the orchestrator's authentication (auth.FrontDoorInterceptor)."""
        self.config = config
        self.service_names = tuple(service_names)
        # Read the certificates now: a bad path fails the start, not the first request.
        self.credentials = server_credentials(config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file)
        # The request log outermost (calls refused by the other interceptors get their line too),
        # undecodable requests innermost (refused after authentication, inside the server span).
        self.server = grpc.aio.server(options=server_options(config), interceptors=[
            RequestLog(config.log_format), *interceptors, RejectUndecodable()])
        self.health = Health(self.service_names)
        self.port: int | None = None
        self._ready = False
        self._admissions: list[Admission] = []
        self._inner: list[Admission] = []
        self._warmup: asyncio.Task[None] | None = None
        self._drain: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    def admission(self, name: str, max_streams: int | None = None, *, inner: bool = False) -> Admission:
        """A new Admission for one servicer; the limit defaults to config.max_concurrent_streams.

        inner: the servicer also serves streams this process opens itself (the stages of the
        embedded server, called by its own orchestrator). A drain first refuses new streams on
        the other admissions and keeps inner ones admitting until those are idle, so a stream
        in flight can still open the stage streams of its later segments.
        """
        gate = Admission(name, max_streams or self.config.max_concurrent_streams, self.config.retry_after_ms)
        if self._drain is not None:
            gate.start_draining()
        elif self._ready:
            gate.mark_ready()
        self._admissions.append(gate)
        if inner:
            self._inner.append(gate)
        return gate

    @property
    def admissions(self) -> tuple[Admission, ...]:
        return tuple(self._admissions)

    @property
    def draining(self) -> bool:
        return self._drain is not None

    async def start(self) -> int:
        """Register health and reflection, bind, start NOT_SERVING. Returns the bound port."""
        await self.health.set_serving(False)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.server)
        enable_reflection((*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
                          self.server)
        if self.credentials is None:
            self.port = self.server.add_insecure_port(self.config.address)
        else:
            self.port = self.server.add_secure_port(self.config.address, self.credentials)
        await self.server.start()
        log.info("listening on %s (port %d) over %s, NOT_SERVING until warm-up completes", self.config.address,
                 self.port, _transport(self.config))
        return self.port

    async def warm_up(self, warmup: Warmup | None = None) -> None:
        """Run `warmup`, then open admission and report SERVING."""
        if warmup is not None:
            await warmup()
        self._ready = True
        for gate in self._admissions:
            gate.mark_ready()
        await self.health.set_serving(True)
        log.info("warm-up done: SERVING %s", ", ".join(self.service_names))

    def request_drain(self) -> asyncio.Task[None]:
        """Start draining (idempotent); the returned task finishes when the server has stopped."""
        if self._drain is None:
            self._drain = asyncio.ensure_future(self._run_drain())
        return self._drain

    async def drain(self) -> None:
        await self.request_drain()

    async def _run_drain(self) -> None:
        grace = self.config.drain_grace_s
        log.info("draining: NOT_SERVING, refusing new streams, %d in flight, grace %.1f s",
                 sum(g.active for g in self._admissions), grace)
        if self._warmup is not None and not self._warmup.done():
            self._warmup.cancel()
        front = [g for g in self._admissions if g not in self._inner]
        for gate in front:
            gate.start_draining()
        await self.health.shut_down()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        try:
            await asyncio.wait_for(asyncio.gather(*(g.wait_idle() for g in front)), grace)
            for gate in self._inner:
                gate.start_draining()
            await asyncio.wait_for(asyncio.gather(*(g.wait_idle() for g in self._inner)),
                                   max(0.0, deadline - loop.time()))
        except TimeoutError:
            log.warning("drain grace over: cancelling %d streams", sum(g.active for g in self._admissions))
        for gate in self._inner:
            gate.start_draining()
        await self.server.stop(min(max(0.0, deadline - loop.time()), FINAL_STOP_GRACE_S))
        self._stopped.set()
        log.info("stopped")

    async def stop_now(self) -> None:
        """Stop without waiting (second signal, failed warm-up)."""
        await self.server.stop(None)
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT drain; a second one stops at once. Main thread only."""
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if self._drain is None:
                log.info("%s: draining", signal.Signals(signum).name)
                self.request_drain()
            else:
                log.warning("%s again: stopping now", signal.Signals(signum).name)
                asyncio.ensure_future(self.stop_now())

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)

    def remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)

    async def serve(self, warmup: Warmup | None = None, *, handle_signals: bool = True) -> None:
        """Start, warm up, and serve until drained or stopped. A failed warm-up stops and raises."""
        await self.start()
        if handle_signals:
            self.install_signal_handlers()
        try:
            self._warmup = asyncio.ensure_future(self.warm_up(warmup))
            try:
                await self._warmup
            except asyncio.CancelledError:
                if not self.draining:
                    raise
                log.info("warm-up cancelled by drain")
            await self.wait_stopped()
        finally:
            if handle_signals:
                self.remove_signal_handlers()
            if not self._stopped.is_set():
                with contextlib.suppress(Exception):
                    await self.stop_now()


def _transport(config: ServerConfig) -> str:
    if config.tls_client_ca_file:
        return "mutual TLS: client certificates required"
    return "TLS" if config.tls_cert_file else "plaintext"


async def run_server(config: ServerConfig, register: Register, service_names: Sequence[str],
                     warmup: Warmup | None = None, *, handle_signals: bool = True) -> None:
    """Build a server, let `register(server, handle)` add servicers, then serve until drained."""
    handle = ServerHandle(config, service_names)
    register(handle.server, handle)
    await handle.serve(warmup, handle_signals=handle_signals)

"""Running the gateway under uvicorn: alone (`barkstream serve gateway`) or beside the embedded gRPC
server in the same event loop (`barkstream serve --http-port`).

Drain: readiness turns 503 first (the load balancer stops sending), then uvicorn stops accepting
and gives open responses and sessions `drain_grace_s` to finish before it cancels them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn

from ..common.config import ServerConfig
from ..telemetry import Telemetry
from .app import Gateway
from .auth import HttpAuth
from .config import DEFAULT_HTTP_PORT, GatewayConfig
from .upstream import Upstream

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process's owner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayServer:
    def __init__(self, config: GatewayConfig, server: ServerConfig, target: str, *,
                 auth_token_file: str = "", auth_token: str = "", telemetry: Telemetry | None = None,
                 port: int | None = None) -> None:
        """port: overrides config.http_port (tests pass 0 for any free port)."""
        self.config = config
        upstream = Upstream(target, ca_file=config.target_ca_file, server_name=config.target_server_name,
                            telemetry=telemetry)
        self.gateway = Gateway(config, upstream, HttpAuth(auth_token_file, auth_token), telemetry)
        port = (config.http_port or DEFAULT_HTTP_PORT) if port is None else port
        self.socket = socket.create_server((config.http_host, port),
                                           family=socket.AF_INET6 if ":" in config.http_host else socket.AF_INET)
        self.port: int = self.socket.getsockname()[1]
        self.uvicorn = _Server(uvicorn.Config(
            self.gateway.app, ws="websockets-sansio", ws_max_size=config.max_ws_message_bytes, lifespan="off",
            timeout_graceful_shutdown=int(server.drain_grace_s) or None, log_level="warning",
            ssl_certfile=server.tls_cert_file or None, ssl_keyfile=server.tls_key_file or None))

    async def serve(self) -> None:
        log.info("HTTP gateway on %s://%s:%d -> orchestrator %s", "https" if self.uvicorn.config.ssl_keyfile
                 else "http", self.config.http_host, self.port, self.gateway.upstream.config.target)
        try:
            await self.uvicorn.serve(sockets=[self.socket])
        finally:
            await self.gateway.upstream.close()

    def drain(self) -> None:
        self.gateway.draining = True
        self.uvicorn.should_exit = True


async def serve_alone(gateway: GatewayServer) -> None:
    """`barkstream serve gateway`: SIGTERM/SIGINT drain; a second one stops at once."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if gateway.gateway.draining:
            gateway.uvicorn.force_exit = True
        gateway.drain()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await gateway.serve()


async def serve_beside(app, config: GatewayConfig, server: ServerConfig, *, auth_token_file: str = "",
                       auth_token: str = "", telemetry: Telemetry | None = None) -> None:
    """The embedded server (`app`, a services.app.App) and the gateway, which dials the app's own port.

    The app owns the signals: on SIGTERM it drains its gRPC streams (the gateway's calls among them)
    while the gateway's readiness says draining; when the app is done, the gateway stops.
    """
    task = asyncio.ensure_future(app.serve())
    while app.handle.port is None and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        return await task
    tls = bool(server.tls_cert_file)
    if tls and not config.target_ca_file:
        # The app's own certificate is the root to trust when it is self-signed (the usual dev setup).
        from dataclasses import replace

        config = replace(config, target_ca_file=server.tls_cert_file)
    gateway = GatewayServer(config, server, f"127.0.0.1:{app.handle.port}", auth_token_file=auth_token_file,
                            auth_token=auth_token, telemetry=telemetry)
    front = asyncio.ensure_future(gateway.serve())
    try:
        await task
    finally:
        gateway.drain()
        await front

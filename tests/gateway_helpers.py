"""The HTTP gateway in a background thread (its own event loop), in front of a running orchestrator."""

from __future__ import annotations

import asyncio
import threading

from barkstream.services.common.config import ServerConfig
from barkstream.services.gateway.config import GatewayConfig
from barkstream.services.gateway.server import GatewayServer


class GatewayThread:
    def __init__(self, target: str, config: GatewayConfig | None = None, *, server: ServerConfig | None = None,
                 auth_token: str = "", telemetry=None) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.server = GatewayServer(config or GatewayConfig(http_host="127.0.0.1"),
                                            server or ServerConfig(drain_grace_s=2.0), target,
                                            auth_token=auth_token, telemetry=telemetry, port=0)
                ready.set()
                self.loop.run_until_complete(self.server.serve())
            except BaseException as e:  # noqa: BLE001 - reported to the test
                self.error = e
                ready.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(30)
        if self.error is not None:
            raise self.error
        self.port = self.server.port
        scheme = "https" if server is not None and server.tls_cert_file else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.ws_url = f"{'wss' if scheme == 'https' else 'ws'}://127.0.0.1:{self.port}/v1/audio/ws"
        self.wait_started()

    def wait_started(self, timeout: float = 30.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while not self.server.uvicorn.started:
            if self.error is not None or time.monotonic() > deadline:
                raise self.error or TimeoutError("gateway did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.drain)
        self.thread.join(30)

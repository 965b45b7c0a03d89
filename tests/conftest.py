"""Shared fixtures: one tiny random checkpoint per test session, written in the real HF layout."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory):
    from barkstream.services.model.checkpoint import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", size="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_checkpoint_dir):
    from barkstream.services.model.weights import load_checkpoint

    return load_checkpoint(tiny_checkpoint_dir)


@pytest.fixture(scope="session")
def tiny_models(tiny_checkpoint):
    from barkstream.services.stages.models import load_stage_models

    return load_stage_models(tiny_checkpoint)


@pytest.fixture(scope="session")
def tokenizer(tiny_checkpoint):
    from barkstream.services.bark.tokenizer import BarkTokenizer

    return BarkTokenizer.from_dir(tiny_checkpoint.tokenizer_dir())


@pytest.fixture()
def synthesizer(tiny_models, tokenizer):
    from barkstream.services.stages.pipeline import Synthesizer

    return Synthesizer(tiny_models, tokenizer)


class EmbeddedServer:
    """An App serving on 127.0.0.1 from a background thread with its own event loop."""

    def __init__(self, role: str, serve_config, server_config=None):
        import asyncio
        import threading

        from barkstream.services.app import App
        from barkstream.services.common.config import ServerConfig

        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.error: BaseException | None = None
        server_config = server_config or ServerConfig(host="127.0.0.1", port=0, drain_grace_s=5.0)

        async def main() -> None:
            self.app = App(role, serve_config, server_config)
            task = asyncio.ensure_future(self.app.serve(handle_signals=False))
            while self.app.handle.port is None and not task.done():
                await asyncio.sleep(0.01)
            self.started.set()
            await task

        def run() -> None:
            try:
                self.loop.run_until_complete(main())
            except BaseException as e:  # noqa: BLE001 - reported to the test
                self.error = e
            finally:
                self.started.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.started.wait(60)
        if self.error is not None:
            raise self.error
        self.port = self.app.handle.port
        self.target = f"127.0.0.1:{self.port}"
        self.wait_serving()

    def wait_serving(self, timeout: float = 120.0) -> None:
        import time

        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                if self.error is not None:
                    raise self.error
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                            health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise TimeoutError(f"server on {self.target} not SERVING after {timeout} s")

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.app.handle.request_drain)
        self.thread.join(30)


@pytest.fixture(scope="session")
def embedded_server(tiny_checkpoint_dir):
    """All five services in one process on one port (the embedded default), tiny random checkpoint."""
    from barkstream.services.app import ServeConfig

    server = EmbeddedServer("all", ServeConfig(checkpoint=str(tiny_checkpoint_dir)))
    yield server
    server.stop()

"""Shared fixtures: one tiny random checkpoint per test session, written in the real HF layout."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory):
    from barkstream.services.checkpoint.random_writer import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", size="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_checkpoint_dir):
    from barkstream.services.checkpoint.load import load_checkpoint

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


def wait_for_health(target: str, timeout: float = 120.0, failed=lambda: None) -> None:
    """Poll grpc.health.v1 on `target` until SERVING; `failed()` returns an error to raise early."""
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            error = failed()
            if error is not None:
                raise error
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"server on {target} not SERVING after {timeout} s")


class EmbeddedServer:
    """An App serving on 127.0.0.1 from a background thread with its own event loop."""

    def __init__(self, role: str, serve_config, server_config=None, hold_warmup=None, telemetry=None):
        """hold_warmup: a threading.Event the warm-up waits for (the server stays NOT_SERVING until set).
        telemetry: a services.telemetry.Telemetry for the App (default: off)."""
        import asyncio
        import threading

        from barkstream.services.app import App
        from barkstream.services.common.config import ServerConfig

        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.error: BaseException | None = None
        server_config = server_config or ServerConfig(host="127.0.0.1", port=0, drain_grace_s=5.0)

        async def main() -> None:
            self.app = App(role, serve_config, server_config, telemetry=telemetry)
            if hold_warmup is not None:
                warmup = self.app.warmup

                async def held() -> None:
                    await asyncio.to_thread(hold_warmup.wait)
                    await warmup()

                self.app.warmup = held
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
        if hold_warmup is None:
            self.wait_serving()

    def wait_serving(self, timeout: float = 120.0) -> None:
        wait_for_health(self.target, timeout, lambda: self.error)

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


@pytest.fixture()
def server(embedded_server):
    """The shared embedded server, checked idle before and after each test (no leaked slots or rows)."""
    from .service_helpers import engine_load, idle, poll

    app = embedded_server.app
    assert poll(lambda: idle(app)), f"server busy before the test: {engine_load(app)}"
    yield embedded_server
    assert poll(lambda: idle(app)), f"server still holds work after the test: {engine_load(app)}"


class ServeProcess:
    """One `barkstream serve ROLE` subprocess on 127.0.0.1, a free port (read from its log), stopped by pid."""

    def __init__(self, role: str, args, log_path, env=None) -> None:
        """env: variables added to this process's environment (e.g. OTEL_*)."""
        import os
        import subprocess
        import sys

        self.role = role
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "barkstream.client.cli", "serve", role, "--host", "127.0.0.1", "--port", "0",
             *args], stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=None if env is None else {**os.environ, **env})
        self.pid = self.proc.pid
        self.port: int | None = None
        self._terminated = False

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.wait_port()}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_port(self, timeout: float = 60.0) -> int:
        import re
        import time

        deadline = time.monotonic() + timeout
        while self.port is None:
            match = re.search(r"listening on \S+ \(port (\d+)\)", self.log())
            if match:
                self.port = int(match.group(1))
            elif self.proc.poll() is not None:
                raise RuntimeError(f"{self.role} server exited with {self.proc.returncode}:\n{self.log()}")
            elif time.monotonic() > deadline:
                raise TimeoutError(f"{self.role} server did not bind in {timeout} s:\n{self.log()}")
            else:
                time.sleep(0.05)
        return self.port

    def wait_serving(self, timeout: float = 120.0) -> None:
        def failed() -> BaseException | None:
            if self.proc.poll() is None:
                return None
            return RuntimeError(f"{self.role} server exited with {self.proc.returncode}:\n{self.log()}")

        wait_for_health(self.target, timeout, failed)

    def terminate(self) -> None:
        """SIGTERM once: start a graceful drain (a second SIGTERM would mean "stop now")."""
        if not self._terminated and self.proc.poll() is None:
            self._terminated = True
            self.proc.terminate()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful drain), then SIGKILL after `timeout`; returns the exit status."""
        import subprocess

        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


class SplitCluster:
    """The split deployment: four stage processes and an orchestrator pointed at them."""

    def __init__(self, checkpoint_dir, log_dir, extra_args=(), env=None) -> None:
        """env: {role: {variable: value}} added to that process's environment."""
        ckpt = ["--checkpoint", str(checkpoint_dir), *extra_args]
        env = env or {}
        self.procs: dict[str, ServeProcess] = {}
        try:
            for role in ("semantic", "coarse", "fine", "codec"):
                self.procs[role] = ServeProcess(role, ckpt, log_dir / f"{role}.log", env.get(role))
            targets = [f"--{role}-target={p.target}" for role, p in self.procs.items()]
            self.procs["orchestrator"] = ServeProcess("orchestrator", [*ckpt, *targets], log_dir / "orchestrator.log",
                                                      env.get("orchestrator"))
            for p in self.procs.values():
                p.wait_serving()
        except BaseException:
            self.stop()
            raise
        self.target = self.procs["orchestrator"].target

    def stop(self) -> dict[str, int]:
        """Drain every process at once; their exit statuses by role."""
        for p in self.procs.values():
            p.terminate()
        return {role: p.stop() for role, p in self.procs.items()}


@pytest.fixture(scope="module")
def split_cluster(tiny_checkpoint_dir, tmp_path_factory):
    """Five `barkstream serve <role>` processes on free loopback ports, tiny random checkpoint."""
    cluster = SplitCluster(tiny_checkpoint_dir, tmp_path_factory.mktemp("split-logs"))
    yield cluster
    cluster.stop()

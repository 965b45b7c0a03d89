"""Helpers of the reliability and security tests: split clusters with replicas on fixed ports.

`Cluster` runs every process as a real `barkstream serve ROLE` subprocess (flags end to end),
several replicas per stage where asked, each on a port chosen up front so that a replica can
be killed and restarted on the same address, as a Kubernetes pod behind a stable name would.
Processes are stopped by their own pid only.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

from .conftest import ServeProcess

STAGE_ROLES = ("semantic", "coarse", "fine", "codec")


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_log(proc: ServeProcess, needle: str, timeout: float = 120.0) -> None:
    """Wait until `needle` appears in the process's log (e.g. "warm-up done" for a TLS server)."""
    deadline = time.monotonic() + timeout
    while needle not in proc.log():
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.role} exited with {proc.proc.returncode}:\n{proc.log()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.role}: no {needle!r} after {timeout} s:\n{proc.log()}")
        time.sleep(0.05)


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


class Cluster:
    """Stage replicas and an orchestrator as subprocesses on fixed loopback ports.

    replicas: {role: count} (default one of each); stage_args / orchestrator_args: extra flags;
    secure: the servers speak TLS, so readiness is read from the log instead of a plaintext
    health check; orchestrator_env: variables added to the orchestrator's environment.
    """

    def __init__(self, checkpoint_dir: Path, log_dir: Path, *, replicas: Mapping[str, int] | None = None,
                 stage_args: Sequence[str] = (), orchestrator_args: Sequence[str] = (), secure: bool = False,
                 orchestrator_env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.orchestrator_env = dict(orchestrator_env or {})
        self.secure = secure
        self.common = ["--checkpoint", str(checkpoint_dir)]
        self.stage_args = list(stage_args)
        self.procs: dict[str, ServeProcess] = {}
        self.ports: dict[str, int] = {}
        self.roles: dict[str, str] = {}
        self._starts: dict[str, int] = {}
        counts = {role: (replicas or {}).get(role, 1) for role in STAGE_ROLES}
        for role, n in counts.items():
            for i in range(n):
                name = f"{role}-{i}"
                self.roles[name], self.ports[name] = role, free_port()
        targets = [f"--{role}-target=" + ",".join(f"127.0.0.1:{self.ports[f'{role}-{i}']}" for i in range(n))
                   for role, n in counts.items()]
        self.roles["orchestrator"], self.ports["orchestrator"] = "orchestrator", free_port()
        self.orchestrator_args = [*targets, *orchestrator_args]
        try:
            for name in self.roles:
                self.start(name, wait=False)
            for name in self.roles:
                self.wait_ready(name)
        except BaseException:
            self.stop()
            raise
        self.target = f"127.0.0.1:{self.ports['orchestrator']}"

    def stage_names(self, role: str) -> list[str]:
        return [n for n, r in self.roles.items() if r == role]

    def start(self, name: str, *, wait: bool = True) -> ServeProcess:
        """(Re)start process `name` on its port; the previous one must have exited."""
        role = self.roles[name]
        args = self.orchestrator_args if role == "orchestrator" else self.stage_args
        self._starts[name] = self._starts.get(name, 0) + 1
        log = self.log_dir / f"{name}.{self._starts[name]}.log"
        env = self.orchestrator_env if role == "orchestrator" and self.orchestrator_env else None
        self.procs[name] = proc = ServeProcess(role, [*self.common, *args, "--port", str(self.ports[name])], log, env)
        if wait:
            self.wait_ready(name)
        return proc

    def wait_ready(self, name: str, timeout: float = 120.0) -> None:
        proc = self.procs[name]
        if self.secure:
            wait_log(proc, "warm-up done", timeout)
        else:
            proc.wait_serving(timeout)

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def signal(self, name: str, signum: int) -> None:
        os.kill(self.procs[name].pid, signum)

    def kill(self, name: str) -> None:
        """SIGKILL: the process vanishes mid-whatever (a crashed pod, an OOM kill)."""
        self.procs[name].proc.kill()
        self.procs[name].proc.wait(10)

    def freeze(self, name: str) -> None:
        """SIGSTOP: the process keeps its connections but answers nothing (a hung replica)."""
        self.signal(name, signal.SIGSTOP)

    def log(self, name: str) -> str:
        return self.procs[name].log()

    def stop(self) -> dict[str, int]:
        """SIGTERM everything still running (continuing frozen ones first), then wait; exit codes by name."""
        for proc in self.procs.values():
            if proc.proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        return {name: proc.stop() for name, proc in self.procs.items()}


def poll_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True

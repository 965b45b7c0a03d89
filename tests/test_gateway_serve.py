"""The gateway as users start it: `barkstream serve --http-port` (gRPC and HTTP from one process, what
`make serve` runs) and `barkstream serve gateway --target` (its own torch-free process)."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from .conftest import ServeProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BODY = {"model": "tts-1", "voice": "v2/en_speaker_0", "input": "Hello there.", "response_format": "pcm",
        "max_duration": 0.3, "seed": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: ServeProcess, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.proc.returncode}:\n{proc.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"gateway on {port} not ready:\n{proc.log()}")


def speak(port: int) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/audio/speech", json.dumps(BODY).encode(),
                                 {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.status == 200 and r.headers["content-type"] == "audio/pcm"
        return r.read()


def test_embedded_server_serves_grpc_and_http(tiny_checkpoint_dir, tmp_path):
    port = free_port()
    proc = ServeProcess("all", ["--checkpoint", str(tiny_checkpoint_dir), "--http-port", str(port),
                                "--http-host", "127.0.0.1"], tmp_path / "all.log")
    try:
        proc.wait_serving()
        wait_ready(port, proc)
        assert len(speak(port)) > 0
    finally:
        assert proc.stop() == 0, proc.log()
    assert f"HTTP gateway on http://127.0.0.1:{port}" in proc.log()


def test_split_gateway_is_its_own_torch_free_process(embedded_server, tmp_path):
    port = free_port()
    proc = ServeProcess("gateway", ["--target", embedded_server.target, "--http-port", str(port),
                                    "--http-host", "127.0.0.1"], tmp_path / "gateway.log")
    try:
        wait_ready(port, proc)
        assert len(speak(port)) > 0
        maps = open(f"/proc/{proc.pid}/maps").read()
        assert "libtorch" not in maps and "torch/lib" not in maps
    finally:
        assert proc.stop() == 0, proc.log()

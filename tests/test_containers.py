"""Container-level tests: the image built from the repo's Dockerfile, five services as five containers.

The image is built by scripts/build-image.sh (a local debootstrap base, a host-gathered wheelhouse, the CPU
build of torch); BARKSTREAM_TEST_IMAGE=NAME uses an already built image instead. The four stages and the
orchestrator run as containers on one user network (the orchestrator reaches the stages by their network
aliases through `dns:///` targets), non-root, with a read-only root file system and the tiny random checkpoint
mounted read-only; the host talks to the orchestrator through its port published on 127.0.0.1.

Without a reachable docker engine these tests skip (with the reason); under CI (CI=true) they fail instead,
since .ci/run starts the engine (scripts/ci-docker.sh) and they must run there.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

# testcontainers reads these at import time; Ryuk's image cannot be pulled here, and /.dockerenv on our
# machines would otherwise make testcontainers look for the engine from inside a container.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")

from barkstream.v1 import tts_pb2  # noqa: E402

from .service_helpers import ONE_SEGMENT, THREE_SEGMENTS, VOICE, offline_synthesis, synth_request  # noqa: E402

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = os.environ.get("BASE_IMAGE", "local/debian:bookworm")
IMAGE = os.environ.get("BARKSTREAM_TEST_IMAGE", "")
PORTS = {"semantic": 50061, "coarse": 50062, "fine": 50063, "codec": 50064, "orchestrator": 50051}
STAGES = ("semantic", "coarse", "fine", "codec")
NON_ROOT_UID = 10001


def _unavailable(reason: str):
    """Skip on a dev machine without an engine; fail under CI, where .ci/run provides one."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"container tests must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def docker_client():
    try:
        import docker
        import testcontainers  # noqa: F401
    except ImportError as e:
        _unavailable(f"{e.name} is not installed (pip install -e '.[test]')")
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure means "no engine here"
        _unavailable(f"no docker engine reachable ({type(e).__name__}); scripts/ci-docker.sh installs and starts one")
    yield client
    client.close()


@pytest.fixture(scope="module")
def image(docker_client) -> str:
    """The image under test: BARKSTREAM_TEST_IMAGE as is, else built from the Dockerfile on the local base."""
    import docker.errors

    if IMAGE:
        try:
            docker_client.images.get(IMAGE)
        except docker.errors.ImageNotFound:
            _unavailable(f"BARKSTREAM_TEST_IMAGE={IMAGE} is not a local image")
        return IMAGE
    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        _unavailable(f"base image {BASE_IMAGE} missing: scripts/ci-docker.sh makes it (debootstrap + docker import)")
    name = "barkstream:cpu"
    # Layer caching makes this a few seconds when .ci/run (make docker-image) has built it already.
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build-image.sh")], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "IMAGE": name, "BASE_IMAGE": BASE_IMAGE}, timeout=1500)
    assert proc.returncode == 0, f"image build failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
    return name


@pytest.fixture(scope="module")
def container_checkpoint(tiny_checkpoint_dir) -> Path:
    """The tiny checkpoint, readable by the containers' non-root user (bind-mounted read-only)."""
    root = Path(tiny_checkpoint_dir)
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        extra = stat.S_IROTH | stat.S_IRGRP | ((stat.S_IXOTH | stat.S_IXGRP) if path.is_dir() else 0)
        path.chmod(mode | extra)
    return root


class Cluster:
    """Four stage containers and an orchestrator on one docker network."""

    def __init__(self, image: str, checkpoint: Path):
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.network import Network

        self.network = Network().create()
        self.containers: dict[str, DockerContainer] = {}
        try:
            for role in (*STAGES, "orchestrator"):
                env = {"BARKSTREAM_DRAIN_GRACE_S": "1", "BARKSTREAM_LOG_LEVEL": "INFO"}
                if role == "orchestrator":
                    env.update({f"BARKSTREAM_{s.upper()}_TARGET": f"dns:///{s}:{PORTS[s]}" for s in STAGES})
                c = (DockerContainer(image)
                     .with_command(["serve", role])
                     .with_network(self.network)
                     .with_network_aliases(role)
                     .with_volume_mapping(str(checkpoint), "/checkpoint", "ro")
                     .with_tmpfs_mount("/tmp")
                     .with_envs(**env)
                     .with_kwargs(read_only=True, stop_signal="SIGTERM",
                                  labels={"org.barkstream.test": "test_containers"}))
                c.ports[str(PORTS[role])] = ("127.0.0.1", None)  # published on loopback only, any free port
                self.containers[role] = c.start()
            for role in self.containers:
                self.wait_serving(role)
        except BaseException:
            self.close()
            raise

    def target(self, role: str) -> str:
        c = self.containers[role]
        return f"127.0.0.1:{c.get_docker_client().port(c.get_container_id(), PORTS[role])}"

    def logs(self, role: str, tail: int = 60) -> str:
        try:
            return self.containers[role].get_wrapped_container().logs(tail=tail).decode(errors="replace")
        except Exception as e:  # noqa: BLE001 - diagnostics only
            return f"(no logs: {e})"

    def wait_serving(self, role: str, timeout: float = 180.0) -> None:
        """Poll grpc.health.v1 through the published port until SERVING (not the port: docker-proxy
        accepts connections before the server listens)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        wrapped = self.containers[role].get_wrapped_container()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wrapped.reload()
            if wrapped.status in ("exited", "dead"):
                raise RuntimeError(f"{role} container {wrapped.status}:\n{self.logs(role)}")
            try:
                with grpc.insecure_channel(self.target(role)) as ch:
                    reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except (grpc.RpcError, ConnectionError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{role} not SERVING after {timeout} s:\n{self.logs(role)}")

    def close(self) -> None:
        for c in reversed(self.containers.values()):
            try:
                c.stop()
            except Exception:  # noqa: BLE001, S110 - best effort cleanup
                pass
        try:
            self.network.remove()
        except Exception:  # noqa: BLE001, S110
            pass


@pytest.fixture(scope="module")
def cluster(image, container_checkpoint):
    cluster = Cluster(image, container_checkpoint)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def reference(tiny_models, tokenizer, tiny_checkpoint):
    """In-process offline synthesis (this host's torch) per (text, voice), computed once."""
    from barkstream.services.bark.voices import VoiceLibrary
    from barkstream.services.stages.pipeline import Synthesizer

    synthesizer = Synthesizer(tiny_models, tokenizer)
    voices = VoiceLibrary([tiny_checkpoint.voices_dir])
    cache: dict[tuple[str, str, float], object] = {}

    def get(text: str, voice: str, max_duration_s: float = 1.0):
        key = (text, voice, max_duration_s)
        if key not in cache:
            cache[key] = offline_synthesis(synthesizer, text, voices.load(voice) if voice else None,
                                           max_duration_s=max_duration_s)
        return cache[key]

    return get


def _read(call, on_header=None) -> tuple[tts_pb2.StreamHeader, np.ndarray, tts_pb2.SynthesisSummary]:
    header, chunks, summary = None, [], None
    for msg in call:
        kind = msg.WhichOneof("payload")
        if kind == "header":
            header = msg.header
            if on_header is not None:
                on_header()
        elif kind == "chunk":
            chunks.append(msg.chunk.data)
        else:
            summary = msg.summary
    return header, np.frombuffer(b"".join(chunks), dtype="<f4"), summary


def _synthesize(cluster: Cluster, request, timeout: float = 120.0, on_header=None):
    from barkstream.v1 import tts_pb2_grpc

    with grpc.insecure_channel(cluster.target("orchestrator")) as channel:
        return _read(tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(request, timeout=timeout), on_header)


@pytest.mark.container
@pytest.mark.slow
@pytest.mark.parametrize(("text", "voice", "segments"), [(THREE_SEGMENTS, VOICE, 3), (ONE_SEGMENT, "", 1)],
                         ids=["3seg-voice", "1seg-no-voice"])
def test_synthesize_through_containers_equals_in_process(cluster, reference, text, voice, segments):
    header, audio, summary = _synthesize(cluster, synth_request(text, voice))
    assert header.sample_rate_hz == 24000 and header.segment_count == segments
    assert summary is not None and summary.total_samples == len(audio)
    expected = reference(text, voice).audio
    assert audio.shape == expected.shape
    # Same tokens (greedy, seed); the container's torch is the CPU build of another release than this host's,
    # so the codec's float output may differ in the last bits.
    assert float(np.max(np.abs(audio - expected))) < 1e-4


@pytest.mark.container
@pytest.mark.slow
def test_containers_run_non_root_with_healthy_healthchecks(cluster):
    for role, c in cluster.containers.items():
        wrapped = c.get_wrapped_container()
        uid = wrapped.exec_run(["python", "-c", "import os; print(os.getuid())"]).output.decode().strip()
        assert uid == str(NON_ROOT_UID), (role, uid)
        assert wrapped.attrs["HostConfig"]["ReadonlyRootfs"] is True
        probe = wrapped.exec_run(["python", "/opt/barkstream/healthcheck.py"])
        assert probe.exit_code == 0 and b"SERVING" in probe.output, (role, probe.output)
    # The image's HEALTHCHECK (the same gRPC check, every 15 s) turns each container healthy.
    deadline = time.monotonic() + 60
    pending = set(cluster.containers)
    while pending and time.monotonic() < deadline:
        for role in list(pending):
            wrapped = cluster.containers[role].get_wrapped_container()
            wrapped.reload()
            if wrapped.attrs["State"].get("Health", {}).get("Status") == "healthy":
                pending.discard(role)
        time.sleep(1)
    assert not pending, f"not healthy: {sorted(pending)}"


@pytest.mark.container
@pytest.mark.slow
def test_stopping_coarse_mid_stream_gives_unavailable_then_recovers(cluster, reference):
    """`docker stop` of the coarse container during a stream: the client gets UNAVAILABLE within seconds;
    once coarse is started again and SERVING, the next request succeeds with the same audio as before.

    The stop is sent when the stream's header arrives, while coarse has seconds of work left on this request
    (3 segments of up to 20 s: ~4-5 s of coarse work on a quiet 2-core machine, more under load). On SIGTERM
    coarse drains: it refuses new streams at once (this request's later segments) and cancels what is still
    in flight after a 1 s grace (BARKSTREAM_DRAIN_GRACE_S); either way the client must see UNAVAILABLE.
    """
    coarse = cluster.containers["coarse"].get_wrapped_container()
    stopped_at: list[float] = []
    stopper = threading.Thread(target=coarse.stop, kwargs={"timeout": 10}, daemon=True)

    def stop_coarse() -> None:
        stopped_at.append(time.monotonic())
        stopper.start()

    with pytest.raises(grpc.RpcError) as info:
        _synthesize(cluster, synth_request(THREE_SEGMENTS, VOICE, max_duration_s=20.0), on_header=stop_coarse)
    failed_after = time.monotonic() - stopped_at[0]
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, (info.value.code(), info.value.details())
    assert failed_after < 10.0, f"UNAVAILABLE came {failed_after:.1f} s after the stop"
    stopper.join(30)
    coarse.reload()
    assert coarse.status == "exited", coarse.status

    coarse.start()
    cluster.wait_serving("coarse")
    # The orchestrator's channel to coarse may have seen connections refused while coarse was down and be in
    # gRPC's reconnect backoff (1 s, x1.6, jittered): until it reconnects (a second or two after coarse is
    # SERVING) a new stream would fail fast with UNAVAILABLE, which tells a client to try again. Try as a
    # client would, for a bounded time; the request that gets through must be whole and exact.
    deadline = time.monotonic() + 20.0
    attempts = 0
    while True:
        attempts += 1
        try:
            header, audio, _ = _synthesize(cluster, synth_request(ONE_SEGMENT, VOICE))
            break
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
            assert time.monotonic() < deadline, f"still UNAVAILABLE 20 s after coarse was SERVING: {e.details()}"
            time.sleep(0.25)
    expected = reference(ONE_SEGMENT, VOICE).audio
    assert audio.shape == expected.shape and float(np.max(np.abs(audio - expected))) < 1e-4, attempts
    print(f"UNAVAILABLE {failed_after:.1f} s after the stop; served again on attempt {attempts} after SERVING")


# ------------------------------------------------------------------ without an engine: the image's recipe


def _healthcheck_module():
    spec = importlib.util.spec_from_file_location("barkstream_healthcheck", ROOT / "scripts" / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dockerfile_is_multi_stage_on_a_base_argument_non_root_with_a_grpc_healthcheck():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0].startswith("ARG BASE_IMAGE=")
    froms = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    assert lines[froms[0]] == "FROM ${BASE_IMAGE} AS base" and len(froms) >= 3
    final = lines[froms[-1]:]
    assert f"USER {NON_ROOT_UID}:{NON_ROOT_UID}" in final
    assert any(line.startswith("HEALTHCHECK") for line in final)
    assert any("healthcheck.py" in line for line in final)
    assert 'ENTRYPOINT ["barkstream"]' in final
    copies = " ".join(line for line in lines if line.startswith(("COPY", "ADD")))
    for baked in ("checkpoint", ".bin", ".safetensors", ".pt", "huggingface"):
        assert baked not in copies, f"the checkpoint is mounted, never copied in ({baked})"


def test_healthcheck_finds_the_port_from_the_command():
    hc = _healthcheck_module()
    entry = ["/opt/barkstream/bin/python", "/opt/barkstream-app/bin/barkstream"]
    assert hc.port_from_command([*entry, "serve", "coarse"]) == PORTS["coarse"]
    assert hc.port_from_command([*entry, "serve"]) == 50051
    assert hc.port_from_command([*entry, "serve", "--log-level", "INFO", "codec"]) == PORTS["codec"]
    assert hc.port_from_command([*entry, "serve", "fine", "--port", "7000"]) == 7000
    assert hc.port_from_command([*entry, "serve", "fine", "--port=7001"]) == 7001
    assert hc.port_from_command(["sh"]) is None


def test_healthcheck_asks_grpc_health(embedded_server):
    hc = _healthcheck_module()
    assert hc.main(["--port", str(embedded_server.port)]) == 0
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert hc.main(["--port", str(free), "--timeout", "0.5"]) == 1


def test_healthcheck_speaks_tls_and_mutual_tls(tmp_path, monkeypatch):
    """With TLS on the server (what the k8s tls component turns on), probes run this script over TLS."""
    import shutil
    from concurrent import futures

    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=coarse",
                    "-addext", "subjectAltName=DNS:coarse", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    hc = _healthcheck_module()
    for mutual in (False, True):
        server = grpc.server(futures.ThreadPoolExecutor(2))
        servicer = health.HealthServicer()
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())],
                                            root_certificates=cert.read_bytes() if mutual else None,
                                            require_client_auth=mutual)
        port = server.add_secure_port("127.0.0.1:0", creds)
        server.start()
        try:
            monkeypatch.setenv("BARKSTREAM_TLS_CERT_FILE", str(cert))
            monkeypatch.setenv("BARKSTREAM_TLS_KEY_FILE", str(key))
            monkeypatch.setenv("BARKSTREAM_HEALTHCHECK_SERVER_NAME", "coarse")
            monkeypatch.setenv("BARKSTREAM_HEALTHCHECK_CA_FILE", str(cert))
            if mutual:
                monkeypatch.setenv("BARKSTREAM_TLS_CLIENT_CA_FILE", str(cert))
            assert hc.main(["--port", str(port)]) == 0, mutual
            assert hc.main(["--port", str(port), "--server-name", "fine", "--timeout", "1"]) == 1, "name is checked"
        finally:
            server.stop(None)

"""Authentication, TLS and mutual TLS, over real gRPC, with certificates made here (trustme).

- Bearer tokens at the orchestrator: no token or a wrong one is UNAUTHENTICATED before any
  model work; health and reflection stay open for probes; in the embedded server the stage
  services on the public port need a token too (no side door); per-client stream limits.
- TLS on every server: a plaintext client, or one that trusts another CA, gets nowhere.
- Mutual TLS between the orchestrator and the stages: a stage completes the handshake only
  with a client certificate from its configured CA, so nothing but the orchestrator can use it.
- The SDK and the `barkstream say` command speak TLS with a token.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from barkstream.client import TLS, TTSClient, errors
from barkstream.client import commands as cli
from barkstream.services.app import App, ServeConfig
from barkstream.services.common import convert
from barkstream.services.common.admission import RETRY_AFTER_METADATA_KEY
from barkstream.services.common.auth import TokenVerifier, bearer_token, load_tokens, peer_host
from barkstream.services.common.config import ServerConfig, add_dataclass_args, dataclass_from_args
from barkstream.services.common.tls import server_credentials, stage_channel_tls
from barkstream.v1 import stages_pb2, stages_pb2_grpc, tts_pb2, tts_pb2_grpc

from .conftest import EmbeddedServer, ServeProcess
from .reliability_helpers import Cluster, poll_until
from .service_helpers import ONE_SEGMENT, VOICE, read_stream, rpc_error, synth_request

pytestmark = pytest.mark.timeout(300)

ALPHA, BETA = "alpha-3f9c2b7e1d", "beta-8a41d0c6e2"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@dataclasses.dataclass(frozen=True)
class PKI:
    """PEM files: the servers' CA and certificate, the orchestrator's client CA and certificate, a rogue CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_cert: Path
    rogue_key: Path

    def read(self, name: str) -> bytes:
        return getattr(self, name).read_bytes()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    server_ca, client_ca, rogue_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = server_ca.issue_cert("localhost", "127.0.0.1")
    client = client_ca.issue_cert("barkstream-orchestrator")
    rogue = rogue_ca.issue_cert("mallory")
    files = {
        "ca": server_ca.cert_pem.bytes(), "server_cert": b"".join(p.bytes() for p in server.cert_chain_pems),
        "server_key": server.private_key_pem.bytes(), "client_ca": client_ca.cert_pem.bytes(),
        "client_cert": b"".join(p.bytes() for p in client.cert_chain_pems),
        "client_key": client.private_key_pem.bytes(), "rogue_ca": rogue_ca.cert_pem.bytes(),
        "rogue_cert": b"".join(p.bytes() for p in rogue.cert_chain_pems), "rogue_key": rogue.private_key_pem.bytes(),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = d / f"{name}.pem"
        paths[name].write_bytes(data)
    return PKI(**paths)


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text(f"# barkstream API tokens, one per line\n{ALPHA}\n\n  {BETA}  \n")
    return path


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def small_request(**kw) -> tts_pb2.SynthesizeRequest:
    return synth_request(ONE_SEGMENT, VOICE, max_duration_s=0.3, **kw)


def health_status(channel: grpc.Channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def tls_channel(target: str, pki: PKI, *, ca: str = "ca", cert: str | None = None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(pki.read(ca), pki.read(f"{cert}_key") if cert else None,
                                         pki.read(f"{cert}_cert") if cert else None)
    return grpc.secure_channel(target, creds)


# ------------------------------------------------------------------------------------ units


def test_tokens_load_from_a_file_and_a_secret_and_match_in_constant_time(token_file, tmp_path):
    assert load_tokens(str(token_file)) == (ALPHA, BETA)
    assert load_tokens(str(token_file), "gamma") == (ALPHA, BETA, "gamma")
    assert load_tokens("", "  delta ") == ("delta",)
    assert load_tokens() == ()
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no token"):
        load_tokens(str(empty))
    with pytest.raises(ValueError, match="cannot read"):
        load_tokens(str(tmp_path / "missing"))
    verifier = TokenVerifier([ALPHA, BETA])
    assert verifier.identify(ALPHA) and verifier.identify(BETA) and verifier.identify(ALPHA) != verifier.identify(BETA)
    assert ALPHA not in verifier.identify(ALPHA), "a client's name must not reveal its token"
    for wrong in ("", ALPHA[:-1], ALPHA + "x", ALPHA.upper(), BETA + ALPHA):
        assert verifier.identify(wrong) is None
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("authorization", "bearer  abc ")]) == "abc"
    assert bearer_token([("authorization", "Basic abc")]) == ""
    assert bearer_token([("x-other", "1")]) is None
    assert peer_host("ipv4:10.1.2.3:5555") == "ipv4:10.1.2.3" and peer_host("ipv6:[::1]:80") == "ipv6:[::1]"


def test_security_settings_come_from_flags_and_environment_and_never_print_the_token(pki, token_file):
    parser = argparse.ArgumentParser()
    add_dataclass_args(parser, ServerConfig)
    add_dataclass_args(parser, ServeConfig)
    ns = parser.parse_args(["--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
                            "--tls-client-ca-file", str(pki.client_ca), "--auth-token-file", str(token_file),
                            "--max-streams-per-client", "2", "--stage-tls-ca-file", str(pki.ca)])
    env = {"BARKSTREAM_AUTH_TOKEN": "from-a-secret", "BARKSTREAM_STAGE_TLS_SERVER_NAME": "coarse.bark.svc"}
    server = ServerConfig.from_args(ns, env)
    serve = dataclass_from_args(ServeConfig, ns, env)
    assert (server.tls_cert_file, server.tls_client_ca_file) == (str(pki.server_cert), str(pki.client_ca))
    assert serve.auth_token == "from-a-secret" and serve.auth_token_file == str(token_file)
    assert serve.max_streams_per_client == 2 and serve.stage_tls_server_name == "coarse.bark.svc"
    assert "from-a-secret" not in repr(serve)
    with pytest.raises(ValueError, match="both"):
        ServerConfig(tls_cert_file=str(pki.server_cert))
    with pytest.raises(ValueError, match="mutual TLS is TLS"):
        ServerConfig(tls_client_ca_file=str(pki.client_ca))
    with pytest.raises(ValueError, match="--tls-key-file .*cannot read"):
        server_credentials(str(pki.server_cert), "/nonexistent/key.pem")
    with pytest.raises(ValueError, match="not a PEM file"):
        server_credentials(str(pki.server_cert), str(token_file))
    assert stage_channel_tls("", "", "") is None
    assert stage_channel_tls(str(pki.ca), "", "", "x").options() == [("grpc.ssl_target_name_override", "x")]


def test_an_unreadable_token_file_stops_the_start_instead_of_serving_without_auth(tmp_path):
    with pytest.raises(ValueError, match="auth-token-file"):
        App("orchestrator", ServeConfig(auth_token_file=str(tmp_path / "missing")), ServerConfig(port=0))


# ------------------------------------------------------------------------------------ tokens


@pytest.fixture(scope="module")
def auth_server(tiny_checkpoint_dir, token_file):
    """The embedded server with tokens (file) and at most one stream per client."""
    server = EmbeddedServer("all", ServeConfig(checkpoint=str(tiny_checkpoint_dir), auth_token_file=str(token_file),
                                               max_streams_per_client=1),
                            ServerConfig(host="127.0.0.1", port=0, drain_grace_s=5.0, retry_after_ms=300))
    yield server
    server.stop()


def test_missing_or_wrong_token_is_unauthenticated_before_any_model_work(auth_server):
    steps = {stage: r.steps for stage, r in auth_server.app.runners.items()}
    with grpc.insecure_channel(auth_server.target) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        cases = {"no token": (), "wrong token": bearer("guess"), "prefix": bearer(ALPHA[:-1]),
                 "other scheme": (("authorization", f"Basic {ALPHA}"),)}
        for case, metadata in cases.items():
            received: list = []
            err = rpc_error(lambda m=metadata, out=received: out.extend(stub.Synthesize(
                small_request(), metadata=m, timeout=10)))
            assert err.code() == UNAUTHENTICATED, (case, err.code(), err.details())
            assert ("missing bearer token" if case in ("no token", "other scheme") else "invalid bearer token") \
                in err.details(), (case, err.details())
            assert received == [], case
        err = rpc_error(lambda: stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=10))
        assert err.code() == UNAUTHENTICATED
    assert {stage: r.steps for stage, r in auth_server.app.runners.items()} == steps, "an engine ran"


def test_a_valid_token_streams_while_health_and_reflection_stay_open(auth_server):
    with grpc.insecure_channel(auth_server.target) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        for token in (ALPHA, BETA):
            r = read_stream(stub.Synthesize(small_request(), metadata=bearer(token), timeout=60))
            assert r.summary is not None and len(r.float32()) == r.summary.total_samples > 0
        assert stub.ListVoices(tts_pb2.ListVoicesRequest(), metadata=bearer(ALPHA), timeout=10).voices
        assert health_status(channel) == health_pb2.HealthCheckResponse.SERVING  # probes need no token
        assert "barkstream.v1.TextToSpeech" in ProtoReflectionDescriptorDatabase(channel).get_services()


def test_the_embedded_stage_services_need_a_token_too(auth_server):
    """They share the public port: without this they would be an unauthenticated side door."""
    request = stages_pb2.SemanticGenerateRequest(text_tokens=convert.array_to_pb(np.array([100, 200])))
    with grpc.insecure_channel(auth_server.target) as channel:
        err = rpc_error(lambda: list(stages_pb2_grpc.SemanticServiceStub(channel).Generate(request, timeout=10)))
    assert err.code() == UNAUTHENTICATED, (err.code(), err.details())


def test_per_client_stream_limit_is_resource_exhausted_with_a_retry_hint(auth_server):
    app = auth_server.app
    gate = threading.Event()
    orchestrator = app.servicers["orchestrator"].admission
    results: dict[str, object] = {}

    def run(name: str, token: str) -> None:
        with grpc.insecure_channel(auth_server.target) as channel:
            call = tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(small_request(), metadata=bearer(token),
                                                                     timeout=60)
            try:
                results[name] = read_stream(call)
            except grpc.RpcError as e:
                results[name] = e

    try:
        app.runners["semantic"].call(gate.wait)  # streams stay in flight until the gate opens
        first = threading.Thread(target=run, args=("alpha-1", ALPHA))
        first.start()
        assert poll_until(lambda: orchestrator.active == 1, 10)
        run("alpha-2", ALPHA)  # same client, second stream: refused at once
        other = threading.Thread(target=run, args=("beta", BETA))
        other.start()
        assert poll_until(lambda: orchestrator.active == 2, 10), "another client must still get in"
    finally:
        gate.set()
    first.join(60)
    other.join(60)
    err = results["alpha-2"]
    assert isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
    assert "per-client limit" in err.details() and (RETRY_AFTER_METADATA_KEY, "300") in err.trailing_metadata()
    assert results["alpha-1"].summary is not None and results["beta"].summary is not None
    # The slot is given back: the same client streams again.
    with grpc.insecure_channel(auth_server.target) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        assert read_stream(stub.Synthesize(small_request(), metadata=bearer(ALPHA), timeout=60)).summary


def test_the_sdk_sends_its_token(auth_server):
    with TTSClient(auth_server.target, token=ALPHA) as client:
        audio = client.synthesize(ONE_SEGMENT, voice=VOICE, seed=1, greedy=True, max_duration=0.3)
        assert audio.duration > 0
    with TTSClient(auth_server.target, token="wrong") as client, pytest.raises(errors.Unauthenticated):
        client.synthesize(ONE_SEGMENT, max_duration=0.3)


# ------------------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def tls_server(tiny_checkpoint_dir, pki):
    """The embedded server on TLS with a token; its orchestrator dials its own port over TLS too."""
    ready = threading.Event()
    ready.set()  # skip EmbeddedServer's plaintext health wait: this port speaks TLS only
    server = EmbeddedServer(
        "all", ServeConfig(checkpoint=str(tiny_checkpoint_dir), auth_token=ALPHA, stage_tls_ca_file=str(pki.ca)),
        ServerConfig(host="127.0.0.1", port=0, drain_grace_s=5.0, tls_cert_file=str(pki.server_cert),
                     tls_key_file=str(pki.server_key)), hold_warmup=ready)
    with tls_channel(server.target, pki) as channel:
        assert poll_until(lambda: _serving(channel), 120), "TLS server not SERVING"
    yield server
    server.stop()


def _serving(channel: grpc.Channel) -> bool:
    try:
        return health_status(channel) == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def test_a_plaintext_client_gets_nowhere_on_a_tls_server(tls_server):
    with grpc.insecure_channel(tls_server.target) as channel:
        err = rpc_error(lambda: list(tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(
            small_request(), metadata=bearer(ALPHA), timeout=10)))
        assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
        assert rpc_error(lambda: health_status(channel)).code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_that_trusts_another_ca_gets_nowhere(tls_server, pki):
    with tls_channel(tls_server.target, pki, ca="rogue_ca") as channel:
        err = rpc_error(lambda: list(tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(
            small_request(), metadata=bearer(ALPHA), timeout=10)))
    assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())


def test_sdk_and_cli_over_tls_with_a_token(tls_server, pki, tmp_path):
    tls = TLS.from_files(ca=pki.ca)
    with TTSClient(tls_server.target, tls=tls, token=ALPHA) as client:
        assert client.synthesize(ONE_SEGMENT, voice=VOICE, seed=1, greedy=True, max_duration=0.3).duration > 0
    with TTSClient(tls_server.target, tls=tls) as client, pytest.raises(errors.Unauthenticated):
        client.synthesize(ONE_SEGMENT, max_duration=0.3)

    out, err = io.StringIO(), io.StringIO()
    wav = tmp_path / "tls.wav"
    say = ["say", "--target", tls_server.target, "--ca-file", str(pki.ca), "--greedy", "--seed", "1",
           "--max-duration", "0.3", "-q", "-o", str(wav), ONE_SEGMENT]
    assert cli.main([*say, "--token", ALPHA], environ={}, stdout=out, stderr=err) == 0, err.getvalue()
    assert wav.stat().st_size > 44
    err = io.StringIO()
    assert cli.main(say, environ={}, stdout=out, stderr=err) == cli.EXIT_ERROR
    assert "UNAUTHENTICATED" in err.getvalue(), err.getvalue()
    err = io.StringIO()  # the token from the environment, as documented
    assert cli.main(say, environ={"BARKSTREAM_TOKEN": ALPHA}, stdout=out, stderr=err) == 0, err.getvalue()


# ------------------------------------------------------------------------------------ mutual TLS


@pytest.fixture(scope="module")
def mtls_cluster(tiny_checkpoint_dir, pki, token_file, tmp_path_factory):
    """Split processes: stages require client certificates from client_ca; TLS + tokens at the front."""
    tls = ["--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key)]
    cluster = Cluster(
        tiny_checkpoint_dir, tmp_path_factory.mktemp("mtls-logs"), secure=True,
        stage_args=[*tls, "--tls-client-ca-file", str(pki.client_ca)],
        orchestrator_args=[*tls, "--auth-token-file", str(token_file), "--stage-tls-ca-file", str(pki.ca),
                           "--stage-tls-cert-file", str(pki.client_cert),
                           "--stage-tls-key-file", str(pki.client_key)],
        orchestrator_env={"BARKSTREAM_AUTH_TOKEN": "from-the-environment"})
    yield cluster
    cluster.stop()


@pytest.mark.slow
def test_split_services_run_over_mutual_tls(mtls_cluster, pki):
    assert "mutual TLS: client certificates required" in mtls_cluster.log("coarse-0")
    tls = TLS.from_files(ca=pki.ca)
    for token in (ALPHA, "from-the-environment"):
        with TTSClient(mtls_cluster.target, tls=tls, token=token) as client:
            audio = client.synthesize(ONE_SEGMENT, voice=VOICE, seed=1, greedy=True, max_duration=0.3)
            assert audio.duration > 0
    with TTSClient(mtls_cluster.target, tls=tls, token="nope") as client, pytest.raises(errors.Unauthenticated):
        client.synthesize(ONE_SEGMENT, max_duration=0.3)


def _semantic_call(channel: grpc.Channel) -> list:
    request = stages_pb2.SemanticGenerateRequest(text_tokens=convert.array_to_pb(np.array([100, 200, 300])))
    request.params.sampling.greedy = True
    request.params.max_gen_duration_s = 0.1
    return list(stages_pb2_grpc.SemanticServiceStub(channel).Generate(request, timeout=10))


@pytest.mark.slow
@pytest.mark.parametrize("client", ["plaintext", "no certificate", "certificate from another CA"])
def test_a_stage_refuses_clients_without_a_certificate_from_its_ca(mtls_cluster, pki, client):
    target = f"127.0.0.1:{mtls_cluster.ports['semantic-0']}"
    if client == "plaintext":
        channel = grpc.insecure_channel(target)
    else:
        channel = tls_channel(target, pki, cert=None if client == "no certificate" else "rogue")
    with channel:
        err = rpc_error(lambda: _semantic_call(channel))
    assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
    # The orchestrator's certificate gets in (the refusal above was about the certificate).
    with tls_channel(target, pki, cert="client") as channel:
        responses = _semantic_call(channel)
    assert responses[-1].HasField("end")


@pytest.mark.slow
def test_an_orchestrator_without_the_client_certificate_fails_fast(mtls_cluster, pki, tiny_checkpoint_dir, tmp_path):
    """Misconfigured (no --stage-tls-cert-file): its streams fail UNAVAILABLE at once, they do not hang."""
    stages = [f"--{role}-target=127.0.0.1:{mtls_cluster.ports[f'{role}-0']}"
              for role in ("semantic", "coarse", "fine", "codec")]
    orchestrator = ServeProcess("orchestrator", ["--checkpoint", str(tiny_checkpoint_dir), *stages,
                                                 "--stage-tls-ca-file", str(pki.ca)], tmp_path / "orchestrator.log")
    try:
        orchestrator.wait_serving()
        with grpc.insecure_channel(orchestrator.target) as channel:
            err = rpc_error(lambda: read_stream(tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(
                small_request(), timeout=30)))
        assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
    finally:
        orchestrator.stop()


def test_sessions_need_a_token_and_count_against_the_per_client_limit(auth_server):
    """An open real-time session is one of the client's streams: a second stream of the same client waits
    for it to end (RESOURCE_EXHAUSTED), and without a token a session never starts."""
    with TTSClient(auth_server.target) as anonymous:
        with pytest.raises(errors.Unauthenticated), anonymous.session() as session:
            session.send("Hello.")
            list(session)
    with TTSClient(auth_server.target, token=ALPHA, timeout=60) as client:
        with client.session(seed=1, greedy=True, max_duration=0.3) as session:
            session.send("Hello there.")
            session.flush()
            next(iter(session))  # the session is running on the server
            with pytest.raises(errors.Overloaded, match="per-client limit"):
                client.synthesize(ONE_SEGMENT, seed=1, greedy=True, max_duration=0.3)
            session.close()
            list(session)
        assert session.summary is not None and session.summary.total_samples > 0
        assert client.synthesize(ONE_SEGMENT, seed=1, greedy=True, max_duration=0.3).duration > 0  # slot back


"""The HTTP gateway's answers to bad input and bad conditions: the right 4xx/5xx with OpenAI's error
JSON, never a 500 or a hang; health, auth, limits, a client that never reads, traces and metrics."""

from __future__ import annotations

import http.client
import json
import socket
import threading

import pytest

from barkstream.services.app import ServeConfig
from barkstream.services.common.config import ServerConfig
from barkstream.services.gateway.config import GatewayConfig

from .conftest import EmbeddedServer
from .gateway_helpers import GatewayThread
from .service_helpers import ONE_SEGMENT, THREE_SEGMENTS, idle, poll

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

GOOD = {"model": "tts-1", "voice": "v2/en_speaker_0", "input": ONE_SEGMENT, "response_format": "pcm",
        "max_duration": 0.5, "seed": 1}


@pytest.fixture(scope="module")
def gateway(embedded_server):
    gw = GatewayThread(embedded_server.target, GatewayConfig(http_host="127.0.0.1", max_body_bytes=4096,
                                                             write_timeout_s=1.0))
    yield gw
    gw.stop()


def post(gw: GatewayThread, body: bytes | dict, headers: dict | None = None,
         path: str = "/v1/audio/speech") -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=120)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn.request("POST", path, data, {"content-type": "application/json", **(headers or {})})
    r = conn.getresponse()
    out = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    conn.close()
    return out


def get(gw: GatewayThread, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    out = r.status, r.read()
    conn.close()
    return out


def error_of(status: int, body: bytes) -> dict:
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    return error


@pytest.mark.parametrize("raw, code", [
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "invalid_json"),
    (b'{"model": "tts-1", "input": NaN}', "invalid_json"),
    (b'{"model": "tts-1", "voice": "alloy", "input": "caf\xe9"}', "invalid_utf8"),  # Latin-1, not UTF-8
    (b'{"model": "tts-1", "voice": "alloy", "input": "\\ud800 lone"}', "invalid_utf8"),  # a lone surrogate
    (b'{"model": "tts-1", "voice": 7, "input": "hi"}', "invalid_type"),
    (b'{"model": "tts-1", "voice": "alloy", "input": ["hi"]}', "invalid_type"),
    (b'{"model": "tts-1", "voice": "alloy"}', "missing_required_parameter"),
    (b'{"model": "tts-1", "voice": "alloy", "input": "hi", "speed": "fast"}', "invalid_type"),
    (b'{"model": "tts-1", "voice": "alloy", "input": "hi", "seed": -1}', "invalid_type"),
    (b'{"model": "tts-1", "voice": "alloy", "input": "hi", "temperature": 0.3}', "unknown_parameter"),
])
def test_bad_bodies_get_400(gateway, server, raw, code):
    status, _, body = post(gateway, raw)
    assert status == 400
    assert error_of(status, body)["code"] == code


def test_unknown_voice_is_400_from_the_orchestrator(gateway, server):
    status, _, body = post(gateway, {**GOOD, "voice": "../../etc/passwd"})
    assert status == 400 and "voice" in error_of(status, body)["message"]


def test_huge_bodies_get_413(gateway, server):
    big = {**GOOD, "input": "word " * 2000}
    status, _, body = post(gateway, big)
    assert status == 413 and error_of(status, body)["code"] == "body_too_large"
    # Chunked, without a length: refused as the bytes arrive, not after reading everything.
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)
    sock.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
                 b"content-type: application/json\r\n\r\n")
    piece = b"x" * 1024
    try:
        for _ in range(64):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
    except OSError:
        pass  # the gateway answered and closed while we were still sending
    reply = sock.recv(65536)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 413")


def test_routes_methods_and_page(gateway, server):
    assert get(gateway, "/healthz")[0] == 200
    assert get(gateway, "/readyz") == (200, b'{"status":"ready"}')
    status, page = get(gateway, "/")
    assert status == 200 and b"/v1/audio/speech" in page and b"<script" in page and b"http" not in \
        page.split(b"<script")[1].split(b"location.origin")[0]  # no CDN: nothing loaded from elsewhere
    status, body = get(gateway, "/v1/nothing")
    assert status == 404 and error_of(status, body)["code"] == "not_found"
    status, body = get(gateway, "/v1/audio/speech")
    assert status == 405


def test_client_that_never_reads_is_given_up(gateway, server):
    """A reader that stops: after write_timeout_s without progress the call is cancelled, the stages
    free their rows, and the connection is closed without the final chunk (a truncated body)."""
    gateway.server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # inherited by accepts
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gateway.port))
    body = json.dumps({**GOOD, "input": THREE_SEGMENTS, "max_duration": 6.0}).encode()
    sock.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(body), body))
    app = server.app
    assert poll(lambda: not idle(app), timeout=30)  # it started
    assert poll(lambda: idle(app), timeout=60), "the orchestrator still runs the stream of a stuck client"
    sock.settimeout(30)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    sock.close()
    assert received.startswith(b"HTTP/1.1 200")
    assert not received.endswith(b"0\r\n\r\n")  # never a clean end: the client can tell it was cut
    assert len(received) < 18 * 48000


def test_client_that_goes_away_cancels_the_call(gateway, server):
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
    conn.request("POST", "/v1/audio/speech", json.dumps({**GOOD, "input": THREE_SEGMENTS, "max_duration": 6.0}),
                 {"content-type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200
    r.read(100)
    conn.close()
    assert poll(lambda: idle(server.app), timeout=30)


def test_no_orchestrator_is_503_and_not_ready():
    gw = GatewayThread("127.0.0.1:1", GatewayConfig(http_host="127.0.0.1"))
    try:
        status, headers, body = post(gw, GOOD)
        assert status == 503 and int(headers["retry-after"]) >= 1
        assert error_of(status, body)["code"] == "unavailable"
        assert get(gw, "/readyz")[0] == 503
        assert get(gw, "/healthz")[0] == 200
    finally:
        gw.stop()


def test_deadline_is_504(embedded_server, server):
    gw = GatewayThread(embedded_server.target, GatewayConfig(http_host="127.0.0.1", request_timeout_s=0.001))
    try:
        status, _, body = post(gw, GOOD)
        assert status == 504 and error_of(status, body)["code"] == "deadline_exceeded"
    finally:
        gw.stop()


def test_tokens(embedded_server, server):
    gw = GatewayThread(embedded_server.target, GatewayConfig(http_host="127.0.0.1"), auth_token="s3cret-token")
    try:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic czNjcmV0"}):
            status, _, body = post(gw, GOOD, headers)
            assert status == 401 and error_of(status, body)["code"] == "invalid_api_key"
            assert get(gw, "/v1/models", headers)[0] == 401
        status, _, body = post(gw, GOOD, {"authorization": "Bearer s3cret-token"})
        assert status == 200 and len(body) > 0
        assert get(gw, "/healthz")[0] == 200 and get(gw, "/")[0] == 200  # probes and the page stay open
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def busy_server(tiny_checkpoint_dir):
    """An orchestrator that runs one stream at a time (a second gets RESOURCE_EXHAUSTED)."""
    srv = EmbeddedServer("all", ServeConfig(checkpoint=str(tiny_checkpoint_dir)),
                         ServerConfig(host="127.0.0.1", port=0, max_concurrent_streams=1, retry_after_ms=2500,
                                      drain_grace_s=5.0))
    yield srv
    srv.stop()


def test_busy_is_429_with_retry_after(busy_server):
    gw = GatewayThread(busy_server.target, GatewayConfig(http_host="127.0.0.1"))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=60)
        conn.request("POST", "/v1/audio/speech", json.dumps({**GOOD, "input": THREE_SEGMENTS, "max_duration": 6.0}),
                     {"content-type": "application/json"})
        first = conn.getresponse()
        assert first.status == 200
        status, headers, body = post(gw, GOOD)
        assert status == 429 and headers["retry-after"] == "3"  # 2500 ms, rounded up to whole seconds
        assert error_of(status, body)["type"] == "rate_limit_error"
        conn.close()
        assert poll(lambda: idle(busy_server.app), timeout=30)
    finally:
        gw.stop()


def test_trace_joins_the_grpc_trace_and_metrics(tiny_checkpoint_dir):
    """One trace from the HTTP caller's traceparent through the gateway to the orchestrator and stages."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from barkstream.services.telemetry import Telemetry

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = Telemetry(provider, MeterProvider(metric_readers=[reader]))
    srv = EmbeddedServer("all", ServeConfig(checkpoint=str(tiny_checkpoint_dir)), telemetry=telemetry)
    gw = GatewayThread(srv.target, GatewayConfig(http_host="127.0.0.1"), telemetry=telemetry)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        status, _, _ = post(gw, GOOD, {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
        assert status == 200
        assert poll(lambda: any(s.name == "barkstream.v1.CodecService/Decode" for s in spans.get_finished_spans()))
    finally:
        gw.stop()
        srv.stop()
    finished = spans.get_finished_spans()
    http_span = next(s for s in finished if s.name == "POST /v1/audio/speech")
    assert format(http_span.context.trace_id, "032x") == trace_id
    assert http_span.parent.span_id == 0x00f067aa0ba902b7
    synth = [s for s in finished if s.name == "barkstream.v1.TextToSpeech/Synthesize"]
    client_span = next(s for s in synth if s.parent and s.parent.span_id == http_span.context.span_id)
    server_span = next(s for s in synth if s.parent and s.parent.span_id == client_span.context.span_id)
    assert server_span.context.trace_id == http_span.context.trace_id
    names = {m.name for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    assert {"http.server.request.duration", "barkstream.gateway.time_to_first_audio"} <= names


def test_failure_after_audio_started(embedded_server, server):
    """The deadline passes mid-stream: SSE ends with an error event; raw audio ends truncated (the client
    can tell), never as a clean short file."""
    gw = GatewayThread(embedded_server.target, GatewayConfig(http_host="127.0.0.1", request_timeout_s=2.0))
    long = {**GOOD, "input": THREE_SEGMENTS, "max_duration": 8.0}
    try:
        status, _, body = post(gw, {**long, "stream_format": "sse"})
        if status == 200:
            last = json.loads(body.decode().strip().split("\n\n")[-1][len("data: "):])
            assert last["type"] == "error" and last["error"]["code"] == "deadline_exceeded"
        else:
            assert status == 504  # so slow that not even the header came in time
        try:
            status, _, _ = post(gw, long)
        except http.client.IncompleteRead:
            pass  # cut after the audio had started: what must happen
        else:
            assert status == 504  # the slow case again: no body to truncate
    finally:
        gw.stop()
    assert poll(lambda: idle(server.app), timeout=30)


def test_tls_both_sides(tiny_checkpoint_dir, tmp_path):
    """HTTPS to the gateway, and TLS from the gateway to an orchestrator that serves TLS only."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key, ca_file = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(key)
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    ca.cert_pem.write_to_path(ca_file)
    tls = ServerConfig(host="127.0.0.1", port=0, drain_grace_s=2.0, tls_cert_file=str(chain), tls_key_file=str(key))
    ready = threading.Event()
    ready.set()  # no plaintext health wait: the gateway's readiness below waits, over TLS
    srv = EmbeddedServer("all", ServeConfig(checkpoint=str(tiny_checkpoint_dir), stage_tls_ca_file=str(ca_file)),
                         tls, hold_warmup=ready)
    gw = GatewayThread(srv.target, GatewayConfig(http_host="127.0.0.1", target_ca_file=str(ca_file),
                                                 target_server_name="localhost"), server=tls)
    try:
        assert gw.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(ca_file))

        def ready_over_tls() -> bool:
            conn = http.client.HTTPSConnection("127.0.0.1", gw.port, timeout=10, context=context)
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200

        assert poll(ready_over_tls, timeout=120), "the orchestrator behind the gateway never became ready"
        conn = http.client.HTTPSConnection("127.0.0.1", gw.port, timeout=120, context=context)
        conn.request("POST", "/v1/audio/speech", json.dumps(GOOD), {"content-type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200 and len(r.read()) > 0
        conn.close()
        with pytest.raises(ssl.SSLError):  # a client that does not trust the CA gets nowhere
            http.client.HTTPSConnection("127.0.0.1", gw.port, timeout=10,
                                        context=ssl.create_default_context()).request("GET", "/healthz")
    finally:
        gw.stop()
        srv.stop()

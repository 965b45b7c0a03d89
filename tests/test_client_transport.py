"""The SDK's transport behaviour against a scripted TextToSpeech server on loopback.

The scripted server answers whatever status a test asks for (the real server cannot be made
to say UNAUTHENTICATED yet, and mid-stream failures are hard to provoke), counts attempts
(retries), records the metadata it receives (token, user agent), and can run behind TLS or
report NOT_SERVING through the standard health service.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import barkstream.client as bc
from barkstream.v1 import tts_pb2, tts_pb2_grpc

pytestmark = pytest.mark.timeout(60)

SERVICE = "barkstream.v1.TextToSpeech"


class Scripted(tts_pb2_grpc.TextToSpeechServicer):
    """Behaviour chosen by the request text:

    "abort CODE [RETRY_MS]"  fail with CODE (and a retry-after-ms hint)
    "flaky N"                UNAVAILABLE for the first N attempts of this text, then audio
    "midstream CODE"         header, one chunk, then fail with CODE
    "endless"                chunks until the caller cancels (sets `cancelled`)
    anything else            header, two chunks, summary; header.voice echoes the authorization metadata
    """

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.metadata: list[dict[str, str]] = []
        self.cancelled = threading.Event()

    def Synthesize(self, request, context):
        md = dict(context.invocation_metadata())
        self.metadata.append(md)
        n = self.attempts[request.text] = self.attempts.get(request.text, 0) + 1
        cmd, _, arg = request.text.partition(" ")
        if cmd == "abort":
            code, *retry = arg.split()
            if retry:
                context.set_trailing_metadata((("retry-after-ms", retry[0]),))
            context.abort(grpc.StatusCode[code], f"scripted {code.lower()}")
        if cmd == "flaky" and n <= int(arg):
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        yield tts_pb2.SynthesizeResponse(header=tts_pb2.StreamHeader(
            request_id=request.request_id or "rid", encoding=tts_pb2.AUDIO_ENCODING_PCM_S16LE,
            sample_rate_hz=24000, channels=1, segment_count=2, chunk_duration_ms=100, samples_per_chunk=4,
            voice=md.get("authorization", "")))
        if cmd == "endless":
            context.add_callback(self.cancelled.set)
            seq = 0
            while context.is_active():
                yield self._chunk(seq, 0)
                seq += 1
                time.sleep(0.01)
            return
        yield self._chunk(0, 0)
        if cmd == "midstream":
            context.abort(grpc.StatusCode[arg], f"scripted {arg.lower()} mid-stream")
        yield self._chunk(1, 1)
        yield tts_pb2.SynthesizeResponse(summary=tts_pb2.SynthesisSummary(
            request_id="rid", total_samples=8, audio_seconds=8 / 24000, segment_count=2, chunk_count=2))

    @staticmethod
    def _chunk(seq: int, segment: int) -> tts_pb2.SynthesizeResponse:
        data = np.array([seq, -seq, 100, -100], "<i2").tobytes()
        return tts_pb2.SynthesizeResponse(chunk=tts_pb2.AudioChunk(
            sequence_number=seq, segment_index=segment, start_sample=4 * seq, data=data, num_samples=4))

    def ListVoices(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        if request.language == "xx":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing token")
        return tts_pb2.ListVoicesResponse(voices=[tts_pb2.Voice(name="v2/en_speaker_0", language="en")])


class ScriptedServer:
    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        self.servicer = Scripted()
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(8))
        tts_pb2_grpc.add_TextToSpeechServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.set_serving(True)
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.target = f"127.0.0.1:{self.port}"
        self.server.start()

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set(SERVICE, status)

    def stop(self) -> None:
        self.server.stop(None)


@pytest.fixture(scope="module")
def scripted():
    server = ScriptedServer()
    yield server
    server.stop()


FAST_RETRY = bc.RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.02)


@pytest.fixture()
def client(scripted):
    with bc.TTSClient(scripted.target, timeout=10, retry=FAST_RETRY) as c:
        yield c


ERRORS = [
    ("INVALID_ARGUMENT", bc.InvalidRequest), ("RESOURCE_EXHAUSTED", bc.Overloaded),
    ("UNAVAILABLE", bc.Unavailable), ("DEADLINE_EXCEEDED", bc.DeadlineExceeded),
    ("UNAUTHENTICATED", bc.Unauthenticated), ("PERMISSION_DENIED", bc.PermissionDenied),
    ("INTERNAL", bc.ServerError)]


@pytest.mark.parametrize(("code", "cls"), ERRORS)
def test_each_status_raises_its_typed_error(client, code, cls):
    with pytest.raises(cls) as info:
        client.synthesize(f"abort {code}", timeout=10)
    assert info.value.code is grpc.StatusCode[code]
    assert f"scripted {code.lower()}" in info.value.message
    with pytest.raises(cls):
        for _ in client.stream(f"abort {code}", timeout=10):
            pass


@pytest.mark.parametrize(("code", "cls"), ERRORS)
def test_each_status_raises_its_typed_error_async(scripted, code, cls):
    async def main() -> None:
        async with bc.AsyncTTSClient(scripted.target, timeout=10, retry=FAST_RETRY) as client:
            with pytest.raises(cls) as info:
                await client.synthesize(f"abort {code}")
            assert f"scripted {code.lower()}" in info.value.message

    asyncio.run(main())


def test_overloaded_carries_the_servers_retry_hint(client):
    with pytest.raises(bc.Overloaded) as info:
        client.synthesize("abort RESOURCE_EXHAUSTED 1500")
    assert info.value.retry_after == 1.5 and info.value.retryable


def test_async_overloaded_hint_and_one_loop_per_client(scripted):
    client = bc.AsyncTTSClient(scripted.target, timeout=10)

    async def overloaded() -> float | None:
        with pytest.raises(bc.Overloaded) as info:
            await client.synthesize("abort RESOURCE_EXHAUSTED 250")
        return info.value.retry_after

    assert asyncio.run(overloaded()) == 0.25
    with pytest.raises(RuntimeError, match="one client per event loop"):
        asyncio.run(client.list_voices())
    with pytest.raises(RuntimeError, match="running event loop|no running event loop"):
        client.stream("hello")  # outside any loop


def test_unary_errors_are_typed_too(client):
    assert [v.name for v in client.list_voices()] == ["v2/en_speaker_0"]
    with pytest.raises(bc.Unauthenticated, match="missing token"):
        client.list_voices("xx")


def test_unavailable_is_retried_until_the_server_answers(scripted):
    with bc.TTSClient(scripted.target, retry=bc.RetryPolicy(max_attempts=4, initial_backoff_s=0.01)) as client:
        audio = client.synthesize("flaky 2")
    assert scripted.servicer.attempts["flaky 2"] == 3 and len(audio) == 8
    with bc.TTSClient(scripted.target, retry=None) as client, pytest.raises(bc.Unavailable, match="warming up"):
        client.synthesize("flaky 5")
    assert scripted.servicer.attempts["flaky 5"] == 1


def test_a_stream_is_not_retried_once_audio_has_arrived(client, scripted):
    stream = client.stream("midstream UNAVAILABLE")
    first = next(stream)
    with pytest.raises(bc.Unavailable, match="mid-stream"):
        next(stream)
    assert first.sequence_number == 0 and scripted.servicer.attempts["midstream UNAVAILABLE"] == 1


def test_stream_yields_chunks_with_timing_and_summary(client):
    with client.stream("hello", request_id="req-1") as stream:
        assert stream.header is None
        assert stream.wait_header().request_id == "req-1"
        chunks = list(stream)
    assert [c.sequence_number for c in chunks] == [0, 1] and [c.segment_index for c in chunks] == [0, 1]
    assert 0 < chunks[0].elapsed <= chunks[1].elapsed and stream.time_to_first_audio == chunks[0].elapsed
    assert stream.summary.chunk_count == 2 and stream.done
    p = stream.progress()
    assert (p.segments_done, p.segment_count, p.finished) == (2, 2, True)
    np.testing.assert_array_equal(chunks[1].samples * 32767, [1, -1, 100, -100])


def test_leaving_the_stream_block_cancels_the_call(client, scripted):
    scripted.servicer.cancelled.clear()
    with client.stream("endless") as stream:
        next(stream)
    assert scripted.servicer.cancelled.wait(5), "the server did not see the cancel"
    assert list(stream) == [] and stream.done
    # cancel() from another thread ends a blocked iteration quietly
    scripted.servicer.cancelled.clear()
    stream = client.stream("endless")
    next(stream)
    threading.Timer(0.2, stream.cancel).start()
    assert sum(1 for _ in stream) > 0
    assert scripted.servicer.cancelled.wait(5)


def test_token_travels_as_bearer_metadata_on_insecure_channels(scripted):
    with bc.TTSClient(scripted.target, token="s3cret", metadata={"x-tenant": "acme"}) as client:
        assert client.synthesize("hello").header.voice == "Bearer s3cret"
    md = scripted.servicer.metadata[-1]
    assert md["x-tenant"] == "acme" and "barkstream-python/" in md["user-agent"]


def test_wait_for_ready_waits_for_health_serving():
    """A replica that says NOT_SERVING gets no calls: they fail fast, or wait with wait_for_ready."""
    server = ScriptedServer()
    try:
        server.set_serving(False)
        with bc.TTSClient(server.target, timeout=20, retry=None) as client:
            with pytest.raises(bc.Unavailable, match="unhealthy"):
                client.synthesize("hello", timeout=5)
            result: list[object] = []
            t = threading.Thread(target=lambda: result.append(client.synthesize("hello", wait_for_ready=True)))
            t.start()
            time.sleep(0.5)
            assert t.is_alive() and server.servicer.attempts.get("hello") is None
            server.set_serving(True)
            t.join(10)
        assert isinstance(result[0], bc.Audio) and server.servicer.attempts["hello"] == 1
    finally:
        server.stop()


def test_unreachable_server_is_unavailable_or_deadline():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with bc.TTSClient(f"127.0.0.1:{port}", retry=None) as client:
        with pytest.raises(bc.Unavailable) as info:
            client.list_voices(timeout=5)
        assert f"127.0.0.1:{port}" in info.value.message
        started = time.monotonic()
        with pytest.raises(bc.DeadlineExceeded):
            client.synthesize("hello", timeout=0.5, wait_for_ready=True)
        assert time.monotonic() - started < 5


# ----------------------------------------------------------------------------------- TLS
@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for localhost/127.0.0.1 (also used as the client's, for mTLS)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem")], check=True, capture_output=True, timeout=60)
    return d


def test_tls_with_a_token_sends_call_credentials(cert):
    key, crt = (cert / "key.pem").read_bytes(), (cert / "cert.pem").read_bytes()
    server = ScriptedServer(grpc.ssl_server_credentials([(key, crt)]))
    try:
        with bc.TTSClient(server.target, tls=bc.TLS(root_certificates=crt), token="t0k", timeout=10) as client:
            assert client.synthesize("hello").header.voice == "Bearer t0k"
        # Plaintext to a TLS port fails as Unavailable, not as a hang.
        with bc.TTSClient(server.target, retry=None, timeout=5) as client, pytest.raises(bc.Unavailable):
            client.list_voices()
    finally:
        server.stop()


def test_mutual_tls_from_files(cert):
    key, crt = (cert / "key.pem").read_bytes(), (cert / "cert.pem").read_bytes()
    server = ScriptedServer(grpc.ssl_server_credentials([(key, crt)], root_certificates=crt,
                                                        require_client_auth=True))
    try:
        tls = bc.TLS.from_files(ca=cert / "cert.pem", cert=cert / "cert.pem", key=cert / "key.pem",
                                server_name="localhost")

        async def main() -> list[str]:
            async with bc.AsyncTTSClient(server.target, tls=tls, token="t0k", timeout=10) as client:
                audio = await client.synthesize("hello")
                assert audio.header.voice == "Bearer t0k"
                return [v.name for v in await client.list_voices()]

        assert asyncio.run(main()) == ["v2/en_speaker_0"]
        with bc.TTSClient(server.target, tls=bc.TLS(root_certificates=crt), retry=None, timeout=5) as client, \
                pytest.raises(bc.Unavailable):
            client.list_voices()  # no client certificate
    finally:
        server.stop()

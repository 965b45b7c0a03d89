"""The speech response: one Synthesize call streamed to the HTTP client as chunked audio or SSE.

The status code is decided by the gRPC stream's first message: the orchestrator validates the
request (voice, text, limits) before it sends its header, so every mistake still gets its 4xx
here. After the header, audio bytes go out as each chunk arrives. A client that stops reading
(its socket buffer full for `write_timeout_s`) or goes away cancels the call, which frees the
orchestrator's and the stages' slots at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import grpc

from barkstream.v1 import tts_pb2

from .errors import ApiError, from_rpc_error
from .observe import GatewayObserver, RequestTrace
from .speech import SpeechRequest
from .upstream import Upstream

log = logging.getLogger(__name__)
Scope = dict[str, Any]


class StreamBroken(Exception):
    """The stream cannot go on after the response has started (upstream failure, a client that stopped
    reading). The response is left incomplete, so uvicorn drops the connection without the final chunk:
    the client sees a truncated body, never a clean but short file."""


async def send_json(send: Any, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


async def send_error(send: Any, err: ApiError) -> None:
    await send_json(send, err.status, err.body(), err.headers())


def sse(event: dict) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


class SpeechResponse:
    """An ASGI response that owns the whole call, so the request span covers the stream."""

    def __init__(self, upstream: Upstream, observer: GatewayObserver, speech: SpeechRequest, token: str | None,
                 headers: dict[str, str], write_timeout_s: float, timeout_s: float | None) -> None:
        self.upstream, self.observer, self.speech = upstream, observer, speech
        self.token, self.headers = token, headers
        self.write_timeout_s, self.timeout_s = write_timeout_s, timeout_s

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        with self.observer.request("POST", "/v1/audio/speech", self.headers) as t:
            call = self.upstream.stub.Synthesize(
                self.speech.synthesize, timeout=self.timeout_s,
                metadata=self.upstream.metadata(self.token, self.headers.get("x-request-id", "")))
            try:
                await self._respond(call, t, receive, send)
            finally:
                call.cancel()

    async def _respond(self, call: Any, t: RequestTrace, receive: Any, send: Any) -> None:
        try:
            first = await call.read()
        except grpc.RpcError as e:
            err = from_rpc_error(e)
            t.status = err.status
            await send_error(send, err)
            return
        if first is grpc.aio.EOF or first.WhichOneof("payload") != "header":
            t.status = 502
            await send_error(send, ApiError(502, "the speech service sent no header", "upstream_error"))
            return
        header = first.header
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", self.speech.content_type.encode()), (b"cache-control", b"no-store"),
            (b"x-request-id", header.request_id.encode()),
            (b"x-sample-rate", str(header.sample_rate_hz).encode())]})
        pump = asyncio.ensure_future(self._pump(call, header, t, send))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            done, _ = await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, gone):
                task.cancel()
        if pump in done:
            try:
                pump.result()
            except StreamBroken as e:
                log.warning("speech stream %s cut: %s", header.request_id, e)
                t.status = t.status if t.status >= 400 else 499
        else:
            t.status = 499  # the client went away: the call is cancelled by __call__

    async def _pump(self, call: Any, header: tts_pb2.StreamHeader, t: RequestTrace, send: Any) -> None:
        sse_mode = self.speech.stream_format == "sse"
        pending = header.container_header  # sent with the first audio (SSE) or at once (raw)
        if pending and not sse_mode:
            await self._write(send, pending)
            pending = b""
        chunks = 0
        while True:
            try:
                message = await call.read()
            except grpc.RpcError as e:
                err = from_rpc_error(e)
                t.status = err.status
                if sse_mode:
                    await self._write(send, sse({"type": "error", "error": err.body()["error"]}), more=False)
                    return
                raise StreamBroken(f"upstream failed mid-stream: {err.message}") from None
            if message is grpc.aio.EOF:
                break
            kind = message.WhichOneof("payload")
            if kind == "chunk":
                data = pending + message.chunk.data
                pending = b""
                chunks += 1
                await self._write(send, sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
                                  if sse_mode else data)
                t.audio_sent()
        if sse_mode:
            chars = len(self.speech.synthesize.text)
            await self._write(send, sse({"type": "speech.audio.done", "usage": {
                "input_tokens": chars, "output_tokens": chunks, "total_tokens": chars + chunks}}), more=False)
        else:
            await self._write(send, b"", more=False)

    async def _write(self, send: Any, data: bytes, more: bool = True) -> None:
        """One body piece; a client that takes nothing for write_timeout_s is given up on."""
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await send({"type": "http.response.body", "body": data, "more_body": more})
        except TimeoutError:
            raise StreamBroken(f"the client read nothing for {self.write_timeout_s} s") from None


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass

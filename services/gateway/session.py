"""`/v1/audio/ws`: a WebSocket in front of one StreamingSynthesize call (a real-time session).

Client -> server, JSON text frames, each with a "type":
  {"type": "config", "voice": "alloy" | "v2/en_speaker_6", "response_format": "pcm", ...}   first, once;
      any other SessionConfig field too, in protobuf's JSON form ("seed", "segmentation",
      "sample_rate_hz", "chunk_duration_ms", "params", ...), and "greedy": true
  {"type": "text", "text": "Hel"}   pieces of any size, joined verbatim
  {"type": "flush"}                 speak what is buffered now
  {"type": "clear"}                 barge-in: drop buffered text, stop in-flight audio
  {"type": "close"}                 end of input: the rest is spoken, then the summary
Server -> client: JSON events {"type": "header" | "segment_started" | "segment_done" | "cleared" |
  "summary" | "error", ...the proto message's fields} and audio as binary frames (the header's
  container bytes first, then each chunk's bytes; raw Opus: one packet per frame).
The server closes with 1000 after the summary. Errors: an "error" event, then close code
4000 + the HTTP status (4400 bad message, 4401 token, 4429 busy, 4503 unavailable, 4504 deadline),
1003 for a binary frame, 1007 for a text frame that is not UTF-8, 1009 for a message over the
size limit; the orchestrator's limits (idle time, session length, buffered text) apply unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import grpc
from google.protobuf import json_format
from starlette.websockets import WebSocket, WebSocketDisconnect

from barkstream.v1 import tts_pb2

from .auth import WS_SUBPROTOCOL, HttpAuth
from .body import parse_json_object, text_field
from .errors import WS_NORMAL, WS_UNSUPPORTED_DATA, ApiError, from_rpc_error, invalid
from .observe import GatewayObserver
from .speech import FORMATS, resolve_voice, set_greedy
from .upstream import Upstream

CONTROL = {"flush": tts_pb2.Flush(), "clear": tts_pb2.Clear()}
EVENTS = ("header", "segment_started", "segment_done", "cleared", "summary")


class ClientClosed(Exception):
    """The client closed its side or went away."""


def parse_config(message: dict[str, Any], aliases: dict[str, str]) -> tts_pb2.SessionConfig:
    fields = {k: v for k, v in message.items() if k not in ("type", "response_format", "greedy")}
    if "voice" in fields:
        fields["voice"] = resolve_voice(fields["voice"], aliases)
    try:
        config = json_format.ParseDict(fields, tts_pb2.SessionConfig())
    except (json_format.ParseError, ValueError, TypeError) as e:
        raise invalid(f"config: {e}", "config") from None
    fmt = message.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, str) or fmt not in FORMATS:
            raise invalid(f"config.response_format {fmt!r}: use one of {', '.join(FORMATS)}", "response_format")
        config.encoding, rate, _ = FORMATS[fmt]
        config.sample_rate_hz = config.sample_rate_hz or rate
    greedy = message.get("greedy")
    if greedy is not None and not isinstance(greedy, bool):
        raise invalid("config.greedy must be true or false", "greedy")
    if greedy:
        set_greedy(config.params)
    return config


class WebSocketSession:
    def __init__(self, ws: WebSocket, upstream: Upstream, observer: GatewayObserver, auth: HttpAuth,
                 aliases: dict[str, str], first_message_timeout_s: float, write_timeout_s: float) -> None:
        self.ws, self.upstream, self.observer, self.auth, self.aliases = ws, upstream, observer, auth, aliases
        self.first_message_timeout_s, self.write_timeout_s = first_message_timeout_s, write_timeout_s

    async def run(self) -> None:
        ws = self.ws
        offered = list(ws.scope.get("subprotocols") or [])
        await ws.accept(subprotocol=WS_SUBPROTOCOL if WS_SUBPROTOCOL in offered else None)
        with self.observer.request("GET", "/v1/audio/ws", dict(ws.headers), session=True) as t:
            try:
                token = self.auth.token(ws.headers, offered)
                await self._session(token)
            except ApiError as err:
                t.status = err.status
                await self._fail(err.event(), err.close_code)
            except ClientClosed:
                t.status = 499

    async def _session(self, token: str | None) -> None:
        try:
            async with asyncio.timeout(self.first_message_timeout_s):
                first = await self._receive()
        except TimeoutError:
            raise ApiError(408, f"no configuration within {self.first_message_timeout_s} s", "timeout") from None
        if first is None or first.get("type") != "config":
            raise invalid("the first message must be {\"type\": \"config\", ...}", "type")
        config = parse_config(first, self.aliases)
        call = self.upstream.stub.StreamingSynthesize(metadata=self.upstream.metadata(token, config.request_id))
        try:
            await call.write(tts_pb2.StreamingSynthesizeRequest(config=config))
            await self._pump(call)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()
        await self._close(WS_NORMAL)

    async def _pump(self, call: Any) -> None:
        """Both directions at once until the response stream ends. A bad client message ends the
        session; an upstream failure wins over the write error it causes on the input side.

        Input waits for the response header: the orchestrator checks the configuration before it,
        and grpc.aio turns the status of a call into INTERNAL when a write races with the server's
        end of the call, so a refused configuration would otherwise lose its real status."""
        configured = asyncio.Event()
        reader = asyncio.ensure_future(self._forward_input(call, configured))
        writer = asyncio.ensure_future(self._forward_output(call, configured))
        try:
            pending = {reader, writer}
            while writer in pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if reader in done and reader.exception() is not None \
                        and not isinstance(reader.exception(), grpc.RpcError | asyncio.InvalidStateError):
                    raise reader.exception()
            writer.result()
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)

    async def _forward_input(self, call: Any, configured: asyncio.Event) -> None:
        """Client messages -> requests; a bad one ends the session (the output side reports it)."""
        await configured.wait()
        while True:
            message = await self._receive()
            if message is None or message.get("type") == "close":
                await call.done_writing()
                return
            kind = message.get("type")
            if kind == "text":
                request = tts_pb2.StreamingSynthesizeRequest(text=text_field(message, "text", required=True))
            elif kind in ("flush", "clear"):
                request = tts_pb2.StreamingSynthesizeRequest(**{kind: CONTROL[kind]})
            elif kind == "config":
                raise invalid("the session is already configured (send config once, first)", "type")
            else:
                raise invalid(f"unknown message type {kind!r}: use text, flush, clear or close", "type")
            if call.done():
                return  # the server has ended the call: its status is on the output side
            await call.write(request)

    async def _forward_output(self, call: Any, configured: asyncio.Event) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            kind = message.WhichOneof("payload")
            if kind == "chunk":
                for data in (list(message.chunk.packets) or [message.chunk.data]):
                    await self._send({"type": "websocket.send", "bytes": data})
                continue
            body = getattr(message, kind)
            event = {"type": kind, **json_format.MessageToDict(body, preserving_proto_field_name=True)}
            await self._send({"type": "websocket.send", "text": json.dumps(event)})
            if kind == "header":
                configured.set()
                if body.container_header:
                    await self._send({"type": "websocket.send", "bytes": body.container_header})

    async def _receive(self) -> dict[str, Any] | None:
        """The next JSON message; None when the client closed its side."""
        try:
            frame = await self.ws.receive()
        except WebSocketDisconnect:
            raise ClientClosed() from None
        if frame["type"] == "websocket.disconnect":
            raise ClientClosed()
        if frame.get("bytes") is not None:
            raise ApiError(400, "binary frames are not accepted: send JSON text messages", code="binary_frame")
        message = parse_json_object(frame.get("text") or "")
        if not isinstance(message.get("type"), str):
            raise invalid("every message needs a string \"type\"", "type")
        return message

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await self.ws.send(message)
        except TimeoutError:
            raise ApiError(408, f"the client read nothing for {self.write_timeout_s} s", "timeout") from None
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise ClientClosed() from None

    async def _fail(self, event: dict, code: int) -> None:
        if event.get("code") == "binary_frame":
            code = WS_UNSUPPORTED_DATA
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.ws.send_text(json.dumps(event))
        await self._close(code, event.get("message", "")[:120])

    async def _close(self, code: int, reason: str = "") -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)

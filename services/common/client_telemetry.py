"""The CLIENT span and `rpc.client.call.duration` of every outgoing call (no torch).

The span is a child of the current span, its context injected into the call's metadata (W3C
`traceparent`); it ends when the call does (status received or cancelled), and the call
object is returned unchanged.
Why not opentelemetry-instrumentation-grpc: see services/telemetry.py.
"""

from __future__ import annotations

import asyncio
import time

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from . import metrics as M
from .server_calls import REQUEST_ID_METADATA
from .spans import CLIENT_ERROR_CODES, REQUEST_ID, end_rpc, rpc_attributes


class _MetadataSetter:
    """Writes W3C trace context (traceparent, tracestate, baggage) into grpc.aio metadata."""

    @staticmethod
    def set(carrier: grpc.aio.Metadata, key: str, value: str) -> None:
        carrier[key] = value


_SETTER = _MetadataSetter()


class ClientTelemetry:
    """Traces and times the calls of the channels built with `interceptors()`."""

    def __init__(self, tracer, instruments: M.Instruments | None) -> None:
        self._tracer = tracer
        self._duration = None if instruments is None else instruments.rpc_client_duration
        self._pending: set[asyncio.Task] = set()

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """grpc.aio files a client interceptor under one arity only: one per arity, all forwarding here."""
        return [cls(self) for cls in _PER_ARITY]

    async def intercept(self, continuation, details, request):
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        attributes = rpc_attributes(method)
        metadata = grpc.aio.Metadata(*tuple(details.metadata or ()))
        span = self._tracer.start_span(method.lstrip("/"), kind=SpanKind.CLIENT, attributes=attributes)
        if span.is_recording():
            request_id = metadata.get(REQUEST_ID_METADATA)
            if request_id is not None:
                span.set_attribute(REQUEST_ID, request_id)
        propagate.inject(metadata, context=trace.set_span_in_context(span), setter=_SETTER)
        started = time.perf_counter()
        try:
            call = await continuation(details._replace(metadata=metadata), request)
        except BaseException as e:
            code = e.code() if isinstance(e, grpc.aio.AioRpcError) else grpc.StatusCode.CANCELLED \
                if isinstance(e, asyncio.CancelledError) else grpc.StatusCode.UNKNOWN
            end_rpc(span, self._duration, attributes, started, code, CLIENT_ERROR_CODES, e)
            raise
        call.add_done_callback(lambda c: self._done(c, span, attributes, started))
        return call

    def _done(self, call, span, attributes, started) -> None:
        ended, end_ns = time.perf_counter(), time.time_ns()
        if call.cancelled():
            self._end(span, attributes, started, ended, end_ns, grpc.StatusCode.CANCELLED)
            return
        task = asyncio.ensure_future(self._resolve(call, span, attributes, started, ended, end_ns))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _resolve(self, call, span, attributes, started, ended, end_ns) -> None:
        try:
            code = await call.code()
        except BaseException:  # noqa: BLE001 - cancelled while resolving: still end the span
            code = grpc.StatusCode.CANCELLED
        self._end(span, attributes, started, ended, end_ns, code)

    def _end(self, span, attributes, started, ended, end_ns, code) -> None:
        end_rpc(span, self._duration, attributes, started, code, CLIENT_ERROR_CODES, ended=ended, end_ns=end_ns)


def _per_arity(base: type, method: str) -> type:
    """A `base` interceptor whose one method (`intercept_unary_unary`...) forwards to ClientTelemetry."""

    def __init__(self, telemetry: ClientTelemetry) -> None:
        self.telemetry = telemetry

    async def forward(self, continuation, client_call_details, request):
        return await self.telemetry.intercept(continuation, client_call_details, request)

    return type(f"Client{base.__name__}", (base,), {"__init__": __init__, method: forward})


_PER_ARITY = tuple(_per_arity(base, method) for base, method in (
    (grpc.aio.UnaryUnaryClientInterceptor, "intercept_unary_unary"),
    (grpc.aio.UnaryStreamClientInterceptor, "intercept_unary_stream"),
    (grpc.aio.StreamUnaryClientInterceptor, "intercept_stream_unary"),
    (grpc.aio.StreamStreamClientInterceptor, "intercept_stream_stream"),
))

"""The SERVER span and `rpc.server.call.duration` of every incoming call (no torch).

The span is a child of the caller's context (W3C trace context in the metadata), current while
the handler runs, and ends when the call really ends (server_calls.py), with its status code.
Why not opentelemetry-instrumentation-grpc: see services/telemetry.py.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Mapping

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from . import metrics as M
from .server_calls import REQUEST_ID_METADATA, CallInterceptor, reset_var
from .spans import REQUEST_ID, SERVER_ERROR_CODES, end_rpc, rpc_attributes


class ServerTelemetry(CallInterceptor):
    """A SERVER span per RPC and its duration; health and reflection calls are left alone."""

    def __init__(self, tracer, instruments: M.Instruments | None) -> None:
        self._tracer = tracer
        self._duration = None if instruments is None else instruments.rpc_server_duration

    def started(self, method: str, metadata: Mapping[str, str], context: grpc.aio.ServicerContext):
        attributes = rpc_attributes(method)
        parent = propagate.extract(metadata)
        span = self._tracer.start_span(method.lstrip("/"), context=parent, kind=SpanKind.SERVER,
                                       attributes=attributes)
        if REQUEST_ID_METADATA in metadata and span.is_recording():
            span.set_attribute(REQUEST_ID, metadata[REQUEST_ID_METADATA])
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token, attributes, time.perf_counter()

    def ended(self, state, context, code: grpc.StatusCode, error: BaseException | None) -> None:
        span, token, attributes, started = state
        if isinstance(token, contextvars.Token):
            reset_var(token)
        else:
            otel_context.detach(token)
        end_rpc(span, self._duration, attributes, started, code, SERVER_ERROR_CODES, error)

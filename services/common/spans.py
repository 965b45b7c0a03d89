"""Span names, attributes and the helpers servicers use to describe their call (no torch).

`annotate` is the servicers' one telemetry call: it adds attributes to the current server span
and to the call's request-log record (request_log.py), so the servicer writes each fact once.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from . import metrics as M
from . import request_log

SCOPE = "barkstream"
# Attributes set on spans; the engine spans copy INHERITED from their stage's server span.
REQUEST_ID = "barkstream.request_id"
SEGMENT_INDEX = "barkstream.segment_index"
INHERITED = (REQUEST_ID, SEGMENT_INDEX)
# gRPC codes that make a *server* span an error (semantic conventions); any non-OK code does on the client.
SERVER_ERROR_CODES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                                grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL,
                                grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})
CLIENT_ERROR_CODES = frozenset(c for c in grpc.StatusCode if c is not grpc.StatusCode.OK)


def annotate(**attributes: Any) -> None:
    """Describe the current call: `barkstream.<key>` attributes on its server span (if it records)
    and fields of its request-log line."""
    request_log.note(**attributes)
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({f"barkstream.{k}": v for k, v in attributes.items() if v is not None})


def segment_span(tracer, index: int, **attributes: Any):
    """The orchestrator's span around one segment's four stage streams (their client spans' parent)."""
    if tracer is None:
        tracer = trace.NoOpTracer()
    attrs = {SEGMENT_INDEX: index, **{f"barkstream.{k}": v for k, v in attributes.items() if v is not None}}
    return tracer.start_as_current_span("barkstream.segment", attributes=attrs)


def rpc_attributes(method: str) -> dict[str, str]:
    return {M.RPC_SYSTEM_NAME: "grpc", M.RPC_METHOD: method.lstrip("/")}


def end_rpc(span, histogram, attributes: dict, started: float, code: grpc.StatusCode, error_codes,
            error: BaseException | None = None, ended: float | None = None, end_ns: int | None = None) -> None:
    """Record an RPC's duration with its status and end its span (an error status for `error_codes`)."""
    attributes = {**attributes, M.RPC_STATUS: code.name}
    if code is not grpc.StatusCode.OK:
        attributes[M.ERROR_TYPE] = code.name
    if histogram is not None:
        histogram.record((time.perf_counter() if ended is None else ended) - started, attributes)
    if span.is_recording():
        span.set_attribute(M.RPC_STATUS, code.name)
        if code in error_codes:
            span.set_status(Status(StatusCode.ERROR, code.name))
            if error is not None and code is grpc.StatusCode.UNKNOWN:
                span.record_exception(error)
    span.end(end_ns)

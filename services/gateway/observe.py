"""Traces and metrics of the HTTP side: a SERVER span per request that continues the caller's trace
(W3C `traceparent` header) and is the parent of the gRPC CLIENT span, so one speech request is one
trace from the browser or agent down to the stages; and HTTP metrics by route and status.

Built from the process's `Telemetry` (off by default: then spans are no-ops and nothing is recorded).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ..telemetry import Telemetry

HTTP_DURATION = "http.server.request.duration"
GATEWAY_TTFA = "barkstream.gateway.time_to_first_audio"
WS_SESSIONS = "barkstream.gateway.websocket.sessions"


class RequestTrace:
    """What one request reports: its status, and when its first audio left."""

    def __init__(self, span: trace.Span, started: float) -> None:
        self.span = span
        self.started = started
        self.status = 200
        self.first_audio: float | None = None

    def audio_sent(self) -> None:
        if self.first_audio is None:
            self.first_audio = time.perf_counter()
            self.span.add_event("first audio")


class GatewayObserver:
    def __init__(self, telemetry: Telemetry) -> None:
        self.tracer = telemetry.tracer
        meter = telemetry.meter_provider.get_meter("barkstream.gateway") if telemetry.metering else None
        self._duration = meter.create_histogram(
            HTTP_DURATION, unit="s", description="HTTP requests and WebSocket sessions, whole stream") \
            if meter else None
        self._ttfa = meter.create_histogram(
            GATEWAY_TTFA, unit="s", description="request received to first audio byte sent, at the gateway") \
            if meter else None
        self._sessions = meter.create_up_down_counter(WS_SESSIONS, description="open WebSocket sessions") \
            if meter else None

    @contextlib.contextmanager
    def request(self, method: str, route: str, headers: Mapping[str, str],
                session: bool = False) -> Iterator[RequestTrace]:
        """The request's span, current inside the block (gRPC calls made there are its children).
        session: a WebSocket session (counted in the open-sessions gauge while it lasts)."""
        parent = propagate.extract(dict(headers))
        attributes = {"http.request.method": method, "http.route": route}
        span = self.tracer.start_span(f"{method} {route}", context=parent, kind=SpanKind.SERVER,
                                      attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        t = RequestTrace(span, time.perf_counter())
        if self._sessions is not None and session:
            self._sessions.add(1)
        try:
            yield t
        except BaseException as e:
            if t.status < 400:
                t.status = 499 if isinstance(e, GeneratorExit | OSError) else 500
            raise
        finally:
            otel_context.detach(token)
            if self._sessions is not None and session:
                self._sessions.add(-1)
            self._end(t, attributes)

    def _end(self, t: RequestTrace, attributes: dict) -> None:
        attributes = {**attributes, "http.response.status_code": t.status}
        if t.span.is_recording():
            t.span.set_attribute("http.response.status_code", t.status)
            if t.status >= 500:
                t.span.set_status(Status(StatusCode.ERROR, str(t.status)))
        t.span.end()
        if self._duration is not None:
            self._duration.record(time.perf_counter() - t.started, attributes)
        if self._ttfa is not None and t.first_audio is not None:
            self._ttfa.record(t.first_audio - t.started, {"http.route": attributes["http.route"]})

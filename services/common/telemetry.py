"""OpenTelemetry traces and metrics for every barkstream process (no torch here).

One `Telemetry` object per process, built at the process edge (`barkstream serve`) from the
standard `OTEL_*` variables (read by the OpenTelemetry SDK) and `TelemetryConfig`
(`--metrics-port`), then handed to the App, which passes its pieces down: gRPC interceptors
to the server and the stage channels, a `StageObserver` to each engine and its runner, the
tracer and instruments to the orchestrator. `Telemetry()` (the default) is off: no
interceptors, no-op observers, nothing exported, nothing measured.

Export: spans go to OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set
or `OTEL_TRACES_EXPORTER` names `otlp`/`console`; metrics likewise (`OTEL_METRICS_EXPORTER`,
`OTEL_METRIC_EXPORT_INTERVAL`), and on `http://HOST:METRICS_PORT/metrics` for Prometheus
when `--metrics-port` is set. Sampling (`OTEL_TRACES_SAMPLER`), batching (`OTEL_BSP_*`),
resource attributes (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) and propagation
(`OTEL_PROPAGATORS`, W3C trace context by default) are the SDK's own settings.

The span tree of one Synthesize (embedded or split, one trace id):

    barkstream.v1.TextToSpeech/Synthesize              SERVER   orchestrator
      barkstream.segment                               INTERNAL one per text segment
        barkstream.v1.SemanticService/Generate         CLIENT   (one per stage RPC)
          barkstream.v1.SemanticService/Generate       SERVER   semantic process
            semantic.queue, semantic.prefill, semantic.decode
        barkstream.v1.CoarseService/Generate           CLIENT -> SERVER
            coarse.queue, coarse.window (-> coarse.prefill) per 60-token window
        barkstream.v1.FineService/Generate             CLIENT -> SERVER
            fine.queue, fine.window per batched 1024-frame window
        barkstream.v1.CodecService/Decode              CLIENT -> SERVER
            codec.queue, codec.decode per decoded chunk
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ..stages.jobs import Job
from ..stages.observe import NULL_OBSERVER, StageObserver
from . import metrics as M
from .config import _help

log = logging.getLogger(__name__)

SCOPE = "barkstream"
# Attributes set on spans; the engine spans copy the first two from their stage's server span.
REQUEST_ID = "barkstream.request_id"
SEGMENT_INDEX = "barkstream.segment_index"
INHERITED = (REQUEST_ID, SEGMENT_INDEX)
REQUEST_ID_METADATA = "x-request-id"
TOKEN_FLUSH_S = 0.25
# Probes and tooling, not traffic: no spans, no RPC metrics.
UNTRACED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# gRPC codes that make a *server* span an error (semantic conventions); any non-OK code does on the client.
SERVER_ERROR_CODES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                                grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL,
                                grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})


@dataclass(frozen=True)
class TelemetryConfig:
    """barkstream's own observability settings (flags `--metrics-port`..., env `BARKSTREAM_METRICS_PORT`...).

    Everything else is configured by the standard `OTEL_*` variables.
    """

    metrics_port: int = field(default=0, metadata=_help(
        "serve Prometheus metrics on http://METRICS_HOST:PORT/metrics (0 = off)"))
    metrics_host: str = field(default="0.0.0.0", metadata=_help("address of the Prometheus endpoint"))

    def __post_init__(self) -> None:
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port={self.metrics_port}: use 1..65535, or 0 for no Prometheus endpoint")


def service_name(role: str) -> str:
    """`service.name` of a process: barkstream-semantic ... barkstream-orchestrator, barkstream (embedded)."""
    return "barkstream" if role == "all" else f"barkstream-{role}"


class Telemetry:
    """Tracer, instruments and their providers for one process; `Telemetry()` is off.

    tracer_provider / meter_provider: SDK providers (or None: no traces / no metrics). They
    are not installed as OpenTelemetry's global providers: everything barkstream traces gets
    them from here.
    """

    def __init__(self, tracer_provider=None, meter_provider=None,
                 on_shutdown: Sequence[Callable[[], None]] = ()) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracing = tracer_provider is not None
        self.metering = meter_provider is not None
        version = _version()
        self.tracer = tracer_provider.get_tracer(SCOPE, version) if self.tracing else trace.NoOpTracer()
        self.instruments = M.Instruments(meter_provider.get_meter(SCOPE, version)) if self.metering else None
        self.metrics_port: int | None = None  # the Prometheus endpoint's port, when there is one
        self._on_shutdown = list(on_shutdown)
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self.tracing or self.metering

    # -- construction at the process edge ---------------------------------------------------
    @classmethod
    def from_environment(cls, role: str, config: TelemetryConfig, environ: Mapping[str, str]) -> Telemetry:
        """Providers and exporters for `barkstream serve ROLE`, as the `OTEL_*` variables and `config` say."""
        if _truthy(environ.get("OTEL_SDK_DISABLED", "")):
            if config.metrics_port:
                log.warning("OTEL_SDK_DISABLED is set: no metrics on port %d", config.metrics_port)
            return cls()
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource

        resource = Resource.create({
            "service.name": service_name(role), "service.namespace": "barkstream", "service.version": _version(),
            "barkstream.role": role,
        }).merge(OTELResourceDetector().detect())  # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win
        tracer_provider = None
        span_exporters = _span_exporters(environ)
        if span_exporters:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            tracer_provider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER is read here
            for exporter in span_exporters:
                tracer_provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*
        readers, closers = [], []
        port = None
        if config.metrics_port:
            reader, port, close = _prometheus(config.metrics_host, config.metrics_port)
            readers.append(reader)
            closers.append(close)
        for exporter in _metric_exporters(environ):
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers.append(PeriodicExportingMetricReader(exporter))  # OTEL_METRIC_EXPORT_INTERVAL
        meter_provider = None
        if readers:
            from opentelemetry.sdk.metrics import MeterProvider

            meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        telemetry = cls(tracer_provider, meter_provider, closers)
        telemetry.metrics_port = port
        log.info("telemetry: service.name=%s, traces %s, metrics %s%s", resource.attributes.get("service.name"),
                 ", ".join(type(e).__name__ for e in span_exporters) or "off",
                 ", ".join(type(r).__name__ for r in readers) or "off",
                 f" (Prometheus on port {port})" if port else "")
        return telemetry

    # -- what the app hands out -------------------------------------------------------------
    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [ServerTelemetry(self.tracer, self.instruments)] if self.enabled else []

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        return ClientTelemetry(self.tracer, self.instruments).interceptors() if self.enabled else []

    def stage(self, stage: str) -> StageObserver:
        """The observer of one stage's engine and runner (the no-op one when telemetry is off)."""
        if not self.enabled:
            return NULL_OBSERVER
        return EngineTelemetry(stage, self.tracer if self.tracing else None, self.instruments)

    def watch_streams(self, streams: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Report `streams()` -> (service, active streams) as `barkstream.streams.active`."""
        if self.instruments is not None:
            self.instruments.watch_streams(streams)

    def synthesis_done(self, time_to_first_audio_s: float | None, real_time_factor: float | None,
                       audio_s: float) -> None:
        """One Synthesize finished (orchestrator)."""
        i = self.instruments
        if i is None:
            return
        if time_to_first_audio_s is not None:
            i.time_to_first_audio.record(time_to_first_audio_s)
        if real_time_factor is not None:
            i.real_time_factor.record(real_time_factor)
        if audio_s:
            i.audio.add(audio_s)

    def shutdown(self) -> None:
        """Flush and stop the exporters (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception:  # noqa: BLE001 - shutting down anyway
                    log.exception("telemetry: shutdown of %s failed", type(provider).__name__)
        for close in self._on_shutdown:
            close()


def annotate(**attributes: Any) -> None:
    """Add `barkstream.<key>` attributes to the current span (the servicer's server span), if it records."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({f"barkstream.{k}": v for k, v in attributes.items() if v is not None})


def segment_span(tracer, index: int, **attributes: Any):
    """The orchestrator's span around one segment's four stage streams (their client spans' parent)."""
    if tracer is None:
        tracer = trace.NoOpTracer()
    attrs = {SEGMENT_INDEX: index, **{f"barkstream.{k}": v for k, v in attributes.items() if v is not None}}
    return tracer.start_as_current_span("barkstream.segment", attributes=attrs)


# -- exporters ----------------------------------------------------------------------------------
def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("barkstream")
    except PackageNotFoundError:
        return "0"


def _exporter_names(environ: Mapping[str, str], signal: str) -> list[str]:
    """OTEL_<SIGNAL>_EXPORTER if set; else `otlp` when an OTLP endpoint is configured, else nothing."""
    raw = environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip()
    if raw:
        names = [n.strip().lower() for n in raw.split(",") if n.strip()]
        return [n for n in names if n != "none"]
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"):
        return ["otlp"]
    return []


def _otlp_protocol(environ: Mapping[str, str], signal: str) -> str:
    return (environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip().lower()


def _span_exporters(environ: Mapping[str, str]) -> list:
    out = []
    for name in _exporter_names(environ, "traces"):
        if name == "otlp":
            if _otlp_protocol(environ, "traces") == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            else:
                OTLPSpanExporter = _http_exporter("trace_exporter", "OTLPSpanExporter")  # noqa: N806
            out.append(OTLPSpanExporter())  # OTEL_EXPORTER_OTLP_* (endpoint, headers, insecure, timeout)
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            out.append(ConsoleSpanExporter())
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: barkstream supports otlp, console or none")
    return out


def _metric_exporters(environ: Mapping[str, str]) -> list:
    out = []
    for name in _exporter_names(environ, "metrics"):
        if name == "otlp":
            if _otlp_protocol(environ, "metrics") == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            else:
                OTLPMetricExporter = _http_exporter("metric_exporter", "OTLPMetricExporter")  # noqa: N806
            out.append(OTLPMetricExporter())
        elif name == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            out.append(ConsoleMetricExporter())
        elif name == "prometheus":
            continue  # the scrape endpoint is --metrics-port
        else:
            raise ValueError(f"OTEL_METRICS_EXPORTER={name!r}: barkstream supports otlp, console, prometheus "
                             "(with --metrics-port) or none")
    return out


def _http_exporter(module: str, name: str):
    import importlib

    try:
        return getattr(importlib.import_module(f"opentelemetry.exporter.otlp.proto.http.{module}"), name)
    except ImportError:
        raise ValueError("OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf needs the opentelemetry-exporter-otlp-proto-http "
                         "package; install it or use grpc") from None


def _prometheus(host: str, port: int):
    """A Prometheus reader on its own registry, served at http://host:port/metrics; (reader, port, close)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    reader = PrometheusMetricReader(registry=registry)
    server, thread = start_http_server(port, addr=host, registry=registry)

    def close() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return reader, server.server_address[1], close


# -- gRPC interceptors --------------------------------------------------------------------------
class _MetadataSetter:
    """Writes W3C trace context (traceparent, tracestate, baggage) into grpc.aio metadata."""

    @staticmethod
    def set(carrier: grpc.aio.Metadata, key: str, value: str) -> None:
        carrier[key] = value


_SETTER = _MetadataSetter()


def _rpc_attributes(method: str) -> dict[str, str]:
    return {M.RPC_SYSTEM_NAME: "grpc", M.RPC_METHOD: method.lstrip("/")}


def _end_rpc(span, histogram, attributes: dict, started: float, code: grpc.StatusCode, error_codes,
             error: BaseException | None = None) -> None:
    attributes = {**attributes, M.RPC_STATUS: code.name}
    if code is not grpc.StatusCode.OK:
        attributes[M.ERROR_TYPE] = code.name
    if histogram is not None:
        histogram.record(time.perf_counter() - started, attributes)
    if span.is_recording():
        span.set_attribute(M.RPC_STATUS, code.name)
        if code in error_codes:
            span.set_status(Status(StatusCode.ERROR, code.name))
            if error is not None and code is grpc.StatusCode.UNKNOWN:
                span.record_exception(error)
    span.end()


class ServerTelemetry(grpc.aio.ServerInterceptor):
    """A SERVER span per RPC, child of the caller's context from the metadata, current while the
    handler runs; and `rpc.server.call.duration`. Health and reflection calls are left alone."""

    def __init__(self, tracer, instruments: M.Instruments | None) -> None:
        self._tracer = tracer
        self._duration = None if instruments is None else instruments.rpc_server_duration

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or method.startswith(UNTRACED_PREFIXES):
            return handler
        metadata = {}
        for key, value in handler_call_details.invocation_metadata or ():
            if isinstance(value, str):
                metadata[key] = value
        if handler.request_streaming and handler.response_streaming:
            return handler._replace(stream_stream=self._streaming(handler.stream_stream, method, metadata))
        if handler.response_streaming:
            return handler._replace(unary_stream=self._streaming(handler.unary_stream, method, metadata))
        if handler.request_streaming:
            return handler._replace(stream_unary=self._unary(handler.stream_unary, method, metadata))
        return handler._replace(unary_unary=self._unary(handler.unary_unary, method, metadata))

    def _start(self, method: str, metadata: dict[str, str]):
        attributes = _rpc_attributes(method)
        parent = propagate.extract(metadata)
        span = self._tracer.start_span(method.lstrip("/"), context=parent, kind=SpanKind.SERVER,
                                       attributes=attributes)
        if REQUEST_ID_METADATA in metadata and span.is_recording():
            span.set_attribute(REQUEST_ID, metadata[REQUEST_ID_METADATA])
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token, attributes, time.perf_counter()

    def _finish(self, started, context, error: BaseException | None) -> None:
        span, token, attributes, t0 = started
        _detach(token)
        _end_rpc(span, self._duration, attributes, t0, _server_code(context, error), SERVER_ERROR_CODES, error)

    def _unary(self, behavior, method, metadata):
        async def handle(request, context):
            started = self._start(method, metadata)
            try:
                response = await behavior(request, context)
            except BaseException as e:
                self._finish(started, context, e)
                raise
            self._finish(started, context, None)
            return response

        return handle

    def _streaming(self, behavior, method, metadata):
        async def handle(request, context):
            started = self._start(method, metadata)
            responses = behavior(request, context)
            error = None
            try:
                async for response in responses:
                    yield response
            except BaseException as e:  # GeneratorExit: gRPC dropped the stream (cancelled)
                error = e
                raise
            finally:
                try:
                    await responses.aclose()  # the servicer's cleanup runs now, not when collected
                finally:
                    self._finish(started, context, error)

        return handle


def _detach(token) -> None:
    """Detach the server span's context. A response generator that gRPC abandons is closed later
    from another task, where the token cannot be reset; that context dies with its task anyway."""
    if isinstance(token, contextvars.Token):
        try:
            token.var.reset(token)
        except ValueError:
            pass
    else:
        otel_context.detach(token)


def _server_code(context, error: BaseException | None) -> grpc.StatusCode:
    try:
        code = context.code()
    except Exception:  # noqa: BLE001 - older grpc: no code() on the aio context
        code = None
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        remaining = context.time_remaining()
        return grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 \
            else grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class ClientTelemetry:
    """A CLIENT span per outgoing RPC (child of the current span), its context injected into the
    call's metadata (W3C `traceparent`); and `rpc.client.call.duration`. The span ends when the
    call does (status received or cancelled); the call object is returned unchanged.

    grpc.aio files an interceptor under one arity only: `interceptors()` gives one per arity.
    """

    def __init__(self, tracer, instruments: M.Instruments | None) -> None:
        self._tracer = tracer
        self._duration = None if instruments is None else instruments.rpc_client_duration
        self._pending: set[asyncio.Task] = set()

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        return [_UnaryUnary(self), _UnaryStream(self), _StreamUnary(self), _StreamStream(self)]

    async def _intercept(self, continuation, details, request):
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        attributes = _rpc_attributes(method)
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
            _end_rpc(span, self._duration, attributes, started, code, _CLIENT_ERROR_CODES, e)
            raise
        call.add_done_callback(lambda c: self._done(c, span, attributes, started))
        return call

    def _done(self, call, span, attributes, started) -> None:
        ended = time.perf_counter()
        end_ns = time.time_ns()
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
        attributes = {**attributes, M.RPC_STATUS: code.name}
        if code is not grpc.StatusCode.OK:
            attributes[M.ERROR_TYPE] = code.name
        if self._duration is not None:
            self._duration.record(ended - started, attributes)
        if span.is_recording():
            span.set_attribute(M.RPC_STATUS, code.name)
            if code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
        span.end(end_ns)


_CLIENT_ERROR_CODES = frozenset(c for c in grpc.StatusCode if c is not grpc.StatusCode.OK)


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, telemetry: ClientTelemetry) -> None:
        self._t = telemetry

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await self._t._intercept(continuation, client_call_details, request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, telemetry: ClientTelemetry) -> None:
        self._t = telemetry

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await self._t._intercept(continuation, client_call_details, request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, telemetry: ClientTelemetry) -> None:
        self._t = telemetry

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await self._t._intercept(continuation, client_call_details, request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, telemetry: ClientTelemetry) -> None:
        self._t = telemetry

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await self._t._intercept(continuation, client_call_details, request_iterator)


# -- engines ------------------------------------------------------------------------------------
def _never_raises(method):
    """Telemetry must not fail an engine step: log the first error of a hook, then stay quiet."""

    @functools.wraps(method)
    def safe(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception:  # noqa: BLE001 - see above
            if not self._hook_failed:
                self._hook_failed = True
                log.exception("telemetry hook %s failed (further failures are not logged)", method.__name__)
            return None

    return safe


class _JobTrace:
    """One stage job's telemetry: its parent context, queue span, open phase and batch spans."""

    __slots__ = ("context", "attributes", "submitted_ns", "started_ns", "queue_span", "phase", "phase_context",
                 "batch_span", "tokens", "done", "owner")

    def __init__(self, owner: EngineTelemetry, context, attributes: dict[str, Any], submitted_ns: int) -> None:
        self.owner = owner
        self.context = context
        self.attributes = attributes
        self.submitted_ns = submitted_ns
        self.started_ns: int | None = None
        self.queue_span = None
        self.phase = None
        self.phase_context = None
        self.batch_span = None
        self.tokens = 0
        self.done = False

    def finished(self, error: BaseException | None) -> None:
        """Called by `Job.finish` (engine thread): ends whatever is still open."""
        self.owner._finished(self, error)


class EngineTelemetry(StageObserver):
    """The OpenTelemetry `StageObserver` of one stage: engine spans parented to each job's
    server span (captured when the job is submitted), batch sizes, tokens, queue time/depth."""

    enabled = True

    def __init__(self, stage: str, tracer, instruments: M.Instruments | None) -> None:
        self.stage = stage
        self._tracer = tracer  # None: metrics only
        self._i = instruments
        self._attrs = {M.STAGE: stage}
        self._phase_attrs: dict[str, dict[str, str]] = {}
        self._waiting: set[_JobTrace] = set()  # submitted, no batch yet (set ops are atomic)
        self._hook_failed = False
        # Tokens are counted here and added to the counter at most every TOKEN_FLUSH_S (and when a
        # job ends): one SDK call per decode step and row would cost more than the rest of the hooks.
        self._tokens = 0
        self._tokens_flushed = time.monotonic()
        if instruments is not None:
            instruments.watch_queue(stage, lambda: len(self._waiting))

    def _phase(self, phase: str) -> dict[str, str]:
        attrs = self._phase_attrs.get(phase)
        if attrs is None:
            attrs = self._phase_attrs[phase] = {M.STAGE: self.stage, M.PHASE: phase}
        return attrs

    # caller's thread (the servicer, inside its server span)
    @_never_raises
    def submitted(self, job: Job) -> None:
        ctx = otel_context.get_current()
        inherited: dict[str, Any] = {}
        if self._tracer is not None:
            readable = getattr(trace.get_current_span(ctx), "attributes", None) or {}
            inherited = {k: readable[k] for k in INHERITED if k in readable}
        t = _JobTrace(self, ctx, inherited, time.time_ns())
        if self._tracer is not None:
            t.queue_span = self._tracer.start_span(f"{self.stage}.queue", context=ctx, start_time=t.submitted_ns,
                                                   attributes=inherited)
        job.trace = t
        self._waiting.add(t)

    # engine thread from here on
    def _start(self, t: _JobTrace, now: int) -> None:
        t.started_ns = now
        self._waiting.discard(t)
        if t.queue_span is not None:
            t.queue_span.end(now)
            t.queue_span = None
        if self._i is not None:
            self._i.queue_duration.record((now - t.submitted_ns) / 1e9, self._attrs)

    @_never_raises
    def begin(self, phase: str, jobs: Sequence[Job], **attributes: Any) -> Any:
        n = len(jobs)
        if self._i is not None:
            self._i.batch_size.record(n, self._phase(phase))
        now = time.time_ns()
        handle = []
        attrs = {M.PHASE: phase, "barkstream.batch_size": n,
                 **{f"barkstream.{k}": v for k, v in attributes.items()}}
        for job in jobs:
            t: _JobTrace | None = job.trace
            if t is None or t.done:
                continue
            if t.started_ns is None:
                self._start(t, now)
            if self._tracer is not None:
                t.batch_span = self._tracer.start_span(
                    f"{self.stage}.{phase}", context=t.phase_context or t.context, start_time=now,
                    attributes={**t.attributes, **attrs})
                handle.append(t)
        return handle

    @_never_raises
    def end(self, handle: Any, then: str | None = None) -> None:
        self._flush_tokens(False)
        if not handle:
            return
        now = time.time_ns()
        for t in handle:
            span, t.batch_span = t.batch_span, None
            if span is not None:
                span.end(now)
            if then is not None and not t.done:
                self._open(t, then, now, {})

    @_never_raises
    def open(self, job: Job, phase: str, **attributes: Any) -> None:
        t: _JobTrace | None = job.trace
        if t is None or t.done:
            return
        now = time.time_ns()
        if t.started_ns is None:
            self._start(t, now)
        if self._tracer is not None:
            self._open(t, phase, now, {f"barkstream.{k}": v for k, v in attributes.items()})

    def _open(self, t: _JobTrace, phase: str, now: int, attributes: dict[str, Any]) -> None:
        if t.phase is not None:
            t.phase.end(now)
        t.phase = self._tracer.start_span(f"{self.stage}.{phase}", context=t.context, start_time=now,
                                          attributes={**t.attributes, **attributes})
        t.phase_context = trace.set_span_in_context(t.phase, t.context)

    @_never_raises
    def close(self, job: Job, **attributes: Any) -> None:
        t: _JobTrace | None = job.trace
        if t is None or t.phase is None:
            return
        span, t.phase, t.phase_context = t.phase, None, None
        span.set_attributes({f"barkstream.{k}": v for k, v in attributes.items()})
        span.end()

    @_never_raises
    def step(self, phase: str, batch_size: int) -> None:
        if self._i is not None:
            self._i.batch_size.record(batch_size, self._phase(phase))
            self._flush_tokens(False)

    @_never_raises
    def emitted(self, job: Job, tokens: int) -> None:
        self._tokens += tokens
        t: _JobTrace | None = job.trace
        if t is not None:
            t.tokens += tokens

    def _flush_tokens(self, force: bool) -> None:
        if self._tokens and self._i is not None:
            now = time.monotonic()
            if force or now - self._tokens_flushed >= TOKEN_FLUSH_S:
                self._i.stage_tokens.add(self._tokens, self._attrs)
                self._tokens, self._tokens_flushed = 0, now

    @_never_raises
    def _finished(self, t: _JobTrace, error: BaseException | None) -> None:
        if t.done:
            return
        t.done = True
        now = time.time_ns()
        self._waiting.discard(t)
        self._flush_tokens(True)
        for name in ("queue_span", "batch_span", "phase"):
            span = getattr(t, name)
            if span is None:
                continue
            setattr(t, name, None)
            if name == "phase":
                span.set_attribute("barkstream.tokens", t.tokens)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.end(now)
        t.phase_context = None
        if self._i is not None and t.started_ns is not None and t.tokens and now > t.started_ns:
            self._i.stage_token_rate.record(t.tokens / ((now - t.started_ns) / 1e9), self._attrs)

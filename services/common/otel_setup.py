"""OpenTelemetry providers and exporters of one process, as the `OTEL_*` variables say (no torch).

Spans go to OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set or
`OTEL_TRACES_EXPORTER` names `otlp`/`console`; metrics likewise (`OTEL_METRICS_EXPORTER`,
`OTEL_METRIC_EXPORT_INTERVAL`), and on `http://HOST:METRICS_PORT/metrics` for Prometheus when
`--metrics-port` is set. Sampling (`OTEL_TRACES_SAMPLER`), batching (`OTEL_BSP_*`), resource
attributes (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) and propagation
(`OTEL_PROPAGATORS`, W3C trace context by default) are the SDK's own settings.

The providers are not installed as OpenTelemetry's global providers: everything barkstream
traces gets them from its `Telemetry` object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .config import _help

log = logging.getLogger(__name__)


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


@dataclass
class Providers:
    """SDK providers (None: that signal is off), what to call at shutdown, the Prometheus port (or None)."""

    tracer_provider: object = None
    meter_provider: object = None
    on_shutdown: list[Callable[[], None]] = field(default_factory=list)
    metrics_port: int | None = None


def providers_from_environment(role: str, config: TelemetryConfig, environ: Mapping[str, str]) -> Providers:
    """Providers and exporters for `barkstream serve ROLE`, as the `OTEL_*` variables and `config` say."""
    if _truthy(environ.get("OTEL_SDK_DISABLED", "")):
        if config.metrics_port:
            log.warning("OTEL_SDK_DISABLED is set: no metrics on port %d", config.metrics_port)
        return Providers()
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    resource = Resource.create({
        "service.name": service_name(role), "service.namespace": "barkstream", "service.version": version(),
        "barkstream.role": role,
    }).merge(OTELResourceDetector().detect())  # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win
    out = Providers()
    span_exporters = _exporters(environ, "traces")
    if span_exporters:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        out.tracer_provider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER is read here
        for exporter in span_exporters:
            out.tracer_provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*
    readers = []
    if config.metrics_port:
        reader, out.metrics_port, close = _prometheus(config.metrics_host, config.metrics_port)
        readers.append(reader)
        out.on_shutdown.append(close)
    for exporter in _exporters(environ, "metrics"):
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(exporter))  # OTEL_METRIC_EXPORT_INTERVAL
    if readers:
        from opentelemetry.sdk.metrics import MeterProvider

        out.meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    port = out.metrics_port
    log.info("telemetry: service.name=%s, traces %s, metrics %s%s", resource.attributes.get("service.name"),
             ", ".join(type(e).__name__ for e in span_exporters) or "off",
             ", ".join(type(r).__name__ for r in readers) or "off",
             f" (Prometheus on port {port})" if port else "")
    return out


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def version() -> str:
    """barkstream's installed version (the `service.version` and instrumentation scope version)."""
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


# signal -> (OTLP exporter module and class, console exporter module and class, what else is accepted)
_EXPORTERS = {
    "traces": (("trace_exporter", "OTLPSpanExporter"), ("opentelemetry.sdk.trace.export", "ConsoleSpanExporter"),
               {}),
    "metrics": (("metric_exporter", "OTLPMetricExporter"),
                ("opentelemetry.sdk.metrics.export", "ConsoleMetricExporter"),
                {"prometheus": "prometheus (with --metrics-port)"}),  # the scrape endpoint is --metrics-port
}


def _exporters(environ: Mapping[str, str], signal: str) -> list:
    """The exporters OTEL_<SIGNAL>_EXPORTER names (OTEL_EXPORTER_OTLP_* configure the OTLP ones)."""
    otlp, console, elsewhere = _EXPORTERS[signal]
    out = []
    for name in _exporter_names(environ, signal):
        if name == "otlp":
            protocol = "grpc" if _otlp_protocol(environ, signal) == "grpc" else "http"
            out.append(_load(f"opentelemetry.exporter.otlp.proto.{protocol}.{otlp[0]}", otlp[1])())
        elif name == "console":
            out.append(_load(*console)())
        elif name not in elsewhere:
            supported = ", ".join(["otlp", "console", *elsewhere.values()])
            raise ValueError(f"OTEL_{signal.upper()}_EXPORTER={name!r}: barkstream supports {supported} or none")
    return out


def _load(module: str, name: str):
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        if ".proto.http." not in module:
            raise
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

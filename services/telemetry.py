"""OpenTelemetry traces and metrics of one barkstream process: what is built, and who gets which piece.

One `Telemetry` object per process, built at the process edge (`barkstream serve`) from the
standard `OTEL_*` variables and `TelemetryConfig` (`--metrics-port`), then handed to the App,
which passes its pieces down: gRPC interceptors to the server and the stage channels (common/),
a `StageObserver` to each engine and its runner (stages/), the tracer and instruments to the
orchestrator. `Telemetry()` (the default) is off: no interceptors, no-op observers, nothing
exported, nothing measured. This module sits beside app.py because it is the one place that
sees both sides; common/ never imports stages/.

    common/otel_setup.py        OTEL_* configuration, providers and exporters
    common/server_telemetry.py  SERVER span + rpc.server.call.duration per incoming call
    common/client_telemetry.py  CLIENT span + rpc.client.call.duration per outgoing call
    common/spans.py             attribute names, annotate(), the orchestrator's segment span
    common/metrics.py           every instrument
    stages/engine_telemetry.py  engine spans and stage metrics (a StageObserver)

Why our own gRPC interceptors rather than opentelemetry-instrumentation-grpc: barkstream wants,
from one hook per call, the RPC duration metrics of the current semantic conventions beside the
spans (that package is about spans), providers passed from this object rather than through
OpenTelemetry's global ones (tests and the embedded server run several at once), a span that
ends when a stream really ends or is cancelled, with the status the caller got, and the same
call-end hook feeding the request log (common/server_calls.py); health and reflection probes
are left out. The client side is one implementation behind the four per-arity classes that
grpc.aio requires.

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

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

import grpc
from opentelemetry import trace

from .common import metrics as M
from .common import request_log
from .common.client_telemetry import ClientTelemetry
from .common.otel_setup import TelemetryConfig, providers_from_environment, version
from .common.server_telemetry import ServerTelemetry
from .common.spans import INHERITED, SCOPE
from .stages.engine_telemetry import EngineTelemetry
from .stages.observe import NULL_OBSERVER, StageObserver

log = logging.getLogger(__name__)

__all__ = ["Telemetry", "TelemetryConfig"]


class Telemetry:
    """Tracer, instruments and their providers for one process; `Telemetry()` is off.

    tracer_provider / meter_provider: SDK providers (or None: no traces / no metrics), not
    installed as OpenTelemetry's global providers: everything barkstream traces gets them here.
    """

    def __init__(self, tracer_provider=None, meter_provider=None,
                 on_shutdown: Sequence[Callable[[], None]] = ()) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracing = tracer_provider is not None
        self.metering = meter_provider is not None
        self.tracer = tracer_provider.get_tracer(SCOPE, version()) if self.tracing else trace.NoOpTracer()
        self.instruments = M.Instruments(meter_provider.get_meter(SCOPE, version())) if self.metering else None
        self.metrics_port: int | None = None  # the Prometheus endpoint's port, when there is one
        self._on_shutdown = list(on_shutdown)
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self.tracing or self.metering

    @classmethod
    def from_environment(cls, role: str, config: TelemetryConfig, environ: Mapping[str, str]) -> Telemetry:
        """Providers and exporters for `barkstream serve ROLE`, as the `OTEL_*` variables and `config` say."""
        providers = providers_from_environment(role, config, environ)
        telemetry = cls(providers.tracer_provider, providers.meter_provider, providers.on_shutdown)
        telemetry.metrics_port = providers.metrics_port
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
        return EngineTelemetry(stage, self.tracer if self.tracing else None, self.instruments, INHERITED)

    def watch_streams(self, streams: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Report `streams()` -> (service, active streams) as `barkstream.streams.active`."""
        if self.instruments is not None:
            self.instruments.watch_streams(streams)

    def synthesis_done(self, time_to_first_audio_s: float | None, real_time_factor: float | None,
                       audio_s: float) -> None:
        """One Synthesize finished (orchestrator): its metrics, and the fields of its request-log line."""
        request_log.note(time_to_first_audio_ms=None if time_to_first_audio_s is None
                         else round(time_to_first_audio_s * 1000, 1),
                         real_time_factor=real_time_factor, audio_s=audio_s)
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

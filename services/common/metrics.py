"""Every metric barkstream records, in one place: names, units, buckets, attributes.

The instruments are made from an OpenTelemetry `Meter` (the SDK's or a no-op one); the
exporters (OTLP, the Prometheus scrape endpoint) are chosen in `otel_setup.py`. OpenTelemetry
names translate to Prometheus names by the usual rules: dots become underscores, the unit is
appended and counters get `_total` (`barkstream.stage.tokens` -> `barkstream_stage_tokens_total`,
`rpc.server.call.duration` -> `rpc_server_call_duration_seconds_bucket/_sum/_count`).

RPC durations follow the current RPC semantic conventions (`rpc.server.call.duration` /
`rpc.client.call.duration`, seconds, with `rpc.system.name`, `rpc.method`,
`rpc.response.status_code`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# Attribute keys (also used on spans).
STAGE = "barkstream.stage"
PHASE = "barkstream.phase"
SERVICE = "barkstream.service"
RPC_SYSTEM_NAME = "rpc.system.name"
RPC_METHOD = "rpc.method"
RPC_STATUS = "rpc.response.status_code"
ERROR_TYPE = "error.type"

# Metric names.
RPC_SERVER_DURATION = "rpc.server.call.duration"
RPC_CLIENT_DURATION = "rpc.client.call.duration"
TIME_TO_FIRST_AUDIO = "barkstream.synthesis.time_to_first_audio"
REAL_TIME_FACTOR = "barkstream.synthesis.real_time_factor"
AUDIO_DURATION = "barkstream.synthesis.audio"
STAGE_TOKENS = "barkstream.stage.tokens"
STAGE_TOKEN_RATE = "barkstream.stage.token_rate"
BATCH_SIZE = "barkstream.stage.batch.size"
QUEUE_DURATION = "barkstream.stage.queue.duration"
QUEUE_DEPTH = "barkstream.stage.queue.depth"
ACTIVE_STREAMS = "barkstream.streams.active"

# Seconds: the RPC semantic conventions' advice, stretched to a long synthesis stream.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
                    120.0, 300.0)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)
RATE_BUCKETS = (1, 5, 10, 25, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000, 10000, 50000, 100000)

Reading = tuple[dict[str, Any], int]  # (attributes, value) of one observable measurement


class Instruments:
    """The instruments of one process (one MeterProvider), shared by its servicers and engines.

    Observable values (active streams, queue depths) are read through `sources` that the
    app registers (`watch`); the SDK calls them on its collection thread.
    """

    def __init__(self, meter) -> None:
        from opentelemetry.metrics import Observation

        self._observation = Observation
        self.rpc_server_duration = meter.create_histogram(
            RPC_SERVER_DURATION, unit="s", description="Duration of incoming RPCs (whole stream for streaming RPCs).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.rpc_client_duration = meter.create_histogram(
            RPC_CLIENT_DURATION, unit="s", description="Duration of outgoing RPCs (the orchestrator's stage streams).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.time_to_first_audio = meter.create_histogram(
            TIME_TO_FIRST_AUDIO, unit="s", description="Synthesize: time from the request to its first audio chunk.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS)
        self.real_time_factor = meter.create_histogram(
            REAL_TIME_FACTOR, unit="1", description="Synthesize: wall time / audio duration (below 1: faster than "
            "real time).", explicit_bucket_boundaries_advisory=RTF_BUCKETS)
        self.audio = meter.create_counter(
            AUDIO_DURATION, unit="s", description="Seconds of audio synthesized.")
        self.stage_tokens = meter.create_counter(
            STAGE_TOKENS, unit="{token}", description="Tokens a stage produced: semantic and coarse tokens, fine "
            "codes (8 per frame), codec codes decoded (8 per frame). rate() gives tokens per second.")
        self.stage_token_rate = meter.create_histogram(
            STAGE_TOKEN_RATE, unit="{token}/s", description="Per stream: tokens it got per second, from its first "
            "engine batch to its end (streaming stages are also paced by their input).",
            explicit_bucket_boundaries_advisory=RATE_BUCKETS)
        self.batch_size = meter.create_histogram(
            BATCH_SIZE, unit="{stream}", description="Streams in one engine batch (per prefill, decode step, fine "
            "window batch, codec chunk batch).", explicit_bucket_boundaries_advisory=BATCH_BUCKETS)
        self.queue_duration = meter.create_histogram(
            QUEUE_DURATION, unit="s", description="Time from a stream's arrival at a stage engine to its first batch "
            "(streaming stages include waiting for their first input).",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS)
        self._attributes: dict[tuple[str, str], dict[str, str]] = {}
        self._queue_sources: list[tuple[str, Callable[[], int]]] = []
        self._stream_sources: list[Callable[[], Iterable[tuple[str, int]]]] = []
        meter.create_observable_up_down_counter(
            QUEUE_DEPTH, callbacks=[self._observe_queues], unit="{stream}",
            description="Streams handed to a stage engine that have not had their first batch yet.")
        meter.create_observable_up_down_counter(
            ACTIVE_STREAMS, callbacks=[self._observe_streams], unit="{stream}",
            description="Streams each service is serving now (admission slots held).")

    # -- what a stage engine records (stages/engine_telemetry.py's EngineMetrics) ----------------
    def batch(self, stage: str, phase: str, size: int) -> None:
        self.batch_size.record(size, self._phase_attributes(stage, phase))

    def queued(self, stage: str, seconds: float) -> None:
        self.queue_duration.record(seconds, self._stage_attributes(stage))

    def tokens(self, stage: str, count: int) -> None:
        self.stage_tokens.add(count, self._stage_attributes(stage))

    def token_rate(self, stage: str, per_second: float) -> None:
        self.stage_token_rate.record(per_second, self._stage_attributes(stage))

    def watch_queue(self, stage: str, depth: Callable[[], int]) -> None:
        self._queue_sources.append((stage, depth))

    def _stage_attributes(self, stage: str) -> dict[str, str]:
        return self._phase_attributes(stage, "")

    def _phase_attributes(self, stage: str, phase: str) -> dict[str, str]:
        """Cached: engines record per decode step, and a new dict per call would cost more than the rest."""
        attrs = self._attributes.get((stage, phase))
        if attrs is None:
            attrs = self._attributes[(stage, phase)] = {STAGE: stage, **({PHASE: phase} if phase else {})}
        return attrs

    def watch_streams(self, streams: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """`streams()` yields (service name, active streams), e.g. from the server's admissions."""
        self._stream_sources.append(streams)

    def _observe_queues(self, options=None):
        for stage, depth in list(self._queue_sources):
            yield self._observation(depth(), {STAGE: stage})

    def _observe_streams(self, options=None):
        for source in list(self._stream_sources):
            for service, active in source():
                yield self._observation(active, {SERVICE: service})

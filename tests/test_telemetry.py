"""Traces and metrics: one trace per Synthesize across every hop, engine spans, Prometheus, OTLP.

The split test runs the five `barkstream serve` processes with OTLP export to a test receiver
(tests/otlp_receiver.py) and a Prometheus endpoint each; the embedded tests run the App in
this process with in-memory exporters.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections import defaultdict

import grpc
import pytest

from barkstream.v1 import tts_pb2_grpc

from .conftest import EmbeddedServer, SplitCluster
from .otlp_receiver import OtlpReceiver, ReceivedSpan
from .service_helpers import ONE_SEGMENT, THREE_SEGMENTS, VOICE, poll, read_stream, rpc_error, synth_request

STAGES = ("semantic", "coarse", "fine", "codec")
METHODS = {
    "semantic": "barkstream.v1.SemanticService/Generate",
    "coarse": "barkstream.v1.CoarseService/Generate",
    "fine": "barkstream.v1.FineService/Generate",
    "codec": "barkstream.v1.CodecService/Decode",
}
SYNTHESIZE = "barkstream.v1.TextToSpeech/Synthesize"
# Engine spans each stage must show for one segment, and where they hang (parent span name).
ENGINE_SPANS = {
    "semantic": {"semantic.queue": "server", "semantic.prefill": "server", "semantic.decode": "server"},
    "coarse": {"coarse.queue": "server", "coarse.window": "server", "coarse.prefill": "coarse.window"},
    "fine": {"fine.queue": "server", "fine.window": "server"},
    "codec": {"codec.queue": "server", "codec.decode": "server"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- checks shared by the split and the embedded trace --------------------------------------------
def check_trace(spans: list[ReceivedSpan], services: dict[str, str]) -> None:
    """One Synthesize's spans: one trace, the orchestrator's server span at the root, a client span
    per stage RPC whose child is that stage's server span, the engine spans under those.

    services: role -> the service.name that role's spans must carry.
    """
    assert len({s.trace_id for s in spans}) == 1, sorted({(s.trace_id, s.name) for s in spans})
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans), "span ids must be unique"

    roots = [s for s in spans if s.parent_span_id == ""]
    assert [(r.name, r.kind) for r in roots] == [(SYNTHESIZE, "SERVER")], roots
    root = roots[0]
    assert root.service == services["orchestrator"]
    assert root.attributes["rpc.system.name"] == "grpc" and root.attributes["rpc.method"] == SYNTHESIZE
    assert root.attributes["rpc.response.status_code"] == "OK"
    assert root.attributes["barkstream.voice"] == VOICE and root.attributes["barkstream.segments"] == 1

    segments = [s for s in spans if s.name == "barkstream.segment"]
    assert len(segments) == 1 and segments[0].parent_span_id == root.span_id
    assert segments[0].attributes["barkstream.segment_index"] == 0

    for stage, method in METHODS.items():
        clients = [s for s in spans if s.name == method and s.kind == "CLIENT"]
        servers = [s for s in spans if s.name == method and s.kind == "SERVER"]
        assert len(clients) == 1 and len(servers) == 1, (stage, clients, servers)
        client, server = clients[0], servers[0]
        assert client.service == services["orchestrator"] and server.service == services[stage]
        assert client.parent_span_id == segments[0].span_id, stage
        assert server.parent_span_id == client.span_id, f"{stage}: server span is not the client span's child"
        assert server.attributes["barkstream.segment_index"] == 0
        assert client.attributes["rpc.response.status_code"] == server.attributes["rpc.response.status_code"] == "OK"
        engine = [s for s in spans if s.parent_span_id == server.span_id and s.kind == "INTERNAL"]
        for name, parent in ENGINE_SPANS[stage].items():
            found = [s for s in spans if s.name == name]
            assert found, f"no {name} span"
            for s in found:
                assert s.service == services[stage], (name, s.service)
                expected = server if parent == "server" else by_id[s.parent_span_id]
                assert s.parent_span_id == expected.span_id and expected.name in (method, parent), name
                assert s.attributes.get("barkstream.segment_index") == 0, (name, s.attributes)
                assert server.start_ns <= s.start_ns <= s.end_ns <= server.end_ns, f"{name} outside its server span"
        assert {s.name for s in engine} >= {n for n, p in ENGINE_SPANS[stage].items() if p == "server"}

    prefill = [s for s in spans if s.name == "semantic.prefill"][0]
    assert prefill.attributes["barkstream.batch_size"] >= 1
    assert [s for s in spans if s.name == "semantic.decode"][0].attributes["barkstream.tokens"] > 0
    assert sum(s.attributes["barkstream.tokens"] for s in spans if s.name == "coarse.window") > 0
    assert all(s.attributes["barkstream.frames"] > 0 for s in spans if s.name == "codec.decode")


# -- Prometheus ---------------------------------------------------------------------------------
def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """GET /metrics: sample name -> [(labels, value)]."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, list] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name].append((sample.labels, sample.value))
    return out


def total(samples, name: str, **labels: str) -> float:
    """Sum of `name`'s samples whose labels include `labels`."""
    assert name in samples, f"{name} not exported; have {sorted(samples)}"
    return sum(v for lab, v in samples[name] if all(lab.get(k) == x for k, x in labels.items()))


def check_stage_metrics(samples, stage: str) -> None:
    assert total(samples, "barkstream_stage_tokens_total", barkstream_stage=stage) > 0
    assert total(samples, "barkstream_stage_batch_size_count", barkstream_stage=stage) > 0
    assert total(samples, "barkstream_stage_batch_size_sum", barkstream_stage=stage) > 0
    assert total(samples, "barkstream_stage_queue_duration_seconds_count", barkstream_stage=stage) > 0
    assert total(samples, "barkstream_stage_token_rate_per_second_count", barkstream_stage=stage) > 0
    assert total(samples, "rpc_server_call_duration_seconds_count", rpc_method=METHODS[stage],
                 rpc_response_status_code="OK", rpc_system_name="grpc") >= 1
    assert total(samples, "rpc_server_call_duration_seconds_sum", rpc_method=METHODS[stage]) > 0
    assert "barkstream_stage_queue_depth" in samples and "barkstream_streams_active" in samples


def check_orchestrator_metrics(samples) -> None:
    assert total(samples, "rpc_server_call_duration_seconds_count", rpc_method=SYNTHESIZE) >= 1
    for method in METHODS.values():
        assert total(samples, "rpc_client_call_duration_seconds_count", rpc_method=method,
                     rpc_response_status_code="OK") >= 1
    assert total(samples, "barkstream_synthesis_time_to_first_audio_seconds_count") >= 1
    assert total(samples, "barkstream_synthesis_time_to_first_audio_seconds_sum") > 0
    assert total(samples, "barkstream_synthesis_real_time_factor_count") >= 1
    assert total(samples, "barkstream_synthesis_audio_seconds_total") > 0


def synthesize_watching(target: str, request, on_first_chunk) -> object:
    """Synthesize, calling on_first_chunk() once while the stream is still open."""
    seen = []

    def on_chunk(r) -> None:
        if not seen:
            seen.append(on_first_chunk())

    with grpc.insecure_channel(target) as channel:
        received = read_stream(tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(request, timeout=120), on_chunk)
    return received, seen[0]


# -- the split deployment: five processes, OTLP to a test receiver ------------------------------
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_split_one_trace_across_five_processes_and_prometheus(tiny_checkpoint_dir, tmp_path):
    receiver = OtlpReceiver()
    roles = (*STAGES, "orchestrator")
    metrics_ports = {role: free_port() for role in roles}
    common = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
              "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "100",
              "OTEL_METRIC_EXPORT_INTERVAL": "500", "BARKSTREAM_METRICS_HOST": "127.0.0.1"}
    env = {role: {**common, "BARKSTREAM_METRICS_PORT": str(metrics_ports[role])} for role in roles}
    cluster = SplitCluster(tiny_checkpoint_dir, tmp_path, env=env)
    try:
        received, active = synthesize_watching(
            cluster.target, synth_request(ONE_SEGMENT, VOICE),
            lambda: total(scrape(metrics_ports["orchestrator"]), "barkstream_streams_active",
                          barkstream_service="orchestrator"))
        assert received.summary is not None and received.chunks
        assert active >= 1, "the orchestrator's active streams gauge must count the open stream"

        services = {role: f"barkstream-{role}" for role in roles}
        expected = {(services["orchestrator"], SYNTHESIZE)} | {(services[s], n) for s in STAGES
                                                               for n in ENGINE_SPANS[s]}

        def complete(r: OtlpReceiver) -> bool:
            return expected <= {(s.service, s.name) for s in r.spans()}

        assert receiver.wait_for(complete, 30), sorted({(s.service, s.name) for s in receiver.spans()})
        time.sleep(0.5)  # the last engine spans of a batch may arrive in the next export
        check_trace(receiver.spans(), services)

        for stage in STAGES:
            check_stage_metrics(scrape(metrics_ports[stage]), stage)
        check_orchestrator_metrics(scrape(metrics_ports["orchestrator"]))
        # Metrics also leave by OTLP (OTEL_METRIC_EXPORT_INTERVAL=500 ms).
        want = {(services[s], "barkstream.stage.tokens") for s in STAGES} | {
            (services["orchestrator"], "barkstream.synthesis.time_to_first_audio"),
            (services["orchestrator"], "rpc.client.call.duration")}
        assert receiver.wait_for(lambda r: want <= r.metrics(), 15), want - receiver.metrics()
    finally:
        statuses = cluster.stop()
        receiver.stop()
    assert all(code == 0 for code in statuses.values()), statuses


# -- the embedded server: one process, in-memory exporters --------------------------------------
def _recorder():
    from opentelemetry.sdk.trace import SpanProcessor

    class Recorder(_Recorder, SpanProcessor):
        pass

    return Recorder()


class _Recorder:
    """A SpanProcessor that keeps started and ended spans (to find spans never ended)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: dict[int, str] = {}
        self.ended: list = []

    def on_start(self, span, parent_context=None) -> None:
        with self.lock:
            self.started[span.context.span_id] = span.name

    def on_end(self, span) -> None:
        with self.lock:
            self.ended.append(span)

    def open_spans(self) -> list[str]:
        with self.lock:
            done = {s.context.span_id for s in self.ended}
            return sorted(name for sid, name in self.started.items() if sid not in done)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def received(self) -> list[ReceivedSpan]:
        from opentelemetry.trace import SpanKind

        with self.lock:
            ended = list(self.ended)
        kinds = {SpanKind.SERVER: "SERVER", SpanKind.CLIENT: "CLIENT", SpanKind.INTERNAL: "INTERNAL"}
        return [ReceivedSpan(s.resource.attributes.get("service.name", ""), f"{s.context.trace_id:032x}",
                             f"{s.context.span_id:016x}", f"{s.parent.span_id:016x}" if s.parent else "", s.name,
                             kinds.get(s.kind, s.kind.name), dict(s.attributes), s.start_time, s.end_time)
                for s in ended]


@pytest.fixture()
def traced_server(tiny_checkpoint_dir):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from barkstream.services.app import ServeConfig
    from barkstream.services.telemetry import Telemetry

    recorder = _recorder()
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": "barkstream"}))
    tracer_provider.add_span_processor(recorder)
    reader = InMemoryMetricReader()
    telemetry = Telemetry(tracer_provider, MeterProvider(metric_readers=[reader]))
    server = EmbeddedServer("all", ServeConfig(checkpoint=str(tiny_checkpoint_dir)), telemetry=telemetry)
    server.recorder, server.reader = recorder, reader
    yield server
    server.stop()
    telemetry.shutdown()


def metric_points(reader) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name].extend(m.data.data_points)
    return out


def test_embedded_one_trace_and_metrics(traced_server):
    from .service_helpers import synthesize

    r = synthesize(traced_server.target, synth_request(ONE_SEGMENT, VOICE))
    assert r.summary is not None
    recorder = traced_server.recorder
    assert poll(lambda: not recorder.open_spans() and any(s.name == SYNTHESIZE for s in recorder.ended), 10), \
        recorder.open_spans()
    check_trace(recorder.received(), {role: "barkstream" for role in (*STAGES, "orchestrator")})

    points = metric_points(traced_server.reader)
    tokens = {p.attributes["barkstream.stage"]: p.value for p in points["barkstream.stage.tokens"]}
    assert set(tokens) == set(STAGES) and all(v > 0 for v in tokens.values()), tokens
    server_calls = {p.attributes["rpc.method"]: p.count for p in points["rpc.server.call.duration"]}
    assert server_calls == {**{m: 1 for m in METHODS.values()}, SYNTHESIZE: 1}
    assert {p.attributes["rpc.method"]: p.count for p in points["rpc.client.call.duration"]} == \
        {m: 1 for m in METHODS.values()}
    assert [p.count for p in points["barkstream.synthesis.time_to_first_audio"]] == [1]
    assert [p.count for p in points["barkstream.synthesis.real_time_factor"]] == [1]
    batches = {(p.attributes["barkstream.stage"], p.attributes["barkstream.phase"]): p for p in
               points["barkstream.stage.batch.size"]}
    assert {("semantic", "prefill"), ("semantic", "decode"), ("coarse", "prefill"), ("fine", "window"),
            ("codec", "decode")} <= set(batches)
    assert all(p.min >= 1 for p in batches.values())
    assert {p.attributes["barkstream.service"] for p in points["barkstream.streams.active"]} == \
        {*STAGES, "orchestrator"}


def test_embedded_errors_and_cancellation_end_every_span(traced_server):
    from .service_helpers import synthesize

    recorder = traced_server.recorder
    err = rpc_error(lambda: synthesize(traced_server.target, synth_request("   ")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A client that goes away mid-stream: every span still ends (stage streams cancelled).
    with grpc.insecure_channel(traced_server.target) as channel:
        call = tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(
            synth_request(THREE_SEGMENTS, VOICE, max_duration_s=3.0), timeout=60)
        it = iter(call)
        assert next(it).HasField("header")
        assert next(it).HasField("chunk")
        call.cancel()
    assert poll(lambda: not recorder.open_spans() and len(
        [s for s in recorder.ended if s.name == SYNTHESIZE]) == 2, 20), recorder.open_spans()
    codes = sorted(s.attributes["rpc.response.status_code"] for s in recorder.ended if s.name == SYNTHESIZE)
    assert codes == ["CANCELLED", "INVALID_ARGUMENT"]
    points = metric_points(traced_server.reader)
    statuses = {p.attributes["rpc.response.status_code"] for p in points["rpc.server.call.duration"]
                if p.attributes["rpc.method"] == SYNTHESIZE}
    assert statuses == {"CANCELLED", "INVALID_ARGUMENT"}
    assert poll(lambda: all(a.active == 0 for a in traced_server.app.handle.admissions), 10)


def test_embedded_prometheus_endpoint(tiny_checkpoint_dir):
    """--metrics-port's path: Telemetry.from_environment with no OTLP endpoint: metrics only, on /metrics."""
    from barkstream.services.app import ServeConfig
    from barkstream.services.telemetry import Telemetry, TelemetryConfig

    port = free_port()
    telemetry = Telemetry.from_environment("all", TelemetryConfig(metrics_port=port, metrics_host="127.0.0.1"), {})
    assert telemetry.metering and not telemetry.tracing and telemetry.metrics_port == port
    server = EmbeddedServer("all", ServeConfig(checkpoint=str(tiny_checkpoint_dir)), telemetry=telemetry)
    try:
        received, active = synthesize_watching(
            server.target, synth_request(ONE_SEGMENT, VOICE),
            lambda: total(scrape(port), "barkstream_streams_active", barkstream_service="orchestrator"))
        assert received.summary is not None and active >= 1
        samples = scrape(port)
        for stage in STAGES:
            check_stage_metrics(samples, stage)
        check_orchestrator_metrics(samples)
        assert total(samples, "target_info", service_name="barkstream") == 1
    finally:
        server.stop()
        telemetry.shutdown()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


# -- configuration --------------------------------------------------------------------------------
def test_telemetry_is_off_by_default_and_configured_by_otel_variables(monkeypatch):
    from barkstream.services.stages.observe import NULL_OBSERVER
    from barkstream.services.telemetry import Telemetry, TelemetryConfig

    off = Telemetry()
    assert not off.enabled and off.server_interceptors() == [] and off.client_interceptors() == []
    assert off.stage("coarse") is NULL_OBSERVER
    assert not Telemetry.from_environment("coarse", TelemetryConfig(), {}).enabled

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    t = Telemetry.from_environment("coarse", TelemetryConfig(), env)
    try:
        assert t.tracing and t.metering
        assert t.tracer_provider.resource.attributes["service.name"] == "barkstream-coarse"
        assert len(t.client_interceptors()) == 4 and len(t.server_interceptors()) == 1
        assert t.stage("coarse").enabled
    finally:
        t.shutdown()
    t = Telemetry.from_environment("fine", TelemetryConfig(), {**env, "OTEL_TRACES_EXPORTER": "none",
                                                               "OTEL_METRICS_EXPORTER": "none"})
    assert not t.enabled
    assert not Telemetry.from_environment("fine", TelemetryConfig(), {**env, "OTEL_SDK_DISABLED": "true"}).enabled
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER"):
        Telemetry.from_environment("fine", TelemetryConfig(), {"OTEL_TRACES_EXPORTER": "zipkin"})
    monkeypatch.setenv("OTEL_SERVICE_NAME", "tts-fine-eu")
    t = Telemetry.from_environment("fine", TelemetryConfig(), {"OTEL_TRACES_EXPORTER": "console"})
    try:
        assert t.tracer_provider.resource.attributes["service.name"] == "tts-fine-eu"
    finally:
        t.shutdown()
    with pytest.raises(ValueError, match="metrics_port"):
        TelemetryConfig(metrics_port=70000)


def test_serve_flags_and_environment(monkeypatch):
    import argparse

    from barkstream.services.cli.serve import register
    from barkstream.services.common.config import dataclass_from_args
    from barkstream.services.telemetry import TelemetryConfig

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "coarse", "--metrics-port", "9464"])
    assert dataclass_from_args(TelemetryConfig, args, {}).metrics_port == 9464
    args = parser.parse_args(["serve", "coarse"])
    cfg = dataclass_from_args(TelemetryConfig, args, {"BARKSTREAM_METRICS_PORT": "9465",
                                                      "BARKSTREAM_METRICS_HOST": "127.0.0.1"})
    assert (cfg.metrics_port, cfg.metrics_host) == (9465, "127.0.0.1")
    assert dataclass_from_args(TelemetryConfig, args, {}).metrics_port == 0

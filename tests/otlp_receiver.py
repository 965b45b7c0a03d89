"""A test OTLP/gRPC receiver: TraceService/Export and MetricsService/Export on a free loopback port.

Point processes at it with OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint (plaintext gRPC); it
keeps every span (flattened, with its resource's service.name) and every metric name it got.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

SPAN_KINDS = {v: k.removeprefix("SPAN_KIND_") for k, v in trace_pb2.Span.SpanKind.items()}


def any_value(v) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return None if kind is None else getattr(v, kind)


def attributes(kvs) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: str  # SERVER, CLIENT, INTERNAL, ...
    attributes: dict[str, Any] = field(hash=False)
    start_ns: int = 0
    end_ns: int = 0


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request, context):
        spans = []
        for rs in request.resource_spans:
            service = attributes(rs.resource.attributes).get("service.name", "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(ReceivedSpan(
                        service, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name,
                        SPAN_KINDS.get(s.kind, str(s.kind)), attributes(s.attributes), s.start_time_unix_nano,
                        s.end_time_unix_nano))
        with self.receiver.lock:
            self.receiver._spans.extend(spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request, context):
        names = set()
        for rm in request.resource_metrics:
            service = attributes(rm.resource.attributes).get("service.name", "")
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    names.add((service, m.name))
        with self.receiver.lock:
            self.receiver._metrics |= names
        return metrics_service_pb2.ExportMetricsServiceResponse()


class OtlpReceiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._metrics: set[tuple[str, str]] = set()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(self), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(self), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self._spans)

    def metrics(self) -> set[tuple[str, str]]:
        """(service.name, metric name) pairs received so far."""
        with self.lock:
            return set(self._metrics)

    def wait_for(self, predicate: Callable[[OtlpReceiver], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        self.server.stop(0)

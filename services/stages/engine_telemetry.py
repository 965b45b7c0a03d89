"""The OpenTelemetry `StageObserver`: engine spans and stage metrics (no torch, no gRPC).

Engine spans are parented to each job's server span, captured when the job is submitted (on
the servicer's thread; see observe.py), and copy its `inherited` attributes (request id,
segment index). Metrics go through `EngineMetrics` (implemented by the process's
`common.metrics.Instruments`, handed in by the Telemetry object): batch sizes, tokens, queue
time and depth.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from .jobs import Job
from .observe import StageObserver

log = logging.getLogger(__name__)

TOKEN_FLUSH_S = 0.25
PHASE = "barkstream.phase"


class EngineMetrics(Protocol):
    """What an engine records; attributes (stage, phase) are the implementation's business."""

    def batch(self, stage: str, phase: str, size: int) -> None: ...
    def queued(self, stage: str, seconds: float) -> None: ...
    def tokens(self, stage: str, count: int) -> None: ...
    def token_rate(self, stage: str, per_second: float) -> None: ...
    def watch_queue(self, stage: str, depth: Callable[[], int]) -> None: ...


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

    def __init__(self, stage: str, tracer, metrics: EngineMetrics | None, inherited: Sequence[str] = ()) -> None:
        """tracer: None for metrics only; metrics: None for traces only; inherited: server span attributes to copy."""
        self.stage = stage
        self._tracer = tracer
        self._i = metrics
        self._inherited = tuple(inherited)
        self._waiting: set[_JobTrace] = set()  # submitted, no batch yet (set ops are atomic)
        self._hook_failed = False
        # Tokens are counted here and added to the counter at most every TOKEN_FLUSH_S (and when a
        # job ends): one SDK call per decode step and row would cost more than the rest of the hooks.
        self._tokens = 0
        self._tokens_flushed = time.monotonic()
        if metrics is not None:
            metrics.watch_queue(stage, lambda: len(self._waiting))

    # caller's thread (the servicer, inside its server span)
    @_never_raises
    def submitted(self, job: Job) -> None:
        ctx = otel_context.get_current()
        inherited: dict[str, Any] = {}
        if self._tracer is not None:
            readable = getattr(trace.get_current_span(ctx), "attributes", None) or {}
            inherited = {k: readable[k] for k in self._inherited if k in readable}
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
            self._i.queued(self.stage, (now - t.submitted_ns) / 1e9)

    @_never_raises
    def begin(self, phase: str, jobs: Sequence[Job], **attributes: Any) -> Any:
        n = len(jobs)
        if self._i is not None:
            self._i.batch(self.stage, phase, n)
        now = time.time_ns()
        handle = []
        attrs = {PHASE: phase, "barkstream.batch_size": n,
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
            self._i.batch(self.stage, phase, batch_size)
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
                self._i.tokens(self.stage, self._tokens)
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
            self._i.token_rate(self.stage, t.tokens / ((now - t.started_ns) / 1e9))

"""What a stage engine tells telemetry, and the do-nothing default.

Engines and the runner call these hooks at batch granularity (one call per prefill, decode
step, window or codec chunk; never one per token and row beyond `emitted`). The default
`NULL_OBSERVER` does nothing, so engines, the offline pipeline and the tests run without any
telemetry. The OpenTelemetry implementation is `engine_telemetry.EngineTelemetry`;
nothing here imports OpenTelemetry or gRPC.

Threads: `submitted` runs on the caller's thread (the servicer's event loop, inside the
stage's server span: that is the context the engine's spans are parented to, kept on
`job.trace`); every other hook runs on the engine thread.

    spans = self.observer.begin("prefill", [job for job, _ in admitted])   # queue ends here
    ...                                                                     # the batched work
    self.observer.end(spans, then="decode")   # a per-job "decode" span runs until the job ends
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .jobs import Job


class StageObserver:
    """Telemetry hooks of one stage engine; this base class ignores them all."""

    enabled = False

    def submitted(self, job: Job) -> None:
        """A job was handed to the engine (caller's thread): it is queued from now on."""

    def begin(self, phase: str, jobs: Sequence[Job], **attributes: Any) -> Any:
        """Batched work on `jobs` starts (each job leaves the queue at its first); returns a handle for `end`."""
        return None

    def end(self, handle: Any, then: str | None = None) -> None:
        """The work `begin` started is done; `then` opens a per-job phase that lasts until `close` or the job ends."""

    def open(self, job: Job, phase: str, **attributes: Any) -> None:
        """Start a per-job phase (e.g. one coarse window) that `close` or the job's end finishes."""

    def close(self, job: Job, **attributes: Any) -> None:
        """Finish the job's open phase, adding `attributes` to it."""

    def step(self, phase: str, batch_size: int) -> None:
        """One batched step without a span of its own (a decode step): records its batch size."""

    def emitted(self, job: Job, tokens: int) -> None:
        """The engine produced `tokens` tokens (codes) for `job`."""


NULL_OBSERVER = StageObserver()

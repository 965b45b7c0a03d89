"""A unit of work handed to a stage engine, and how its results leave it.

Engines run on their own thread; a `Job` is the only object shared with the
caller. `emit` hands each chunk to an optional sink (the service layer posts it
to its event loop) and keeps it for offline callers; `cancel` may be called
from any thread and takes effect at the engine's next step, freeing the slot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Job:
    def __init__(self, sink: Callable[[Any], None] | None = None,
                 on_finish: Callable[[BaseException | None], None] | None = None):
        self.chunks: list[Any] = []
        self.cancelled = False
        self.error: BaseException | None = None
        self._sink = sink
        self._on_finish = on_finish
        self._done = threading.Event()
        # Telemetry of this job (set by a StageObserver when it is submitted; see observe.py):
        # the context its engine spans are parented to; told when the job finishes.
        self.trace: Any = None

    def emit(self, chunk: Any) -> None:
        self.chunks.append(chunk)
        if self._sink is not None:
            self._sink(chunk)

    def finish(self, error: BaseException | None = None) -> None:
        if self._done.is_set():
            return
        self.error = error
        if self.trace is not None:
            self.trace.finished(error)
        self._done.set()
        if self._on_finish is not None:
            self._on_finish(error)

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

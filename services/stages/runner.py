"""Drive one stage engine on its own thread, fed from asyncio servicers.

Engines are single-threaded objects; the runner is the only thread that
touches them. Other threads hand it work with `call` (run on the engine
thread before the next step) and `wake` it when a stream got input. Torch
releases the GIL inside kernels, so the event loop stays responsive while the
engine computes.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

from .bridge import JobBridge
from .jobs import Job
from .observe import NULL_OBSERVER, StageObserver

log = logging.getLogger(__name__)


class Engine(Protocol):
    def step(self) -> Any: ...
    def busy(self) -> bool: ...


class EngineRunner:
    def __init__(self, engine: Engine, name: str, idle_wait_s: float = 0.05, observer: StageObserver | None = None):
        """observer: telemetry told of each submitted job (in the caller's trace context)."""
        self.engine = engine
        self.observer = observer or NULL_OBSERVER
        self.name = name
        self.idle_wait_s = idle_wait_s
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"engine-{name}", daemon=True)
        self.steps = 0

    def start(self) -> EngineRunner:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def call(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the engine thread (e.g. add a job) before its next step."""
        self._calls.put(fn)
        self._wake.set()

    def submit(self, job: Job, add: Callable[[], object]) -> None:
        """Run `add` on the engine thread; if it raises, the job fails instead of waiting forever."""
        self.observer.submitted(job)
        def run() -> None:
            try:
                add()
            except Exception as e:  # noqa: BLE001 - handed to the job's owner
                job.finish(e)
        self.call(run)

    def open(self, add: Callable[[Job], object]) -> JobBridge:
        """A new job whose output the calling event loop iterates; `add(job)` runs on the engine thread."""
        bridge = JobBridge()
        self.submit(bridge.job, lambda: add(bridge.job))
        return bridge

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            while True:
                try:
                    fn = self._calls.get_nowait()
                except queue.Empty:
                    break
                try:
                    fn()
                except Exception:  # a bad call must not kill the engine thread
                    log.exception("engine %s: call failed", self.name)
            worked = False
            if self.engine.busy():
                try:
                    worked = bool(self.engine.step())
                except Exception:
                    log.exception("engine %s: step failed", self.name)
                    self._fail_all()
                self.steps += 1
            if not worked:
                self._wake.wait(self.idle_wait_s)

    def _fail_all(self) -> None:
        """After an unexpected engine error, fail every job instead of hanging their streams."""
        fail = getattr(self.engine, "fail_all", None)
        if fail is not None:
            fail(RuntimeError(f"{self.name} engine failed"))

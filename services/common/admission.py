"""Admission control: how many streams one service runs at once, and whether it takes any.

A stage's engine batches concurrent streams on one accelerator; past a limit, extra streams
only add queueing delay and memory, so they are refused early with RESOURCE_EXHAUSTED and a
retry hint, which lets the caller back off or go to another replica. The same gate refuses
new streams with UNAVAILABLE while the model warms up and while the server drains, and its
count of active streams is what the drain waits on.

Use one Admission per servicer (in the embedded mode an orchestrator stream holds stage
streams in the same process; one shared limit could starve the stages of their own slots):

    async def Generate(self, request, context):
        async with self.admission.slot(context):
            async for item in ...:
                yield item
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator

import grpc

RETRY_AFTER_METADATA_KEY = "retry-after-ms"


class AdmissionState(enum.Enum):
    STARTING = "starting"  # model loading / warming up
    READY = "ready"
    DRAINING = "draining"  # shutting down: finish what runs, take nothing new


class Admission:
    """Bounds and counts the in-flight streams of one service. Single event loop; no locks."""

    def __init__(self, name: str, max_streams: int, retry_after_ms: int = 1000) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams={max_streams}: use 1 or more")
        self.name = name
        self.max_streams = max_streams
        self.retry_after_ms = retry_after_ms
        self._state = AdmissionState.STARTING
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def active(self) -> int:
        """Streams holding a slot now (for metrics and tests)."""
        return self._active

    @property
    def state(self) -> AdmissionState:
        return self._state

    def mark_ready(self) -> None:
        """Start admitting (after warm-up). Ignored once draining: a drain is final."""
        if self._state is AdmissionState.STARTING:
            self._state = AdmissionState.READY

    def start_draining(self) -> None:
        self._state = AdmissionState.DRAINING

    async def wait_idle(self) -> None:
        """Return once no stream holds a slot."""
        await self._idle.wait()

    def rejection(self) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]] | None:
        """Why a new stream would be refused now (code, message, trailing metadata), or None."""
        if self._state is AdmissionState.STARTING:
            return (grpc.StatusCode.UNAVAILABLE,
                    f"{self.name} is not ready yet (model loading or warming up); retry shortly", ())
        if self._state is AdmissionState.DRAINING:
            return (grpc.StatusCode.UNAVAILABLE,
                    f"{self.name} is draining (shutting down); retry, another replica will take the call", ())
        if self._active >= self.max_streams:
            return (grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{self.name} is at its limit of {self.max_streams} concurrent streams; "
                    f"retry after {self.retry_after_ms} ms, or add replicas / raise --max-concurrent-streams",
                    ((RETRY_AFTER_METADATA_KEY, str(self.retry_after_ms)),))
        return None

    @contextlib.asynccontextmanager
    async def slot(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Hold a stream slot for the body, or abort the RPC with the reason it is refused."""
        refused = self.rejection()
        if refused is not None:
            code, message, trailing = refused
            await context.abort(code, message, trailing_metadata=trailing)
        self._active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

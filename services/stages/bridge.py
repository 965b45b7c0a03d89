"""A stage job's output as an async iterator on the servicer's event loop.

The engine thread calls the job's sink and finish callbacks; both hop onto the
loop with `call_soon_threadsafe`, so the servicer just `async for`s the chunks.
Plain asyncio, no gRPC: `EngineRunner.open` makes one per stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from .jobs import Job


class _Finished:
    def __init__(self, error: BaseException | None):
        self.error = error


class JobBridge:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        self._loop = loop or asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.job = Job(sink=self._put, on_finish=lambda e: self._put(_Finished(e)))

    def _put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # loop closed: nobody is listening any more
            self.job.cancel()

    def fail(self, error: BaseException) -> None:
        """Fail from the loop's side (e.g. the input stream broke)."""
        self.job.cancel()
        self._queue.put_nowait(_Finished(error))

    async def __aiter__(self) -> AsyncIterator[Any]:
        while True:
            item = await self._queue.get()
            if isinstance(item, _Finished):
                if item.error is not None:
                    raise item.error
                return
            yield item

"""A SynthesisSession whose segments arrive while it runs, and can be dropped (barge-in).

Each segment runs the same four stage calls as in Synthesize (exact per segment), with the
same pipelining: a segment's semantic call starts once the previous live segment's semantic
stream has ended. Without a voice preset, the first segment whose codes complete is the voice
of all later ones (Suno's long-form method), across clears too: one voice per session.
`drop` cancels the tasks of unfinished segments; their stage calls are cancelled with them,
so every stage frees their engine rows at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from ..bark.params import GenerationParams
from ..bark.voices import VoicePrompt
from .session import _END, SegmentRun, SynthesisSession
from .stage_clients import StageClients

SEGMENT_END = None  # what `read` returns at the end of a segment's audio


class LiveSynthesis(SynthesisSession):
    def __init__(self, stages: StageClients, request_id: str, voice: VoicePrompt | None, params: GenerationParams,
                 seed: int | None, timeout: float | None, metadata: Sequence[tuple[str, str]] = (), tracer=None):
        super().__init__(stages, request_id, [], voice, params, seed, timeout, metadata, tracer)
        self.preset = voice
        self._tasks: dict[int, asyncio.Task] = {}
        self._voice_from: SegmentRun | None = None  # the segment whose codes become the voice
        self._previous: SegmentRun | None = None  # the last live segment: the next one's semantic waits for it

    def add(self, token_ids: np.ndarray) -> int:
        """Start a segment's stage chain; returns its index."""
        seg = SegmentRun(len(self.segments), np.asarray(token_ids, np.int64))
        self.segments.append(seg)
        if self.voice is None and self._voice_from is None:
            self._voice_from = seg
        previous, self._previous = self._previous, seg
        self._tasks[seg.index] = asyncio.create_task(self._segment(seg, previous, self._voice_from),
                                                     name=f"{self.request_id}-seg{seg.index}")
        return seg.index

    async def read(self, index: int) -> np.ndarray | None:
        """The segment's next PCM (24 kHz float), or SEGMENT_END; raises the session's failure."""
        item = await self.segments[index].queue.get()
        if item is _END:
            return SEGMENT_END
        if isinstance(item, BaseException):
            raise item
        return item

    async def drop(self, indices: Sequence[int]) -> None:
        """Stop these segments on every stage; they send nothing more."""
        tasks = [self._tasks.pop(i) for i in indices if i in self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for i in indices:
            seg = self.segments[i]
            seg.semantic_done.set()  # nothing waits on a dropped segment
            if seg is self._voice_from and not seg.codes_done.is_set():
                self._voice_from = None  # its voice never completed: the next segment starts a new one
            if seg is self._previous:
                self._previous = None

    def finished(self, index: int) -> None:
        """The segment's audio has been read: forget its task."""
        self._tasks.pop(index, None)

    def spoken_voice(self) -> VoicePrompt | None:
        """The session's voice: the preset, or the first complete segment's generation."""
        if self.preset is not None:
            return self.preset
        seg = self._voice_from
        if seg is None or not seg.codes_done.is_set():
            return None
        return seg.codes.voice()

    async def close(self) -> None:
        for call in self._calls:
            call.cancel()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

"""A real-time session: text pieces in, audio and segment events out (StreamingSynthesize).

One coroutine owns the session's state and reacts to one event at a time from its inbox:
a client message (text, flush, clear, end of input), a segment's PCM or its end, or a timer
(the segmenter's max wait, the idle timeout, the session's length). That keeps clear
(barge-in) simple: it happens between two events, so no audio of a dropped segment can slip
out after it. Audio leaves in segment order through one encoder, as in Synthesize (flushed at each
segment's end, finished when the session ends). The segmenter's max wait only
counts while the session is silent (nothing generating or unsent): while audio is still
going out, a sentence in progress loses nothing by waiting for its end.

The latency-aware schedule's growth follows the session's measured speed (generation time
per second of audio, updated at each segment's end): a slower server grows segments more
slowly, so each is still ready before the ones before it have played.

Bounds, all explicit (SessionLimits): a piece's size, the text buffered but not yet started,
segments generated ahead of playback (a client that stops reading stops generation after
that many, holding no engine row), clears per second, idle time and the session's length.
The servicer turns protobuf into `Text`/`Flush`/`Clear` and the events below back; no grpc here.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

import numpy as np

from ..bark.incremental import IncrementalSegmenter
from ..bark.schedule import Schedule, growth_for
from ..common.errors import InvalidRequest
from .audio import AudioEncoder, EncodedChunk
from .formats import NATIVE_SAMPLE_RATE
from .live import SEGMENT_END, LiveSynthesis
from .request import SessionLimits
from .synthesis import SentChunk


# ---- what the client sends (after the configuration)
@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Flush:
    pass


@dataclass(frozen=True)
class Clear:
    pass


# ---- what the session emits
@dataclass(frozen=True)
class SegmentStarted:
    index: int
    text: str
    start_sample: int


@dataclass(frozen=True)
class SegmentDone:
    index: int
    end_sample: int
    interrupted: bool = False


@dataclass(frozen=True)
class Cleared:
    at_sample: int
    indices: tuple[int, ...]


Event = SegmentStarted | SentChunk | SegmentDone | Cleared


class SessionLimit(Exception):
    """A session limit was reached; `status` is the gRPC status name that says which kind."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class _Segment:
    index: int
    text: str
    started: bool = False


@dataclass
class SessionStats:
    started: float = field(default_factory=time.monotonic)
    first_audio: float | None = None
    samples: int = 0
    chunks: int = 0
    segments: int = 0


_INPUT, _PCM, _ERROR = "input", "pcm", "error"
_END_OF_INPUT = object()


class RealtimeSession:
    """Runs one session; `events(inputs)` yields Event objects until the input ends and all is spoken."""

    def __init__(self, live: LiveSynthesis, segmenter: IncrementalSegmenter, encode: Callable[[str], np.ndarray],
                 encoder: AudioEncoder, limits: SessionLimits | None = None):
        """encode: text -> BERT ids (the tokenizer); encoder: the stream's (its header is already sent)."""
        self.live = live
        self.segmenter = segmenter
        self.encode = encode
        self.encoder = encoder
        self.limits = limits or SessionLimits()
        self._last_segment = 0
        self.stats = SessionStats()
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._waiting: deque[str] = deque()  # segment texts not started on the stages yet
        self._playing: deque[_Segment] = deque()  # started, audio not all sent; the head is being sent
        self._pump: asyncio.Task | None = None
        self._pump_queue: asyncio.Queue = asyncio.Queue()
        self._drops: list[asyncio.Future] = []
        self._clears: deque[float] = deque()
        self._input_ended = False
        self._last_activity = time.monotonic()
        self._busy_since: float | None = None  # since when stages work without a break (speed measurement)
        self._generated_s = 0.0  # audio the stages produced since then

    async def events(self, inputs: AsyncIterator[Text | Flush | Clear]) -> AsyncIterator[Event]:
        reader = asyncio.create_task(self._read(inputs))
        getter: asyncio.Task | None = None
        try:
            while not (self._input_ended and not self._waiting and not self._playing):
                if getter is None:
                    getter = asyncio.ensure_future(self._inbox.get())
                done, _ = await asyncio.wait({getter}, timeout=self._next_timer())
                now = time.monotonic()
                if not done:
                    self._check_timers(now)
                    if self._silent():
                        self._segments_ready(self.segmenter.poll(now))
                    continue
                kind, payload = getter.result()
                getter = None
                if kind == _ERROR:
                    raise payload
                events = self._on_input(payload, now) if kind == _INPUT else self._on_pcm(*payload)
                for event in events:
                    yield event
            for event in self._chunks(self._last_segment, self.encoder.flush(end_of_stream=True)):
                yield event  # a codec's last frames or page
        finally:
            self.encoder.close()
            if getter is not None:
                getter.cancel()
            reader.cancel()
            if self._pump is not None:
                self._pump.cancel()
            tasks = [reader, *self._drops, *(t for t in (self._pump,) if t is not None)]
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.live.close()

    # -- inbox producers
    async def _read(self, inputs: AsyncIterator[Text | Flush | Clear]) -> None:
        try:
            async for message in inputs:
                await self._inbox.put((_INPUT, message))
            await self._inbox.put((_INPUT, _END_OF_INPUT))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a bad message ends the session with its status
            await self._inbox.put((_ERROR, e))

    async def _pump_audio(self, segments: asyncio.Queue) -> None:
        """Moves the started segments' PCM into the inbox, in order (a clear replaces the pump)."""
        try:
            while True:
                seg = await segments.get()
                while True:
                    pcm = await self.live.read(seg.index)
                    await self._inbox.put((_PCM, (seg, pcm)))
                    if pcm is SEGMENT_END:
                        break
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a stage failure ends the session with its status
            await self._inbox.put((_ERROR, e))

    # -- event handlers
    def _on_input(self, message, now: float) -> list[Event]:
        self._last_activity = now
        if message is _END_OF_INPUT:
            self._input_ended = True
            return self._segments_ready(self.segmenter.flush())
        if isinstance(message, Text):
            return self._segments_ready(self._push(message.text, now))
        if isinstance(message, Flush):
            return self._segments_ready(self.segmenter.flush())
        return self._clear(now)

    def _push(self, text: str, now: float) -> list[str]:
        if len(text) > self.limits.max_piece_chars:
            raise InvalidRequest(f"a text piece has {len(text)} characters; the limit is "
                                 f"{self.limits.max_piece_chars}: send it in smaller pieces")
        if "\x00" in text:
            raise InvalidRequest("text contains NUL characters: remove them")
        buffered = self.segmenter.buffered_chars + sum(len(t) for t in self._waiting) + len(text)
        if buffered > self.limits.max_buffered_chars:
            raise SessionLimit("RESOURCE_EXHAUSTED", f"{buffered} characters of text wait to be spoken; the limit "
                               f"is {self.limits.max_buffered_chars}: send text closer to the pace of speech")
        return self.segmenter.push(text, now)

    def _on_pcm(self, seg: _Segment, pcm: np.ndarray | None) -> list[Event]:
        if not self._playing or self._playing[0] is not seg:
            return []  # audio of a segment a clear dropped, read before the pump stopped
        self._last_activity = time.monotonic()
        events: list[Event] = []
        if not seg.started:
            seg.started = True
            self._last_segment = seg.index
            events.append(SegmentStarted(seg.index, seg.text, self.stats.samples))
        if pcm is SEGMENT_END:
            events += self._chunks(seg.index, self.encoder.flush())
            events.append(SegmentDone(seg.index, self.stats.samples))
            self._playing.popleft()
            self.live.finished(seg.index)
            self._adapt_growth()
            self._start_waiting()
        else:
            self._generated_s += len(pcm) / NATIVE_SAMPLE_RATE
            events += self._chunks(seg.index, self.encoder.push(pcm))
        return events

    def _chunks(self, segment: int, chunks: list[EncodedChunk]) -> list[Event]:
        out: list[Event] = []
        for c in chunks:
            if self.stats.first_audio is None and c.num_samples:
                self.stats.first_audio = time.monotonic()
            out.append(SentChunk(self.stats.chunks, segment, c))
            self.stats.samples += c.num_samples
            self.stats.chunks += 1
        return out

    def _clear(self, now: float) -> list[Event]:
        self._clears.append(now)
        while self._clears and self._clears[0] < now - self.limits.clear_window_s:
            self._clears.popleft()
        if len(self._clears) > self.limits.max_clears:
            raise SessionLimit("RESOURCE_EXHAUSTED", f"more than {self.limits.max_clears} clears within "
                               f"{self.limits.clear_window_s:g} s: clear once per interruption")
        self.segmenter.clear()
        self._waiting.clear()
        dropped = list(self._playing)
        self._playing.clear()
        events: list[Event] = []
        if dropped and dropped[0].started:
            # The partial chunk already cut (under one chunk of audio) still goes out: the stream's
            # encoding (a codec's frames or pages) stays whole; nothing generated later does.
            events += self._chunks(dropped[0].index, self.encoder.flush())
            events.append(SegmentDone(dropped[0].index, self.stats.samples, interrupted=True))
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        if dropped:
            # Cancel the stage calls now; the tasks finish in the background (no audio can leave).
            self._drops.append(asyncio.ensure_future(self.live.drop([s.index for s in dropped])))
        events.append(Cleared(self.stats.samples, tuple(s.index for s in dropped)))
        return events

    # -- segments
    def _segments_ready(self, texts: list[str]) -> list[Event]:
        self._waiting.extend(t for t in texts if t.strip())
        self._start_waiting()
        return []

    def _adapt_growth(self) -> None:
        """Grow later segments only as fast as the call's measured generation speed keeps them ahead of playback."""
        policy = self.segmenter.policy
        if policy.schedule is not Schedule.LATENCY_AWARE or self._busy_since is None or not self._generated_s:
            return
        speed = (time.monotonic() - self._busy_since) / self._generated_s  # generation s per audio s
        self.segmenter.policy = replace(policy, growth=growth_for(speed))
        if not self._playing and not self._waiting:
            self._busy_since = None  # idle from here: the next busy stretch is measured afresh

    def _start_waiting(self) -> None:
        """Start waiting segments on the stages while fewer than max_segments_ahead are unsent."""
        if self._busy_since is None and self._waiting:
            self._busy_since, self._generated_s = time.monotonic(), 0.0
        started = []
        while self._waiting and len(self._playing) < self.limits.max_segments_ahead:
            text = self._waiting.popleft()
            ids = np.asarray(self.encode(text), np.int64)
            if not len(ids):
                continue
            seg = _Segment(self.live.add(ids), text)
            self.stats.segments += 1
            self._playing.append(seg)
            started.append(seg)
        if started and self._pump is None:
            self._pump_queue = asyncio.Queue()
            self._pump = asyncio.create_task(self._pump_audio(self._pump_queue))
        for seg in started:
            self._pump_queue.put_nowait(seg)

    # -- timers
    def _silent(self) -> bool:
        """Nothing is being generated or sent: text waiting for a boundary would leave a gap."""
        return not self._playing and not self._waiting

    def _next_timer(self) -> float:
        now = time.monotonic()
        times = [self.stats.started + self.limits.max_session_s]
        if self._silent():
            times.append(self._last_activity + self.limits.idle_timeout_s)
        wait = self.segmenter.deadline()
        if wait is not None and self._silent():
            times.append(wait)
        return max(0.0, min(times) - now)

    def _check_timers(self, now: float) -> None:
        if now >= self.stats.started + self.limits.max_session_s:
            raise SessionLimit("DEADLINE_EXCEEDED", f"the session reached its maximum length of "
                               f"{self.limits.max_session_s:g} s: open a new one")
        if self._silent() and now >= self._last_activity + self.limits.idle_timeout_s:
            raise SessionLimit("DEADLINE_EXCEEDED", f"no message for {self.limits.idle_timeout_s:g} s: the session "
                               "timed out idle (half-close the request stream to end a session)")

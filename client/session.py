"""Real-time sessions (StreamingSynthesize): send text while audio streams back.

    with client.session(voice="v2/en_speaker_6") as session:
        for token in llm_reply:             # text pieces of any size, joined verbatim
            session.send(token)
        session.close()                     # end of input: the rest is spoken, then a summary
        for item in session:                # AudioChunk, SegmentStarted, SegmentDone, Cleared
            if isinstance(item, AudioChunk):
                player.write(item.data)

`session.flush()` speaks what is buffered now; `session.clear()` is a barge-in: the server
drops the buffered text and stops every segment in flight (no more of their audio comes),
and the session stays open. Sending and reading may happen on different threads (or tasks):
the call is full duplex. `client.speak(pieces)` does all of it for an iterator of pieces.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc

from barkstream.v1 import tts_pb2

from ._stream import StreamState
from .audio import AudioChunk
from .errors import from_rpc_error

SessionItem = AudioChunk | tts_pb2.SegmentStarted | tts_pb2.SegmentDone | tts_pb2.Cleared
_EVENTS = ("segment_started", "segment_done", "cleared")
_CLOSE = object()


@dataclass
class SpokenSegment:
    """A segment as the session reported it: its text and where its audio lies in the stream."""

    index: int
    text: str
    start_sample: int
    end_sample: int | None = None  # None while its audio is still coming
    interrupted: bool = False


@dataclass
class SessionState:
    """The transport-free part of a session: messages in, items out, segments tracked."""

    started: float = field(default_factory=time.monotonic)
    stream: StreamState = field(default_factory=StreamState)
    segments: dict[int, SpokenSegment] = field(default_factory=dict)

    def accept(self, message: tts_pb2.StreamingSynthesizeResponse) -> SessionItem | None:
        kind = message.WhichOneof("payload")
        if kind not in _EVENTS:
            return self.stream.accept(message, time.monotonic() - self.started)
        event = getattr(message, kind)
        if kind == "segment_started":
            self.segments[event.segment_index] = SpokenSegment(event.segment_index, event.text, event.start_sample)
        elif kind == "segment_done" and event.segment_index in self.segments:
            seg = self.segments[event.segment_index]
            seg.end_sample, seg.interrupted = event.end_sample, event.interrupted
        return event

    def spoken_text(self) -> str:
        """The text of the segments whose audio was sent, in order (cut ones included)."""
        return " ".join(s.text for _, s in sorted(self.segments.items()))


def text_request(text: str) -> tts_pb2.StreamingSynthesizeRequest:
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    return tts_pb2.StreamingSynthesizeRequest(text=text)


FLUSH = tts_pb2.StreamingSynthesizeRequest(flush=tts_pb2.Flush())
CLEAR = tts_pb2.StreamingSynthesizeRequest(clear=tts_pb2.Clear())


class _SessionView:
    """What both session kinds show of their state."""

    _state: SessionState

    @property
    def header(self) -> tts_pb2.StreamHeader | None:
        return self._state.stream.header

    @property
    def summary(self) -> tts_pb2.SynthesisSummary | None:
        """The summary, once the session has ended (with `voice_prompt` when asked for)."""
        return self._state.stream.summary

    @property
    def segments(self) -> dict[int, SpokenSegment]:
        return self._state.segments

    @property
    def time_to_first_audio(self) -> float | None:
        return self._state.stream.time_to_first_audio

    def spoken_text(self) -> str:
        return self._state.spoken_text()


class Session(_SessionView, Iterator[SessionItem]):
    """A blocking session (TTSClient.session). Thread-safe for one sender and one reader."""

    def __init__(self, stub_method: Any, config: tts_pb2.SessionConfig, call_kwargs: dict[str, Any],
                 target: str, pieces: Iterable[str] | None = None) -> None:
        """pieces: the whole input as an iterator (`speak`); then send/flush/clear are not used."""
        self._outbox: queue.Queue = queue.Queue()
        self._outbox.put(tts_pb2.StreamingSynthesizeRequest(config=config))
        self._state = SessionState()
        self._target = target
        self._closed = pieces is not None
        requests = self._requests() if pieces is None else sync_pieces(config, pieces)
        self._call = stub_method(requests, **call_kwargs)

    def _requests(self) -> Iterator[tts_pb2.StreamingSynthesizeRequest]:
        while (item := self._outbox.get()) is not _CLOSE:
            yield item

    def send(self, text: str) -> None:
        """Queue a text piece (joined verbatim to what came before); empty pieces are skipped."""
        if text:
            self._put(text_request(text))

    def flush(self) -> None:
        self._put(FLUSH)

    def clear(self) -> None:
        """Barge-in: drop what is buffered and stop the segments in flight."""
        self._put(CLEAR)

    def close(self) -> None:
        """End of input (half-close): what is buffered is spoken, then the summary comes."""
        if not self._closed:
            self._closed = True
            self._outbox.put(_CLOSE)

    def cancel(self) -> None:
        """Stop the session now; the server frees its work."""
        self.close()
        self._call.cancel()

    def _put(self, request: tts_pb2.StreamingSynthesizeRequest) -> None:
        if self._closed:
            raise RuntimeError("the text input of this StreamingSynthesize call is already closed")
        self._outbox.put(request)

    def __iter__(self) -> Session:
        return self

    def __next__(self) -> SessionItem:
        while True:
            try:
                message = next(self._call)
            except StopIteration:
                self._state.stream.end()
                raise
            except grpc.RpcError as err:
                if err.code() is grpc.StatusCode.CANCELLED and self._closed and self._call.cancelled():
                    raise StopIteration from None
                raise from_rpc_error(err, self._target) from None
            item = self._state.accept(message)
            if item is not None:
                return item

    def audio(self) -> Iterator[AudioChunk]:
        """Only the audio chunks (events still update `segments`)."""
        return (item for item in self if isinstance(item, AudioChunk))

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None and not self._state.stream.ended:
            self.close()
            for _ in self:
                pass
        else:
            self.cancel()


class AsyncSession(_SessionView, AsyncIterator[SessionItem]):
    """An asyncio session (AsyncTTSClient.session): `await send()`, `async for item in session`."""

    def __init__(self, call: Any, config: tts_pb2.SessionConfig, target: str, writes: bool = True) -> None:
        """writes: False when the call reads its requests from an iterator (`speak`)."""
        self._call = call
        self._config = config
        self._state = SessionState()
        self._target = target
        self._configured = self._closed = not writes

    async def _write(self, request: tts_pb2.StreamingSynthesizeRequest) -> None:
        if self._closed:
            raise RuntimeError("the text input of this StreamingSynthesize call is already closed")
        try:
            if not self._configured:
                self._configured = True
                await self._call.write(tts_pb2.StreamingSynthesizeRequest(config=self._config))
            await self._call.write(request)
        except grpc.RpcError as err:
            raise from_rpc_error(err, self._target) from None

    async def start(self) -> None:
        """Send the configuration (send() does it too, before its first piece)."""
        if not self._configured:
            self._configured = True
            await self._call.write(tts_pb2.StreamingSynthesizeRequest(config=self._config))

    async def send(self, text: str) -> None:
        if text:
            await self._write(text_request(text))

    async def flush(self) -> None:
        await self._write(FLUSH)

    async def clear(self) -> None:
        await self._write(CLEAR)

    async def close(self) -> None:
        """End of input (half-close)."""
        if not self._closed:
            await self.start()
            self._closed = True
            await self._call.done_writing()

    def cancel(self) -> None:
        self._closed = True
        self._call.cancel()

    def __aiter__(self) -> AsyncSession:
        return self

    async def __anext__(self) -> SessionItem:
        await self.start()
        while True:
            try:
                message = await self._call.read()
            except asyncio.CancelledError:
                self.cancel()  # the caller's task was cancelled: so is the call
                raise
            except grpc.RpcError as err:
                raise from_rpc_error(err, self._target) from None
            if message is grpc.aio.EOF:
                self._state.stream.end()
                raise StopAsyncIteration
            item = self._state.accept(message)
            if item is not None:
                return item

    async def __aenter__(self) -> AsyncSession:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc_type is None and not self._state.stream.ended:
            await self.close()
            async for _ in self:
                pass
        else:
            self.cancel()


def sync_pieces(config: tts_pb2.SessionConfig, pieces: Iterable[str]) -> Iterator[tts_pb2.StreamingSynthesizeRequest]:
    """The request stream of `speak`: the configuration, then every non-empty piece."""
    yield tts_pb2.StreamingSynthesizeRequest(config=config)
    for piece in pieces:
        if piece:
            yield text_request(piece)


async def async_pieces(config: tts_pb2.SessionConfig, pieces: AsyncIterable[str] | Iterable[str]
                       ) -> AsyncIterator[tts_pb2.StreamingSynthesizeRequest]:
    yield tts_pb2.StreamingSynthesizeRequest(config=config)
    if isinstance(pieces, AsyncIterable):
        async for piece in pieces:
            if piece:
                yield text_request(piece)
    else:
        for piece in pieces:
            if piece:
                yield text_request(piece)

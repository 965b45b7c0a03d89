"""The transport-free part of a Synthesize stream: messages in, AudioChunks and timings out.

The sync and asyncio streams differ only in how they read a message; everything else (the
protocol order header -> chunks -> summary, per-chunk timing, progress, assembling an Audio)
lives here once, so both behave identically and are tested without a server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from barkstream.v1 import tts_pb2

from .audio import Audio, AudioChunk, bytes_per_sample
from .errors import ServerError


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a stream stands, as the caller sees it (for progress lines and dashboards).

    segments_done: text segments whose audio has fully arrived, of `segment_count`.
    real_time_factor: elapsed / audio_seconds (below 1: audio arrives faster than it plays).
    """

    segments_done: int
    segment_count: int
    audio_seconds: float
    time_to_first_audio: float | None
    elapsed: float
    finished: bool

    @property
    def real_time_factor(self) -> float | None:
        return self.elapsed / self.audio_seconds if self.audio_seconds > 0 else None


def _protocol_error(message: str) -> ServerError:
    return ServerError(f"the server broke the stream protocol: {message}")


class StreamState:
    """Follows one stream's messages; raises ServerError when the server breaks the protocol."""

    def __init__(self) -> None:
        self.header: tts_pb2.StreamHeader | None = None
        self.summary: tts_pb2.SynthesisSummary | None = None
        self.time_to_first_audio: float | None = None
        self.samples_received = 0
        self.chunks_received = 0
        self.current_segment = 0
        self.ended = False
        self._next_sequence = 0

    def accept(self, message: tts_pb2.SynthesizeResponse, elapsed: float) -> AudioChunk | None:
        """Take one message received `elapsed` seconds into the call; return its audio, if any."""
        kind = message.WhichOneof("payload")
        if kind == "header":
            if self.header is not None:
                raise _protocol_error("a second header")
            if message.header.sample_rate_hz <= 0:
                raise _protocol_error("header without a sample rate")
            self.header = message.header
            return None
        if kind == "chunk":
            return self._chunk(message.chunk, elapsed)
        if kind == "summary":
            self.summary = message.summary
        return None  # a summary, or a payload this SDK version does not know yet

    def _chunk(self, chunk: tts_pb2.AudioChunk, elapsed: float) -> AudioChunk:
        header = self.header
        if header is None:
            raise _protocol_error("audio before the header")
        if chunk.sequence_number != self._next_sequence:
            raise _protocol_error(f"chunk {chunk.sequence_number} where {self._next_sequence} was expected")
        size = bytes_per_sample(header.encoding)
        if size and len(chunk.data) != chunk.num_samples * size:
            raise _protocol_error(f"chunk {chunk.sequence_number} has {len(chunk.data)} bytes "
                                  f"for {chunk.num_samples} samples")
        self._next_sequence += 1
        if self.time_to_first_audio is None:
            self.time_to_first_audio = elapsed
        self.samples_received += chunk.num_samples
        self.chunks_received += 1
        self.current_segment = max(self.current_segment, chunk.segment_index)
        return AudioChunk(data=chunk.data, num_samples=chunk.num_samples, sample_rate=header.sample_rate_hz,
                          encoding=header.encoding, segment_index=chunk.segment_index,
                          sequence_number=chunk.sequence_number, start_sample=chunk.start_sample, elapsed=elapsed,
                          packets=tuple(chunk.packets))

    def end(self) -> None:
        """The server closed the stream with OK."""
        if self.header is None:
            raise _protocol_error("it ended without a header")
        self.ended = True

    def progress(self, elapsed: float) -> Progress:
        count = self.header.segment_count if self.header is not None else 0
        if self.ended or self.summary is not None:
            done = count
        else:
            done = self.current_segment
        rate = self.header.sample_rate_hz if self.header is not None else 0
        return Progress(segments_done=done, segment_count=count,
                        audio_seconds=self.samples_received / rate if rate else 0.0,
                        time_to_first_audio=self.time_to_first_audio, elapsed=elapsed, finished=self.ended)


def assemble(state: StreamState, chunks: list[AudioChunk]) -> Audio:
    """The Audio of a finished stream, from all of its chunks."""
    header = state.header
    if header is None:
        raise _protocol_error("it ended without a header")
    return Audio(sample_rate=header.sample_rate_hz, encoding=header.encoding, data=b"".join(c.data for c in chunks),
                 header=header, num_samples=sum(c.num_samples for c in chunks), summary=state.summary,
                 time_to_first_audio=state.time_to_first_audio, packets=tuple(p for c in chunks for p in c.packets))


class StreamView:
    """What the sync and asyncio audio streams both show of a call: header, summary, timing, progress."""

    def __init__(self, call: Any, target: str, started: float) -> None:
        self._call = call
        self._target = target
        self._started = started
        self._state = StreamState()
        self._cancelled = False

    @property
    def header(self) -> tts_pb2.StreamHeader | None:
        """The stream's header once it has arrived (after the first chunk, or `wait_header()`)."""
        return self._state.header

    @property
    def summary(self) -> tts_pb2.SynthesisSummary | None:
        """The server's summary (timings, real-time factor), once the stream has ended."""
        return self._state.summary

    @property
    def time_to_first_audio(self) -> float | None:
        """Seconds from the call to the first chunk reaching the caller (None before it)."""
        return self._state.time_to_first_audio

    @property
    def done(self) -> bool:
        return self._state.ended or self._cancelled

    def progress(self) -> Progress:
        return self._state.progress(time.monotonic() - self._started)

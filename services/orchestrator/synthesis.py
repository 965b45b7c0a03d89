"""One request's run: its segments through the stages, the PCM encoded into chunks, the summary.

No gRPC messages here: the servicer translates what this yields (`SentChunk`s, then a
`Summary`). The streaming-input sessions reuse the pieces (`Pipeline`, `Summary`, the
encoder from audio.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..bark.tokenizer import BarkTokenizer
from ..bark.voices import VoiceLibrary
from ..telemetry import Telemetry
from .audio import AudioEncoder, EncodedChunk
from .request import StreamOptions
from .session import StageTimes, SynthesisSession
from .stage_clients import StageClients


@dataclass(frozen=True)
class Pipeline:
    """What the orchestrator calls: the stage services, and the checkpoint's tokenizer and voices."""

    stages: StageClients
    tokenizer: BarkTokenizer
    voices: VoiceLibrary


@dataclass(frozen=True)
class SentChunk:
    sequence_number: int
    segment_index: int
    chunk: EncodedChunk


@dataclass(frozen=True)
class StageTiming:
    stage: str
    segment_index: int
    total_s: float
    first_output_s: float | None


@dataclass(frozen=True)
class Summary:
    request_id: str
    total_samples: int
    sample_rate_hz: int
    segment_count: int
    chunk_count: int
    time_to_first_audio_s: float | None
    wall_s: float
    stage_timings: list[StageTiming] = field(default_factory=list)

    @property
    def audio_seconds(self) -> float:
        return self.total_samples / self.sample_rate_hz

    @property
    def real_time_factor(self) -> float | None:
        return self.wall_s / self.audio_seconds if self.total_samples else None


def stage_timings(timings: Sequence[tuple[str, int, StageTimes]]) -> list[StageTiming]:
    """The stages' measured times, for the segments whose stage finished."""
    return [StageTiming(stage, index, t.ended - t.started,
                        None if t.first_output is None else t.first_output - t.started)
            for stage, index, t in timings if t.ended is not None]


class Synthesis:
    """Runs a checked request: `chunks()` streams its encoded audio, then `summary()` closes the books."""

    def __init__(self, stages: StageClients, options: StreamOptions, segments: Sequence[np.ndarray],
                 timeout: float | None, telemetry: Telemetry, started: float | None = None) -> None:
        self.options = options
        self.segment_count = len(segments)
        self.telemetry = telemetry
        self.started = time.monotonic() if started is None else started
        self.encoder = AudioEncoder(options.format)
        self.session = SynthesisSession(stages, options.request_id, segments, options.voice, options.params,
                                        options.seed, timeout, tracer=telemetry.tracer)
        self.chunk_count = 0
        self.first_audio: float | None = None

    async def chunks(self) -> AsyncIterator[SentChunk]:
        """Encoded chunks as the stages' PCM arrives; raises StageFailed when a stage does.

        The codec is finished with the last segment; `close()` frees it however the stream ends.
        """
        async for segment, pcm in self.session.pcm():
            last = segment == self.segment_count - 1
            for c in (self.encoder.flush(end_of_stream=last) if pcm is None else self.encoder.push(pcm)):
                if self.first_audio is None:
                    self.first_audio = time.monotonic()
                yield SentChunk(self.chunk_count, segment, c)
                self.chunk_count += 1

    def close(self) -> None:
        """Free the encoder (a no-op after a finished stream); call it however the run ends."""
        self.encoder.close()

    def summary(self) -> Summary:
        """Totals and timings of the finished run (recorded in the metrics too)."""
        wall = time.monotonic() - self.started
        first = None if self.first_audio is None else self.first_audio - self.started
        out = Summary(self.options.request_id, self.encoder.samples_out, self.options.format.sample_rate_hz,
                      self.segment_count, self.chunk_count, first, wall,
                      stage_timings(self.session.stage_timings()))
        self.telemetry.synthesis_done(first, out.real_time_factor, out.audio_seconds)
        return out

"""Codec stage: fine codes (8, t) chunks -> 24 kHz float PCM, streamed exactly.

Each stream keeps its own `StreamingDecoder` state; streams with frames
waiting are decoded together in one batched call when their chunks have the
same length (the usual case: fine windows release 512 frames at a time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..model.codec import Codec
from ..model.codec_stream import StreamingDecoder, StreamState
from .inputs import FINE_FRAMES, InputStream, StreamingEngine
from .jobs import Job
from .observe import NULL_OBSERVER, StageObserver


class CodecStream(InputStream):
    """Frames waiting to be decoded for one request; `feed` / `close` may run on another thread.

    The engine takes at most `max_frames_per_step` frames at a time: decoding a whole 512-frame
    fine release at once would hold back its first samples until the last one is done; smaller
    steps let PCM leave sooner, with identical output.
    """

    def __init__(self) -> None:
        super().__init__(FINE_FRAMES)
        self.frames_in = 0
        self.samples_out = 0


@dataclass
class _Member:
    job: Job
    stream: CodecStream
    state: StreamState
    waiting: list[np.ndarray] = field(default_factory=list)


class CodecEngine(StreamingEngine):
    """Streams many requests through one codec. One thread drives it."""

    def __init__(self, codec: Codec, max_batch: int = 8, max_frames_per_step: int = 32,
                 observer: StageObserver | None = None):
        self.codec = codec
        self.observer = observer or NULL_OBSERVER  # telemetry: a span per decoded chunk
        self.max_frames_per_step = max_frames_per_step
        self.decoder = StreamingDecoder(codec)
        self.max_batch = max_batch
        self.members: list[_Member] = []
        self.last_batch_size = 0

    def add(self, job: Job) -> CodecStream:
        stream = CodecStream()
        self.attach(job, stream)
        return stream

    def attach(self, job: Job, stream: CodecStream) -> None:
        self.members.append(_Member(job, stream, self.decoder.init_state(1)))

    @torch.inference_mode()
    def step(self) -> bool:
        worked = False
        keep = []
        groups: dict[int, list[tuple[_Member, np.ndarray]]] = {}
        for m in self.members:
            if m.job.cancelled:
                m.job.finish()
                continue
            frames, closed = m.stream.take(self.max_frames_per_step)
            if frames is not None and frames.shape[1]:
                groups.setdefault(frames.shape[1], []).append((m, frames))
            elif closed:
                self._finish(m)
                worked = True
                continue
            keep.append(m)
        self.members = keep
        self.last_batch_size = 0
        for items in groups.values():
            for start in range(0, len(items), self.max_batch):
                self._decode(items[start:start + self.max_batch])
                worked = True
        return worked

    def _decode(self, items: list[tuple[_Member, np.ndarray]]) -> None:
        self.last_batch_size = max(self.last_batch_size, len(items))
        spans = self.observer.begin("decode", [m.job for m, _ in items], frames=items[0][1].shape[1])
        codes = torch.from_numpy(np.stack([f for _, f in items]))  # (b, 8, t)
        state = StreamState.concat([m.state for m, _ in items])
        pcm, lengths, state = self.decoder.step(codes, state)  # (b, n)
        for i, (m, frames) in enumerate(items):
            m.state = state.select([i])
            m.stream.frames_in += frames.shape[1]
            self._emit(m, pcm[i, : lengths[i]])
            self.observer.emitted(m.job, frames.size)
        self.observer.end(spans)

    def _finish(self, m: _Member) -> None:
        pcm, lengths = self.decoder.flush(m.state)
        self._emit(m, pcm[0, : lengths[0]])
        m.job.finish()

    def _emit(self, m: _Member, pcm: torch.Tensor) -> None:
        if pcm.numel():
            m.stream.samples_out += pcm.numel()
            m.job.emit(pcm.float().cpu().numpy())

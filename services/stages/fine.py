"""Fine stage: 2 coarse codebooks -> all 8, in Suno's 1024-frame windows (stride 512).

The model is non-causal, so a window can only run once all 1024 of its input
frames exist; windows also read what earlier windows wrote. `FineStream`
keeps Suno's whole working buffer (voice history up to 512 frames, then the
coarse frames with codebooks 2..7 padded) and releases frames as soon as no
later window can rewrite them. `FineEngine` runs ready windows of many streams
as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..bark import constants as C
from ..bark.params import FineParams
from ..model.fine import FineGPT
from ..model.sampling import batchable, draw_many, make_generator
from .inputs import COARSE_FRAMES, InputStream, StreamingEngine
from .jobs import Job
from .observe import NULL_OBSERVER, StageObserver

W, S = C.FINE_WINDOW, C.FINE_STRIDE


@dataclass
class FineRequest:
    fine_history: np.ndarray | None = None  # (8, m) voice fine prompt
    params: FineParams = field(default_factory=FineParams)
    seed: int | None = None


@dataclass
class FineWindow:
    start: int  # first buffer column of the window
    rel: int  # columns [start + rel, start + W) are (re)written


class FineStream(InputStream):
    """One request's buffer and window schedule; `feed` / `close` may run on another thread."""

    def __init__(self, request: FineRequest):
        super().__init__(COARSE_FRAMES)
        self.params = request.params
        hist = request.fine_history
        if hist is not None:
            hist = np.asarray(hist, dtype=np.int64)[:, -C.FINE_MAX_HISTORY:]  # (8, h)
        self.n_hist = 0 if hist is None else hist.shape[1]
        self.buffer = np.zeros((0, C.N_FINE_CODEBOOKS), dtype=np.int64) if hist is None else hist.T.copy()  # (T, 8)
        self.n_coarse_frames = 0
        self.windows_done = 0
        self.emitted = 0  # generated frames released so far
        self.padded = 0  # end padding added when the whole input is shorter than a window

    def _absorb(self) -> bool:
        """Move fed frames into the buffer; returns whether the input has ended."""
        frames, ended = self.take()
        if frames is not None:
            cols = np.full((frames.shape[1], C.N_FINE_CODEBOOKS), C.FINE_PAD_TOKEN, dtype=np.int64)  # (t, 8)
            cols[:, : C.N_COARSE_CODEBOOKS] = frames.T
            self.buffer = np.concatenate([self.buffer, cols])
            self.n_coarse_frames += frames.shape[1]
        return ended

    def n_loops(self) -> int:
        return max(0, int(np.ceil((self.n_coarse_frames - (W - self.n_hist)) / S))) + 1

    def next_window(self) -> FineWindow | None:
        closed = self._absorb()
        n = self.windows_done
        if not closed:
            if self.n_hist + self.n_coarse_frames >= n * S + W:
                return FineWindow(n * S, self.n_hist)
            return None
        if self.n_coarse_frames == 0 or n >= self.n_loops():
            return None
        if len(self.buffer) < W and not self.padded:
            self.padded = W - len(self.buffer)
            pad = np.full((self.padded, C.N_FINE_CODEBOOKS), C.FINE_PAD_TOKEN, dtype=np.int64)
            self.buffer = np.concatenate([self.buffer, pad])
        start = min(n * S, len(self.buffer) - W)
        fill = min(self.n_hist + n * S, len(self.buffer) - S)
        return FineWindow(start, fill - start)

    def complete(self, window: FineWindow, columns: np.ndarray) -> np.ndarray:
        """Store a window's result (W, 8); return the frames (8, t) that are now final."""
        self.buffer[window.start + window.rel: window.start + W] = columns[window.rel:]
        self.windows_done += 1
        if self.ended and self.windows_done >= self.n_loops():
            final = self.n_hist + self.n_coarse_frames
        else:
            final = min(self.n_hist + self.windows_done * S, self.n_hist + self.n_coarse_frames - S)
        out = self.buffer[self.n_hist + self.emitted: final].T  # (8, t)
        self.emitted = max(self.emitted, final - self.n_hist)
        return out.copy()

    def finished(self) -> bool:
        return self.ended and (self.n_coarse_frames == 0 or self.windows_done >= self.n_loops())


@dataclass
class _Member:
    job: Job
    stream: FineStream
    generator: torch.Generator | None


class FineEngine(StreamingEngine):
    """Runs the ready windows of every open stream together. One thread drives it."""

    def __init__(self, model: FineGPT, max_batch: int = 8, observer: StageObserver | None = None):
        self.model = model
        self.max_batch = max_batch
        self.observer = observer or NULL_OBSERVER  # telemetry: a span per batched window
        self.device = next(model.parameters()).device
        self.members: list[_Member] = []
        self.last_batch_size = 0

    def add(self, job: Job, request: FineRequest) -> FineStream:
        request.params.validate()
        stream = FineStream(request)
        self.attach(job, stream, request.seed)
        return stream

    def attach(self, job: Job, stream: FineStream, seed: int | None) -> None:
        """Take a stream built elsewhere (a servicer feeds it while the engine runs it)."""
        self.members.append(_Member(job, stream, make_generator(seed, stream=2, device=self.device)))

    @torch.inference_mode()
    def step(self) -> bool:
        keep = []
        for m in self.members:
            if m.job.cancelled or m.stream.finished():
                m.job.finish()
            else:
                keep.append(m)
        self.members = keep
        ready = []
        for m in self.members:
            if len(ready) >= self.max_batch:
                break
            window = m.stream.next_window()
            if window is not None:
                ready.append((m, window))
        self.last_batch_size = len(ready)
        if not ready:
            return False
        spans = self.observer.begin("window", [m.job for m, _ in ready])
        columns = self.run_windows([(m.stream.buffer[w.start:w.start + W], w.rel, m) for m, w in ready])
        for (m, w), cols in zip(ready, columns, strict=True):
            frames = m.stream.complete(w, cols)
            if frames.shape[1]:
                m.job.emit(frames)
                self.observer.emitted(m.job, frames.size)
        self.observer.end(spans)
        return True

    def run_windows(self, windows: list[tuple[np.ndarray, int, _Member]]) -> list[np.ndarray]:
        """Predict codebooks 2..7 of each (W, 8) window from column `rel` on, one codebook at a time."""
        batch = torch.from_numpy(np.stack([w for w, _, _ in windows])).to(self.device)  # (b, W, 8)
        greedy = all(batchable(m.stream.params.sampling) for _, _, m in windows)
        if greedy:  # every window's argmax in one op; columns before a window's `rel` are kept
            rel = torch.tensor([r for _, r, _ in windows], device=self.device)
            keep = torch.arange(W, device=self.device)[None, :] < rel[:, None]  # (b, W)
        for nn in range(C.N_COARSE_CODEBOOKS, C.N_FINE_CODEBOOKS):
            logits = self.model(nn, batch)[:, :, : C.CODEBOOK_SIZE]  # (b, W, 1024)
            if greedy:
                batch[:, :, nn] = torch.where(keep, batch[:, :, nn], torch.argmax(logits, dim=-1))
                continue
            for b, (_, rel, m) in enumerate(windows):
                params = m.stream.params.sampling
                if params.greedy:
                    preds = torch.argmax(logits[b, rel:], dim=-1)  # (W - rel,)
                else:
                    probs = torch.softmax(logits[b] / params.temperature, dim=-1)  # (W, 1024)
                    preds = draw_many(probs[rel:], params, m.generator)
                batch[b, rel:, nn] = preds
        return list(batch.cpu().numpy())

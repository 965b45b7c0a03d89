"""Coarse stage: semantic tokens -> 2 EnCodec codebooks, in Suno's sliding windows.

Each window restarts from a fresh KV cache: 256 semantic tokens (from 209
before the current position), the infer token and up to 630 coarse history
tokens, then up to 60 decoded tokens alternating codebook 0 / codebook 1.

`CoarseStream` is one request's algorithm state; it can be fed semantic tokens
while they are still being generated: a window starts as soon as every token
it reads has arrived, and its output is final when it ends. `CoarseEngine`
runs the windows of many streams in one batch (continuous batching: windows
join and leave between decode steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..bark import constants as C
from ..bark.params import CoarseParams
from ..model.gpt import GPT
from ..model.sampling import batchable, draw, make_generator, probabilities
from .decode import DecodeEngine, Row
from .inputs import SEMANTIC_TOKENS, InputStream, StreamingEngine
from .jobs import Job
from .observe import StageObserver

RATIO = C.SEMANTIC_TO_COARSE_RATIO


@dataclass
class CoarseRequest:
    semantic_history: np.ndarray | None = None  # (n,) voice semantic prompt
    coarse_history: np.ndarray | None = None  # (2, m) voice coarse prompt
    params: CoarseParams = field(default_factory=CoarseParams)
    seed: int | None = None


def prepare_history(
    semantic_history: np.ndarray | None, coarse_history: np.ndarray | None, max_coarse_history: int
) -> tuple[np.ndarray, np.ndarray]:
    """Suno's trimming of a voice's semantic/coarse prompts so they stay time-aligned."""
    if semantic_history is None or coarse_history is None:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    max_semantic_history = int(np.floor(max_coarse_history / RATIO))
    sem = np.asarray(semantic_history, dtype=np.int64)
    flat = np.asarray(coarse_history, dtype=np.int64).copy()  # (2, m)
    flat[1] += C.CODEBOOK_SIZE
    flat = flat.ravel("F") + C.SEMANTIC_VOCAB_SIZE  # (2m,) interleaved cb0, cb1
    n_sem = int(np.min([max_semantic_history, len(sem) - len(sem) % 2, int(np.floor(len(flat) / RATIO))]))
    n_coarse = int(round(n_sem * RATIO))
    # Negative-zero slices keep everything, exactly like the reference.
    sem = sem[-n_sem:]
    flat = flat[-n_coarse:][:-2]
    return sem, flat


def count_steps(n_semantic: int) -> int:
    """Coarse tokens (2 per frame) produced for `n_semantic` semantic tokens."""
    return int(round(np.floor(n_semantic * RATIO / C.N_COARSE_CODEBOOKS) * C.N_COARSE_CODEBOOKS))


@dataclass
class Window:
    ids: np.ndarray  # (L,) prompt of this window
    n_steps: int  # tokens to decode in it
    first_step: int  # global step index of its first token (parity selects the codebook)


class CoarseStream(InputStream):
    """One request's sliding-window state; `feed` / `close` may run on another thread."""

    def __init__(self, request: CoarseRequest):
        super().__init__(SEMANTIC_TOKENS)
        self.params = request.params
        self.max_semantic_history = int(np.floor(request.params.max_coarse_history / RATIO))
        self.sem_hist, self.coarse = prepare_history(
            request.semantic_history, request.coarse_history, request.params.max_coarse_history
        )
        self.n_hist_coarse = len(self.coarse)
        self._semantic = self.sem_hist.copy()  # (n,) history, then every token fed so far
        self._ended = False
        self.n_step = 0
        self.window_open = False

    def _snapshot(self) -> tuple[np.ndarray, bool]:
        """Every semantic token so far (engine thread), and whether the input has ended."""
        if not self._ended:
            tokens, self._ended = self.take()
            if tokens is not None:
                self._semantic = np.concatenate([self._semantic, tokens])
        return self._semantic, self._ended

    @property
    def n_new_semantic(self) -> int:
        return len(self._snapshot()[0]) - len(self.sem_hist)

    def total_steps(self) -> int | None:
        semantic, closed = self._snapshot()
        return count_steps(len(semantic) - len(self.sem_hist)) if closed else None

    def finished(self) -> bool:
        total = self.total_steps()
        return total is not None and self.n_step >= total and not self.window_open

    def next_window(self) -> Window | None:
        """The next window's prompt once every token it reads has arrived, else None."""
        if self.window_open:
            return None
        semantic, closed = self._snapshot()
        n_new = len(semantic) - len(self.sem_hist)
        total = count_steps(n_new)
        window_len = self.params.sliding_window_len
        if closed:
            if n_new == 0:
                raise ValueError("the semantic stream ended without any token")
            if self.n_step >= total:
                return None
            n_steps = min(window_len, total - self.n_step)
        else:
            n_steps = window_len
        semantic_idx = len(self.sem_hist) + int(round(self.n_step / RATIO))
        start = max(0, semantic_idx - self.max_semantic_history)
        if not closed and (len(semantic) < start + C.COARSE_SEMANTIC_WINDOW or total < self.n_step + n_steps):
            return None  # the window would read tokens that have not arrived yet
        sem_in = semantic[start:start + C.COARSE_SEMANTIC_WINDOW]
        pad = C.COARSE_SEMANTIC_WINDOW - len(sem_in)
        sem_in = np.pad(sem_in, (0, pad), constant_values=C.COARSE_SEMANTIC_PAD_TOKEN)
        hist = self.coarse[-self.params.max_coarse_history:]
        ids = np.concatenate([sem_in, [C.COARSE_INFER_TOKEN], hist]).astype(np.int64)
        self.window_open = True
        return Window(ids, n_steps, self.n_step)

    def accept(self, tokens: list[int]) -> np.ndarray:
        """Record a finished window's tokens; returns its frames (2, t) in codebook ids 0..1023."""
        self.coarse = np.concatenate([self.coarse, np.asarray(tokens, dtype=np.int64)])
        self.n_step += len(tokens)
        self.window_open = False
        return tokens_to_frames(np.asarray(tokens, dtype=np.int64))


def tokens_to_frames(tokens: np.ndarray) -> np.ndarray:
    """Interleaved coarse vocabulary ids (2t,) -> (2, t) codebook indices."""
    frames = tokens.reshape(-1, C.N_COARSE_CODEBOOKS).T - C.SEMANTIC_VOCAB_SIZE  # (2, t)
    frames[1] -= C.CODEBOOK_SIZE
    return frames


def logit_range(step: int) -> tuple[int, int]:
    """Vocabulary slice of coarse step `step`: codebook 0 on even steps, codebook 1 on odd ones."""
    start = C.SEMANTIC_VOCAB_SIZE + (step % 2) * C.CODEBOOK_SIZE
    return start, start + C.CODEBOOK_SIZE


@dataclass(kw_only=True)
class _Row(Row):
    stream: CoarseStream
    window: Window


@dataclass
class _Member:
    job: Job
    stream: CoarseStream
    generator: torch.Generator | None


class CoarseEngine(DecodeEngine, StreamingEngine):
    """Batches the windows of all open streams (see `DecodeEngine` for the rows and the cache).

    The stage's own pieces: a row is one window (a fresh prefill of its prompt, `n_steps`
    tokens), and each step's token comes from its codebook's vocabulary slice.
    """

    def __init__(self, model: GPT, max_batch: int = 8, cuda_graphs: bool = True,
                 observer: StageObserver | None = None):
        super().__init__(model, max_batch, cuda_graphs, observer)  # telemetry: a span per window and per prefill
        self.members: list[_Member] = []  # every open stream, whether or not it has a window running

    def add(self, job: Job, request: CoarseRequest) -> CoarseStream:
        request.params.validate()
        stream = CoarseStream(request)
        self.attach(job, stream, request.seed)
        return stream

    def attach(self, job: Job, stream: CoarseStream, seed: int | None) -> None:
        """Take a stream built elsewhere (a servicer feeds it while the engine runs it)."""
        self.members.append(_Member(job, stream, make_generator(seed, stream=1, device=self.device)))

    def fail_all(self, error: BaseException) -> None:
        super().fail_all(error)
        self.rows = []

    def _admit(self) -> list[tuple[_Member, Window]]:
        """Drop cancelled streams, finish the ones whose input ended and windows are done, pick ready windows."""
        self._drop_cancelled()
        keep = []
        for m in self.members:
            if m.job.cancelled:
                m.job.finish()
            elif m.stream.finished():
                m.job.finish()
            else:
                keep.append(m)
        self.members = keep
        starting = []
        room = self.room
        for m in self.members:
            if len(starting) >= room:
                break
            try:
                window = m.stream.next_window()
            except ValueError as e:
                m.job.finish(e)
                m.job.cancel()
                continue
            if window is not None:
                starting.append((m, window))
        return starting

    def _prefill(self, starting: list[tuple[_Member, Window]]) -> None:
        for m, w in starting:
            self.observer.open(m.job, "window", first_step=w.first_step, steps=w.n_steps)
        spans = self.observer.begin("prefill", [m.job for m, _ in starting])
        lengths = [len(w.ids) for _, w in starting]
        T = max(lengths)
        ids = np.full((len(starting), T), C.COARSE_SEMANTIC_PAD_TOKEN, dtype=np.int64)
        for i, (_, w) in enumerate(starting):
            ids[i, : len(w.ids)] = w.ids  # right padding: never attended by the real positions
        emb = self.model.embed(torch.from_numpy(ids).to(self.device))  # (b, T, C)
        last = torch.tensor([n - 1 for n in lengths], device=self.device)
        rows = [_Row(job=m.job, generator=m.generator, position=n, stream=m.stream, window=w)
                for (m, w), n in zip(starting, lengths, strict=True)]
        self._start_rows(emb, rows, last=last)
        self.observer.end(spans)

    def _choose(self, rows: list[_Row], logits: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        starts = [logit_range(r.window.first_step + len(r.tokens))[0] for r in rows]
        if all(batchable(r.stream.params.sampling) for r in rows):
            temps = [r.stream.params.sampling.temperature for r in rows]
            tokens = greedy_coarse_tokens(logits, starts, temps)  # (n,)
            return tokens, tokens.tolist()  # the step's one read-back
        host = []
        for k, (row, lo) in enumerate(zip(rows, starts, strict=True)):
            probs = probabilities(logits[k, lo:lo + C.CODEBOOK_SIZE], row.stream.params.sampling)  # (1024,)
            host.append(draw(probs, row.stream.params.sampling, row.generator) + lo)
        return torch.tensor(host, device=self.device), host

    def _accept(self, row: _Row, token: int) -> bool:
        row.tokens.append(token)
        if len(row.tokens) < row.window.n_steps:
            return False
        row.job.emit(row.stream.accept(row.tokens))
        self.observer.emitted(row.job, len(row.tokens))
        self.observer.close(row.job, tokens=len(row.tokens))
        return True


def greedy_coarse_tokens(logits: torch.Tensor, starts: list[int], temps: list[float]) -> torch.Tensor:
    """Greedy coarse choice for every row at once: logits (n, V) -> vocabulary ids (n,).

    Row k picks within its codebook's slice [starts[k], starts[k] + 1024), with the same tempered
    softmax and argmax as one row alone.
    """
    dev = logits.device
    lo = torch.tensor(starts, device=dev)  # (n,)
    cols = lo[:, None] + torch.arange(C.CODEBOOK_SIZE, device=dev)  # (n, 1024)
    sliced = logits.float().gather(1, cols)  # (n, 1024)
    t = torch.tensor(temps, device=dev, dtype=torch.float32)
    probs = torch.softmax(sliced / t[:, None], dim=-1)  # (n, 1024)
    return torch.argmax(probs, dim=-1) + lo

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

import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from ..bark import constants as C
from ..bark.params import CoarseParams
from ..model.gpt import GPT, KVCache, StaticDecoder, cache_dtype, decode_step
from ..model.sampling import batchable, draw, make_generator, probabilities
from .jobs import Job
from .observe import NULL_OBSERVER, StageObserver

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


class CoarseStream:
    """One request's sliding-window state; `feed` may run on another thread."""

    def __init__(self, request: CoarseRequest):
        self.params = request.params
        self.max_semantic_history = int(np.floor(request.params.max_coarse_history / RATIO))
        self.sem_hist, self.coarse = prepare_history(
            request.semantic_history, request.coarse_history, request.params.max_coarse_history
        )
        self.n_hist_coarse = len(self.coarse)
        self._semantic: list[int] = list(self.sem_hist)
        self._lock = threading.Lock()
        self._closed = False
        self.n_step = 0
        self.window_open = False

    def feed(self, tokens: np.ndarray) -> None:
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= C.SEMANTIC_VOCAB_SIZE):
            raise ValueError(f"semantic tokens must be in [0, {C.SEMANTIC_VOCAB_SIZE})")
        with self._lock:
            if self._closed:
                raise ValueError("semantic input already closed")
            self._semantic.extend(int(t) for t in tokens)

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def _snapshot(self) -> tuple[np.ndarray, bool]:
        with self._lock:
            return np.array(self._semantic, dtype=np.int64), self._closed

    @property
    def n_new_semantic(self) -> int:
        with self._lock:
            return len(self._semantic) - len(self.sem_hist)

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


@dataclass
class _Row:
    job: Job
    stream: CoarseStream
    generator: torch.Generator | None
    window: Window
    position: int
    tokens: list[int] = field(default_factory=list)


@dataclass
class _Member:
    job: Job
    stream: CoarseStream
    generator: torch.Generator | None


class CoarseEngine:
    """Batches the windows of all open streams over one preallocated cache. One thread drives it.

    As in the semantic engine: last tokens stay on the device, greedy rows are chosen in one
    batched op, and on CUDA the decode step replays a CUDA graph unless `cuda_graphs` is False.
    """

    def __init__(self, model: GPT, max_batch: int = 8, cuda_graphs: bool = True,
                 observer: StageObserver | None = None):
        self.model = model
        self.max_batch = max_batch
        self.observer = observer or NULL_OBSERVER  # telemetry: a span per window and per prefill
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.cache = KVCache.allocate(model.config, max_batch, model.config.block_size, self.device,
                                      cache_dtype(self.dtype, self.device))
        self.decoder = StaticDecoder(model, self.cache) if cuda_graphs and self.device.type == "cuda" else None
        self.last = torch.zeros(max_batch, 1, dtype=torch.long, device=self.device)  # (B_max, 1)
        self.rows: list[_Row] = []
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
        for m in self.members:
            m.job.finish(error)
        self.members = []
        self.rows = []

    @property
    def active(self) -> int:
        return len(self.rows)

    def busy(self) -> bool:
        return bool(self.members)

    def _drop_row(self, index: int) -> None:
        last = len(self.rows) - 1
        if index != last:
            self.cache.k[:, index] = self.cache.k[:, last]
            self.cache.v[:, index] = self.cache.v[:, last]
            self.last[index] = self.last[last]
            self.rows[index] = self.rows[last]
        self.rows.pop()

    def _retire(self) -> None:
        """Drop cancelled streams and finish the ones whose input ended and windows are done."""
        for i in reversed(range(len(self.rows))):
            if self.rows[i].job.cancelled:
                self._drop_row(i)
        keep = []
        for m in self.members:
            if m.job.cancelled:
                m.job.finish()
            elif m.stream.finished():
                m.job.finish()
            else:
                keep.append(m)
        self.members = keep

    @torch.inference_mode()
    def step(self) -> bool:
        """Start ready windows (prefill) or advance running ones by a token. False when idle."""
        self._retire()
        starting = []
        room = self.max_batch - len(self.rows)
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
        if starting:
            self._prefill(starting)
            return True
        if self.rows:
            self._decode()
            return True
        return False

    def _prefill(self, starting: list[tuple[_Member, Window]]) -> None:
        for m, w in starting:
            self.observer.open(m.job, "window", first_step=w.first_step, steps=w.n_steps)
        spans = self.observer.begin("prefill", [m.job for m, _ in starting])
        lengths = [len(w.ids) for _, w in starting]
        T = max(lengths)
        ids = np.full((len(starting), T), C.COARSE_SEMANTIC_PAD_TOKEN, dtype=np.int64)
        for i, (_, w) in enumerate(starting):
            ids[i, : len(w.ids)] = w.ids  # right padding: never attended by the real positions
        first, b = len(self.rows), len(starting)
        rows = KVCache(self.cache.k[:, first:first + b], self.cache.v[:, first:first + b])  # free rows
        emb = self.model.embed(torch.from_numpy(ids).to(self.device))  # (b, T, C)
        last = torch.tensor([n - 1 for n in lengths], device=self.device)
        logits = self.model(emb, rows, start=0, last=last)  # (b, V)
        for (m, w), n in zip(starting, lengths, strict=True):
            self.rows.append(_Row(m.job, m.stream, m.generator, w, position=n))
        self._advance(list(range(first, first + b)), logits)
        self.observer.end(spans)

    def _decode(self) -> None:
        n = len(self.rows)
        self.observer.step("decode", n)
        positions = [r.position for r in self.rows]
        logits = decode_step(self.model, self.cache, self.last[:n], positions, self.decoder)
        for r in self.rows:
            r.position += 1
        self._advance(list(range(n)), logits)

    def _advance(self, indices: list[int], logits: torch.Tensor) -> None:
        rows = [self.rows[i] for i in indices]
        starts = [logit_range(r.window.first_step + len(r.tokens))[0] for r in rows]
        if all(batchable(r.stream.params.sampling) for r in rows):
            temps = [r.stream.params.sampling.temperature for r in rows]
            tokens = greedy_coarse_tokens(logits, starts, temps)  # (n,)
            host = tokens.tolist()  # the step's one read-back
        else:
            host = []
            for k, (row, lo) in enumerate(zip(rows, starts, strict=True)):
                probs = probabilities(logits[k, lo:lo + C.CODEBOOK_SIZE], row.stream.params.sampling)  # (1024,)
                host.append(draw(probs, row.stream.params.sampling, row.generator) + lo)
            tokens = torch.tensor(host, device=self.device)
        self.last[indices[0]:indices[-1] + 1, 0] = tokens  # indices are consecutive rows
        done = []
        for i, row, token in zip(indices, rows, host, strict=True):
            row.tokens.append(token)
            if len(row.tokens) == row.window.n_steps:
                row.job.emit(row.stream.accept(row.tokens))
                self.observer.emitted(row.job, len(row.tokens))
                self.observer.close(row.job, tokens=len(row.tokens))
                done.append(i)
        for i in sorted(done, reverse=True):
            self._drop_row(i)


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

"""Semantic stage: text ids (+ a voice's semantic history) -> semantic tokens.

Suno's `generate_text_semantic`, with continuous batching: requests join
between decode steps and leave when they stop, and each one gets the tokens
it would get alone (its own positions, its own generator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..bark import constants as C
from ..bark.params import SemanticParams
from ..model.gpt import GPT, KVCache, StaticDecoder, cache_dtype, decode_step
from ..model.sampling import batchable, draw, make_generator, probabilities
from .jobs import Job
from .observe import NULL_OBSERVER, StageObserver

PREFIX_LEN = C.MAX_TEXT_TOKENS + C.MAX_SEMANTIC_HISTORY_TOKENS + 1  # 513 input ids
MERGED_LEN = PREFIX_LEN - C.MAX_TEXT_TOKENS  # 257 positions after summing text and history


@dataclass
class SemanticRequest:
    text_ids: Sequence[int]  # tokenizer ids, without Bark's offset
    history: np.ndarray | None = None  # (n,) a voice's semantic prompt
    params: SemanticParams = field(default_factory=SemanticParams)
    seed: int | None = None


def build_input(text_ids: Sequence[int], history: np.ndarray | None) -> np.ndarray:
    """Suno's 513-id prefix: 256 text ids (+offset, padded), 256 history tokens (padded), infer."""
    text = np.asarray(text_ids, dtype=np.int64)[: C.MAX_TEXT_TOKENS] + C.TEXT_ENCODING_OFFSET
    text = np.pad(text, (0, C.MAX_TEXT_TOKENS - len(text)), constant_values=C.TEXT_PAD_TOKEN)
    if history is None:
        hist = np.full(C.MAX_SEMANTIC_HISTORY_TOKENS, C.SEMANTIC_PAD_TOKEN, dtype=np.int64)
    else:
        hist = np.asarray(history, dtype=np.int64)[-C.MAX_SEMANTIC_HISTORY_TOKENS:]
        hist = np.pad(hist, (0, C.MAX_SEMANTIC_HISTORY_TOKENS - len(hist)), constant_values=C.SEMANTIC_PAD_TOKEN)
    return np.concatenate([text, hist, [C.SEMANTIC_INFER_TOKEN]]).astype(np.int64)  # (513,)


@dataclass
class _Row:
    job: Job
    params: SemanticParams
    generator: torch.Generator | None
    position: int = MERGED_LEN  # where the next fed token goes
    duration_s: float = 0.0
    tokens: list[int] = field(default_factory=list)


class SemanticEngine:
    """Continuous batching over one preallocated KV cache of `max_batch` rows.

    Not thread-safe: one thread calls `add` / `cancel` / `step` (the runner).
    Each row's last token stays on the device (`last`), greedy rows are chosen
    there in one batched op, and a step reads back one small tensor. On CUDA
    the decode step is a CUDA graph replay (`StaticDecoder`, bucketed batch
    sizes) unless `cuda_graphs` is False.
    """

    def __init__(self, model: GPT, max_batch: int = 8, cuda_graphs: bool = True,
                 observer: StageObserver | None = None):
        self.model = model
        self.max_batch = max_batch
        self.observer = observer or NULL_OBSERVER  # telemetry: spans per prefill, per row's decode
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.cache = KVCache.allocate(model.config, max_batch, model.config.block_size, self.device,
                                      cache_dtype(self.dtype, self.device))
        self.decoder = StaticDecoder(model, self.cache) if cuda_graphs and self.device.type == "cuda" else None
        self.last = torch.zeros(max_batch, 1, dtype=torch.long, device=self.device)  # (B_max, 1)
        self.rows: list[_Row] = []
        self.pending: list[tuple[Job, SemanticRequest]] = []

    # -- bookkeeping -------------------------------------------------------
    def add(self, job: Job, request: SemanticRequest) -> None:
        request.params.validate()
        self.pending.append((job, request))

    @property
    def active(self) -> int:
        return len(self.rows)

    def busy(self) -> bool:
        return bool(self.rows or self.pending)

    def fail_all(self, error: BaseException) -> None:
        for row in self.rows:
            row.job.finish(error)
        for job, _ in self.pending:
            job.finish(error)
        self.rows, self.pending = [], []

    def _drop(self, index: int) -> None:
        """Remove row `index`, moving the last row into its cache slot so rows stay contiguous."""
        last = len(self.rows) - 1
        if index != last:
            self.cache.k[:, index] = self.cache.k[:, last]
            self.cache.v[:, index] = self.cache.v[:, last]
            self.last[index] = self.last[last]
            self.rows[index] = self.rows[last]
        self.rows.pop()

    # -- one step ----------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> bool:
        """Admit waiting requests (prefill), else advance every row by one token."""
        for i in reversed(range(len(self.rows))):
            if self.rows[i].job.cancelled:
                self.rows[i].job.finish()
                self._drop(i)
        room = self.max_batch - len(self.rows)
        admitted = [(j, r) for j, r in self.pending[:room] if not j.cancelled]
        for j, _ in self.pending[:room]:
            if j.cancelled:
                j.finish()
        self.pending = self.pending[room:]
        if admitted:
            self._prefill(admitted)
        elif self.rows:
            self._decode()
        else:
            return False
        return True

    def _prefill(self, admitted: list[tuple[Job, SemanticRequest]]) -> None:
        spans = self.observer.begin("prefill", [job for job, _ in admitted])
        ids = torch.from_numpy(np.stack([build_input(r.text_ids, r.history) for _, r in admitted]))
        ids = ids.to(self.device)  # (b, 513)
        emb = self.model.embed(ids)  # (b, 513, C)
        merged = torch.cat([emb[:, :256] + emb[:, 256:512], emb[:, 512:]], dim=1)  # (b, 257, C)
        first, b = len(self.rows), len(admitted)
        rows = KVCache(self.cache.k[:, first:first + b], self.cache.v[:, first:first + b])  # free rows
        logits = self.model(merged, rows, start=0)  # (b, V)
        for job, req in admitted:
            gen = make_generator(req.seed, stream=0, device=self.device)
            self.rows.append(_Row(job, req.params, gen))
        self._advance(list(range(first, first + b)), logits)
        self.observer.end(spans, then="decode")

    def _decode(self) -> None:
        n = len(self.rows)
        self.observer.step("decode", n)
        positions = [r.position for r in self.rows]
        logits = decode_step(self.model, self.cache, self.last[:n], positions, self.decoder)
        for r in self.rows:
            r.position += 1
        self._advance(list(range(n)), logits)

    def _advance(self, indices: list[int], logits: torch.Tensor) -> None:
        """Sample one token for each row in `indices` from its logits (len(indices), V)."""
        tokens, host = self._choose([self.rows[i].params for i in indices],
                                    [self.rows[i].generator for i in indices], logits)
        self.last[indices[0]:indices[-1] + 1, 0] = tokens  # indices are consecutive rows
        finished = []
        for i, (token, stop) in zip(indices, host, strict=True):
            row = self.rows[i]
            if not stop:
                row.tokens.append(token)
                row.job.emit(np.array([token], dtype=np.int64))
                self.observer.emitted(row.job, 1)
                row.duration_s += 1 / C.SEMANTIC_RATE_HZ
                limit = row.params.max_gen_duration_s
                if (limit is not None and row.duration_s > limit) or len(row.tokens) >= C.MAX_SEMANTIC_TOKENS:
                    stop = True
            if stop:
                row.job.finish()
                finished.append(i)
        for i in sorted(finished, reverse=True):
            self._drop(i)

    def _choose(self, params: list[SemanticParams], generators: list, logits: torch.Tensor
                ) -> tuple[torch.Tensor, list[tuple[int, bool]]]:
        """Tokens (n,) on the device and (token, stop) per row on the host; greedy rows in one batched op."""
        if all(batchable(p.sampling) for p in params):
            tokens, stops = greedy_semantic_tokens(logits, params)
            host = torch.stack([tokens, stops.long()], dim=1).tolist()  # the step's one read-back
            return tokens, [(t, bool(s)) for t, s in host]
        chosen = [next_semantic_token(logits[k], p, g) for k, (p, g) in enumerate(zip(params, generators, strict=True))]
        return torch.tensor([t for t, _ in chosen], device=logits.device), chosen


def greedy_semantic_tokens(logits: torch.Tensor, params: list[SemanticParams]) -> tuple[torch.Tensor, torch.Tensor]:
    """`next_semantic_token` for greedy rows, batched on the device: logits (n, V) -> tokens (n,), stops (n,).

    The same arithmetic row by row (tempered softmax over 10000 tokens + EOS, argmax), so a row's
    token does not depend on the others; rows that may not stop early get EOS at -inf.
    """
    dev = logits.device
    eos = logits[:, C.SEMANTIC_EOS_TOKEN:C.SEMANTIC_EOS_TOKEN + 1].float()  # (n, 1)
    allow = torch.tensor([p.allow_early_stop for p in params], device=dev)  # (n,)
    eos = torch.where(allow[:, None], eos, torch.full_like(eos, -math.inf))
    relevant = torch.cat([logits[:, : C.SEMANTIC_VOCAB_SIZE].float(), eos], dim=1)  # (n, 10001)
    temps = torch.tensor([p.sampling.temperature for p in params], device=dev, dtype=torch.float32)
    probs = torch.softmax(relevant / temps[:, None], dim=-1)  # (n, 10001)
    tokens = torch.argmax(probs, dim=-1)  # (n,)
    min_eos = torch.tensor([math.inf if p.min_eos_p is None else p.min_eos_p for p in params], device=dev)
    stops = allow & ((tokens == C.SEMANTIC_VOCAB_SIZE) | (probs[:, -1] >= min_eos))
    return tokens, stops


def next_semantic_token(
    logits: torch.Tensor, params: SemanticParams, generator: torch.Generator | None
) -> tuple[int, bool]:
    """Suno's rule: sample over 10000 tokens + EOS; stop on EOS or once p(EOS) >= min_eos_p."""
    if params.allow_early_stop:
        relevant = torch.cat([logits[: C.SEMANTIC_VOCAB_SIZE], logits[C.SEMANTIC_EOS_TOKEN:C.SEMANTIC_EOS_TOKEN + 1]])
    else:
        relevant = logits[: C.SEMANTIC_VOCAB_SIZE]
    probs = probabilities(relevant, params.sampling)  # (10001,)
    token = draw(probs, params.sampling, generator)
    if params.allow_early_stop and (
        token == C.SEMANTIC_VOCAB_SIZE or (params.min_eos_p is not None and float(probs[-1]) >= params.min_eos_p)
    ):
        return token, True
    return token, False

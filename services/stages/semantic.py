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
from ..model.gpt import GPT
from ..model.sampling import batchable, draw, make_generator, probabilities
from .decode import DecodeEngine, Row
from .jobs import Job
from .observe import StageObserver

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


@dataclass(kw_only=True)
class _Row(Row):
    params: SemanticParams
    duration_s: float = 0.0


class SemanticEngine(DecodeEngine):
    """Continuous batching of Suno's semantic decode (see `DecodeEngine` for the rows and the cache).

    The stage's own pieces: the 513-id prompt whose text and history embeddings are summed
    ("merge context"), and the EOS rule, chosen for all greedy rows in one batched op.
    """

    def __init__(self, model: GPT, max_batch: int = 8, cuda_graphs: bool = True,
                 observer: StageObserver | None = None):
        super().__init__(model, max_batch, cuda_graphs, observer)  # telemetry: spans per prefill, per row's decode
        self.pending: list[tuple[Job, SemanticRequest]] = []

    def add(self, job: Job, request: SemanticRequest) -> None:
        request.params.validate()
        self.pending.append((job, request))

    def busy(self) -> bool:
        return bool(self.rows or self.pending)

    def fail_all(self, error: BaseException) -> None:
        for row in self.rows:
            row.job.finish(error)
        for job, _ in self.pending:
            job.finish(error)
        self.rows, self.pending = [], []

    def _admit(self) -> list[tuple[Job, SemanticRequest]]:
        for row in self._drop_cancelled():
            row.job.finish()
        room = self.room
        admitted = [(j, r) for j, r in self.pending[:room] if not j.cancelled]
        for j, _ in self.pending[:room]:
            if j.cancelled:
                j.finish()
        self.pending = self.pending[room:]
        return admitted

    def _prefill(self, admitted: list[tuple[Job, SemanticRequest]]) -> None:
        spans = self.observer.begin("prefill", [job for job, _ in admitted])
        ids = torch.from_numpy(np.stack([build_input(r.text_ids, r.history) for _, r in admitted]))
        ids = ids.to(self.device)  # (b, 513)
        emb = self.model.embed(ids)  # (b, 513, C)
        merged = torch.cat([emb[:, :256] + emb[:, 256:512], emb[:, 512:]], dim=1)  # (b, 257, C)
        rows = [_Row(job=job, generator=make_generator(req.seed, stream=0, device=self.device),
                     position=MERGED_LEN, params=req.params) for job, req in admitted]
        self._start_rows(merged, rows)
        self.observer.end(spans, then="decode")

    def _accept(self, row: _Row, choice: tuple[int, bool]) -> bool:
        token, stop = choice
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
        return stop

    def _choose(self, rows: list[_Row], logits: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, bool]]]:
        """Tokens (n,) on the device and (token, stop) per row on the host; greedy rows in one batched op."""
        params = [r.params for r in rows]
        if all(batchable(p.sampling) for p in params):
            tokens, stops = greedy_semantic_tokens(logits, params)
            host = torch.stack([tokens, stops.long()], dim=1).tolist()  # the step's one read-back
            return tokens, [(t, bool(s)) for t, s in host]
        chosen = [next_semantic_token(logits[k], r.params, r.generator) for k, r in enumerate(rows)]
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

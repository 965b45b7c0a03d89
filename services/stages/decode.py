"""The continuous-batching core that the semantic and coarse engines share.

Both decode a causal GPT one token per row over one preallocated KV cache of
`max_batch` rows: new rows are prefilled into the free rows after the live
ones, every live row then advances by one token per step, and a row that stops
leaves by moving the last row into its slot, so live rows stay contiguous
(what `decode_step` and the CUDA-graph `StaticDecoder` read). Each row's last
token stays on the device (`last`), so a step reads back one small tensor.

What differs per stage is small and lives in the stage: which rows start
(`_admit`), how their prompt is embedded (`_prefill`), and how a row's token is
chosen (`_choose`) and recorded (`_accept`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..model.gpt import GPT, KVCache, StaticDecoder, cache_dtype, decode_step
from .jobs import Job
from .observe import NULL_OBSERVER, StageObserver


@dataclass
class Row:
    """One row of the batch: the job it decodes for and where its next token goes."""

    job: Job
    generator: torch.Generator | None
    position: int  # where the next fed token goes
    tokens: list[int] = field(default_factory=list)


class DecodeEngine:
    """Rows, cache and decode step of an autoregressive engine.

    Not thread-safe: one thread calls `add` / `step` (the runner); jobs are cancelled from any
    thread through `Job.cancel`. On CUDA the decode step is a CUDA graph replay (`StaticDecoder`,
    bucketed batch sizes) unless `cuda_graphs` is False.
    """

    def __init__(self, model: GPT, max_batch: int = 8, cuda_graphs: bool = True,
                 observer: StageObserver | None = None):
        self.model = model
        self.max_batch = max_batch
        self.observer = observer or NULL_OBSERVER
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.cache = KVCache.allocate(model.config, max_batch, model.config.block_size, self.device,
                                      cache_dtype(self.dtype, self.device))
        self.decoder = StaticDecoder(model, self.cache) if cuda_graphs and self.device.type == "cuda" else None
        self.last = torch.zeros(max_batch, 1, dtype=torch.long, device=self.device)  # (B_max, 1)
        self.rows: list[Any] = []  # the stage's Row subclass, live rows first in cache order

    @property
    def active(self) -> int:
        return len(self.rows)

    @property
    def room(self) -> int:
        return self.max_batch - len(self.rows)

    @torch.inference_mode()
    def step(self) -> bool:
        """Start the rows that are ready (prefill), else advance every row by one token. False when idle."""
        starting = self._admit()
        if starting:
            self._prefill(starting)
        elif self.rows:
            self._decode()
        else:
            return False
        return True

    # -- stage-specific pieces ---------------------------------------------
    def _admit(self) -> list:
        """Retire what has to go and return at most `room` items ready to start."""
        raise NotImplementedError

    def _prefill(self, starting: list) -> None:
        """Embed the prompts of `starting` and hand them to `_start_rows`."""
        raise NotImplementedError

    def _choose(self, rows: list, logits: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Next tokens (n,) on the device and what `_accept` needs per row on the host."""
        raise NotImplementedError

    def _accept(self, row: Any, choice: Any) -> bool:
        """Record a row's choice; True when the row is done and leaves the batch."""
        raise NotImplementedError

    # -- shared mechanics --------------------------------------------------
    def _start_rows(self, embeds: torch.Tensor, rows: Sequence[Row], last: torch.Tensor | None = None) -> None:
        """Prefill embeds (b, T, C) into the free cache rows after the live ones and take their first tokens."""
        first, b = len(self.rows), len(rows)
        logits = self.model(embeds, self.cache.rows(first, first + b), start=0, last=last)  # (b, V)
        self.rows.extend(rows)
        self._advance(list(range(first, first + b)), logits)

    def _decode(self) -> None:
        n = len(self.rows)
        self.observer.step("decode", n)
        positions = [r.position for r in self.rows]
        logits = decode_step(self.model, self.cache, self.last[:n], positions, self.decoder)  # (n, V)
        for r in self.rows:
            r.position += 1
        self._advance(list(range(n)), logits)

    def _advance(self, indices: list[int], logits: torch.Tensor) -> None:
        """Choose one token for each row in `indices` (consecutive) from its logits (len(indices), V)."""
        tokens, choices = self._choose([self.rows[i] for i in indices], logits)
        self.last[indices[0]:indices[-1] + 1, 0] = tokens
        done = [i for i, choice in zip(indices, choices, strict=True) if self._accept(self.rows[i], choice)]
        for i in sorted(done, reverse=True):
            self._drop(i)

    def _drop_cancelled(self) -> list[Row]:
        """Drop the rows whose job was cancelled; returns them, last row first."""
        dropped = []
        for i in reversed(range(len(self.rows))):
            if self.rows[i].job.cancelled:
                dropped.append(self.rows[i])
                self._drop(i)
        return dropped

    def _drop(self, index: int) -> None:
        """Remove row `index`, moving the last row into its cache slot so rows stay contiguous."""
        last = len(self.rows) - 1
        if index != last:
            self.cache.move_row(last, index)
            self.last[index] = self.last[last]
            self.rows[index] = self.rows[last]
        self.rows.pop()

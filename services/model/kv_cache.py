"""The KV cache of the causal GPT: allocated once, written only through its own methods.

As in gpt-fast, attention hands the new keys/values to the cache (`LayerKV.update`)
and gets back what it should attend to; engines move and view whole rows
(`KVCache.rows`, `KVCache.move_row`). Nobody else indexes the buffers, so the
layout (L, B, H, T_max, D) can change in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import attend_kvcache
from .config import GPTConfig


@dataclass(frozen=True)
class Step:
    """How one forward call addresses the cache (shared by every layer).

    start: every row writes positions start..start+T-1 (no mask). Otherwise rows have their own
    positions: keys 0..kv_len-1 are read and `mask` (B, 1, T, kv_len) marks each query's own prefix.
    """

    start: int | None = None
    kv_len: int = 0
    mask: torch.Tensor | None = None

    @classmethod
    def per_row(cls, pos: torch.Tensor, kv_len: int) -> Step:
        keys = torch.arange(kv_len, device=pos.device)  # (kv_len,)
        return cls(None, kv_len, keys[None, None, None, :] <= pos[:, None, :, None])  # (B, 1, T, kv_len)


@dataclass
class LayerKV:
    """One layer's slice of the cache: the only place its keys and values are written."""

    k: torch.Tensor  # (B, H, T_max, D)
    v: torch.Tensor  # (B, H, T_max, D)

    @property
    def dtype(self) -> torch.dtype:
        return self.k.dtype

    def update(self, step: Step, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v (B, H, T, D) at their positions; return the keys and values to attend to.

        With `step.start` every row writes the same slice and reads up to its end; otherwise each
        row scatters at its own `pos` (B, T) and the first `step.kv_len` slots are read (the mask
        in `step` hides what lies beyond a row's own prefix).
        """
        if step.start is not None:
            end = step.start + k.shape[2]
            self.k[:, :, step.start:end] = k
            self.v[:, :, step.start:end] = v
            return self.k[:, :, :end], self.v[:, :, :end]  # (B, H, end, D)
        B, H, T, D = k.shape
        index = pos[:, None, :, None].expand(B, H, T, D)  # (B, H, T, D)
        self.k.scatter_(2, index, k)
        self.v.scatter_(2, index, v)
        return self.k[:, :, :step.kv_len], self.v[:, :, :step.kv_len]  # (B, H, kv_len, D)

    def update_and_attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: torch.Tensor
                          ) -> torch.Tensor:
        """flash-attn's decode kernel appends k/v at each row's length and attends in one call,
        so the write cannot be separated from the attention: q, k, v (B, H, 1, D) -> (B, H, 1, D)."""
        return attend_kvcache(q, k, v, self.k, self.v, seqlens)


@dataclass
class KVCache:
    """Keys and values for every layer, allocated once for a whole generation."""

    k: torch.Tensor  # (L, B, H, T_max, D)
    v: torch.Tensor  # (L, B, H, T_max, D)

    @classmethod
    def allocate(
        cls, config: GPTConfig, batch: int, max_len: int, device: torch.device | str, dtype: torch.dtype
    ) -> KVCache:
        shape = (config.n_layer, batch, config.n_head, max_len, config.head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def device(self) -> torch.device:
        return self.k.device

    @property
    def dtype(self) -> torch.dtype:
        return self.k.dtype

    def layer(self, i: int) -> LayerKV:
        return LayerKV(self.k[i], self.v[i])

    def rows(self, start: int, stop: int) -> KVCache:
        """Rows start..stop-1 as a view: what a forward call over them writes lands in this cache."""
        return KVCache(self.k[:, start:stop], self.v[:, start:stop])

    def move_row(self, src: int, dst: int) -> None:
        """Copy row `src` over row `dst` (an engine keeps its live rows first when one leaves)."""
        self.k[:, dst] = self.k[:, src]
        self.v[:, dst] = self.v[:, src]

    def select(self, rows: torch.Tensor) -> KVCache:
        """Keep only `rows` (a request left the batch)."""
        return KVCache(self.k[:, rows], self.v[:, rows])

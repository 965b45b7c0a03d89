"""Bark's causal GPT (semantic and coarse stages), with a preallocated KV cache.

Pre-LayerNorm blocks, learned positions, fused QKV, weight-only LayerNorm and
no biases when `bias=False` (both Bark checkpoints). Parameter names follow the
Hugging Face port so a snapshot loads without renaming.

Batching: every row carries its own positions, so requests of different
lengths share one forward pass. Rows are right-padded; a query at position p
attends to keys 0..p of its own row only, so padding written into the cache
beyond a row's length is never read and is overwritten by later steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import attend
from .config import GPTConfig


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (Bark's causal models have none)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


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

    def select(self, rows: torch.Tensor) -> KVCache:
        """Keep only `rows` (a request left the batch)."""
        return KVCache(self.k[:, rows], self.v[:, rows])


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.att_proj = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.out_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.use_flash_attn = False  # set by GPT.set_flash_attn, never by the environment

    def forward(self, x: torch.Tensor, pos: torch.Tensor, layer_kv: tuple[torch.Tensor, torch.Tensor],
                uniform_start: int | None) -> torch.Tensor:
        B, T, C = x.shape  # (B, T, C)
        q, k, v = self.att_proj(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        cache_k, cache_v = layer_kv  # (B, H, T_max, D)
        if uniform_start is not None:
            # All rows at the same positions: plain slices, no mask (the common batch-1 case).
            cache_k[:, :, uniform_start:uniform_start + T] = k
            cache_v[:, :, uniform_start:uniform_start + T] = v
            end = uniform_start + T
            y = attend(q, cache_k[:, :, :end], cache_v[:, :, :end], causal_offset=uniform_start,
                       use_flash_attn=self.use_flash_attn)
        else:
            index = pos[:, None, :, None].expand(B, self.n_head, T, C // self.n_head)  # (B, H, T, D)
            cache_k.scatter_(2, index, k)
            cache_v.scatter_(2, index, v)
            end = int(pos.max()) + 1
            keys = torch.arange(end, device=x.device)
            mask = keys[None, None, None, :] <= pos[:, None, :, None]  # (B, 1, T, end)
            y = attend(q, cache_k[:, :, :end], cache_v[:, :, :end], mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.out_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.in_proj = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.out_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.gelu(self.in_proj(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.layernorm_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.layernorm_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, layer_kv: tuple[torch.Tensor, torch.Tensor],
                uniform_start: int | None) -> torch.Tensor:
        x = x + self.attn(self.layernorm_1(x), pos, layer_kv, uniform_start)
        x = x + self.mlp(self.layernorm_2(x))
        return x


class GPT(nn.Module):
    """Causal transformer; `forward` fills the cache at `pos` and returns logits at `last`."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.input_embeds_layer = nn.Embedding(config.input_vocab_size, config.n_embd)
        self.position_embeds_layer = nn.Embedding(config.block_size, config.n_embd)
        self.layers = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.layernorm_final = LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.output_vocab_size, bias=False)

    def set_flash_attn(self, enabled: bool) -> None:
        """Use the flash-attn package's kernels (GPU, half precision) where they apply."""
        for block in self.layers:
            block.attn.use_flash_attn = enabled

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.input_embeds_layer(idx)  # (B, T, C)

    def forward(
        self,
        embeds: torch.Tensor,
        cache: KVCache,
        *,
        start: int | None = None,
        pos: torch.Tensor | None = None,
        last: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run new tokens through the model, writing their keys/values into `cache`.

        embeds: (B, T, C) token embeddings (callers build them, so the semantic
        stage can sum text and history embeddings). Positions are either
        `start` (every row at start..start+T-1: no mask, the fast path) or
        `pos` (B, T) per row. last: (B,) index into T whose logits are wanted
        (default T-1). Returns logits (B, V) in float32.
        """
        B, T, _ = embeds.shape
        uniform_start = start
        if pos is None:
            assert start is not None, "give start or pos"
            pos = torch.arange(start, start + T, device=embeds.device).expand(B, T)  # (B, T)
        x = embeds + self.position_embeds_layer(pos)  # (B, T, C)
        for i, block in enumerate(self.layers):
            x = block(x, pos, (cache.k[i], cache.v[i]), uniform_start)
        if last is None:
            x = x[:, -1]  # (B, C)
        else:
            x = x[torch.arange(B, device=x.device), last]  # (B, C)
        x = self.layernorm_final(x)
        return self.lm_head(x).float()  # (B, V)


def param_bytes(model: nn.Module) -> int:
    """Bytes read per decode step if every weight is touched once (the weight-streaming floor)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())

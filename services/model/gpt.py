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

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import attend, flash_attn_available, flash_kvcache_applies
from .config import GPTConfig
from .kv_cache import KVCache, LayerKV, Step


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (Bark's causal models have none)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


def cache_dtype(dtype: torch.dtype, device: torch.device | str) -> torch.dtype:
    """The KV cache's dtype for a model in `dtype`: float32 on CPU, where PyTorch's 16-bit attention
    kernels read the cache several times slower than its float32 ones (the keys and values are
    rounded to 16 bits either way: only the attention arithmetic is wider); `dtype` elsewhere."""
    return torch.float32 if torch.device(device).type == "cpu" else dtype


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.att_proj = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.out_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.use_flash_attn = False  # set by GPT.set_flash_attn, never by the environment

    def forward(self, x: torch.Tensor, pos: torch.Tensor, kv: LayerKV, step: Step) -> torch.Tensor:
        B, T, C = x.shape  # (B, T, C)
        q, k, v = self.att_proj(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        if kv.dtype != q.dtype:  # a float32 cache under 16-bit weights (CPU, see cache_dtype)
            q, k, v = q.to(kv.dtype), k.to(kv.dtype), v.to(kv.dtype)
        if T == 1 and flash_kvcache_applies(q, self.use_flash_attn):
            y = kv.update_and_attend(q, k, v, pos[:, 0])
        elif step.start is not None:
            # All rows at the same positions: plain slices, no mask (the common batch-1 case).
            keys, values = kv.update(step, pos, k, v)  # (B, H, start + T, D)
            y = attend(q, keys, values, causal_offset=step.start, use_flash_attn=self.use_flash_attn)
        else:
            keys, values = kv.update(step, pos, k, v)  # (B, H, kv_len, D)
            y = attend(q, keys, values, mask=step.mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C).to(x.dtype)  # (B, T, C)
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

    def forward(self, x: torch.Tensor, pos: torch.Tensor, kv: LayerKV, step: Step) -> torch.Tensor:
        x = x + self.attn(self.layernorm_1(x), pos, kv, step)
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
        """Use the flash-attn package's kernels (GPU, half precision) where they apply; SDPA if it is not installed."""
        enabled = enabled and flash_attn_available()  # checked once here, not per call
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
        kv_len: int | None = None,
    ) -> torch.Tensor:
        """Run new tokens through the model, writing their keys/values into `cache`.

        embeds: (B, T, C) token embeddings (callers build them, so the semantic
        stage can sum text and history embeddings). Positions are either
        `start` (every row at start..start+T-1: no mask, the fast path) or
        `pos` (B, T) per row, attending to the first `kv_len` cache slots
        (default max(pos) + 1, which costs a device sync: callers that know it
        pass it). last: (B,) index into T whose logits are wanted (default
        T-1). Returns logits (B, V) in float32.
        """
        B, T, _ = embeds.shape
        if pos is None:
            assert start is not None, "give start or pos"
            pos = torch.arange(start, start + T, device=embeds.device).expand(B, T)  # (B, T)
            step = Step(start=start)
        else:
            step = Step.per_row(pos, int(pos.max()) + 1 if kv_len is None else kv_len)
        x = embeds + self.position_embeds_layer(pos)  # (B, T, C)
        for i, block in enumerate(self.layers):
            x = block(x, pos, cache.layer(i), step)
        if last is None:
            x = x[:, -1]  # (B, C)
        else:
            x = x[torch.arange(B, device=x.device), last]  # (B, C)
        x = self.layernorm_final(x)
        return self.lm_head(x).float()  # (B, V)


class StaticDecoder:
    """Decode steps with static shapes over the first rows of one KVCache, as CUDA graphs on a GPU.

    A step for n rows runs as a bucket of b >= n rows (the next power of two, at most the cache's
    batch) attending to the first kv cache slots (max position + 1 rounded up to `kv_bucket`; the
    whole cache with flash-attn's KV-cache kernel, which reads only each row's prefix). Padding
    rows feed token 0 at position 0 of cache rows that are free (engines keep live rows first),
    which the next prefill there overwrites. With `graphs` on CUDA each (b, kv) shape is captured
    once and replayed: one launch per step, no host work between its kernels. Elsewhere the same
    static step runs eagerly (what the CPU tests compare with the dynamic path).
    The returned logits are a view of a static buffer: valid until the next call.
    """

    def __init__(self, model: GPT, cache: KVCache, graphs: bool = True, kv_bucket: int = 128):
        self.model, self.cache, self.kv_bucket = model, cache, kv_bucket
        rows, device = cache.batch, cache.device
        self.batch_buckets = sorted({min(1 << i, rows) for i in range(rows.bit_length() + 1)})
        self.ids = torch.zeros(rows, 1, dtype=torch.long, device=device)  # (B_max, 1)
        self.pos = torch.zeros(rows, dtype=torch.long, device=device)  # (B_max,)
        self.graphs = graphs and device.type == "cuda"
        probe = torch.empty(0, device=device, dtype=cache.dtype)  # the dtype and device the attention runs in
        self.flash = flash_kvcache_applies(probe, model.layers[0].attn.use_flash_attn)
        self.captured: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.graphs else None

    def shape(self, n: int, kv_len: int) -> tuple[int, int]:
        """The (rows, cache slots) bucket a step of n rows needing kv_len slots runs as."""
        b = next(b for b in self.batch_buckets if b >= n)
        if self.flash:
            return b, self.cache.max_len
        return b, min(self.cache.max_len, -(-kv_len // self.kv_bucket) * self.kv_bucket)

    def __call__(self, ids: torch.Tensor, pos: torch.Tensor, kv_len: int) -> torch.Tensor:
        """ids: (n, 1) last tokens, pos: (n,) their positions, kv_len > max(pos) -> logits (n, V)."""
        n = ids.shape[0]
        b, kv = self.shape(n, kv_len)
        self.ids[:n].copy_(ids)
        self.ids[n:b].zero_()
        self.pos[:n].copy_(pos)
        self.pos[n:b].zero_()
        if not self.graphs:
            return self._step(b, kv)[:n]
        graph, out = self.captured.get((b, kv)) or self._capture(b, kv)
        graph.replay()
        return out[:n]

    def _step(self, b: int, kv: int) -> torch.Tensor:
        emb = self.model.embed(self.ids[:b])  # (b, 1, C)
        return self.model(emb, self.cache.rows(0, b), pos=self.pos[:b, None], kv_len=kv)  # (b, V)

    def _capture(self, b: int, kv: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        # Warm up on a side stream (CUDA's rule before capture). It is this very step: it writes the
        # same keys/values the replay writes, so running it once more changes nothing.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._step(b, kv)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._step(b, kv)
        self.captured[(b, kv)] = (graph, out)
        return graph, out


def param_bytes(model: nn.Module) -> int:
    """Bytes read per decode step if every weight is touched once (the weight-streaming floor)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def decode_step(model: GPT, cache: KVCache, last: torch.Tensor, positions: list[int],
                decoder: StaticDecoder | None = None) -> torch.Tensor:
    """One new token per row, each at its own position: the decode step the semantic and coarse engines share.

    last: (n, 1) the rows' newest tokens, rows 0..n-1 of `cache`; returns logits (n, V).
    """
    n = len(positions)
    if decoder is not None:
        return decoder(last, torch.tensor(positions, device=last.device), max(positions) + 1)
    view = cache.rows(0, n)
    emb = model.embed(last)  # (n, 1, C)
    if all(p == positions[0] for p in positions):
        return model(emb, view, start=positions[0])
    pos = torch.tensor(positions, device=last.device)[:, None]  # (n, 1)
    return model(emb, view, pos=pos, kv_len=max(positions) + 1)

"""Scaled dot-product attention: flash-attn when installed on a GPU, SDPA otherwise.

`attend` covers prefill and the plain decode step; `attend_kvcache` is the
decode step through flash-attn's KV-cache kernel (`flash_attn_with_kvcache`),
which appends the new key/value at each row's own length and reads only that
row's prefix, so rows of different lengths need neither a mask nor a bucketed
key length (it is also what a CUDA-graph step replays with static shapes).
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F


def flash_attn_available() -> bool:
    """The optional `flash-attn` package (the `[gpu]` extra) is importable."""
    return importlib.util.find_spec("flash_attn") is not None


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal_offset: int | None = None,
    mask: torch.Tensor | None = None,
    use_flash_attn: bool = False,
) -> torch.Tensor:
    """q: (B, H, Tq, D), k/v: (B, H, Tk, D) -> (B, H, Tq, D).

    `causal_offset`: queries sit at positions offset..offset+Tq-1 of the keys
    (bottom-right aligned causal); `mask`: (B, 1, Tq, Tk) boolean, True = attend.
    Exactly one of the two is given.
    """
    Tq, Tk = q.shape[2], k.shape[2]
    if mask is None:
        if Tq == 1:
            # A single new query attends to everything cached so far.
            if use_flash_attn and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
                return _flash(q, k, v, causal=False)
            return F.scaled_dot_product_attention(q, k, v)
        if causal_offset == 0 and Tq == Tk:
            if use_flash_attn and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
                return _flash(q, k, v, causal=True)
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        rows = torch.arange(Tq, device=q.device)[:, None] + (Tk - Tq)
        mask = (torch.arange(Tk, device=q.device)[None, :] <= rows)[None, None]  # (1, 1, Tq, Tk)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def flash_kvcache_applies(q: torch.Tensor, use_flash_attn: bool) -> bool:
    """flash-attn's KV-cache decode kernel can run this step (GPU, half precision; `use_flash_attn` is
    only ever set where the package is installed, see GPT.set_flash_attn)."""
    return use_flash_attn and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def attend_kvcache(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor,
    seqlens: torch.Tensor,
) -> torch.Tensor:
    """One decode step per row with flash-attn: write k/v at `seqlens`, attend over [0, seqlens].

    q, k, v: (B, H, 1, D); cache_k/v: (B, H, T_max, D), written in place; seqlens: (B,) keys
    already cached per row (= the new token's position). Returns (B, H, 1, D).
    """
    from flash_attn import flash_attn_with_kvcache

    # flash-attn wants (B, T, H, D); transposed views of our (B, H, T, D) cache keep the last dim
    # contiguous, which is all its kernel needs, so it appends into our cache directly.
    y = flash_attn_with_kvcache(
        q.transpose(1, 2), cache_k.transpose(1, 2), cache_v.transpose(1, 2),
        k=k.transpose(1, 2), v=v.transpose(1, 2), cache_seqlens=seqlens.to(torch.int32), causal=False,
    )  # (B, 1, H, D)
    return y.transpose(1, 2)


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    from flash_attn import flash_attn_func

    # flash-attn wants (B, T, H, D); its causal mask is bottom-right aligned.
    y = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal)
    return y.transpose(1, 2)

"""Token selection as small pure functions over one row of logits.

Order and semantics follow Suno's generation code: top-p, then top-k, then a
softmax at the temperature, then a draw. "Greedy" replaces the draw by argmax
of the same probabilities, which keeps Suno's EOS-probability rule meaningful
in greedy mode. Each request owns a `torch.Generator`, so a request samples the
same tokens whatever else shares its batch.
"""

from __future__ import annotations

import math

import torch

from ..bark.params import SamplingParams


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches `top_p` (always the best one)."""
    sorted_logits, order = torch.sort(logits, descending=True)  # (V,)
    cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)  # (V,)
    remove = cumulative > top_p
    remove[1:] = remove[:-1].clone()
    remove[0] = False
    out = logits.clone()
    out[order[remove]] = -math.inf
    return out


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep tokens whose logit is at least the k-th largest."""
    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[-1]
    return logits.masked_fill(logits < kth, -math.inf)


def probabilities(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Filtered, tempered probabilities (V,) in float32."""
    logits = logits.float()
    if params.top_p is not None:
        logits = top_p_filter(logits, params.top_p)
    if params.top_k is not None:
        logits = top_k_filter(logits, params.top_k)
    return torch.softmax(logits / params.temperature, dim=-1)


def draw(probs: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One token index from `probs` (V,): argmax when greedy, else a seeded multinomial draw."""
    if params.greedy:
        return int(torch.argmax(probs))
    return int(torch.multinomial(probs, num_samples=1, generator=generator))


def draw_many(probs: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of `probs` (T, V) -> (T,)."""
    if params.greedy:
        return torch.argmax(probs, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def batchable(params: SamplingParams) -> bool:
    """Greedy without filters: the choice is one argmax, which engines batch over rows on the device."""
    return params.greedy and params.top_k is None and params.top_p is None


def make_generator(seed: int | None, stream: int, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A per-request generator; `stream` separates the stages so each has its own sequence."""
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + stream) % (2**63))
    return g

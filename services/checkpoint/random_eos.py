"""A random semantic model that ends its generation (EOS) after a length that grows with the text.

Random weights never emit EOS, so every segment of a random checkpoint runs to 768 semantic
tokens (about 15 s) whatever its text: tests and benchmarks of segment scheduling would measure
nothing real. This edits a random semantic GPT so that a segment of L text tokens stops after
about `per_token * L + offset` semantic tokens (Bark speaks about 12-15 semantic tokens per BERT
token), using only what a transformer computes, so every engine runs it unchanged:

1. Six residual dimensions are reserved (random weights neither write nor read them). Each
   token's embedding puts a large spike `SPIKE` in one of four of them: text tokens, the text
   pad, the infer token, semantic tokens (every merged prefix position holds a text-side and a
   semantic-side spike; a generated position holds one). A spike dominates the layer norm, so
   the normalized spike minus an always-empty reference dimension is a near-constant
   indicator of the token's kind.
2. Layer 0's last head has zero queries and keys, so it attends uniformly to every position so
   far: its value (a weighted sum of the indicators: text +a, pad and semantic cancel, infer
   +offset, generated -1) averages to m = (c * L + offset - generated) / positions, which
   crosses zero once `generated` reaches `per_token * L + offset`.
3. The head writes -m into a reserved output dimension; the EOS row of the head reads it (minus
   the reference) with a large gain, so EOS goes from hopeless to certain within a few tokens
   around the crossing. Every other output row ignores the reserved dimensions and is centered
   and rescaled, since the spikes shrink the other normalized features by the same factor at
   every position (logits stay well separated, as in the plain random checkpoint).
"""

from __future__ import annotations

import torch

from ..bark import constants as C
from ..model.config import GPTConfig

SPIKE = 20.0
EOS_GAIN = 1000.0
PER_TOKEN = 12.0  # semantic tokens per text token (Bark: about 50 per second, 3-4 text tokens per second)
OFFSET = 20.0  # semantic tokens for an empty text
# Spike / normalized-spike ratios for one spike (generated, infer) and two (merged prefix) in n dims.
_TEXT, _PAD, _INFER, _SEM, _OUT, _REF = range(6)


def _normalized_spike(n_embd: int, spikes: int) -> float:
    """(spike - reference) after a layer norm of a vector holding `spikes` equal spikes and ~zeros."""
    mean = spikes / n_embd
    var = spikes / n_embd - mean * mean
    return 1.0 / var ** 0.5


def add_text_length_eos(sd: dict[str, torch.Tensor], config: GPTConfig, per_token: float = PER_TOKEN,
                        offset: float = OFFSET) -> dict[str, torch.Tensor]:
    """Edit a random semantic GPT state (our naming, no biases) in place; returns it."""
    d, h = config.n_embd, config.n_head
    head_dim = d // h
    reserved = torch.arange(d - 6, d)  # the last six dimensions
    text, pad, infer, sem, out, ref = (int(reserved[i]) for i in (_TEXT, _PAD, _INFER, _SEM, _OUT, _REF))
    one, two = _normalized_spike(d, 1), _normalized_spike(d, 2)

    wte = sd["input_embeds_layer.weight"]
    wte[:, reserved] = 0.0
    wte[:C.TEXT_ENCODING_OFFSET, sem] = SPIKE  # semantic tokens, their pad/EOS
    wte[C.TEXT_ENCODING_OFFSET:C.TEXT_PAD_TOKEN, text] = SPIKE
    wte[C.TEXT_PAD_TOKEN, pad] = SPIKE
    wte[C.TEXT_PAD_TOKEN + 1:, infer] = SPIKE  # the infer token (and unused ids beside it)
    sd["position_embeds_layer.weight"][:, reserved] = 0.0
    for i in range(config.n_layer):
        p = f"layers.{i}."
        for name in ("attn.att_proj.weight", "mlp.in_proj.weight"):
            sd[p + name][:, reserved] = 0.0  # nothing random reads the reserved dims
        for name in ("attn.out_proj.weight", "mlp.out_proj.weight"):
            sd[p + name][reserved, :] = 0.0  # nor writes them
        for name in ("layernorm_1.weight", "layernorm_2.weight"):
            sd[p + name][reserved] = 1.0
    sd["layernorm_final.weight"][reserved] = 1.0

    # Layer 0, last head: uniform attention (zero queries and keys), one value channel of indicators.
    att = sd["layers.0.attn.att_proj.weight"]  # (3d, d): q, k, v
    rows = slice((h - 1) * head_dim, h * head_dim)
    att[rows] = 0.0
    att[d + (h - 1) * head_dim: d + h * head_dim] = 0.0
    v = att[2 * d + (h - 1) * head_dim: 2 * d + h * head_dim]
    v.zero_()
    # Per position (spike counts differ): text prefix (a - 1) * two, pad prefix 0, infer e * one, generated -one.
    a = 1.0 + per_token * one / two
    v[0, text], v[0, pad], v[0, sem], v[0, infer] = a, 1.0, -1.0, offset
    v[0, ref] = -(a + 1.0 - 1.0 + offset)  # subtract the reference once per weight: only spikes count
    sd["layers.0.attn.out_proj.weight"][:, (h - 1) * head_dim:h * head_dim] = 0.0
    sd["layers.0.attn.out_proj.weight"][out, (h - 1) * head_dim] = -1.0

    # Output: EOS reads the reserved output dim; the others ignore the reserved dims, centered, rescaled.
    head = sd["lm_head.weight"]
    head[:, reserved] = 0.0
    keep = torch.ones(d, dtype=torch.bool)
    keep[reserved] = False
    head[:, keep] -= head[:, keep].mean(dim=1, keepdim=True)
    head *= SPIKE / (8.0 * 0.035)  # the spikes shrink the other normalized features about this much
    head[C.SEMANTIC_EOS_TOKEN] = 0.0
    head[C.SEMANTIC_EOS_TOKEN, out] = EOS_GAIN
    head[C.SEMANTIC_EOS_TOKEN, ref] = -EOS_GAIN
    return sd

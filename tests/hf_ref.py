"""transformers' Bark port driven stage by stage: the reference for `test_parity_hf.py`.

`build_model` makes a tiny `BarkModel` with random weights whose greedy choices
are well separated; the `semantic` / `coarse` / `fine` / `decode` functions run
its own generation code (`BarkSemanticModel.generate`, ...) with numpy in and
out, greedy (`do_sample=False`), and record the raw logits each decision was
taken from so the test can report top-1 / top-2 margins.

Coarse: HF builds its codebook mask in `AlternatingCodebooksLogitsProcessor`;
`coarse(..., fix_codebook_1=True)` swaps in a subclass that also masks ids >=
12048 on odd steps (what Suno does), so the rest of HF's window code can be
compared token for token even where HF's own mask lets a wrong id through.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from barkstream.services.bark import constants as C

PROMPTS = Path(__import__("bark").__file__).parent / "assets" / "prompts"
# Output heads x HEAD_SCALE: logits of std ~30 instead of ~0.16 (std-0.02 weights . unit-norm 64-d states), as
# trained heads are: decisive choices instead of a near-uniform soup. Float noise grows with the logits too, so
# what rules out near-ties is measured, not assumed: see test_greedy_margins_are_meaningful.
HEAD_SCALE = 200.0
SUB = dict(num_layers=2, num_heads=2, hidden_size=64, block_size=1024, bias=False, dropout=0.0)


def voice(name: str) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.int64) for k, v in np.load(PROMPTS / f"{name}.npz").items()}


def _torch_voice(history: dict[str, np.ndarray] | None) -> dict[str, torch.Tensor] | None:
    return None if history is None else {k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in history.items()}


def build_model(seed: int = 0, eos_scale: float = 1.0):
    """A tiny transformers `BarkModel` (real vocabularies and context, 2 layers x 64), random, greedy-friendly.

    `eos_scale` > 1 widens the EOS logit's spread so that EOS wins within a few dozen steps (at 1.0 the
    EOS logit stays far below the top one and generation runs to its length limit).
    """
    from transformers import BarkConfig, BarkModel

    config = BarkConfig(
        semantic_config=dict(SUB, input_vocab_size=129_600, output_vocab_size=10_048),
        coarse_acoustics_config=dict(SUB, input_vocab_size=12_096, output_vocab_size=12_096),
        fine_acoustics_config=dict(SUB, input_vocab_size=1056, output_vocab_size=1056),
    )
    torch.manual_seed(seed)
    model = BarkModel(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        model.semantic.lm_head.weight.mul_(HEAD_SCALE)
        model.semantic.lm_head.weight[C.SEMANTIC_EOS_TOKEN].mul_(eos_scale)
        model.coarse_acoustics.lm_head.weight.mul_(HEAD_SCALE)
        fine = model.fine_acoustics
        for emb in fine.input_embeds_layers[fine.config.n_codes_given:]:  # the fine heads are tied to these
            emb.weight.mul_(HEAD_SCALE)
        for gpt in (model.semantic, model.coarse_acoustics, fine):
            for m in gpt.modules():
                if isinstance(m, torch.nn.LayerNorm):  # not exactly 1: a dropped or swapped norm would show
                    m.weight.add_(0.05 * torch.randn(m.weight.shape, generator=gen))
        # transformers initialises EnCodec codebooks to zeros (awaiting k-means): every code would decode alike.
        for layer in model.codec_model.quantizer.layers:
            embed = torch.randn(layer.codebook.embed.shape, generator=gen)
            layer.codebook.embed.copy_(embed)
            layer.codebook.embed_avg.copy_(embed)
    for i, head in enumerate(fine.lm_heads):
        assert head.weight.data_ptr() == fine.input_embeds_layers[i + fine.config.n_codes_given].weight.data_ptr()
    return model


def generation_configs():
    """transformers' own Bark generation defaults: greedy, temperature 1, no top-k, semantic max 768 new tokens."""
    from transformers.models.bark.generation_configuration_bark import (
        BarkCoarseGenerationConfig,
        BarkFineGenerationConfig,
        BarkSemanticGenerationConfig,
    )

    return BarkSemanticGenerationConfig(), BarkCoarseGenerationConfig(), BarkFineGenerationConfig()


# ---------------------------------------------------------------------------------------------- semantic


@contextlib.contextmanager
def _recording(name: str, seen: list[torch.Tensor], fix: Callable | None = None,
               inputs: list[tuple[int, torch.Tensor]] | None = None) -> Iterator[None]:
    """Swap modeling_bark's logits processor `name` (the first in its list) for one that records the raw logits.

    `inputs` also gets (the window's prompt length, the ids so far) of every call (coarse only).
    """
    from transformers.models.bark import modeling_bark

    original = getattr(modeling_bark, name)

    class Recording(original):
        def __call__(self, input_ids, scores):
            seen.append(scores[0].detach().clone())
            if inputs is not None:
                inputs.append((self.input_start_len, input_ids[0].detach().clone()))
            out = super().__call__(input_ids, scores)
            return out if fix is None else fix(self, input_ids, out)

    setattr(modeling_bark, name, Recording)
    try:
        yield
    finally:
        setattr(modeling_bark, name, original)


@dataclass
class SemanticOut:
    tokens: np.ndarray  # (n,) without a trailing EOS
    stopped_by_eos: bool  # HF emitted EOS (10000): its token rule or its min_eos_p processor
    logits: list[torch.Tensor] = field(repr=False)  # raw (10048,) logits of every decision


def semantic(model, text_ids: list[int], history: dict | None, max_new_tokens: int,
             min_eos_p: float | None = None) -> SemanticOut:
    """`BarkSemanticModel.generate` on `text_ids` as BarkProcessor hands them over (padded to 256 + mask)."""
    sem_cfg, _, _ = generation_configs()
    sem_cfg.max_new_tokens = max_new_tokens
    sem_cfg.min_eos_p = min_eos_p
    n = min(len(text_ids), C.MAX_TEXT_TOKENS)
    ids = torch.zeros(1, C.MAX_TEXT_TOKENS, dtype=torch.long)
    mask = torch.zeros(1, C.MAX_TEXT_TOKENS, dtype=torch.long)
    ids[0, :n] = torch.tensor(text_ids[:n])
    mask[0, :n] = 1
    seen: list[torch.Tensor] = []
    with _recording("SuppressTokensLogitsProcessor", seen), torch.no_grad():
        out = model.semantic.generate(ids, semantic_generation_config=sem_cfg, history_prompt=_torch_voice(history),
                                      attention_mask=mask)
    tokens = out[0].numpy().astype(np.int64)
    eos = bool(len(tokens) and tokens[-1] == C.SEMANTIC_EOS_TOKEN)
    return SemanticOut(tokens[:-1] if eos else tokens, eos, seen)


def eos_probabilities(out: SemanticOut) -> np.ndarray:
    """p(EOS) per step as HF's BarkEosPrioritizerLogitsProcessor sees it: softmax of the untempered 10001 logits."""
    logits = torch.stack(out.logits)[:, : C.SEMANTIC_EOS_TOKEN + 1].float()
    return torch.softmax(logits, dim=-1)[:, C.SEMANTIC_EOS_TOKEN].numpy()


# ---------------------------------------------------------------------------------------------- coarse


@dataclass
class CoarseOut:
    tokens: np.ndarray  # (2T,) HF's interleaved vocabulary ids, exactly as it returns them
    logits: list[torch.Tensor] = field(default_factory=list, repr=False)  # raw (12096,) logits of every decision
    inputs: list[tuple[int, torch.Tensor]] = field(default_factory=list, repr=False)  # (prompt length, ids so far)

    def frames(self) -> np.ndarray:
        """(2, T) codebook indices, ids 12048.. of codebook 1 kept out of range (>= 1024) so they show."""
        frames = self.tokens.reshape(-1, 2).T - C.SEMANTIC_VOCAB_SIZE
        frames[1] -= C.CODEBOOK_SIZE
        return frames


def _mask_codebook_1_like_suno(processor, input_ids, scores: torch.Tensor) -> torch.Tensor:
    """Odd steps: also mask ids >= 12048 (HF masks only below 11024 there)."""
    if (input_ids.shape[-1] - processor.input_start_len) % 2 == 1:
        scores[:, processor.semantic_vocab_size + 2 * processor.codebook_size:] = -float("inf")
    return scores


def coarse(model, semantic_tokens: np.ndarray, history: dict | None, fix_codebook_1: bool = False) -> CoarseOut:
    """`BarkCoarseModel.generate` on given semantic tokens (its sliding windows, greedy)."""
    sem_cfg, coarse_cfg, _ = generation_configs()
    seen: list[torch.Tensor] = []
    inputs: list[tuple[int, torch.Tensor]] = []
    sem = torch.from_numpy(np.asarray(semantic_tokens, dtype=np.int64).copy())[None]  # generate fills it in place
    fix = _mask_codebook_1_like_suno if fix_codebook_1 else None
    with _recording("AlternatingCodebooksLogitsProcessor", seen, fix, inputs), torch.no_grad():
        out = model.coarse_acoustics.generate(sem, semantic_generation_config=sem_cfg,
                                              coarse_generation_config=coarse_cfg, codebook_size=C.CODEBOOK_SIZE,
                                              history_prompt=_torch_voice(history))
    return CoarseOut(out[0].numpy().astype(np.int64), seen, inputs)


# ---------------------------------------------------------------------------------------------- fine, codec


@dataclass
class FineOut:
    codes: np.ndarray  # (8, T)
    logits: list[torch.Tensor] = field(repr=False)  # (1024 positions, 1024 codes) of every forward pass, in call order
    inputs: list[tuple[int, torch.Tensor]] = field(repr=False)  # (codebook predicted, (1024, 8) input buffer)


def fine(model, coarse_frames: np.ndarray, history: dict | None) -> FineOut:
    """`BarkFineModel.generate` on (2, T) coarse codes (handed over interleaved, as HF's coarse stage returns them)."""
    sem_cfg, coarse_cfg, fine_cfg = generation_configs()
    frames = np.asarray(coarse_frames, dtype=np.int64)
    flat = np.stack([frames[0] + C.SEMANTIC_VOCAB_SIZE, frames[1] + C.SEMANTIC_VOCAB_SIZE + C.CODEBOOK_SIZE], 1)
    fm = model.fine_acoustics
    seen: list[torch.Tensor] = []
    inputs: list[tuple[int, torch.Tensor]] = []
    forward = fm.forward

    def recording(codebook_idx, input_ids, **kwargs):
        inputs.append((codebook_idx, input_ids[0].detach().clone()))  # HF writes into this buffer afterwards
        out = forward(codebook_idx, input_ids, **kwargs)
        seen.append(out.logits[0, :, : C.CODEBOOK_SIZE].detach().clone())
        return out

    fm.forward = recording
    try:
        with torch.no_grad():
            out = fm.generate(torch.from_numpy(flat.reshape(1, -1)), semantic_generation_config=sem_cfg,
                              coarse_generation_config=coarse_cfg, fine_generation_config=fine_cfg,
                              codebook_size=C.CODEBOOK_SIZE, history_prompt=_torch_voice(history))
    finally:
        del fm.forward
    return FineOut(out[0].numpy().astype(np.int64), seen, inputs)


def decode(model, fine_codes: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.codec_decode(torch.from_numpy(np.asarray(fine_codes, np.int64))[None])[0].numpy()


def top2_gap(logits: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """top-1 minus top-2 logit over [lo, hi) along the last axis."""
    top = torch.topk(logits[..., lo:hi].float(), 2, dim=-1).values
    return top[..., 0] - top[..., 1]

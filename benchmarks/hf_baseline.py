"""The baseline: transformers' `BarkModel` on the same checkpoint directory, greedy, same token counts.

`BarkModel.from_pretrained` loads the random bark-small checkpoint our writer
makes. Each stage runs transformers' own generation code (what
`BarkModel.generate` chains: `semantic.generate`, `coarse_acoustics.generate`,
`fine_acoustics.generate`, `codec_decode`), timed one by one, with two
settings that make its tokens comparable with ours (see tests/test_parity_hf.py):
- semantic: `min_new_tokens = max_new_tokens = n`: exactly n tokens, EOS never
  chosen (ours: `allow_early_stop=False` and a duration of n tokens);
- coarse: transformers' codebook-1 mask lets ids 12048.. through on odd steps
  (a bug, Suno samples from [11024, 12048)); the mask is completed here, which
  costs nothing measurable and follows Suno.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from barkstream.services.bark import constants as C


@dataclass
class HFCodes:
    semantic: np.ndarray  # (B, n)
    coarse: np.ndarray  # (B, 2, T) codebook indices
    fine: np.ndarray  # (B, 8, T)
    audio: np.ndarray  # (B, samples)


def _configs():
    from transformers.models.bark.generation_configuration_bark import (
        BarkCoarseGenerationConfig,
        BarkFineGenerationConfig,
        BarkSemanticGenerationConfig,
    )

    return BarkSemanticGenerationConfig(), BarkCoarseGenerationConfig(), BarkFineGenerationConfig()


@contextlib.contextmanager
def _suno_codebook_1_mask() -> Iterator[None]:
    from transformers.models.bark import modeling_bark

    original = modeling_bark.AlternatingCodebooksLogitsProcessor

    class Masked(original):
        def __call__(self, input_ids, scores):
            scores = super().__call__(input_ids, scores)
            if (input_ids.shape[-1] - self.input_start_len) % 2 == 1:
                scores[:, self.semantic_vocab_size + 2 * self.codebook_size:] = -float("inf")
            return scores

    modeling_bark.AlternatingCodebooksLogitsProcessor = Masked
    try:
        yield
    finally:
        modeling_bark.AlternatingCodebooksLogitsProcessor = original


class HFBark:
    def __init__(self, checkpoint: Path, device: str = "cpu"):
        from transformers import BarkModel

        self.device = device
        self.model = BarkModel.from_pretrained(str(checkpoint), dtype=torch.float32).to(device).eval()

    def history(self, voice) -> dict[str, torch.Tensor] | None:
        return None if voice is None else {k: torch.tensor(np.asarray(v, np.int64), device=self.device)
                                           for k, v in voice.to_dict().items()}

    @torch.inference_mode()
    def semantic(self, text_ids: list[list[int]], voice, n_tokens: int) -> np.ndarray:
        sem_cfg, _, _ = _configs()
        sem_cfg.max_new_tokens = sem_cfg.min_new_tokens = n_tokens  # min: EOS is never chosen
        ids = torch.zeros(len(text_ids), C.MAX_TEXT_TOKENS, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, t in enumerate(text_ids):
            ids[i, : len(t)] = torch.tensor(t)
            mask[i, : len(t)] = 1
        out = self.model.semantic.generate(ids.to(self.device), semantic_generation_config=sem_cfg,
                                           history_prompt=self.history(voice), attention_mask=mask.to(self.device))
        return out.cpu().numpy().astype(np.int64)  # (B, n)

    @torch.inference_mode()
    def coarse(self, semantic: np.ndarray, voice) -> np.ndarray:
        sem_cfg, coarse_cfg, _ = _configs()
        with _suno_codebook_1_mask():
            out = self.model.coarse_acoustics.generate(
                torch.from_numpy(semantic.copy()).to(self.device), semantic_generation_config=sem_cfg,
                coarse_generation_config=coarse_cfg, codebook_size=C.CODEBOOK_SIZE, history_prompt=self.history(voice))
        flat = out.cpu().numpy().astype(np.int64)  # (B, 2T) interleaved vocabulary ids
        frames = flat.reshape(flat.shape[0], -1, 2).transpose(0, 2, 1) - C.SEMANTIC_VOCAB_SIZE  # (B, 2, T)
        frames[:, 1] -= C.CODEBOOK_SIZE
        return frames

    @torch.inference_mode()
    def fine(self, coarse: np.ndarray, voice) -> np.ndarray:
        sem_cfg, coarse_cfg, fine_cfg = _configs()
        flat = np.stack([coarse[:, 0] + C.SEMANTIC_VOCAB_SIZE, coarse[:, 1] + C.SEMANTIC_VOCAB_SIZE + C.CODEBOOK_SIZE],
                        axis=2).reshape(coarse.shape[0], -1)  # (B, 2T) as coarse_acoustics returns them
        out = self.model.fine_acoustics.generate(
            torch.from_numpy(flat).to(self.device), semantic_generation_config=sem_cfg,
            coarse_generation_config=coarse_cfg, fine_generation_config=fine_cfg, codebook_size=C.CODEBOOK_SIZE,
            history_prompt=self.history(voice))
        return out.cpu().numpy().astype(np.int64)  # (B, 8, T)

    @torch.inference_mode()
    def decode(self, fine: np.ndarray) -> np.ndarray:
        return self.model.codec_decode(torch.from_numpy(fine).to(self.device)).cpu().numpy()


class HFStepper:
    """transformers' semantic model one decode step at a time (forward with its KV cache + argmax)."""

    def __init__(self, hf: HFBark, prompt_len: int = 257):
        self.model = hf.model.semantic
        self.prompt_len = prompt_len
        self.reset()

    @torch.inference_mode()
    def reset(self) -> None:
        ids = torch.randint(0, C.SEMANTIC_VOCAB_SIZE, (1, self.prompt_len), generator=torch.Generator().manual_seed(0))
        out = self.model(input_ids=ids.to(self.model.device), use_cache=True)
        self.cache, self.token = out.cache, out.logits[:, -1:].argmax(-1)
        self.length = self.prompt_len

    @torch.inference_mode()
    def step(self) -> None:
        if self.length >= self.model.config.block_size - 1:
            self.reset()
        out = self.model(input_ids=self.token, cache=self.cache, use_cache=True)
        self.cache, self.token = out.cache, out.logits[:, -1:].argmax(-1)
        self.length += 1

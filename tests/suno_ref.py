"""Suno's `bark` package (0.1.5) driven with our random weights: the reference for parity tests.

Suno has no greedy switch for the semantic and coarse stages, so "greedy" in
the reference means its own code with `torch.multinomial` replaced by argmax
of the same probabilities: every other line (filters, EOS rule, windows) is
Suno's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from barkstream.services.checkpoint.gpt_names import to_suno_state
from barkstream.services.checkpoint.load import Checkpoint

PROMPTS = Path(__import__("bark").__file__).parent / "assets" / "prompts"


def install(ckpt: Checkpoint) -> None:
    """Put Suno-built models holding `ckpt`'s weights into bark's model cache (no download)."""
    import bark.generation as bg
    from bark.model import GPT, GPTConfig
    from bark.model_fine import FineGPT, FineGPTConfig
    from encodec import EncodecModel
    from transformers import BertTokenizer

    def gpt_args(cfg) -> dict:
        return dict(block_size=cfg.block_size, input_vocab_size=cfg.input_vocab_size,
                    output_vocab_size=cfg.output_vocab_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                    n_embd=cfg.n_embd, dropout=0.0, bias=cfg.bias)

    text = GPT(GPTConfig(**gpt_args(ckpt.config.semantic)))
    text.load_state_dict(to_suno_state(ckpt.semantic, "semantic"), strict=True)
    coarse = GPT(GPTConfig(**gpt_args(ckpt.config.coarse)))
    coarse.load_state_dict(to_suno_state(ckpt.coarse, "coarse"), strict=True)
    fine = FineGPT(FineGPTConfig(**gpt_args(ckpt.config.fine), n_codes_total=8, n_codes_given=1))
    fine.load_state_dict(to_suno_state(ckpt.fine, "fine"), strict=True)
    codec = EncodecModel.encodec_model_24khz(pretrained=False)
    codec.load_state_dict(ckpt.codec, strict=False)
    codec.set_target_bandwidth(6.0)
    tokenizer = BertTokenizer.from_pretrained(str(ckpt.root))  # what bark loads, from our files
    bg.models.clear()
    bg.models.update(text={"model": text.eval(), "tokenizer": tokenizer}, coarse=coarse.eval(),
                     fine=fine.eval(), codec=codec.eval())


@contextlib.contextmanager
def greedy() -> Iterator[None]:
    original = torch.multinomial

    def argmax(probs: torch.Tensor, num_samples: int = 1, **_: object) -> torch.Tensor:
        return torch.argmax(probs, dim=-1, keepdim=True)

    torch.multinomial = argmax
    try:
        yield
    finally:
        torch.multinomial = original


def voice(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(PROMPTS / f"{name}.npz"))


def generate(text: str, history: dict | None, max_gen_duration_s: float | None) -> dict[str, np.ndarray]:
    """Suno's generate_audio, stage by stage, in its default mode (greedy draws)."""
    import bark.generation as bg

    with greedy():
        semantic = bg.generate_text_semantic(text, history_prompt=history, temp=0.7, silent=True,
                                             max_gen_duration_s=max_gen_duration_s, use_kv_caching=True)
        coarse = bg.generate_coarse(semantic, history_prompt=history, temp=0.7, silent=True, use_kv_caching=True)
        fine = bg.generate_fine(coarse, history_prompt=history, temp=0.5)
        audio = bg.codec_decode(fine)
    return {"semantic": semantic, "coarse": coarse, "fine": fine, "audio": audio}

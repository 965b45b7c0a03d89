"""Small models for the tests that compare one inference format or dtype against float32."""

from __future__ import annotations

import torch

from barkstream.services.model.config import GPTConfig
from barkstream.services.model.gpt import GPT

# Linears of 256 features and more get packed / quantized like bark's (prepare_linears' threshold).
PACKABLE = GPTConfig(block_size=64, input_vocab_size=300, output_vocab_size=300, n_layer=2, n_head=4, n_embd=256)


def twin_gpts(cfg: GPTConfig = PACKABLE, seed: int = 0) -> tuple[GPT, GPT]:
    """A random GPT and a second one with the same weights: the reference, and the one to convert."""
    torch.manual_seed(seed)
    ref = GPT(cfg).eval()
    twin = GPT(cfg).eval()
    twin.load_state_dict(ref.state_dict())
    return ref, twin

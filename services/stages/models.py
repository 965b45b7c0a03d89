"""Build the torch modules of a checkpoint, only for the stages a process serves.

A stage process loads just its own model (a coarse pod never holds the
semantic weights); the embedded server and the offline CLI load all four.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..checkpoint.load import Checkpoint, load_checkpoint
from ..model.codec import Codec
from ..model.fine import FineGPT
from ..model.gpt import GPT
from ..model.quant import QUANTIZE_MODES, prepare_linears

STAGES = ("semantic", "coarse", "fine", "codec")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelOptions:
    device: str = "cpu"
    dtype: str = "float32"  # transformer weights and activations; the codec stays float32
    flash_attn: bool = False
    quantize: str = "none"  # "int8": weight-only int8 transformer linears (opt-in, not exact)
    pack_linears: bool = True  # CPU: oneDNN-packed linear weights (same math, own rounding; 2-4x MKL's on AMD)

    def torch_dtype(self) -> torch.dtype:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        return DTYPES[self.dtype]

    def validate(self) -> None:
        self.torch_dtype()
        if self.quantize not in QUANTIZE_MODES:
            raise ValueError(f"quantize must be one of {list(QUANTIZE_MODES)}, got {self.quantize!r}")


@dataclass
class StageModels:
    checkpoint: Checkpoint  # its facts (config, root, tokenizer and voice files), without the weight tensors
    semantic: GPT | None = None
    coarse: GPT | None = None
    fine: FineGPT | None = None
    codec: Codec | None = None


def _gpt(model: GPT | FineGPT, state: dict[str, torch.Tensor], options: ModelOptions) -> GPT | FineGPT:
    model.load_state_dict(state, strict=True)
    model = model.to(device=options.device, dtype=options.torch_dtype()).eval().requires_grad_(False)
    prepare_linears(model, options.quantize, pack=options.pack_linears)
    if isinstance(model, GPT):
        model.set_flash_attn(options.flash_attn)
    return model


def load_stage_models(
    checkpoint: Checkpoint | str | Path, stages: Iterable[str] = STAGES, options: ModelOptions | None = None
) -> StageModels:
    """Instantiate the requested stages' models from a checkpoint (a loaded one or a directory)."""
    options = options or ModelOptions()
    options.validate()
    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    # The models hold their own (converted, packed) weights: keeping the loaded tensors of every stage
    # alive here would add the whole checkpoint to each stage process's resident memory.
    out = StageModels(replace(ck, semantic={}, coarse={}, fine={}, codec=None))
    stages = set(stages)
    unknown = stages - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; choose from {STAGES}")
    if "semantic" in stages:
        out.semantic = _gpt(GPT(ck.config.semantic), ck.semantic, options)
    if "coarse" in stages:
        out.coarse = _gpt(GPT(ck.config.coarse), ck.coarse, options)
    if "fine" in stages:
        out.fine = _gpt(FineGPT(ck.config.fine), ck.fine, options)
    if "codec" in stages:
        out.codec = Codec.from_state_dict(ck.require_codec(), device=options.device)
    return out

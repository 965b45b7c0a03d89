"""Bark model configs from a checkpoint's own description: transformers' config.json or Suno's model_args.

Missing fields take the defaults of the library that wrote the file, and a config
that cannot run Bark's algorithm is rejected here, before any tensor is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..bark import constants as C
from ..model.config import BarkConfig, CodecConfig, FineGPTConfig, GPTConfig
from .layout import CheckpointError, ModelKind


def validate_config(config: BarkConfig, source: str) -> None:
    """Reject configs that cannot run Bark's algorithm (its token ids must fit the vocabularies)."""
    checks = [
        (config.semantic.input_vocab_size > C.SEMANTIC_INFER_TOKEN, "semantic input_vocab_size must exceed 129599"),
        (config.semantic.output_vocab_size > C.SEMANTIC_PAD_TOKEN, "semantic output_vocab_size must exceed 10000"),
        (config.coarse.input_vocab_size > C.COARSE_INFER_TOKEN, "coarse input_vocab_size must exceed 12050"),
        (
            config.coarse.output_vocab_size >= C.SEMANTIC_VOCAB_SIZE + C.N_COARSE_CODEBOOKS * C.CODEBOOK_SIZE,
            "coarse output_vocab_size must be at least 12048",
        ),
        (config.fine.input_vocab_size > C.FINE_PAD_TOKEN, "fine input_vocab_size must exceed 1024"),
        (config.fine.output_vocab_size >= C.CODEBOOK_SIZE, "fine output_vocab_size must be at least 1024"),
        (config.fine.input_vocab_size == config.fine.output_vocab_size, "fine heads are tied: vocab sizes must match"),
        (config.fine.n_codes_total == C.N_FINE_CODEBOOKS, "fine n_codes_total must be 8"),
        (0 < config.fine.n_codes_given < config.fine.n_codes_total, "fine n_codes_given must be in 1..7"),
    ]
    for model in (config.semantic, config.coarse, config.fine):
        divisible = model.n_embd % model.n_head == 0
        checks.append((divisible, f"n_embd {model.n_embd} not divisible by n_head {model.n_head}"))
    bad = [msg for ok, msg in checks if not ok]
    if bad:
        raise CheckpointError(f"{source}: not a Bark config: " + "; ".join(bad))


# transformers' defaults for a Bark sub-config field a config.json leaves out.
_HF_SUB_DEFAULTS = {
    "block_size": 1024,
    "input_vocab_size": 10_048,
    "output_vocab_size": 10_048,
    "num_layers": 12,
    "num_heads": 12,
    "hidden_size": 768,
    "bias": True,
}
# EnCodec 24 kHz as the `encodec` package builds it; a codec_config must not contradict it.
_CODEC_FIXED = {
    "sampling_rate": 24_000,
    "audio_channels": 1,
    "hidden_size": 128,
    "num_filters": 32,
    "upsampling_ratios": [8, 5, 4, 2],
    "num_lstm_layers": 2,
    "codebook_size": 1024,
    "codebook_dim": 128,
    "use_causal_conv": True,
}


def _hf_sub(d: Mapping[str, Any], name: str, source: str) -> dict[str, Any]:
    sub = d.get(name)
    if sub is None:
        sub = {}
    if not isinstance(sub, dict):
        raise CheckpointError(f"{source}: '{name}' must be an object")
    vals = {k: sub.get(k, v) for k, v in _HF_SUB_DEFAULTS.items()}
    for k, v in vals.items():
        if k != "bias" and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            raise CheckpointError(f"{source}: {name}.{k} must be a positive integer, got {v!r}")
    if not isinstance(vals["bias"], bool):
        raise CheckpointError(f"{source}: {name}.bias must be true or false")
    return {
        "block_size": vals["block_size"],
        "input_vocab_size": vals["input_vocab_size"],
        "output_vocab_size": vals["output_vocab_size"],
        "n_layer": vals["num_layers"],
        "n_head": vals["num_heads"],
        "n_embd": vals["hidden_size"],
        "bias": vals["bias"],
    }


def config_from_hf(d: Mapping[str, Any], source: str = "config.json") -> BarkConfig:
    """transformers' BarkConfig dict (config.json) -> BarkConfig; missing fields take transformers' defaults."""
    if d.get("model_type", "bark") != "bark":
        raise CheckpointError(f"{source}: model_type is {d.get('model_type')!r}, not 'bark'")
    fine_sub = d.get("fine_acoustics_config") or {}
    codec = d.get("codec_config") or {}
    if not isinstance(codec, dict) or not isinstance(fine_sub, dict):
        raise CheckpointError(f"{source}: sub-configs must be objects")
    for k, want in _CODEC_FIXED.items():
        if k in codec and codec[k] != want:
            raise CheckpointError(
                f"{source}: codec_config.{k} is {codec[k]!r}; Bark's codec (EnCodec 24 kHz) has {want!r}"
            )
    config = BarkConfig(
        semantic=GPTConfig(**_hf_sub(d, "semantic_config", source)),
        coarse=GPTConfig(**_hf_sub(d, "coarse_acoustics_config", source)),
        fine=FineGPTConfig(
            **_hf_sub(d, "fine_acoustics_config", source),
            n_codes_total=int(fine_sub.get("n_codes_total", 8)),
            n_codes_given=int(fine_sub.get("n_codes_given", 1)),
        ),
        codec=CodecConfig(
            sampling_rate=int(codec.get("sampling_rate", 24_000)), codebook_size=int(codec.get("codebook_size", 1024))
        ),
    )
    validate_config(config, source)
    return config


def config_from_suno_args(args: Mapping[str, Any], kind: ModelKind, source: str) -> GPTConfig:
    """Suno's model_args -> config; absent fields take Suno's own GPTConfig defaults (bias=True)."""
    args = dict(args)
    if "input_vocab_size" not in args:  # older files carry one `vocab_size` for both sides
        if "vocab_size" not in args:
            raise CheckpointError(f"{source}: model_args has neither input_vocab_size nor vocab_size")
        args["input_vocab_size"] = args["output_vocab_size"] = args["vocab_size"]
    try:
        common = dict(
            block_size=int(args.get("block_size", 1024)),
            input_vocab_size=int(args["input_vocab_size"]),
            output_vocab_size=int(args.get("output_vocab_size", args["input_vocab_size"])),
            n_layer=int(args.get("n_layer", 12)),
            n_head=int(args.get("n_head", 12)),
            n_embd=int(args.get("n_embd", 768)),
            bias=bool(args.get("bias", True)),
        )
        if kind == "fine":
            return FineGPTConfig(
                **common,
                n_codes_total=int(args.get("n_codes_total", 8)),
                n_codes_given=int(args.get("n_codes_given", 1)),
            )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: bad model_args ({e})") from e
    return GPTConfig(**common)

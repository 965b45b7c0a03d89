"""Bark GPT parameter names and shapes: barkstream's (= transformers') naming, Suno's, and the checks.

    ours (transformers' Bark, no model prefix)     Suno / nanoGPT
    input_embeds_layer.weight                       transformer.wte.weight
    input_embeds_layers.{i}.weight   (fine)         transformer.wtes.{i}.weight
    position_embeds_layer.weight                    transformer.wpe.weight
    layers.{i}.layernorm_1 / layernorm_2            transformer.h.{i}.ln_1 / ln_2
    layers.{i}.attn.att_proj / attn.out_proj        transformer.h.{i}.attn.c_attn / attn.c_proj
    layers.{i}.mlp.in_proj / mlp.out_proj           transformer.h.{i}.mlp.c_fc / mlp.c_proj
    layernorm_final                                 transformer.ln_f
    lm_head / lm_heads.{i}                          lm_head / lm_heads.{i}

Both split `att_proj` into q, k, v in the same order, so conversion is a pure rename.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Literal

import torch

from ..model.config import FineGPTConfig, GPTConfig
from .codec_names import codec_expected_shapes
from .layout import CheckpointError, ModelKind
from .tensor_files import SHOW


def expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of one Bark GPT (fine model when `config` is a FineGPTConfig), our naming."""
    n = config.n_embd
    fine = isinstance(config, FineGPTConfig)
    shapes: dict[str, tuple[int, ...]] = {}
    if fine:
        for i in range(config.n_codes_total):
            shapes[f"input_embeds_layers.{i}.weight"] = (config.input_vocab_size, n)
    else:
        shapes["input_embeds_layer.weight"] = (config.input_vocab_size, n)
    shapes["position_embeds_layer.weight"] = (config.block_size, n)
    ln_bias = fine or config.bias  # Suno's FineBlock uses nn.LayerNorm, which always has a bias
    linears = {
        "attn.att_proj": (3 * n, n),
        "attn.out_proj": (n, n),
        "mlp.in_proj": (4 * n, n),
        "mlp.out_proj": (n, 4 * n),
    }
    for i in range(config.n_layer):
        for ln in ("layernorm_1", "layernorm_2"):
            shapes[f"layers.{i}.{ln}.weight"] = (n,)
            if ln_bias:
                shapes[f"layers.{i}.{ln}.bias"] = (n,)
        for name, shape in linears.items():
            shapes[f"layers.{i}.{name}.weight"] = shape
            if config.bias:
                shapes[f"layers.{i}.{name}.bias"] = (shape[0],)
    shapes["layernorm_final.weight"] = (n,)
    if ln_bias:
        shapes["layernorm_final.bias"] = (n,)
    if fine:
        for i in range(config.n_codes_total - config.n_codes_given):
            shapes[f"lm_heads.{i}.weight"] = (config.output_vocab_size, n)
    else:
        shapes["lm_head.weight"] = (config.output_vocab_size, n)
    return shapes


def summarise(label: str, keys: list[str], show: Callable[[str], str]) -> str:
    head = ", ".join(show(k) for k in keys[:SHOW])
    more = f" (+{len(keys) - SHOW} more)" if len(keys) > SHOW else ""
    return f"{len(keys)} {label}: {head}{more}"


def verify_state(
    sd: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    *,
    source: str,
    show: Callable[[str], str] = lambda k: k,
    optional: Mapping[str, tuple[int, ...]] | None = None,
) -> None:
    """Raise CheckpointError naming `source` and each missing / unexpected / wrong-shape key.

    `show` maps a key back to the name the file uses, so the message points at the file's own keys.
    `optional` keys may be absent, but when present they must have the listed shape.
    """
    optional = optional or {}
    missing = sorted(k for k in expected if k not in sd)
    unexpected = sorted(k for k in sd if k not in expected and k not in optional)
    wrong = []
    for k in sorted(sd):
        want = expected.get(k, optional.get(k))
        if want is None:
            continue
        t = sd[k]
        if not isinstance(t, torch.Tensor):
            wrong.append(f"{show(k)} is a {type(t).__name__}, not a tensor")
        elif tuple(t.shape) != tuple(want):
            wrong.append(f"{show(k)} has shape {tuple(t.shape)}, expected {tuple(want)}")
        elif not t.is_floating_point():
            wrong.append(f"{show(k)} has dtype {t.dtype}, expected a floating point dtype")
    problems = []
    if missing:
        problems.append(summarise("missing keys", missing, show))
    if unexpected:
        problems.append(summarise("unexpected keys", unexpected, show))
    if wrong:
        problems.append(summarise("wrong shapes/types", wrong, lambda s: s))
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))


def verify_codec_state(sd: Mapping[str, torch.Tensor], *, source: str, show: Callable[[str], str] = str) -> None:
    """Decoder and quantizer are required; the encoder (never used to serve) is all or nothing."""
    required = {**codec_expected_shapes("decoder"), **codec_expected_shapes("quantizer")}
    encoder = codec_expected_shapes("encoder")
    if any(k.startswith("encoder.") for k in sd):
        required.update(encoder)
    verify_state(sd, required, source=source, show=show)


_LAYER_RENAMES = (
    ("layernorm_1", "ln_1"),
    ("layernorm_2", "ln_2"),
    ("attn.att_proj", "attn.c_attn"),
    ("attn.out_proj", "attn.c_proj"),
    ("mlp.in_proj", "mlp.c_fc"),
    ("mlp.out_proj", "mlp.c_proj"),
)
_TOP_RENAMES = (
    ("input_embeds_layers.", "transformer.wtes."),
    ("input_embeds_layer.", "transformer.wte."),
    ("position_embeds_layer.", "transformer.wpe."),
    ("layernorm_final.", "transformer.ln_f."),
    ("lm_heads.", "lm_heads."),
    ("lm_head.", "lm_head."),
)
_OUR_LAYER = re.compile(r"^layers\.(\d+)\.(.+)\.(weight|bias)$")
_SUNO_LAYER = re.compile(r"^transformer\.h\.(\d+)\.(.+)\.(weight|bias)$")
MASK_BUFFER = re.compile(r"^(?:transformer\.h|layers)\.\d+\.attn\.bias$")  # causal-mask buffers, not weights
ORIG_MOD = "_orig_mod."  # torch.compile's wrapper prefix in Suno's files


_Pairs = tuple[tuple[str, str], ...]


def _rename(key: str, layer_re: re.Pattern[str], out_layer: str, pairs: _Pairs, top: _Pairs) -> str:
    if m := layer_re.match(key):
        i, inner, p = m.groups()
        for src, dst in pairs:
            if inner == src:
                return f"{out_layer}.{i}.{dst}.{p}"
        return key
    for src, dst in top:
        if key.startswith(src):
            return dst + key[len(src) :]
    return key


def suno_name_to_ours(key: str) -> str:
    """`transformer.h.3.attn.c_attn.weight` -> `layers.3.attn.att_proj.weight`; unknown names pass through."""
    key = key.removeprefix(ORIG_MOD)
    return _rename(
        key, _SUNO_LAYER, "layers", tuple((s, o) for o, s in _LAYER_RENAMES), tuple((s, o) for o, s in _TOP_RENAMES)
    )


def our_name_to_suno(key: str) -> str:
    """`layers.3.attn.att_proj.weight` -> `transformer.h.3.attn.c_attn.weight`; unknown names pass through."""
    return _rename(key, _OUR_LAYER, "transformer.h", _LAYER_RENAMES, _TOP_RENAMES)


def convert_suno_state(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Suno/nanoGPT state dict (`_orig_mod.` prefix optional) -> our naming; mask buffers dropped."""
    out = {}
    for key, value in sd.items():
        bare = key.removeprefix(ORIG_MOD)
        if not MASK_BUFFER.match(bare):
            out[suno_name_to_ours(bare)] = value
    return out


def to_suno_state(sd: Mapping[str, torch.Tensor], kind: ModelKind | Literal["text"]) -> dict[str, torch.Tensor]:
    """Our naming -> the names Suno's `bark.model.GPT` / `bark.model_fine.FineGPT` load.

    The fine model's heads share storage with embeddings 1..7 in Suno's module, so both names are
    written, as `FineGPT.state_dict()` itself does.
    """
    if kind not in ("semantic", "text", "coarse", "fine"):
        raise ValueError(f"unknown model kind {kind!r}")
    out = {our_name_to_suno(k): v for k, v in sd.items() if not MASK_BUFFER.match(k)}
    if kind == "fine":
        tie_fine_heads(out, "transformer.wtes.", "lm_heads.", source="state dict")
    return out


def tie_fine_heads(
    sd: dict[str, torch.Tensor],
    embeds: str,
    heads: str,
    *,
    source: str,
    given: int = 1,
    show: Callable[[str], str] = lambda k: k,
) -> None:
    """Make head i and embedding i+given the same tensor; fill in whichever side a file omitted.

    transformers' save_pretrained drops the heads (tied weights are stored once); torch.save of a
    state_dict keeps both names. Two different tensors under tied names mean a broken file.
    """
    for key in [k for k in sd if k.startswith(heads) and k.endswith(".weight")]:
        idx = key[len(heads) : -len(".weight")]
        if idx.isdigit():
            other = f"{embeds}{int(idx) + given}.weight"
            if other in sd and sd[other] is not sd[key] and not _same(sd[other], sd[key]):
                a, b = sd[key], sd[other]
                raise CheckpointError(
                    f"{source}: tied weights differ: {show(key)} {tuple(a.shape)} != {show(other)} {tuple(b.shape)}"
                )
            sd.setdefault(other, sd[key])
    for key in [k for k in sd if k.startswith(embeds) and k.endswith(".weight")]:
        idx = key[len(embeds) : -len(".weight")]
        if idx.isdigit() and int(idx) >= given:
            sd.setdefault(f"{heads}{int(idx) - given}.weight", sd[key])


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and (a.data_ptr() == b.data_ptr() or torch.equal(a, b))

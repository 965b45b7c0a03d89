"""EnCodec 24 kHz parameter names and shapes, in both of the namings checkpoints use.

Bark's codec is the `encodec` package's 24 kHz model. Hugging Face snapshots
store the same tensors under transformers' `EncodecModel` names, so a loader
must translate:

    transformers (`codec_model.` stripped)         encodec package
    encoder.layers.0.conv.weight_g                  encoder.model.0.conv.conv.weight_g
    decoder.layers.3.conv.weight_v                  decoder.model.3.convtr.convtr.weight_v   (transposed conv)
    decoder.layers.4.block.1.conv.bias              decoder.model.4.block.1.conv.conv.bias
    decoder.layers.4.shortcut.conv.bias             decoder.model.4.shortcut.conv.conv.bias
    decoder.layers.1.lstm.weight_ih_l0              decoder.model.1.lstm.weight_ih_l0
    quantizer.layers.7.codebook.embed               quantizer.vq.layers.7._codebook.embed

Weight norm appears as `weight_g`/`weight_v` (torch's old hook, what the hub
files and the `encodec` package use) or `parametrizations.weight.original0/1`
(torch's newer parametrization, what transformers 5 writes). Both are
accepted; the encodec side always uses `weight_g`/`weight_v`.

The tables here are explicit rules derived from the SEANet layout, so serving
never needs transformers; tests check them against both real models.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

# EnCodec 24 kHz, as `encodec.EncodecModel.encodec_model_24khz` builds it.
CHANNELS = 1
DIMENSION = 128
N_FILTERS = 32
RATIOS = (8, 5, 4, 2)
KERNEL = 7
LAST_KERNEL = 7
RESIDUAL_KERNEL = 3
COMPRESS = 2
LSTM_LAYERS = 2
N_QUANTIZERS = 32
BINS = 1024

WeightNormStyle = Literal["weight_g", "parametrizations"]
T = TypeVar("T")


@dataclass(frozen=True)
class _Conv:
    index: int
    c_in: int
    c_out: int
    kernel: int
    transposed: bool = False


@dataclass(frozen=True)
class _ResBlock:
    index: int
    dim: int


@dataclass(frozen=True)
class _LSTM:
    index: int
    dim: int


_Layer = _Conv | _ResBlock | _LSTM


def _encoder_layers() -> list[_Layer]:
    """SEANet encoder: conv, then per ratio (resblock, ELU, strided conv), LSTM, ELU, conv."""
    layers: list[_Layer] = [_Conv(0, CHANNELS, N_FILTERS, KERNEL)]
    i, mult = 1, 1
    for ratio in reversed(RATIOS):
        layers.append(_ResBlock(i, mult * N_FILTERS))
        layers.append(_Conv(i + 2, mult * N_FILTERS, 2 * mult * N_FILTERS, 2 * ratio))
        i, mult = i + 3, mult * 2
    layers.append(_LSTM(i, mult * N_FILTERS))
    layers.append(_Conv(i + 2, mult * N_FILTERS, DIMENSION, LAST_KERNEL))
    return layers


def _decoder_layers() -> list[_Layer]:
    """SEANet decoder: conv, LSTM, then per ratio (ELU, transposed conv, resblock), ELU, conv."""
    mult = 2 ** len(RATIOS)
    layers: list[_Layer] = [_Conv(0, DIMENSION, mult * N_FILTERS, KERNEL), _LSTM(1, mult * N_FILTERS)]
    i = 2
    for ratio in RATIOS:
        c_in, c_out = mult * N_FILTERS, mult * N_FILTERS // 2
        layers.append(_Conv(i + 1, c_in, c_out, 2 * ratio, transposed=True))
        layers.append(_ResBlock(i + 2, c_out))
        i, mult = i + 3, mult // 2
    layers.append(_Conv(i + 1, N_FILTERS, CHANNELS, LAST_KERNEL))
    return layers


def _conv_shapes(prefix: str, conv: _Conv) -> Iterator[tuple[str, tuple[int, ...]]]:
    # Weight norm over dim 0 of the weight: (out, in, k) for conv, (in, out, k) for transposed conv.
    first, second = (conv.c_in, conv.c_out) if conv.transposed else (conv.c_out, conv.c_in)
    yield f"{prefix}.weight_g", (first, 1, 1)
    yield f"{prefix}.weight_v", (first, second, conv.kernel)
    yield f"{prefix}.bias", (conv.c_out,)


def _layer_shapes(part: str, layer: _Layer) -> Iterator[tuple[str, tuple[int, ...]]]:
    base = f"{part}.model.{layer.index}"
    if isinstance(layer, _Conv):
        inner = "convtr.convtr" if layer.transposed else "conv.conv"
        yield from _conv_shapes(f"{base}.{inner}", layer)
    elif isinstance(layer, _ResBlock):
        hidden = layer.dim // COMPRESS
        yield from _conv_shapes(f"{base}.block.1.conv.conv", _Conv(0, layer.dim, hidden, RESIDUAL_KERNEL))
        yield from _conv_shapes(f"{base}.block.3.conv.conv", _Conv(0, hidden, layer.dim, 1))
        yield from _conv_shapes(f"{base}.shortcut.conv.conv", _Conv(0, layer.dim, layer.dim, 1))
    else:
        for k in range(LSTM_LAYERS):
            yield f"{base}.lstm.weight_ih_l{k}", (4 * layer.dim, layer.dim)
            yield f"{base}.lstm.weight_hh_l{k}", (4 * layer.dim, layer.dim)
            yield f"{base}.lstm.bias_ih_l{k}", (4 * layer.dim,)
            yield f"{base}.lstm.bias_hh_l{k}", (4 * layer.dim,)


def codec_expected_shapes(part: Literal["encoder", "decoder", "quantizer"]) -> dict[str, tuple[int, ...]]:
    """Every tensor of one part of EnCodec 24 kHz, encodec-package names."""
    if part == "quantizer":
        shapes: dict[str, tuple[int, ...]] = {}
        for q in range(N_QUANTIZERS):
            base = f"quantizer.vq.layers.{q}._codebook"
            shapes[f"{base}.inited"] = (1,)
            shapes[f"{base}.cluster_size"] = (BINS,)
            shapes[f"{base}.embed"] = (BINS, DIMENSION)
            shapes[f"{base}.embed_avg"] = (BINS, DIMENSION)
        return shapes
    layers = _encoder_layers() if part == "encoder" else _decoder_layers()
    return dict(kv for layer in layers for kv in _layer_shapes(part, layer))


_DECODER_CONVTR = frozenset(x.index for x in _decoder_layers() if isinstance(x, _Conv) and x.transposed)


_G, _V = "weight_g", "weight_v"
_PARAM_G, _PARAM_V = "parametrizations.weight.original0", "parametrizations.weight.original1"


def _norm_weight_name(key: str) -> str:
    if key.endswith(_PARAM_G):
        return key[: -len(_PARAM_G)] + _G
    if key.endswith(_PARAM_V):
        return key[: -len(_PARAM_V)] + _V
    return key


def _style_weight_name(key: str, style: WeightNormStyle) -> str:
    if style == "parametrizations":
        if key.endswith("." + _G):
            return key[: -len(_G)] + _PARAM_G
        if key.endswith("." + _V):
            return key[: -len(_V)] + _PARAM_V
    return key


_HF_CONV = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.conv\.([^.]+)$")
_HF_RES = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(block\.\d+|shortcut)\.conv\.([^.]+)$")
_HF_LSTM = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.lstm\.([^.]+)$")
_HF_VQ = re.compile(r"^quantizer\.layers\.(\d+)\.codebook\.([^.]+)$")

_EN_CONV = re.compile(r"^(encoder|decoder)\.model\.(\d+)\.(?:conv\.conv|convtr\.convtr)\.([^.]+)$")
_EN_RES = re.compile(r"^(encoder|decoder)\.model\.(\d+)\.(block\.\d+|shortcut)\.conv\.conv\.([^.]+)$")
_EN_LSTM = re.compile(r"^(encoder|decoder)\.model\.(\d+)\.lstm\.([^.]+)$")
_EN_VQ = re.compile(r"^quantizer\.vq\.layers\.(\d+)\._codebook\.([^.]+)$")


def codec_name_hf_to_encodec(key: str) -> str:
    """One transformers-EncodecModel name to the encodec package's; unknown names pass through."""
    key = _norm_weight_name(key)
    if m := _HF_CONV.match(key):
        part, i, p = m.groups()
        inner = "convtr.convtr" if part == "decoder" and int(i) in _DECODER_CONVTR else "conv.conv"
        return f"{part}.model.{i}.{inner}.{p}"
    if m := _HF_RES.match(key):
        part, i, sub, p = m.groups()
        return f"{part}.model.{i}.{sub}.conv.conv.{p}"
    if m := _HF_LSTM.match(key):
        part, i, p = m.groups()
        return f"{part}.model.{i}.lstm.{p}"
    if m := _HF_VQ.match(key):
        q, p = m.groups()
        return f"quantizer.vq.layers.{q}._codebook.{p}"
    return key


def codec_name_encodec_to_hf(key: str, style: WeightNormStyle = "weight_g") -> str:
    """One encodec-package name to transformers' EncodecModel name; unknown names pass through."""
    key = _norm_weight_name(key)
    if m := _EN_CONV.match(key):
        part, i, p = m.groups()
        return _style_weight_name(f"{part}.layers.{i}.conv.{p}", style)
    if m := _EN_RES.match(key):
        part, i, sub, p = m.groups()
        return _style_weight_name(f"{part}.layers.{i}.{sub}.conv.{p}", style)
    if m := _EN_LSTM.match(key):
        part, i, p = m.groups()
        return f"{part}.layers.{i}.lstm.{p}"
    if m := _EN_VQ.match(key):
        q, p = m.groups()
        return f"quantizer.layers.{q}.codebook.{p}"
    return key


def codec_hf_to_encodec(sd: Mapping[str, T]) -> dict[str, T]:
    """transformers EncodecModel state dict (`codec_model.` prefix optional) -> encodec package naming."""
    return {codec_name_hf_to_encodec(k.removeprefix("codec_model.")): v for k, v in sd.items()}


def codec_encodec_to_hf(sd: Mapping[str, T], style: WeightNormStyle = "weight_g") -> dict[str, T]:
    """encodec package state dict -> transformers EncodecModel naming (no `codec_model.` prefix).

    `weight_g` style is what the suno/bark hub snapshots hold; transformers reads both.
    """
    return {codec_name_encodec_to_hf(k, style): v for k, v in sd.items()}


def codec_normalize_weight_norm(sd: Mapping[str, T]) -> dict[str, T]:
    """encodec-named state dict with either weight-norm style -> `weight_g`/`weight_v` names."""
    return {_norm_weight_name(k): v for k, v in sd.items()}


def looks_like_hf_codec(keys: list[str]) -> bool:
    """True when names follow transformers' EncodecModel (`*.layers.*`), False for the encodec package's."""
    stripped = [k.removeprefix("codec_model.") for k in keys]
    hf = sum(1 for k in stripped if k.startswith(("encoder.layers.", "decoder.layers.", "quantizer.layers.")))
    native = sum(1 for k in stripped if k.startswith(("encoder.model.", "decoder.model.", "quantizer.vq.")))
    return hf > native

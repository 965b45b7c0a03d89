"""Load and verify Bark checkpoints (torch only).

Two on-disk layouts hold the same three GPTs:

- a Hugging Face snapshot (suno/bark-small, suno/bark): `config.json`,
  `pytorch_model.bin` or `model.safetensors` (maybe sharded) with all four
  models under `semantic.`, `coarse_acoustics.`, `fine_acoustics.` and
  `codec_model.`, tokenizer files and speaker embeddings;
- Suno's original `text.pt` / `coarse.pt` / `fine.pt` (`*_2.pt` for the large
  model): `{"model": state_dict, "model_args": {...}}` with nanoGPT names and
  no codec weights.

Everything is returned in ONE naming, transformers' Bark names without the
model prefix (what `gpt.py` / `fine.py` use), and the codec in the `encodec`
package's naming (what `codec.py` uses). Every key and shape is checked
against the config before any model sees it, because a checkpoint that loads
"mostly" still produces audio, just wrong audio.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..model.config import BarkConfig, FineGPTConfig, GPTConfig
from .codec_names import (
    codec_hf_to_encodec,
    codec_name_encodec_to_hf,
    codec_normalize_weight_norm,
    looks_like_hf_codec,
)
from .configs import config_from_hf, config_from_suno_args, validate_config
from .gpt_names import (
    MASK_BUFFER,
    ORIG_MOD,
    convert_suno_state,
    expected_shapes,
    our_name_to_suno,
    summarise,
    tie_fine_heads,
    verify_codec_state,
    verify_state,
)
from .layout import HF_PREFIXES, SUNO_FILES, TOKENIZER_FILES, VOICES_INDEX, CheckpointError, ModelKind
from .tensor_files import load_hf_tensors, load_tensor_file, read_json, torch_load


@dataclass
class Checkpoint:
    """All weights of one Bark checkpoint, verified, in barkstream's naming."""

    config: BarkConfig
    semantic: dict[str, torch.Tensor]
    coarse: dict[str, torch.Tensor]
    fine: dict[str, torch.Tensor]
    codec: dict[str, torch.Tensor] | None
    generation: dict[str, Any]
    root: Path
    tokenizer_files: tuple[Path, ...] = ()
    voices_dir: Path | None = None
    layout: Literal["hf", "suno"] = "hf"
    codec_note: str = field(default="", repr=False)  # where codec weights came from, or how to get them

    def require_codec(self) -> dict[str, torch.Tensor]:
        """The codec weights, or an error that says where to get them."""
        if self.codec is None:
            raise CheckpointError(self.codec_note)
        return self.codec

    def tokenizer_dir(self) -> Path | None:
        """Where BarkTokenizer.from_dir finds vocab.txt / tokenizer.json; None for Suno's layout (no files)."""
        return self.root if self.tokenizer_files else None

    def model_state(self, kind: ModelKind) -> dict[str, torch.Tensor]:
        return {"semantic": self.semantic, "coarse": self.coarse, "fine": self.fine}[kind]


# ---------------------------------------------------------------------------------------------- loading


def _gpt_from_hf(
    raw: dict[str, torch.Tensor], kind: ModelKind, config: GPTConfig, source: str
) -> dict[str, torch.Tensor]:
    prefix = HF_PREFIXES[kind]
    sd = {k[len(prefix) :]: v for k, v in raw.items() if not MASK_BUFFER.match(k[len(prefix) :])}
    if kind == "fine":
        given = config.n_codes_given
        tie_fine_heads(sd, "input_embeds_layers.", "lm_heads.", source=source, given=given, show=lambda k: prefix + k)
    verify_state(sd, expected_shapes(config), source=f"{source} [{kind}]", show=lambda k: prefix + k)
    return sd


def _split_prefixes(sd: dict[str, torch.Tensor], source: str) -> dict[str, dict[str, torch.Tensor]]:
    parts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in HF_PREFIXES}
    stray = []
    for k, v in sd.items():
        for name, prefix in HF_PREFIXES.items():
            if k.startswith(prefix):
                parts[name][k] = v
                break
        else:
            stray.append(k)
    if stray:
        raise CheckpointError(f"{source}: " + summarise("unexpected keys", sorted(stray), str))
    return parts


def load_codec_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """EnCodec 24 kHz weights from a file or an HF snapshot dir, verified, in encodec naming.

    Accepts the `encodec` package's own download (`encodec_24khz-d7cc33bc.th`), any `.pt`/`.bin`/
    `.safetensors` state dict in encodec or transformers naming (with or without `codec_model.`),
    or a snapshot directory of suno/bark(-small) or facebook/encodec_24khz.
    """
    path = Path(path)
    if path.is_dir():
        raw, source = load_hf_tensors(path)
        if any(k.startswith(HF_PREFIXES["codec"]) for k in raw):
            raw = {k: v for k, v in raw.items() if k.startswith(HF_PREFIXES["codec"])}
    elif path.is_file():
        raw, source = load_tensor_file(path), str(path)
    else:
        raise CheckpointError(f"{path}: codec weights not found")
    if looks_like_hf_codec(list(raw)):
        sd = codec_hf_to_encodec(raw)
        show = _codec_show_hf(any(k.startswith("codec_model.") for k in raw))
    else:
        sd = codec_normalize_weight_norm({k.removeprefix("codec_model."): v for k, v in raw.items()})
        show = str
    verify_codec_state(sd, source=f"{source} [codec]", show=show)
    return sd


def _codec_show_hf(prefixed: bool) -> Callable[[str], str]:
    prefix = HF_PREFIXES["codec"] if prefixed else ""
    return lambda k: prefix + codec_name_encodec_to_hf(k)


def _no_codec_note(root: Path, layout: str) -> str:
    where = (
        "Suno's original text/coarse/fine files carry no codec weights (Suno's bark fetches EnCodec's pretrained "
        "24 kHz weights through the encodec package: encodec_24khz-d7cc33bc.th)"
        if layout == "suno"
        else "the snapshot's weights hold no codec_model.* tensors"
    )
    return (
        f"{root}: no codec weights: {where}. Pass codec_path (CLI: --codec PATH) pointing at that .th file, at any "
        ".pt/.bin/.safetensors of EnCodec 24 kHz weights (encodec or transformers naming), or at a local snapshot "
        "of suno/bark-small, suno/bark or facebook/encodec_24khz."
    )


def _finish_codec(ckpt: Checkpoint, codec_path: str | Path | None) -> Checkpoint:
    if codec_path is not None:
        ckpt.codec = load_codec_weights(codec_path)
        ckpt.codec_note = f"codec weights from {codec_path}"
    elif ckpt.codec is None:
        ckpt.codec_note = _no_codec_note(ckpt.root, ckpt.layout)
    return ckpt


def _load_hf(root: Path) -> Checkpoint:
    config = config_from_hf(read_json(root / "config.json"), str(root / "config.json"))
    generation = read_json(root / "generation_config.json") if (root / "generation_config.json").is_file() else {}
    raw, source = load_hf_tensors(root)
    parts = _split_prefixes(raw, source)
    configs: dict[ModelKind, GPTConfig] = {"semantic": config.semantic, "coarse": config.coarse, "fine": config.fine}
    models = {kind: _gpt_from_hf(parts[kind], kind, cfg, source) for kind, cfg in configs.items()}
    codec = None
    if parts["codec"]:
        codec = codec_hf_to_encodec(parts["codec"])
        verify_codec_state(codec, source=f"{source} [codec]", show=_codec_show_hf(True))
    return Checkpoint(
        config=config,
        semantic=models["semantic"],
        coarse=models["coarse"],
        fine=models["fine"],
        codec=codec,
        generation=generation,
        root=root,
        tokenizer_files=tuple(root / n for n in TOKENIZER_FILES if (root / n).is_file()),
        voices_dir=root if (root / VOICES_INDEX).is_file() else None,
        layout="hf",
        codec_note=f"codec weights from {source}" if codec is not None else "",
    )


def _suno_files(root: Path, size: str | None) -> dict[ModelKind, Path]:
    complete = {s: {k: root / n for k, n in files.items()} for s, files in SUNO_FILES.items()}
    complete = {s: files for s, files in complete.items() if all(p.is_file() for p in files.values())}
    if size is not None:
        if size not in SUNO_FILES:
            raise CheckpointError(f"suno_size must be one of {sorted(SUNO_FILES)}, got {size!r}")
        if size not in complete:
            want = ", ".join(SUNO_FILES[size].values())
            raise CheckpointError(f"{root}: Suno {size} checkpoint needs {want}")
        return complete[size]
    if len(complete) == 1:
        return next(iter(complete.values()))
    if len(complete) > 1:
        raise CheckpointError(
            f"{root}: holds both Suno small (text.pt...) and large (text_2.pt...) files; choose suno_size"
        )
    present = sorted(p.name for p in root.glob("*.pt"))
    raise CheckpointError(
        f"{root}: not a Bark checkpoint: no config.json (Hugging Face snapshot) and no complete set of Suno files "
        f"(text.pt, coarse.pt, fine.pt or text_2.pt, coarse_2.pt, fine_2.pt); .pt files present: {present or 'none'}"
    )


def _load_suno_model(path: Path, kind: ModelKind) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    obj = torch_load(path)
    if not isinstance(obj, Mapping) or "model" not in obj or "model_args" not in obj:
        raise CheckpointError(f"{path}: expected Suno's {{'model': state_dict, 'model_args': {{...}}}}")
    if not isinstance(obj["model_args"], Mapping) or not isinstance(obj["model"], Mapping):
        raise CheckpointError(f"{path}: 'model' and 'model_args' must be mappings")
    config = config_from_suno_args(obj["model_args"], kind, str(path))
    sd = convert_suno_state(obj["model"])
    prefixed = any(str(k).startswith(ORIG_MOD) for k in obj["model"])
    show = (lambda k: ORIG_MOD + our_name_to_suno(k)) if prefixed else our_name_to_suno
    if isinstance(config, FineGPTConfig):
        tie_fine_heads(sd, "input_embeds_layers.", "lm_heads.", source=str(path), given=config.n_codes_given, show=show)
    verify_state(sd, expected_shapes(config), source=str(path), show=show)
    return config, sd


def _load_suno(root: Path, size: str | None) -> Checkpoint:
    files = _suno_files(root, size)
    loaded = {kind: _load_suno_model(path, kind) for kind, path in files.items()}
    fine_config = loaded["fine"][0]
    assert isinstance(fine_config, FineGPTConfig)
    config = BarkConfig(semantic=loaded["semantic"][0], coarse=loaded["coarse"][0], fine=fine_config)
    validate_config(config, str(root))
    return Checkpoint(
        config=config,
        semantic=loaded["semantic"][1],
        coarse=loaded["coarse"][1],
        fine=loaded["fine"][1],
        codec=None,
        generation={},
        root=root,
        tokenizer_files=tuple(root / n for n in TOKENIZER_FILES if (root / n).is_file()),
        voices_dir=root if (root / VOICES_INDEX).is_file() else None,
        layout="suno",
    )


def load_checkpoint(
    path: str | Path, *, codec_path: str | Path | None = None, suno_size: str | None = None
) -> Checkpoint:
    """Load and verify a Bark checkpoint directory (HF snapshot or Suno's original files).

    `codec_path` supplies (or overrides) the EnCodec weights; Suno's layout needs it for audio.
    `suno_size` ("small" or "large") picks between text.pt and text_2.pt when a directory has both.
    """
    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"{root}: checkpoint directory not found")
    if not root.is_dir():
        raise CheckpointError(f"{root}: a checkpoint is a directory (HF snapshot or Suno's .pt files), not a file")
    ckpt = _load_hf(root) if (root / "config.json").is_file() else _load_suno(root, suno_size)
    return _finish_codec(ckpt, codec_path)

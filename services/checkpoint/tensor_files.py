"""Reading checkpoint files safely: torch pickles (weights only), safetensors, JSON, HF shard indexes."""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .layout import HF_WEIGHT_FILES, CheckpointError

SHOW = 5  # keys named per problem in an error message
ZIP_MAGIC = b"PK\x03\x04"  # a zip archive's first bytes: torch.save's default format


def _numpy_scalar_globals() -> list[Any]:
    """The numpy pieces a pickled numpy scalar needs, under numpy 1.x and 2.x module names."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    return [
        np.dtype,
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        *[type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32")],
    ]


def is_zip_torch_file(path: Path) -> bool:
    """Whether `path` has torch.save's zipfile format (the default since torch 1.6), the one
    torch.load can memory-map; the legacy format (`_use_new_zipfile_serialization=False`) cannot."""
    with path.open("rb") as f:
        return f.read(len(ZIP_MAGIC)) == ZIP_MAGIC


def torch_load(path: Path) -> Any:
    """`torch.load` that never runs arbitrary pickled code, memory-mapping the file where its format allows.

    Mapped, the tensors are views of the file (copy-on-write, the file is never written): a stage
    process that keeps one model of a multi-GB pytorch_model.bin reads only that model's bytes,
    instead of first copying the whole file into its own memory.
    """
    try:
        mmap = is_zip_torch_file(path)
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError:
            # Suno's original .pt files store `best_val_loss` as a numpy scalar, which the weights-only
            # unpickler refuses. Allow exactly numpy's scalar reconstruction (still weights-only); any
            # other object in the file keeps failing, rather than falling back to full unpickling.
            with torch.serialization.safe_globals(_numpy_scalar_globals()):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch.load surfaces corrupt files as many types (struct.error, RuntimeError, ...)
        raise CheckpointError(f"{path}: cannot read checkpoint file ({type(e).__name__}: {first_line(e)})") from e


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor file: `.safetensors`, or a torch pickle (`.bin`, `.pt`, `.th`)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own SafetensorError (not exported) or OSError
            raise CheckpointError(f"{path}: cannot read safetensors file ({first_line(e)})") from e
    else:
        sd = torch_load(path)
    if not isinstance(sd, Mapping) or not all(isinstance(k, str) for k in sd):
        raise CheckpointError(f"{path}: expected a mapping of tensor names to tensors, got {type(sd).__name__}")
    return dict(sd)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read JSON ({first_line(e)})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def hf_weight_files(root: Path) -> list[Path]:
    """Weight files of an HF snapshot; safetensors first (no pickle, memory-mapped)."""
    for index_name, single in HF_WEIGHT_FILES:
        index = root / index_name
        if index.is_file():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index}: no 'weight_map'")
            shards = sorted(set(weight_map.values()))
            bad = [s for s in shards if not isinstance(s, str) or "/" in s or "\\" in s or s in ("", ".", "..")]
            if bad:
                raise CheckpointError(f"{index}: shard names must be plain file names, got {bad[:SHOW]}")
            return [root / s for s in shards]
        if (root / single).is_file():
            return [root / single]
    names = ", ".join(n for pair in HF_WEIGHT_FILES for n in pair)
    raise CheckpointError(f"{root}: no weights found (looked for {names})")


def load_hf_tensors(root: Path) -> tuple[dict[str, torch.Tensor], str]:
    files = hf_weight_files(root)
    merged: dict[str, torch.Tensor] = {}
    for f in files:
        for k, v in load_tensor_file(f).items():
            if k in merged:
                raise CheckpointError(f"{f}: tensor {k} also appears in another shard")
            merged[k] = v
    source = str(files[0]) if len(files) == 1 else f"{root} ({len(files)} shards)"
    return merged, source

"""torch pickles load memory-mapped where their format allows, with the same tensors as a plain load.

Memory-mapped, a stage process that keeps one model of a multi-GB pytorch_model.bin reads only that
model's bytes. Whether a tensor is file-backed is checked against /proc/self/maps (Linux): its data
must lie inside a mapping of the file.
"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from barkstream.services.checkpoint.layout import CheckpointError
from barkstream.services.checkpoint.tensor_files import is_zip_torch_file, torch_load

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc/self/maps")


def _file_mappings(path: Path) -> list[tuple[int, int]]:
    """Address ranges this process maps from `path`."""
    name = str(path.resolve())
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == name:
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((lo, hi))
    return ranges


def _file_backed(t: torch.Tensor, ranges: list[tuple[int, int]]) -> bool:
    return any(lo <= t.data_ptr() < hi for lo, hi in ranges)


def _assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        assert torch.equal(got[k], v), k


def _small_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    head = torch.randn(16, 8, generator=g)
    return {"a.weight": torch.randn(32, 8, generator=g), "b.bias": torch.arange(5), "head": head, "tied": head}


def test_zipfile_bin_loads_file_backed_with_the_same_tensors(tiny_checkpoint_dir: Path) -> None:
    path = Path(tiny_checkpoint_dir) / "pytorch_model.bin"
    assert is_zip_torch_file(path)
    plain = torch.load(path, map_location="cpu", weights_only=True)
    mapped = torch_load(path)
    _assert_same_tensors(mapped, plain)
    ranges = _file_mappings(path)
    assert ranges, "the zipfile .bin is not memory-mapped"
    assert all(_file_backed(v, ranges) for v in mapped.values())
    assert not any(_file_backed(v, ranges) for v in plain.values())


def test_legacy_format_falls_back_to_a_plain_load(tmp_path: Path) -> None:
    path = tmp_path / "legacy.bin"
    state = _small_state()
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert not is_zip_torch_file(path)
    loaded = torch_load(path)
    _assert_same_tensors(loaded, state)
    assert loaded["tied"] is loaded["head"]  # shared storage survives, as torch.load keeps it
    assert not _file_mappings(path)


@pytest.mark.parametrize("zipfile", [True, False], ids=["zipfile", "legacy"])
def test_suno_numpy_scalar_files_load_in_both_formats(tmp_path: Path, zipfile: bool) -> None:
    """Suno's .pt files carry `best_val_loss` as a numpy scalar: the weights-only retry still applies."""
    path = tmp_path / "text.pt"
    state = _small_state()
    torch.save({"model": state, "model_args": {"n_layer": 1}, "best_val_loss": np.float64(1.5)}, path,
               _use_new_zipfile_serialization=zipfile)
    obj = torch_load(path)
    assert obj["best_val_loss"] == 1.5 and obj["model_args"] == {"n_layer": 1}
    _assert_same_tensors(obj["model"], state)
    ranges = _file_mappings(path)
    assert all(_file_backed(v, ranges) for v in obj["model"].values()) == zipfile


def test_corrupt_zip_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)  # looks like a zip, is not a torch file
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        torch_load(path)


def test_stage_models_keep_no_mapping_of_the_weights_file(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    """The models copy the weights: once loaded, nothing pins the file's pages (fine heads and codec included)."""
    from barkstream.services.stages.models import load_stage_models

    # A private copy: other tests hold the session checkpoint (and its mapping) open.
    root = Path(shutil.copytree(tiny_checkpoint_dir, tmp_path / "ckpt"))
    models = load_stage_models(root)
    gc.collect()
    assert models.semantic is not None and models.fine is not None and models.codec is not None
    assert not _file_mappings(root / "pytorch_model.bin")


def test_rewriting_a_checkpoint_under_a_loaded_process_is_safe(tmp_path: Path) -> None:
    """`checkpoint random --force` renames the new weights into place: a process that still holds the old
    file memory-mapped (a loaded Checkpoint) keeps its values, instead of seeing the new bytes or dying
    of SIGBUS on a truncated mapping. Run in a child so that a regression fails this test, not pytest."""
    import subprocess
    import sys

    script = f"""
import torch
from barkstream.services.checkpoint.random_writer import write_random_checkpoint
from barkstream.services.checkpoint.load import load_checkpoint
root = write_random_checkpoint({str(tmp_path / "ck")!r}, size="tiny", seed=0)
held = load_checkpoint(root).semantic["input_embeds_layer.weight"]
before = held.clone()
write_random_checkpoint(root, size="tiny", seed=1, overwrite=True)
assert torch.equal(held, before)
assert not torch.equal(load_checkpoint(root).semantic["input_embeds_layer.weight"], before)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), (done.returncode, done.stderr[-2000:])

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

from barkstream.services.model.weights_io import CheckpointError, is_zip_torch_file, torch_load

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


def test_stage_models_read_unconverted_weights_from_the_mapped_file(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    """float32 on CPU: the loaded tensors become the parameters (no copy; the big text embedding stays
    file pages read on demand), with the same values a plain load gives and the fine heads still tied.
    A dtype change converts every tensor, after which nothing maps the file."""
    from barkstream.services.stages.models import ModelOptions, load_stage_models

    # A private copy: other tests hold the session checkpoint (and its mapping) open.
    root = Path(shutil.copytree(tiny_checkpoint_dir, tmp_path / "ckpt"))
    weights = root / "pytorch_model.bin"
    plain = torch.load(weights, map_location="cpu", weights_only=True)
    models = load_stage_models(root, ["semantic", "fine"])
    ranges = _file_mappings(weights)
    embedding = models.semantic.input_embeds_layer.weight
    assert _file_backed(embedding, ranges)
    assert torch.equal(embedding, plain["semantic.input_embeds_layer.weight"])  # the HF layout's name
    fine = models.fine
    for i, head in enumerate(fine.lm_heads):
        assert head.weight is fine.input_embeds_layers[i + fine.config.n_codes_given].weight
    del models, embedding, fine, head
    gc.collect()

    converted = load_stage_models(root, ["semantic", "fine", "codec"], ModelOptions(dtype="bfloat16"))
    gc.collect()
    assert converted.semantic.input_embeds_layer.weight.dtype == torch.bfloat16
    assert not _file_mappings(weights)


def test_rewriting_a_checkpoint_under_loaded_models_is_safe(tmp_path: Path) -> None:
    """Models read their unconverted weights from the mapped file, so `checkpoint random --force` must
    replace the file (rename), never rewrite it in place (a truncated mapping is SIGBUS: a dead
    process). Run in a child so that a regression fails this test instead of killing pytest."""
    import subprocess
    import sys

    script = f"""
import torch
from barkstream.services.model.checkpoint import write_random_checkpoint
from barkstream.services.stages.models import load_stage_models
root = write_random_checkpoint({str(tmp_path / "ck")!r}, size="tiny", seed=0)
models = load_stage_models(root, ["semantic"])
before = models.semantic.input_embeds_layer.weight.clone()
write_random_checkpoint(root, size="tiny", seed=1, overwrite=True)
assert torch.equal(models.semantic.input_embeds_layer.weight, before)
fresh = load_stage_models(root, ["semantic"]).semantic.input_embeds_layer.weight
assert not torch.equal(fresh, before)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), (done.returncode, done.stderr[-2000:])


def _resident_kb(path: Path) -> int:
    """Resident kB of this process's mappings of `path` (/proc/self/smaps)."""
    name, total, inside = str(path.resolve()), 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            inside = len(fields) >= 6 and fields[5] == name
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_release_pages_drops_resident_file_pages_and_keeps_every_value(tmp_path: Path) -> None:
    from barkstream.services.model.weights_io import release_pages

    path = tmp_path / "w.bin"
    torch.save({"w": torch.randn(4 << 20, generator=torch.Generator().manual_seed(0))}, path)  # 16 MiB
    w = torch_load(path)["w"]
    total = float(w.sum())  # touches every page
    before = _resident_kb(path)
    assert before > 12 * 1024
    release_pages([w])
    assert _resident_kb(path) < before / 4
    assert float(w.sum()) == total  # read again from the file: nothing lost

    anonymous = torch.randn(4 << 20)
    copy = anonymous.clone()
    release_pages([anonymous, torch.zeros(3)])  # plain memory (no swap here) and a tensor under a page
    assert torch.equal(anonymous, copy)

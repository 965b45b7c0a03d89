"""Checkpoint resolution (services/checkpoint/hub.py); never touches the network."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import constants

from barkstream.services.checkpoint.hub import COMMON_PATTERNS, HubUnavailableError, resolve_checkpoint
from barkstream.services.checkpoint.layout import CheckpointError


def test_local_path_is_used_as_is(tmp_path: Path) -> None:
    assert resolve_checkpoint(tmp_path) == tmp_path
    assert resolve_checkpoint(str(tmp_path)) == tmp_path


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(tmp_path / "nope")


def test_offline_without_cache_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnavailableError) as err:
        resolve_checkpoint(None, cache_dir=tmp_path / "empty-cache")
    msg = str(err.value)
    assert "suno/bark-small" in msg
    assert "--checkpoint DIR" in msg
    assert "barkstream checkpoint random DIR --size small" in msg


class _FakeHub:
    """Stands in for snapshot_download: a repo with the given weight files."""

    def __init__(self, root: Path, files: list[str]):
        self.root, self.files, self.calls = root, files, []

    def __call__(self, repo_id: str, **kwargs) -> str:
        self.calls.append(kwargs["allow_patterns"])
        self.root.mkdir(exist_ok=True)
        (self.root / "config.json").write_text("{}")
        for name in self.files:
            if name in kwargs["allow_patterns"]:
                (self.root / name).write_bytes(b"")
        return str(self.root)


def test_prefers_safetensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeHub(tmp_path / "snap", ["model.safetensors", "pytorch_model.bin"])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    assert resolve_checkpoint(None) == tmp_path / "snap"
    assert len(fake.calls) == 1 and "pytorch_model.bin" not in fake.calls[0]
    assert set(COMMON_PATTERNS) <= set(fake.calls[0])
    assert not (tmp_path / "snap" / "pytorch_model.bin").exists()  # one weights format only


def test_falls_back_to_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeHub(tmp_path / "snap", ["pytorch_model.bin"])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    assert resolve_checkpoint(None, repo_id="suno/bark") == tmp_path / "snap"
    assert len(fake.calls) == 2 and "pytorch_model.bin" in fake.calls[1]


def test_repo_without_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _FakeHub(tmp_path / "snap", []))
    with pytest.raises(CheckpointError, match="no pytorch_model.bin or model.safetensors"):
        resolve_checkpoint(None)


def test_hub_errors_become_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("connection refused")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(HubUnavailableError, match="connection refused.*--checkpoint DIR"):
        resolve_checkpoint(None)

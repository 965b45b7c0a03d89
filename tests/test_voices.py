"""Voice presets: validation, both on-disk layouts, and path safety (services/bark/voices.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import bark
import numpy as np
import pytest

from barkstream.services.bark.voices import VoiceError, VoiceLibrary, VoicePrompt, check_voice_name, load_voice_file

PROMPTS = Path(bark.__file__).parent / "assets" / "prompts"


def _arrays(n: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = round(n * 75 / 49.9)
    coarse = rng.integers(0, 1024, (2, m))
    return {
        "semantic_prompt": rng.integers(0, 10_000, n),
        "coarse_prompt": coarse,
        "fine_prompt": np.concatenate([coarse, rng.integers(0, 1024, (6, m))]),
    }


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def suno_lib() -> VoiceLibrary:
    return VoiceLibrary([PROMPTS])


# ------------------------------------------------------------------------------------------- real presets


def test_every_shipped_preset_is_valid(suno_lib: VoiceLibrary) -> None:
    names = suno_lib.list()
    assert len(names) == 271 and {"announcer", "en_speaker_6", "v2/en_speaker_6", "v2/zh_speaker_9"} <= set(names)
    for name in names:
        suno_lib.load(name)


def test_preset_arrays_match_the_npz(suno_lib: VoiceLibrary) -> None:
    for name in ("v2/en_speaker_6", "en_speaker_6", "announcer"):  # int64/int32 and uint16 files
        voice = suno_lib.load(name)
        with np.load(PROMPTS / f"{name}.npz") as raw:
            for key in ("semantic_prompt", "coarse_prompt", "fine_prompt"):
                got = getattr(voice, key)
                assert got.dtype == np.int64 and not got.flags.writeable
                assert np.array_equal(got, raw[key])
    assert suno_lib.load("v2/en_speaker_6").semantic_prompt.shape == (309,)
    assert suno_lib.load("en_speaker_6").semantic_prompt.shape == (158,)  # v1 and v2 are different voices
    assert suno_lib.load("announcer") is suno_lib.load("announcer")  # cached


def test_explicit_file_only_when_allowed(suno_lib: VoiceLibrary) -> None:
    path = str(PROMPTS / "v2" / "en_speaker_6.npz")
    assert np.array_equal(suno_lib.load(path, allow_file=True).coarse_prompt, load_voice_file(path).coarse_prompt)
    with pytest.raises(VoiceError, match="not a file path"):
        suno_lib.load(path)


def test_unknown_voice(suno_lib: VoiceLibrary) -> None:
    with pytest.raises(VoiceError, match="unknown voice 'v2/xx_speaker_1'"):
        suno_lib.load("v2/xx_speaker_1")
    with pytest.raises(VoiceError, match="no voices are installed"):
        VoiceLibrary([]).load("v2/en_speaker_1")


# ------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda a: a.update(semantic_prompt=a["semantic_prompt"].astype(np.float32)), "integers"),
        (lambda a: a["semantic_prompt"].__setitem__(0, 10_000), r"0\.\.9999"),
        (lambda a: a["semantic_prompt"].__setitem__(0, -1), r"0\.\.9999"),
        (lambda a: a.update(semantic_prompt=a["semantic_prompt"][:0]), "empty"),
        (lambda a: a.update(semantic_prompt=a["semantic_prompt"].reshape(10, 10)), "1-D"),
        (lambda a: a["coarse_prompt"].__setitem__((1, 3), 1024), r"0\.\.1023"),
        (lambda a: a.update(coarse_prompt=a["coarse_prompt"][:1]), "2 rows"),
        (lambda a: a.update(coarse_prompt=a["coarse_prompt"][:, :100]), "frames for 100 semantic tokens"),
        (lambda a: a.update(fine_prompt=a["fine_prompt"][:7]), "8 rows"),
        (lambda a: a["fine_prompt"].__setitem__((7, 0), 5000), r"0\.\.1023"),
        (lambda a: a.pop("fine_prompt"), "lacks fine_prompt"),
    ],
)
def test_invalid_prompts_are_refused(change, match: str) -> None:
    arrays = _arrays()
    change(arrays)
    with pytest.raises(VoiceError, match=match):
        VoicePrompt.from_mapping(arrays, name="x")


def test_ratio_rule_is_suno_rounding() -> None:
    arrays = _arrays(n=100)
    for m in (146, 154):  # round(m / 100, 1) == 1.5
        ok = dict(arrays, coarse_prompt=np.zeros((2, m), np.int64), fine_prompt=np.zeros((8, m), np.int64))
        VoicePrompt.from_mapping(ok)
    for m in (144, 156):
        bad = dict(arrays, coarse_prompt=np.zeros((2, m), np.int64))
        with pytest.raises(VoiceError):
            VoicePrompt.from_mapping(bad)


# ------------------------------------------------------------------------------------------- HF layout


def _hf_root(root: Path, names: list[str]) -> Path:
    index: dict = {"repo_or_path": "somewhere/else"}
    for i, name in enumerate(names):
        entry = {}
        for key, arr in _arrays(seed=i).items():
            rel = f"speaker_embeddings/{name}_{key}.npy"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            np.save(root / rel, arr)
            entry[key] = rel
        index[name] = entry
    (root / "speaker_embeddings_path.json").write_text(json.dumps(index))
    return root


def test_hf_layout(tmp_path: Path) -> None:
    lib = VoiceLibrary([_hf_root(tmp_path, ["v2/en_speaker_0", "announcer"])])
    assert lib.list() == ["announcer", "v2/en_speaker_0"]
    voice = lib.load("v2/en_speaker_0")
    assert np.array_equal(voice.fine_prompt, _arrays(seed=0)["fine_prompt"])


def test_hf_cache_snapshot_links_into_blobs_are_allowed(tmp_path: Path) -> None:
    """In the HF cache, snapshot files are links to ../../blobs/<hash>: legitimate, not an escape."""
    repo = tmp_path / "models--suno--bark-small"
    snap = _hf_root(repo / "snapshots" / "abc123", ["v2/en_speaker_0"])
    (repo / "blobs").mkdir()
    for i, f in enumerate(sorted((snap / "speaker_embeddings").rglob("*.npy"))):
        blob = repo / "blobs" / f"blob{i}"
        f.rename(blob)
        f.symlink_to(os.path.relpath(blob, f.parent))
    assert VoiceLibrary([snap]).load("v2/en_speaker_0").semantic_prompt.shape == (100,)


@pytest.mark.parametrize("bad_path", ["../outside.npy", "/etc/passwd", "speaker_embeddings/../../outside.npy"])
def test_hf_index_cannot_point_outside(tmp_path: Path, bad_path: str) -> None:
    root = _hf_root(tmp_path / "root", ["v1"])
    np.save(tmp_path / "outside.npy", np.zeros(3, np.int64))
    index = json.loads((root / "speaker_embeddings_path.json").read_text())
    index["v1"]["semantic_prompt"] = bad_path
    (root / "speaker_embeddings_path.json").write_text(json.dumps(index))
    with pytest.raises(VoiceError, match="unsafe"):
        VoiceLibrary([root]).load("v1")


# ------------------------------------------------------------------------------------------- path safety


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "v2/../../x",
        "v2/../en_speaker_6",
        "..",
        ".",
        "./v2/en_speaker_6",
        "v2//en_speaker_6",
        "v2\\en_speaker_6",
        "..\\..\\x",
        "en_speaker_6\x00",
        "C:/x",
        "v2/en speaker",
        "~/x",
        "x" * 201,
        "",
    ],
)
def test_unsafe_names_are_refused(suno_lib: VoiceLibrary, name: str) -> None:
    with pytest.raises(VoiceError):
        check_voice_name(name)
    with pytest.raises(VoiceError):
        suno_lib.load(name)


def test_symlink_escaping_the_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "voices", tmp_path / "secret"
    _write_npz(root / "good.npz", _arrays())
    target = _write_npz(outside / "stolen.npz", _arrays(seed=1))
    (root / "evil.npz").symlink_to(target)
    (root / "sub").symlink_to(outside, target_is_directory=True)
    lib = VoiceLibrary([root])
    assert lib.list() == ["good"]
    for name in ("evil", "sub/stolen"):
        with pytest.raises(VoiceError, match="outside the voice directory"):
            lib.load(name)
    inner = _write_npz(root / "real" / "inner.npz", _arrays(seed=2))
    (root / "alias.npz").symlink_to(inner)  # a link that stays inside the root is fine
    assert lib.load("alias").semantic_prompt.shape == (100,)


def test_first_root_wins(tmp_path: Path) -> None:
    _write_npz(tmp_path / "a" / "v.npz", _arrays(seed=0))
    _write_npz(tmp_path / "b" / "v.npz", _arrays(seed=1))
    lib = VoiceLibrary([tmp_path / "a", tmp_path / "b"])
    assert np.array_equal(lib.load("v").semantic_prompt, _arrays(seed=0)["semantic_prompt"])
    with pytest.raises(VoiceError, match="not found"):
        VoiceLibrary([tmp_path / "missing"])


def test_pickled_npz_is_refused(tmp_path: Path) -> None:
    arrays = {k: v.astype(object) for k, v in _arrays().items()}
    path = tmp_path / "pickled.npz"
    np.savez(path, **arrays)
    with pytest.raises(VoiceError, match="cannot read"):
        load_voice_file(path)

"""Voice presets ("history prompts"): validation and a path-safe library (numpy only).

A preset is three token arrays: `semantic_prompt` (n,), `coarse_prompt` (2, m)
and `fine_prompt` (8, m'). They come as Suno's `.npz` files (the `bark` package
ships 271 under `bark/assets/prompts/`, v1 names at the top, `v2/` below) or in
the Hugging Face layout (`speaker_embeddings_path.json` naming three `.npy`
files per voice).

Voice names arrive from the network, so a name is never trusted as a path:
it must match a strict allowlist, may not climb out with `..`, and whatever
file it names must resolve inside the library's root after following links.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import constants as C

PROMPT_KEYS = ("semantic_prompt", "coarse_prompt", "fine_prompt")
HF_INDEX = "speaker_embeddings_path.json"
MAX_NAME_LEN = 200
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-./]+$")
# Suno: round(coarse_len / semantic_len, 1) == round(75 / 49.9, 1) == 1.5
_COARSE_PER_SEMANTIC = round(C.SEMANTIC_TO_COARSE_RATIO / C.N_COARSE_CODEBOOKS, 1)


class VoiceError(ValueError):
    """Unknown voice, unsafe voice name, or arrays that are not a valid Bark prompt."""


def _as_tokens(name: str, value: Any, ndim: int, high: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise VoiceError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise VoiceError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > high):
        raise VoiceError(f"{name} values must lie in 0..{high}, got {arr.min()}..{arr.max()}")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    out.setflags(write=False)  # presets are cached and shared between requests
    return out


@dataclass(frozen=True, eq=False)
class VoicePrompt:
    """One validated preset; arrays are read-only int64.

    Checks are Suno's asserts from `generate_text_semantic`, `generate_coarse` and `generate_fine`.
    """

    semantic_prompt: np.ndarray
    coarse_prompt: np.ndarray
    fine_prompt: np.ndarray
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        sem = _as_tokens("semantic_prompt", self.semantic_prompt, 1, C.SEMANTIC_VOCAB_SIZE - 1)
        coarse = _as_tokens("coarse_prompt", self.coarse_prompt, 2, C.CODEBOOK_SIZE - 1)
        fine = _as_tokens("fine_prompt", self.fine_prompt, 2, C.CODEBOOK_SIZE - 1)
        if sem.shape[0] == 0:
            raise VoiceError("semantic_prompt is empty")
        if coarse.shape[0] != C.N_COARSE_CODEBOOKS:
            raise VoiceError(f"coarse_prompt must have {C.N_COARSE_CODEBOOKS} rows, got shape {coarse.shape}")
        if round(coarse.shape[1] / sem.shape[0], 1) != _COARSE_PER_SEMANTIC:
            raise VoiceError(
                f"coarse_prompt has {coarse.shape[1]} frames for {sem.shape[0]} semantic tokens; "
                f"Bark needs about {_COARSE_PER_SEMANTIC} frames per token"
            )
        if fine.shape[0] != C.N_FINE_CODEBOOKS:
            raise VoiceError(f"fine_prompt must have {C.N_FINE_CODEBOOKS} rows, got shape {fine.shape}")
        object.__setattr__(self, "semantic_prompt", sem)
        object.__setattr__(self, "coarse_prompt", coarse)
        object.__setattr__(self, "fine_prompt", fine)

    @classmethod
    def from_mapping(cls, arrays: Mapping[str, Any], name: str = "") -> VoicePrompt:
        missing = [k for k in PROMPT_KEYS if k not in arrays]
        if missing:
            raise VoiceError(f"voice {name or '<unnamed>'} lacks {', '.join(missing)}")
        try:
            return cls(*(arrays[k] for k in PROMPT_KEYS), name=name)
        except VoiceError as e:
            raise VoiceError(f"voice {name or '<unnamed>'}: {e}") from e

    def to_dict(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in PROMPT_KEYS}


def load_voice_file(path: str | Path) -> VoicePrompt:
    """A Suno `.npz` preset given by path. Only for trusted callers (the offline CLI), never for services."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in PROMPT_KEYS if k in data.files}
    except (OSError, ValueError, EOFError) as e:
        raise VoiceError(f"{p}: cannot read voice preset ({e})") from e
    return VoicePrompt.from_mapping(arrays, name=str(p))


def check_voice_name(name: str) -> str:
    """Return `name` if it is a safe relative voice name, else raise VoiceError."""
    if not isinstance(name, str) or not name:
        raise VoiceError("voice name is empty")
    if len(name) > MAX_NAME_LEN:
        raise VoiceError(f"voice name longer than {MAX_NAME_LEN} characters")
    if not _NAME_RE.match(name):  # also rules out NUL, backslashes, drive letters, whitespace
        raise VoiceError(f"voice name {name!r} has characters outside [A-Za-z0-9_-./]")
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise VoiceError(f"voice name {name!r} must be relative, without empty, '.' or '..' segments")
    return name


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    real = os.path.realpath(path)
    return any(os.path.commonpath([real, os.path.realpath(r)]) == os.path.realpath(r) for r in roots)


class _NpzRoot:
    """A directory tree of Suno `.npz` presets; names are paths without the suffix."""

    def __init__(self, root: Path):
        self.root = root

    def names(self) -> list[str]:
        found = []
        for p in self.root.rglob("*.npz"):
            rel = p.relative_to(self.root).with_suffix("").as_posix()
            if _is_safe(rel) and _inside(p, [self.root]):
                found.append(rel)
        return found

    def find(self, name: str) -> VoicePrompt | None:
        *dirs, leaf = name.split("/")
        path = self.root.joinpath(*dirs, leaf + ".npz")
        if not path.is_file():
            return None
        if not _inside(path, [self.root]):
            raise VoiceError(f"voice {name!r} resolves outside the voice directory")
        return _named(load_voice_file(path), name)


class _HFRoot:
    """The Hugging Face layout: speaker_embeddings_path.json maps each name to three .npy files."""

    def __init__(self, root: Path):
        self.root = root
        index = root / HF_INDEX
        try:
            spec = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise VoiceError(f"{index}: cannot read ({e})") from e
        if not isinstance(spec, dict):
            raise VoiceError(f"{index}: expected a JSON object")
        self.index = {k: v for k, v in spec.items() if k != "repo_or_path" and isinstance(v, dict)}
        # In the HF cache a snapshot's files are links into the repo's sibling blobs/ directory.
        self.allowed = [root]
        if root.parent.name == "snapshots":
            self.allowed.append(root.parent.parent / "blobs")

    def names(self) -> list[str]:
        return [n for n in self.index if _is_safe(n)]

    def find(self, name: str) -> VoicePrompt | None:
        entry = self.index.get(name)
        if entry is None:
            return None
        arrays = {}
        for key in PROMPT_KEYS:
            rel = entry.get(key)
            if not isinstance(rel, str) or not _is_safe(rel):
                raise VoiceError(f"{self.root / HF_INDEX}: unsafe or missing {key} path for voice {name!r}")
            path = self.root / rel
            if not path.is_file() or not _inside(path, self.allowed):
                raise VoiceError(f"voice {name!r}: {key} file {rel} is missing or outside the voice directory")
            try:
                arrays[key] = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise VoiceError(f"voice {name!r}: cannot read {rel} ({e})") from e
        return VoicePrompt.from_mapping(arrays, name=name)


def _is_safe(name: str) -> bool:
    try:
        check_voice_name(name)
    except VoiceError:
        return False
    return True


def _named(prompt: VoicePrompt, name: str) -> VoicePrompt:
    return VoicePrompt(prompt.semantic_prompt, prompt.coarse_prompt, prompt.fine_prompt, name=name)


class VoiceLibrary:
    """Named presets from one or more roots; the first root that has a name wins.

    A root holding `speaker_embeddings_path.json` is read in the HF layout, any other
    directory as a tree of Suno `.npz` files. Loaded presets are cached (they are read-only).
    """

    def __init__(self, roots: Iterable[str | Path]):
        self._roots: list[_NpzRoot | _HFRoot] = []
        for r in roots:
            root = Path(r)
            if not root.is_dir():
                raise VoiceError(f"{root}: voice directory not found")
            self._roots.append(_HFRoot(root) if (root / HF_INDEX).is_file() else _NpzRoot(root))
        self._cache: dict[str, VoicePrompt] = {}

    def list(self) -> list[str]:
        """All voice names, sorted."""
        return sorted({n for root in self._roots for n in root.names()})

    def load(self, name: str, *, allow_file: bool = False) -> VoicePrompt:
        """A preset by name (`v2/en_speaker_6`, `announcer`).

        `allow_file=True` (the offline CLI only) also accepts a path to an `.npz` file.
        """
        if name.endswith(".npz"):
            if not allow_file:
                raise VoiceError(f"voice {name!r}: give a voice name, not a file path")
            if not Path(name).is_file():
                raise VoiceError(f"voice file {name} not found")
            return load_voice_file(name)
        check_voice_name(name)
        if name in self._cache:
            return self._cache[name]
        for root in self._roots:
            prompt = root.find(name)
            if prompt is not None:
                self._cache[name] = prompt
                return prompt
        known = self.list()
        hint = f"; known voices include {', '.join(known[:5])}" if known else "; no voices are installed"
        raise VoiceError(f"unknown voice {name!r}{hint}")

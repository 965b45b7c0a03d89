"""Voice prompts as arrays: what a Suno `.npz` preset holds, sent inline and returned by the server.

A voice the server generated (no preset: Bark picked a random speaker) comes back in
`summary.voice_prompt` when `return_voice_prompt=True`; send it back as `voice_prompt=` to keep
that voice in the next request, session or conversation, or save it as an `.npz` preset.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from barkstream.v1 import common_pb2, tts_pb2

KEYS = ("semantic_prompt", "coarse_prompt", "fine_prompt")
VoicePromptLike = tts_pb2.VoicePrompt | Mapping[str, Any] | str | Path


def _array_pb(array: Any, out: common_pb2.TokenArray) -> None:
    arr = np.asarray(array)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"voice prompt arrays must hold integers, got {arr.dtype}")
    out.shape.extend(arr.shape)
    out.values.extend(arr.astype(np.int64).ravel().tolist())


def to_voice_prompt(value: VoicePromptLike) -> tts_pb2.VoicePrompt:
    """A VoicePrompt message from itself, a mapping of the three arrays, or an `.npz` path."""
    if isinstance(value, tts_pb2.VoicePrompt):
        return value
    if isinstance(value, str | Path):
        with np.load(value, allow_pickle=False) as data:
            value = {k: data[k] for k in KEYS if k in data.files}
    missing = [k for k in KEYS if k not in value]
    if missing:
        raise ValueError(f"voice prompt lacks {', '.join(missing)} (expected {', '.join(KEYS)})")
    msg = tts_pb2.VoicePrompt()
    for key, field in zip(KEYS, (msg.semantic, msg.coarse, msg.fine), strict=True):
        _array_pb(value[key], field)
    return msg


def voice_prompt_arrays(msg: tts_pb2.VoicePrompt) -> dict[str, np.ndarray]:
    """The three arrays of a VoicePrompt message, as a Suno preset names them."""
    return {key: np.asarray(field.values, np.int64).reshape(tuple(field.shape))
            for key, field in zip(KEYS, (msg.semantic, msg.coarse, msg.fine), strict=True)}


def save_voice_prompt(msg: tts_pb2.VoicePrompt, path: str | Path) -> Path:
    """Write a VoicePrompt as a Suno `.npz` preset (what `barkstream generate --voice FILE.npz` reads)."""
    path = Path(path)
    np.savez(path, **voice_prompt_arrays(msg))
    return path

"""What a caller can get wrong in a request, checked before any model work.

Every check raises InvalidRequest (INVALID_ARGUMENT at the RPC edge) with a message that
names the field and says what to change. Synthesize and the streaming-input sessions share
these: the options both requests carry (`stream_options`), the text limits and segmentation.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bark.params import GenerationParams
from ..bark.schedule import SegmentPolicy, schedule_segments
from ..bark.segment import DEFAULT_MAX_SEGMENT_TOKENS
from ..bark.tokenizer import BarkTokenizer
from ..bark.voices import VoiceLibrary, VoicePrompt
from ..common import convert
from ..common.errors import InvalidRequest
from .formats import AudioFormat, resolve_format
from .options import resolve_voice

MAX_REQUEST_ID_LEN = 128


@dataclass(frozen=True)
class SessionLimits:
    """A real-time session's bounds (StreamingSynthesize); each has its own status when reached."""

    max_piece_chars: int = 4000
    max_buffered_chars: int = 4000
    max_segments_ahead: int = 3
    idle_timeout_s: float = 60.0
    max_session_s: float = 1800.0
    max_clears: int = 10  # within clear_window_s
    clear_window_s: float = 1.0


@dataclass(frozen=True)
class OrchestratorLimits:
    max_text_chars: int = 4000
    max_segments: int = 64
    max_segment_tokens: int = DEFAULT_MAX_SEGMENT_TOKENS
    session: SessionLimits = SessionLimits()


@dataclass(frozen=True)
class StreamOptions:
    """The validated options of a stream: what SynthesizeRequest and SessionConfig both carry."""

    request_id: str
    voice_name: str
    voice: VoicePrompt | None
    params: GenerationParams
    seed: int | None
    format: AudioFormat


def stream_options(msg: Any, voices: VoiceLibrary) -> StreamOptions:
    """A SynthesizeRequest or SessionConfig -> StreamOptions (raises InvalidRequest or VoiceError)."""
    fmt = resolve_format(msg.encoding, msg.sample_rate_hz, msg.chunk_duration_ms, msg.bit_rate_bps)
    params = convert.generation_params_from_pb(msg.params)
    voice = resolve_voice(voices, msg.voice, msg.voice_prompt)  # a preset name or inline arrays
    return StreamOptions(checked_request_id(msg.request_id) or uuid.uuid4().hex, msg.voice, voice, params,
                         convert.seed_from_pb(msg), fmt)


def checked_request_id(value: str) -> str:
    """The caller's request id, if it can travel as gRPC metadata (printable ASCII) to the stages and logs."""
    if len(value) > MAX_REQUEST_ID_LEN or not all(" " <= c <= "~" for c in value):
        raise InvalidRequest(f"request_id must be at most {MAX_REQUEST_ID_LEN} printable ASCII characters")
    return value


def check_text(text: str, limits: OrchestratorLimits) -> None:
    if not text.strip():
        raise InvalidRequest("text is empty: send some words to speak")
    if len(text) > limits.max_text_chars:
        raise InvalidRequest(f"text has {len(text)} characters; the limit is {limits.max_text_chars}: "
                             "split it into several requests")
    if "\x00" in text:
        raise InvalidRequest("text contains NUL characters: remove them")


def segment_ids(text: str, tokenizer: BarkTokenizer, limits: OrchestratorLimits,
                policy: SegmentPolicy | None = None) -> list[np.ndarray]:
    """Checked text -> the token ids of its segments (the policy's schedule; default latency-aware)."""
    check_text(text, limits)
    segments = schedule_segments(text, tokenizer.count, policy or SegmentPolicy(max_tokens=limits.max_segment_tokens))
    ids = [np.asarray(tokenizer.encode(s), dtype=np.int64) for s in segments]
    ids = [i for i in ids if len(i)]
    if not ids:
        raise InvalidRequest("text has nothing Bark can read (no tokens): send words")
    if len(ids) > limits.max_segments:
        raise InvalidRequest(f"text makes {len(ids)} segments; the limit is {limits.max_segments}: "
                             "send shorter text")
    return ids

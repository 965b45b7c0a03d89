"""Request options both public RPCs share: the voice (a preset or inline arrays), the voice to
return, and the segmentation policy. Protobuf in, validated core values out.
"""

from __future__ import annotations

from barkstream.v1 import tts_pb2

from ..bark.incremental import DEFAULT_MAX_WAIT_S, MAX_MAX_WAIT_MS, MIN_MAX_WAIT_MS
from ..bark.schedule import MAX_SEGMENT_TOKENS, Schedule, SegmentPolicy
from ..bark.voices import VoiceLibrary, VoicePrompt
from ..common import convert
from ..common.errors import InvalidRequest

# An inline prompt's size limit: about 40 s of speech (Suno's presets hold under 15 s; the
# models read at most the last 256 semantic tokens and 630 coarse frames of it).
MAX_PROMPT_SEMANTIC = 2048
MAX_PROMPT_FRAMES = 3072


def resolve_voice(voices: VoiceLibrary, name: str, prompt: tts_pb2.VoicePrompt | None) -> VoicePrompt | None:
    """The request's voice: a preset by name, inline arrays, or None (at most one of the two)."""
    inline = prompt is not None and any(not convert.is_empty(a) for a in (prompt.semantic, prompt.coarse,
                                                                           prompt.fine))
    if name and inline:
        raise InvalidRequest("set either voice (a preset name) or voice_prompt (inline arrays), not both")
    if inline:
        return voice_prompt_from_pb(prompt)
    return voices.load(name) if name else None


def voice_prompt_from_pb(msg: tts_pb2.VoicePrompt) -> VoicePrompt:
    """Inline arrays -> a VoicePrompt, checked like a preset file, within the size limit."""
    semantic = convert.semantic_from_pb(msg.semantic, "voice_prompt.semantic")
    coarse = convert.coarse_from_pb(msg.coarse, "voice_prompt.coarse")
    fine = convert.fine_from_pb(msg.fine, "voice_prompt.fine")
    if semantic.shape[0] > MAX_PROMPT_SEMANTIC or max(coarse.shape[1], fine.shape[1]) > MAX_PROMPT_FRAMES:
        raise InvalidRequest(f"voice_prompt is too long: at most {MAX_PROMPT_SEMANTIC} semantic tokens and "
                             f"{MAX_PROMPT_FRAMES} coarse/fine frames (about 40 s of speech)")
    return VoicePrompt(semantic, coarse, fine, name="<inline>")  # VoiceError (INVALID_ARGUMENT) if inconsistent


def voice_prompt_to_pb(prompt: VoicePrompt, out: tts_pb2.VoicePrompt) -> None:
    convert.array_to_pb(prompt.semantic_prompt, out.semantic)
    convert.array_to_pb(prompt.coarse_prompt, out.coarse)
    convert.array_to_pb(prompt.fine_prompt, out.fine)


def segment_policy_from_pb(msg: tts_pb2.Segmentation, default_max_tokens: int) -> SegmentPolicy:
    if msg.schedule not in (0, *Schedule._value2member_map_):
        raise InvalidRequest(f"segmentation.schedule={msg.schedule} is unknown: use LATENCY_AWARE (1) or FIXED (2)")
    if msg.max_tokens > MAX_SEGMENT_TOKENS:
        raise InvalidRequest(f"segmentation.max_tokens={msg.max_tokens} is out of range: use 1..{MAX_SEGMENT_TOKENS} "
                             f"(or 0 for {default_max_tokens})")
    schedule = Schedule(msg.schedule) if msg.schedule else Schedule.LATENCY_AWARE
    return SegmentPolicy(schedule, msg.max_tokens or default_max_tokens)


def max_wait_from_pb(msg: tts_pb2.Segmentation) -> float:
    """Seconds text may wait for a boundary in a session (0 = the default)."""
    if msg.max_wait_ms == 0:
        return DEFAULT_MAX_WAIT_S
    if not MIN_MAX_WAIT_MS <= msg.max_wait_ms <= MAX_MAX_WAIT_MS:
        raise InvalidRequest(f"segmentation.max_wait_ms={msg.max_wait_ms} is out of range: use "
                             f"{MIN_MAX_WAIT_MS}..{MAX_MAX_WAIT_MS} (or 0 for {DEFAULT_MAX_WAIT_S * 1000:.0f})")
    return msg.max_wait_ms / 1000

"""Friendly keyword arguments -> a SynthesizeRequest.

Most callers want a handful of knobs, not three nested parameter messages, so `synthesize`
and `stream` take flat keywords (`greedy=True`, `semantic_temp=0.6`, `max_duration=5`) and
this module places them in the right stage messages. A full `SynthesisParams` can still be
passed as `params=` for anything the keywords do not cover; keywords are applied on top.
Unknown keywords are a TypeError, like any Python function, so a typo never passes silently
as "use the default".
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from barkstream.v1 import common_pb2, tts_pb2

from .voice import VoicePromptLike, to_voice_prompt

AudioEncoding = tts_pb2.AudioEncoding

FORMATS: dict[str, int] = {
    "wav": tts_pb2.AUDIO_ENCODING_WAV,
    "pcm16": tts_pb2.AUDIO_ENCODING_PCM_S16LE,
    "f32": tts_pb2.AUDIO_ENCODING_FLOAT32_LE,
    "mulaw": tts_pb2.AUDIO_ENCODING_MULAW,
    "alaw": tts_pb2.AUDIO_ENCODING_ALAW,
    "ogg": tts_pb2.AUDIO_ENCODING_OGG_OPUS,  # Opus in Ogg: a playable .ogg/.opus
    "opus": tts_pb2.AUDIO_ENCODING_OPUS,  # raw Opus packets (WebRTC), in AudioChunk.packets
    "mp3": tts_pb2.AUDIO_ENCODING_MP3,
    "flac": tts_pb2.AUDIO_ENCODING_FLAC,
    "aac": tts_pb2.AUDIO_ENCODING_AAC,
}
_FORMAT_ALIASES = {
    "pcm": "pcm16", "s16": "pcm16", "s16le": "pcm16", "pcm_s16le": "pcm16", "int16": "pcm16",
    "float32": "f32", "f32le": "f32", "float32_le": "f32", "float": "f32",
    "ulaw": "mulaw", "u-law": "mulaw", "mu-law": "mulaw", "pcmu": "mulaw", "a-law": "alaw", "pcma": "alaw",
    "ogg_opus": "ogg", "oggopus": "ogg", "adts": "aac",
}

Format = str | int | None


def parse_format(value: Format) -> int:
    """A FORMATS name ('wav', 'pcm16', 'mp3', ...) or an AudioEncoding value -> the AudioEncoding number.

    None and AUDIO_ENCODING_UNSPECIFIED mean the server's default (PCM 16-bit).
    """
    if value is None:
        return tts_pb2.AUDIO_ENCODING_UNSPECIFIED
    if isinstance(value, bool):
        raise TypeError(f"format={value!r}: use one of {', '.join(FORMATS)}")
    if isinstance(value, int):
        if value not in AudioEncoding.values():
            raise ValueError(f"format={value}: not an AudioEncoding value ({', '.join(AudioEncoding.keys())})")
        return value
    key = value.strip().lower()
    key = _FORMAT_ALIASES.get(key, key)
    if key.upper() in AudioEncoding.keys():  # the proto name, e.g. "AUDIO_ENCODING_WAV"
        return AudioEncoding.Value(key.upper())
    if key not in FORMATS:
        raise ValueError(f"format={value!r}: use one of {', '.join(FORMATS)}")
    return FORMATS[key]


def format_name(encoding: int) -> str:
    """AudioEncoding number -> its FORMATS name (the CLI's names)."""
    for name, value in FORMATS.items():
        if value == encoding:
            return name
    return AudioEncoding.Name(encoding)


def _sampling_stages(params: tts_pb2.SynthesisParams) -> tuple[common_pb2.SamplingParams, ...]:
    return params.semantic.sampling, params.coarse.sampling


def _greedy(p: tts_pb2.SynthesisParams, v: Any) -> None:
    for s in _sampling_stages(p):
        s.greedy = bool(v)
    p.fine.greedy = bool(v)


def _set(path: str) -> Callable[[tts_pb2.SynthesisParams, Any], None]:
    *parents, leaf = path.split(".")

    def apply(p: tts_pb2.SynthesisParams, v: Any) -> None:
        msg: Any = p
        for name in parents:
            msg = getattr(msg, name)
        setattr(msg, leaf, v)

    return apply


def _both(leaf: str) -> Callable[[tts_pb2.SynthesisParams, Any], None]:
    def apply(p: tts_pb2.SynthesisParams, v: Any) -> None:
        for s in _sampling_stages(p):
            setattr(s, leaf, v)

    return apply


# keyword -> (setter, what it means), the single list of friendly parameters (and their docs).
PARAMS: dict[str, tuple[Callable[[tts_pb2.SynthesisParams, Any], None], str]] = {
    "greedy": (_greedy, "argmax decoding in all three stages (deterministic; Suno-exact)"),
    "semantic_temp": (_set("semantic.sampling.temperature"), "semantic temperature (default 0.7)"),
    "coarse_temp": (_set("coarse.sampling.temperature"), "coarse temperature (default 0.7)"),
    "fine_temp": (_set("fine.temperature"), "fine temperature (default 0.5)"),
    "top_k": (_both("top_k"), "top-k for the semantic and coarse stages (default off)"),
    "top_p": (_both("top_p"), "top-p for the semantic and coarse stages (default off)"),
    "min_eos_p": (_set("semantic.min_eos_p"), "stop a segment once p(EOS) reaches this (default 0.2)"),
    "max_duration": (_set("semantic.max_gen_duration_s"), "most seconds of audio per text segment"),
}


def build_params(base: tts_pb2.SynthesisParams | None, kwargs: dict[str, Any]) -> tts_pb2.SynthesisParams:
    """Apply the friendly keywords (None = leave unset) on a copy of `base`."""
    params = tts_pb2.SynthesisParams()
    if base is not None:
        if not isinstance(base, tts_pb2.SynthesisParams):
            raise TypeError(f"params: expected barkstream.client.SynthesisParams, got {type(base).__name__}")
        params.CopyFrom(base)
    for key, value in kwargs.items():
        if key not in PARAMS:
            close = difflib.get_close_matches(key, PARAMS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(PARAMS)}"
            raise TypeError(f"unexpected keyword argument {key!r}{hint}")
        if value is None:
            continue
        try:
            PARAMS[key][0](params, value)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{key}={value!r}: {e}") from None
    return params


SCHEDULES: dict[str, int] = {
    "latency-aware": tts_pb2.SEGMENT_SCHEDULE_LATENCY_AWARE,
    "fixed": tts_pb2.SEGMENT_SCHEDULE_FIXED,
}


def build_segmentation(schedule: str | None = None, max_segment_tokens: int | None = None,
                       max_wait_ms: int | None = None) -> tts_pb2.Segmentation:
    """schedule: 'latency-aware' (the server's default) or 'fixed'; the rest 0/None = the server's default."""
    if schedule is not None and schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}: use one of {', '.join(SCHEDULES)}")
    return tts_pb2.Segmentation(schedule=SCHEDULES[schedule] if schedule else 0,
                                max_tokens=max_segment_tokens or 0, max_wait_ms=max_wait_ms or 0)


def _check_seed(seed: int | None) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed={seed!r}: use a non-negative integer (or None for random)")


def build_request(text: str, *, voice: str | None = None, seed: int | None = None, format: Format = None,
                  sample_rate: int | None = None, chunk_ms: int | None = None, request_id: str | None = None,
                  bit_rate: int | None = None, params: tts_pb2.SynthesisParams | None = None,
                  schedule: str | None = None, max_segment_tokens: int | None = None,
                  voice_prompt: VoicePromptLike | None = None, return_voice_prompt: bool = False,
                  **kwargs: Any) -> tts_pb2.SynthesizeRequest:
    """The request `synthesize`/`stream` send. Server-side rules (ranges, voices) stay server-side.

    bit_rate: bits per second for opus/ogg/mp3/aac (None: the codec's default).
    schedule / max_segment_tokens: how the text is cut into segments (see build_segmentation).
    voice_prompt: a voice as arrays (a Suno .npz's three arrays, or `summary.voice_prompt` of an
    earlier stream) instead of a preset name. return_voice_prompt: the summary carries the voice
    this stream spoke with, to send back later.
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    _check_seed(seed)
    request = tts_pb2.SynthesizeRequest(
        text=text, voice=voice or "", encoding=parse_format(format), sample_rate_hz=sample_rate or 0,
        chunk_duration_ms=chunk_ms or 0, request_id=request_id or "", bit_rate_bps=bit_rate or 0,
        params=build_params(params, kwargs), segmentation=build_segmentation(schedule, max_segment_tokens),
        return_voice_prompt=return_voice_prompt)
    if voice_prompt is not None:
        request.voice_prompt.CopyFrom(to_voice_prompt(voice_prompt))
    if seed is not None:
        request.seed = seed
    return request


def build_config(*, voice: str | None = None, seed: int | None = None, format: Format = None,
                 sample_rate: int | None = None, chunk_ms: int | None = None, request_id: str | None = None,
                 bit_rate: int | None = None, params: tts_pb2.SynthesisParams | None = None,
                 schedule: str | None = None, max_segment_tokens: int | None = None, max_wait_ms: int | None = None,
                 voice_prompt: VoicePromptLike | None = None, return_voice_prompt: bool = False,
                 **kwargs: Any) -> tts_pb2.SessionConfig:
    """A session's configuration: the same options as build_request, plus max_wait_ms (how long
    text may wait for a sentence to end, while nothing is playing, before it is spoken anyway)."""
    _check_seed(seed)
    config = tts_pb2.SessionConfig(
        voice=voice or "", encoding=parse_format(format), sample_rate_hz=sample_rate or 0,
        chunk_duration_ms=chunk_ms or 0, request_id=request_id or "", bit_rate_bps=bit_rate or 0,
        params=build_params(params, kwargs), segmentation=build_segmentation(schedule, max_segment_tokens, max_wait_ms),
        return_voice_prompt=return_voice_prompt)
    if voice_prompt is not None:
        config.voice_prompt.CopyFrom(to_voice_prompt(voice_prompt))
    if seed is not None:
        config.seed = seed
    return config

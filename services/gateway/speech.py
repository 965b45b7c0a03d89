"""OpenAI's `POST /v1/audio/speech` request -> a SynthesizeRequest.

What barkstream cannot honour is refused with a 400 that says so, rather than ignored:
`speed` other than 1.0 (Bark speaks at its own pace) and non-empty `instructions` (Bark takes
no style prompt). `model` must be one of the configured names (OpenAI's are accepted so that
clients with a hard-coded model work); every accepted name is the same Bark.
Extensions beyond OpenAI's schema (the `openai` package sends them with `extra_body=`): `seed`
(same seed, same audio), `greedy` (argmax at every stage) and `max_duration` (seconds of audio
per segment at most, Suno's `max_gen_duration_s`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from barkstream.v1 import tts_pb2

from .body import text_field
from .errors import invalid

# response_format -> (encoding, sample rate (0 = the orchestrator's default for it), content type)
FORMATS: dict[str, tuple[int, int, str]] = {
    "mp3": (tts_pb2.AUDIO_ENCODING_MP3, 0, "audio/mpeg"),
    "opus": (tts_pb2.AUDIO_ENCODING_OGG_OPUS, 0, "audio/ogg"),
    "aac": (tts_pb2.AUDIO_ENCODING_AAC, 0, "audio/aac"),
    "flac": (tts_pb2.AUDIO_ENCODING_FLAC, 0, "audio/flac"),
    "wav": (tts_pb2.AUDIO_ENCODING_WAV, 24000, "audio/wav"),
    "pcm": (tts_pb2.AUDIO_ENCODING_PCM_S16LE, 24000, "audio/pcm"),  # OpenAI's pcm: 24 kHz s16le
}
DEFAULT_FORMAT = "mp3"  # OpenAI's default
STREAM_FORMATS = ("audio", "sse")
KNOWN_FIELDS = frozenset({"model", "input", "voice", "response_format", "speed", "stream_format", "instructions",
                          "seed", "greedy", "max_duration"})


@dataclass(frozen=True)
class SpeechRequest:
    synthesize: tts_pb2.SynthesizeRequest
    response_format: str
    stream_format: str

    @property
    def content_type(self) -> str:
        return "text/event-stream" if self.stream_format == "sse" else FORMATS[self.response_format][2]


def resolve_voice(value: Any, aliases: dict[str, str]) -> str:
    """An alias (OpenAI's names) -> its preset; a preset name passes as it is (the orchestrator checks it).
    OpenAI's newer `{"id": ...}` voice objects are accepted too."""
    if isinstance(value, dict):
        value = value.get("id")
    body = {"voice": value}
    name = text_field(body, "voice", required=True).strip()
    if not name:
        raise invalid("'voice' is empty: name a voice (GET /v1/audio/voices lists them)", "voice")
    return aliases.get(name, aliases.get(name.lower(), name))


def parse_speech(body: dict[str, Any], aliases: dict[str, str], models: tuple[str, ...]) -> SpeechRequest:
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise invalid(f"Unrecognized request argument supplied: {', '.join(unknown)}", unknown[0],
                      "unknown_parameter")
    model = text_field(body, "model", required=True)
    if model not in models:
        raise invalid(f"model {model!r} is not served here; use one of {', '.join(models)}", "model",
                      "model_not_found")
    text = text_field(body, "input", required=True)
    if not text.strip():
        raise invalid("'input' is empty: give some words to speak", "input")
    voice = resolve_voice(body.get("voice"), aliases)
    fmt = text_field(body, "response_format", DEFAULT_FORMAT) or DEFAULT_FORMAT
    if fmt not in FORMATS:
        raise invalid(f"response_format {fmt!r}: use one of {', '.join(FORMATS)}", "response_format")
    stream_format = text_field(body, "stream_format", "audio") or "audio"
    if stream_format not in STREAM_FORMATS:
        raise invalid(f"stream_format {stream_format!r}: use audio or sse", "stream_format")
    _check_speed(body.get("speed"))
    if text_field(body, "instructions").strip():
        raise invalid("'instructions' cannot be honoured: Bark takes no style prompt (leave it empty)",
                      "instructions", "unsupported_parameter")
    encoding, rate, _ = FORMATS[fmt]
    request = tts_pb2.SynthesizeRequest(text=text, voice=voice, encoding=encoding, sample_rate_hz=rate)
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise invalid("'seed' must be an integer in 0..2**64-1", "seed", "invalid_type")
        request.seed = seed
    greedy = body.get("greedy")
    if greedy is not None and not isinstance(greedy, bool):
        raise invalid("'greedy' must be true or false", "greedy", "invalid_type")
    if greedy:
        set_greedy(request.params)
    max_duration = body.get("max_duration")
    if max_duration is not None:
        if isinstance(max_duration, bool) or not isinstance(max_duration, int | float) \
                or not math.isfinite(max_duration) or max_duration <= 0:
            raise invalid("'max_duration' must be a positive number of seconds", "max_duration", "invalid_type")
        request.params.semantic.max_gen_duration_s = max_duration
    return SpeechRequest(request, fmt, stream_format)


def set_greedy(params: tts_pb2.SynthesisParams) -> None:
    """Argmax at every stage: the deterministic mode (Suno-exact)."""
    params.semantic.sampling.greedy = params.coarse.sampling.greedy = params.fine.greedy = True


def _check_speed(speed: Any) -> None:
    if speed is None:
        return
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not math.isfinite(speed):
        raise invalid("'speed' must be a number", "speed", "invalid_type")
    if speed != 1.0:
        raise invalid(f"speed={speed} cannot be honoured: Bark speaks at its own pace (only 1.0)", "speed",
                      "unsupported_parameter")

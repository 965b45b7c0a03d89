"""The output formats a client may ask for, and the checks that turn a request's fields into one.

An encoding, a sample rate, a chunk duration and (for the lossy codecs) a bit rate; 0 means
the encoding's default everywhere. Each codec's limits are stated here, once: the rates it
can carry and the bit rates it takes, so that a request it cannot do is refused with
INVALID_ARGUMENT naming the field and what is allowed, before any model work.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from barkstream.services.common.errors import InvalidRequest
from barkstream.v1 import tts_pb2

NATIVE_SAMPLE_RATE = 24_000
SUPPORTED_SAMPLE_RATES = (8_000, 16_000, 22_050, 24_000, 44_100, 48_000)
OPUS_SAMPLE_RATES = (8_000, 12_000, 16_000, 24_000, 48_000)  # what libopus encodes
MIN_CHUNK_MS = 20
MAX_CHUNK_MS = 500
DEFAULT_CHUNK_MS = 100

# Opus: libopus's own range; 32 kb/s is transparent-ish for mono speech.
OPUS_BIT_RATES = (6_000, 510_000)
# MP3 (CBR) takes only the bit rates of its frame headers: MPEG-1 at 32/44.1/48 kHz,
# MPEG-2 and 2.5 below that.
MP3_BIT_RATES_MPEG1 = tuple(k * 1000 for k in (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320))
MP3_BIT_RATES_MPEG2 = tuple(k * 1000 for k in (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160))
# AAC-LC: an ADTS frame of 1024 samples holds at most 6144 bits per channel, so 6 bits per sample.
AAC_MIN_BIT_RATE = 16_000
DEFAULT_BIT_RATES = {"OPUS": 32_000, "OGG_OPUS": 32_000, "MP3": 64_000, "AAC": 64_000}


class Encoding(enum.IntEnum):
    """Output encodings, numbered as barkstream.v1.AudioEncoding (0 = unspecified)."""

    PCM_S16LE = tts_pb2.AUDIO_ENCODING_PCM_S16LE
    FLOAT32_LE = tts_pb2.AUDIO_ENCODING_FLOAT32_LE
    WAV = tts_pb2.AUDIO_ENCODING_WAV  # 16-bit PCM behind a streaming RIFF header
    MULAW = tts_pb2.AUDIO_ENCODING_MULAW
    ALAW = tts_pb2.AUDIO_ENCODING_ALAW
    OGG_OPUS = tts_pb2.AUDIO_ENCODING_OGG_OPUS
    OPUS = tts_pb2.AUDIO_ENCODING_OPUS
    MP3 = tts_pb2.AUDIO_ENCODING_MP3
    FLAC = tts_pb2.AUDIO_ENCODING_FLAC
    AAC = tts_pb2.AUDIO_ENCODING_AAC

    @property
    def is_raw_pcm(self) -> bool:
        """Encoded here with numpy; the others go through a codec library (codecs.py)."""
        return self in (Encoding.PCM_S16LE, Encoding.FLOAT32_LE, Encoding.WAV)

    @property
    def sample_rates(self) -> tuple[int, ...]:
        return OPUS_SAMPLE_RATES if self in (Encoding.OPUS, Encoding.OGG_OPUS) else SUPPORTED_SAMPLE_RATES

    @property
    def default_sample_rate(self) -> int:
        if self in (Encoding.MULAW, Encoding.ALAW):
            return 8_000  # what telephony carries
        if self in (Encoding.OPUS, Encoding.OGG_OPUS):
            return 48_000  # what WebRTC and Ogg Opus players expect
        return NATIVE_SAMPLE_RATE


@dataclass(frozen=True)
class AudioFormat:
    """A validated output format (mono). bit_rate_bps: 0 for the encodings without one."""

    encoding: Encoding = Encoding.PCM_S16LE
    sample_rate_hz: int = NATIVE_SAMPLE_RATE
    chunk_duration_ms: int = DEFAULT_CHUNK_MS
    bit_rate_bps: int = 0

    @property
    def samples_per_chunk(self) -> int:
        return round(self.sample_rate_hz * self.chunk_duration_ms / 1000)


def resolve_format(encoding: int = 0, sample_rate_hz: int = 0, chunk_duration_ms: int = 0,
                   bit_rate_bps: int = 0) -> AudioFormat:
    """Validate a request's format fields (0 = default) into an AudioFormat.

    Raises InvalidRequest (a ValueError) naming the field and what is allowed.
    """
    if encoding == 0:
        resolved = Encoding.PCM_S16LE
    elif encoding in Encoding._value2member_map_:
        resolved = Encoding(encoding)
    else:
        choices = ", ".join(f"{e.name} ({e.value})" for e in Encoding)
        raise InvalidRequest(f"encoding={encoding} is unknown: use {choices}, "
                             "or leave it unset for PCM_S16LE")
    rate = sample_rate_hz or resolved.default_sample_rate
    if rate not in resolved.sample_rates:
        rates = ", ".join(str(r) for r in resolved.sample_rates)
        raise InvalidRequest(f"sample_rate_hz={sample_rate_hz} is not supported for {resolved.name}: use one of "
                             f"{rates} (or 0 for {resolved.default_sample_rate})")
    chunk_ms = chunk_duration_ms or DEFAULT_CHUNK_MS
    if not MIN_CHUNK_MS <= chunk_ms <= MAX_CHUNK_MS:
        raise InvalidRequest(f"chunk_duration_ms={chunk_duration_ms} is out of range: use "
                             f"{MIN_CHUNK_MS}..{MAX_CHUNK_MS} (or 0 for {DEFAULT_CHUNK_MS})")
    return AudioFormat(resolved, rate, chunk_ms, _bit_rate(resolved, rate, bit_rate_bps))


def _bit_rate(encoding: Encoding, rate: int, requested: int) -> int:
    """The bit rate to encode at: the request's, checked against the codec's limits, or the default."""
    if encoding.name not in DEFAULT_BIT_RATES:
        if requested:
            lossy = ", ".join(DEFAULT_BIT_RATES)
            raise InvalidRequest(f"bit_rate_bps={requested} does not apply to {encoding.name}: leave it 0 "
                                 f"(a bit rate is for {lossy})")
        return 0
    if encoding is Encoding.MP3:
        allowed = MP3_BIT_RATES_MPEG1 if rate >= 32_000 else MP3_BIT_RATES_MPEG2
        if requested and requested not in allowed:
            raise InvalidRequest(f"bit_rate_bps={requested} is not an MP3 bit rate at {rate} Hz: use one of "
                                 f"{', '.join(str(b) for b in allowed)} (or 0 for {DEFAULT_BIT_RATES['MP3']})")
        return requested or DEFAULT_BIT_RATES["MP3"]
    low, high = OPUS_BIT_RATES if encoding is not Encoding.AAC else (AAC_MIN_BIT_RATE, 6 * rate)
    default = min(DEFAULT_BIT_RATES[encoding.name], high)
    if requested and not low <= requested <= high:
        raise InvalidRequest(f"bit_rate_bps={requested} is out of range for {encoding.name} at {rate} Hz: use "
                             f"{low}..{high} (or 0 for {default})")
    return requested or default

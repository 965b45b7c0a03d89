"""Output audio for a Synthesize stream: format validation, resampling, chunking, encoding.

numpy + soxr only. Bark produces float32 mono PCM at 24 kHz; a client asks for an encoding,
a sample rate and a chunk duration. Resampling uses soxr's streaming resampler, whose output
over a segment fed in pieces equals its one-shot `soxr.resample` of the whole segment.

Each text segment is resampled on its own (the resampler is flushed at `flush()`), because
Bark's segments are independent waveforms that are simply concatenated; this also means the
last chunk of a segment can be sent as soon as the segment ends, rather than waiting for the
next segment's audio to fill it.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np
import soxr

from barkstream.client.audio import to_pcm16
from barkstream.services.common.errors import InvalidRequest
from barkstream.v1 import tts_pb2

NATIVE_SAMPLE_RATE = 24_000
SUPPORTED_SAMPLE_RATES = (8_000, 16_000, 22_050, 24_000, 44_100, 48_000)
MIN_CHUNK_MS = 20
MAX_CHUNK_MS = 500
DEFAULT_CHUNK_MS = 100

# RIFF and data sizes of a WAV header sent before the length is known. 0xFFFFFFFF is what
# streaming producers (ffmpeg, sox) write; readers treat it as "until end of stream".
UNKNOWN_WAV_SIZE = 0xFFFFFFFF
WAV_HEADER_BYTES = 44


class Encoding(enum.IntEnum):
    """Output encodings, numbered as barkstream.v1.AudioEncoding (0 = unspecified)."""

    PCM_S16LE = tts_pb2.AUDIO_ENCODING_PCM_S16LE
    FLOAT32_LE = tts_pb2.AUDIO_ENCODING_FLOAT32_LE
    WAV = tts_pb2.AUDIO_ENCODING_WAV  # 16-bit PCM behind a streaming RIFF header

    @property
    def bytes_per_sample(self) -> int:
        return 4 if self is Encoding.FLOAT32_LE else 2


@dataclass(frozen=True)
class AudioFormat:
    """A validated output format (mono)."""

    encoding: Encoding = Encoding.PCM_S16LE
    sample_rate_hz: int = NATIVE_SAMPLE_RATE
    chunk_duration_ms: int = DEFAULT_CHUNK_MS

    @property
    def samples_per_chunk(self) -> int:
        return round(self.sample_rate_hz * self.chunk_duration_ms / 1000)

    @property
    def bytes_per_sample(self) -> int:
        return self.encoding.bytes_per_sample


def resolve_format(encoding: int = 0, sample_rate_hz: int = 0, chunk_duration_ms: int = 0) -> AudioFormat:
    """Validate a request's format fields (0 = default) into an AudioFormat.

    Raises InvalidRequest (a ValueError) saying which value to use instead.
    """
    if encoding == 0:
        resolved_encoding = Encoding.PCM_S16LE
    elif encoding in Encoding._value2member_map_:
        resolved_encoding = Encoding(encoding)
    else:
        choices = ", ".join(f"{e.name} ({e.value})" for e in Encoding)
        raise InvalidRequest(f"encoding={encoding} is unknown: use {choices}, "
                             "or leave it unset for PCM_S16LE")
    rate = sample_rate_hz or NATIVE_SAMPLE_RATE
    if rate not in SUPPORTED_SAMPLE_RATES:
        rates = ", ".join(str(r) for r in SUPPORTED_SAMPLE_RATES)
        raise InvalidRequest(f"sample_rate_hz={sample_rate_hz} is not supported: use one of {rates} "
                             f"(or 0 for {NATIVE_SAMPLE_RATE}, Bark's native rate)")
    chunk_ms = chunk_duration_ms or DEFAULT_CHUNK_MS
    if not MIN_CHUNK_MS <= chunk_ms <= MAX_CHUNK_MS:
        raise InvalidRequest(f"chunk_duration_ms={chunk_duration_ms} is out of range: use "
                             f"{MIN_CHUNK_MS}..{MAX_CHUNK_MS} (or 0 for {DEFAULT_CHUNK_MS})")
    return AudioFormat(resolved_encoding, rate, chunk_ms)


def wav_header(sample_rate_hz: int, num_samples: int | None = None) -> bytes:
    """44-byte RIFF/WAVE header for mono 16-bit PCM; `num_samples=None` = unknown length."""
    block_align = 2
    data_size = UNKNOWN_WAV_SIZE if num_samples is None else num_samples * block_align
    riff_size = UNKNOWN_WAV_SIZE if num_samples is None else WAV_HEADER_BYTES - 8 + data_size
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", riff_size, b"WAVE", b"fmt ", 16, 1, 1,
                       sample_rate_hz, sample_rate_hz * block_align, block_align, 16, b"data", data_size)


def encode_samples(samples: np.ndarray, encoding: Encoding) -> bytes:
    """Float samples -> bytes. int16: clipped to [-1, 1], scaled by 32767, rounded to nearest."""
    if encoding is Encoding.FLOAT32_LE:
        return samples.astype("<f4", copy=False).tobytes()
    return to_pcm16(samples).tobytes()


@dataclass(frozen=True)
class EncodedChunk:
    data: bytes
    num_samples: int
    start_sample: int  # in the whole stream, at the output rate


class AudioEncoder:
    """Turns a stream's 24 kHz float PCM into encoded chunks of the requested duration.

    push() returns only full chunks; flush() ends a segment, returning the rest (full chunks
    and one shorter chunk). The encoder can be pushed again after flush() (next segment).
    """

    def __init__(self, fmt: AudioFormat, input_rate_hz: int = NATIVE_SAMPLE_RATE,
                 quality: str = "HQ") -> None:
        self.format = fmt
        self._resampler = (None if fmt.sample_rate_hz == input_rate_hz else
                           soxr.ResampleStream(input_rate_hz, fmt.sample_rate_hz, 1, dtype="float32",
                                               quality=quality))
        self._pending = np.empty(0, np.float32)
        self._samples_out = 0

    @property
    def samples_out(self) -> int:
        """Samples emitted so far, at the output rate."""
        return self._samples_out

    def header(self) -> bytes:
        """Bytes to send before the first chunk: a streaming WAV header, or nothing."""
        return wav_header(self.format.sample_rate_hz) if self.format.encoding is Encoding.WAV else b""

    def push(self, pcm: np.ndarray) -> list[EncodedChunk]:
        samples = np.ascontiguousarray(pcm, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"expected mono PCM of shape (n,), got {samples.shape}")
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return self._emit(samples, end=False)

    def flush(self) -> list[EncodedChunk]:
        """End of a segment: drain the resampler and emit everything buffered."""
        tail = np.empty(0, np.float32)
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(tail, last=True)
            self._resampler.clear()
        return self._emit(tail, end=True)

    def _emit(self, samples: np.ndarray, end: bool) -> list[EncodedChunk]:
        buffered = np.concatenate([self._pending, samples]) if self._pending.size else samples
        size = self.format.samples_per_chunk
        stop = len(buffered) if end else len(buffered) - len(buffered) % size
        chunks = [self._chunk(buffered[i:i + size]) for i in range(0, stop, size)]
        self._pending = buffered[stop:].copy()
        return chunks

    def _chunk(self, samples: np.ndarray) -> EncodedChunk:
        chunk = EncodedChunk(encode_samples(samples, self.format.encoding), len(samples), self._samples_out)
        self._samples_out += len(samples)
        return chunk

"""Output audio for a stream: resampling, chunking, and encoding each chunk as it is cut.

Bark produces float32 mono PCM at 24 kHz; a client asks for a format (formats.py). PCM,
float and WAV are encoded here with numpy; the compressed encodings by a codec (codecs.py),
fed chunk by chunk and finished at the end of the stream. Resampling uses soxr's streaming resampler, whose output
over a segment fed in pieces equals its one-shot `soxr.resample` of the whole segment.

Each text segment is resampled on its own (the resampler is flushed at `flush()`), because
Bark's segments are independent waveforms that are simply concatenated; this also means the
last chunk of a segment can be sent as soon as the segment ends, rather than waiting for the
next segment's audio to fill it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import soxr

from barkstream.client.audio import to_pcm16

from .codecs import CodecEncoder
from .formats import NATIVE_SAMPLE_RATE, AudioFormat, Encoding

# RIFF and data sizes of a WAV header sent before the length is known. 0xFFFFFFFF is what
# streaming producers (ffmpeg, sox) write; readers treat it as "until end of stream".
UNKNOWN_WAV_SIZE = 0xFFFFFFFF
WAV_HEADER_BYTES = 44


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
    num_samples: int  # PCM samples pushed for this chunk (a codec's bytes may lag them by its delay)
    start_sample: int  # in the whole stream, at the output rate
    packets: tuple[bytes, ...] = ()  # OPUS: the chunk's Opus packets (data is empty)


class AudioEncoder:
    """Turns a stream's 24 kHz float PCM into encoded chunks of the requested duration.

    push() returns only full chunks; flush() ends a segment, returning the rest (full chunks
    and one shorter chunk). The encoder can be pushed again after flush() (next segment);
    flush(end_of_stream=True) also finishes the codec, whose last bytes ride on the last chunk
    (a chunk of 0 samples when the segment ended on a chunk boundary). close() frees the codec
    of a stream that ends early.
    """

    def __init__(self, fmt: AudioFormat, input_rate_hz: int = NATIVE_SAMPLE_RATE,
                 quality: str = "HQ") -> None:
        self.format = fmt
        self._resampler = (None if fmt.sample_rate_hz == input_rate_hz else
                           soxr.ResampleStream(input_rate_hz, fmt.sample_rate_hz, 1, dtype="float32",
                                               quality=quality))
        self._codec = None if fmt.encoding.is_raw_pcm else CodecEncoder(fmt)
        self._pending = np.empty(0, np.float32)
        self._samples_out = 0

    @property
    def samples_out(self) -> int:
        """Samples emitted so far, at the output rate."""
        return self._samples_out

    @property
    def delay_samples(self) -> int:
        """Encoder delay at the start of the decoded stream (Opus pre-skip, MP3/AAC padding); 0 for PCM."""
        return 0 if self._codec is None else self._codec.delay_samples

    def header(self) -> bytes:
        """Bytes to send before the first chunk: a streaming WAV header, a codec's header, or nothing."""
        if self._codec is not None:
            return self._codec.header()
        return wav_header(self.format.sample_rate_hz) if self.format.encoding is Encoding.WAV else b""

    def push(self, pcm: np.ndarray) -> list[EncodedChunk]:
        samples = np.ascontiguousarray(pcm, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"expected mono PCM of shape (n,), got {samples.shape}")
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return self._emit(samples, end=False)

    def flush(self, end_of_stream: bool = False) -> list[EncodedChunk]:
        """End of a segment: drain the resampler and emit everything buffered; at the end of the stream
        also the codec's final frames or page."""
        tail = np.empty(0, np.float32)
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(tail, last=True)
            self._resampler.clear()
        chunks = self._emit(tail, end=True)
        if end_of_stream and self._codec is not None:
            final = self._codec.finish()
            last = chunks.pop() if chunks else EncodedChunk(b"", 0, self._samples_out)
            chunks.append(EncodedChunk(last.data + final.data, last.num_samples, last.start_sample,
                                       last.packets + final.packets))
        return chunks

    def close(self) -> None:
        if self._codec is not None:
            self._codec.close()

    def _emit(self, samples: np.ndarray, end: bool) -> list[EncodedChunk]:
        buffered = np.concatenate([self._pending, samples]) if self._pending.size else samples
        size = self.format.samples_per_chunk
        stop = len(buffered) if end else len(buffered) - len(buffered) % size
        chunks = [self._chunk(buffered[i:i + size]) for i in range(0, stop, size)]
        self._pending = buffered[stop:].copy()
        return chunks

    def _chunk(self, samples: np.ndarray) -> EncodedChunk:
        if self._codec is None:
            chunk = EncodedChunk(encode_samples(samples, self.format.encoding), len(samples), self._samples_out)
        else:
            encoded = self._codec.push(samples)
            chunk = EncodedChunk(encoded.data, len(samples), self._samples_out, encoded.packets)
        self._samples_out += len(samples)
        return chunk

"""What a caller gets back: `AudioChunk`s while streaming, one `Audio` for a whole synthesis.

numpy only; the compressed encodings decode and encode through transcode.py (optional PyAV).

Both keep the bytes exactly as the server sent them (`data`, in the requested encoding, so
they can go straight to a player or a socket) and decode to numpy on demand (`samples`:
float32 in [-1, 1] for 16-bit audio, unclipped for float32 streams), because a player wants
the bytes and an application doing signal processing wants floats.
"""

from __future__ import annotations

import base64
import functools
import io
import struct
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from barkstream.v1 import tts_pb2

INT16_SCALE = 32767.0
WAV_HEADER_BYTES = 44
_RAW_SUFFIXES = {".pcm", ".raw", ".s16", ".f32", ".bin"}


_PCM_ENCODINGS = (tts_pb2.AUDIO_ENCODING_PCM_S16LE, tts_pb2.AUDIO_ENCODING_FLOAT32_LE, tts_pb2.AUDIO_ENCODING_WAV)


def is_compressed(encoding: int) -> bool:
    """Chunks of a codec's frames (G.711, Opus, MP3, FLAC, AAC), not PCM samples."""
    return encoding not in _PCM_ENCODINGS and encoding != tts_pb2.AUDIO_ENCODING_UNSPECIFIED


def bytes_per_sample(encoding: int) -> int:
    """Bytes per sample of a chunk's data; 0 when it has no fixed size (the compressed encodings)."""
    if encoding in (tts_pb2.AUDIO_ENCODING_MULAW, tts_pb2.AUDIO_ENCODING_ALAW):
        return 1
    if is_compressed(encoding):
        return 0
    return 4 if encoding == tts_pb2.AUDIO_ENCODING_FLOAT32_LE else 2


def decode(data: bytes, encoding: int) -> np.ndarray:
    """PCM chunk bytes (never a container header) -> float32 samples."""
    if is_compressed(encoding):
        raise ValueError(f"{tts_pb2.AudioEncoding.Name(encoding)} chunks are codec frames, not samples: decode "
                         "the whole stream (Audio.samples, with barkstream[formats])")
    if encoding == tts_pb2.AUDIO_ENCODING_FLOAT32_LE:
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / INT16_SCALE


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples -> int16: clip to [-1, 1], scale by 32767, round to nearest.

    The one conversion the server, `barkstream generate` and the SDK share; it lives in the
    client package (numpy only) because the client may not import the server.
    """
    return np.rint(np.clip(samples, -1.0, 1.0) * INT16_SCALE).astype("<i2")


def wav_bytes(pcm16: np.ndarray, sample_rate: int) -> bytes:
    """A complete mono 16-bit WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.ascontiguousarray(pcm16, dtype="<i2").tobytes())
    return out.getvalue()


def finalize_wav_header(header: bytes, data_bytes: int) -> bytes:
    """Patch a streamed WAV header (sizes 0xFFFFFFFF) with the real sizes, once they are known."""
    if len(header) < WAV_HEADER_BYTES or header[:4] != b"RIFF":
        raise ValueError("not a WAV header: expected 44 bytes starting with RIFF")
    return (header[:4] + struct.pack("<I", len(header) - 8 + data_bytes) + header[8:40]
            + struct.pack("<I", data_bytes) + header[WAV_HEADER_BYTES:])


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """One piece of audio as it arrived.

    elapsed: seconds from the start of the call until this chunk reached the caller; the first
      chunk's `elapsed` is the time to first audio as the application sees it (the server's own
      figure, which leaves out the network and the client, is in the summary).
    """

    data: bytes = field(repr=False)
    num_samples: int
    sample_rate: int
    encoding: int
    segment_index: int
    sequence_number: int
    start_sample: int
    elapsed: float
    packets: tuple[bytes, ...] = field(default=(), repr=False)  # OPUS: the chunk's Opus packets

    @property
    def samples(self) -> np.ndarray:
        """The chunk's PCM samples (PCM encodings only: a codec's frames decode as a whole stream)."""
        return decode(self.data, self.encoding)

    @property
    def start_time(self) -> float:
        """Position of the chunk's first sample in the whole stream, in seconds."""
        return self.start_sample / self.sample_rate

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


@dataclass(frozen=True)
class Audio:
    """A finished synthesis.

    data: the audio bytes as received (no container header; OPUS: empty, see `packets`).
    num_samples: the PCM samples the stream carried. samples: float32 mono, decoded on first
    use (the compressed encodings need `barkstream[formats]`; delay dropped, so they line up
    with the PCM of the same request). header / summary: the server's StreamHeader and
    SynthesisSummary (timings, real-time factor, per-stage timings). time_to_first_audio:
    seconds until the first chunk reached the caller.
    """

    sample_rate: int
    encoding: int
    data: bytes = field(repr=False)
    header: tts_pb2.StreamHeader = field(repr=False)
    num_samples: int
    summary: tts_pb2.SynthesisSummary | None = field(default=None, repr=False)
    time_to_first_audio: float | None = None
    packets: tuple[bytes, ...] = field(default=(), repr=False)

    @functools.cached_property
    def samples(self) -> np.ndarray:
        if is_compressed(self.encoding):
            from .transcode import decode_stream

            return decode_stream(self.header.container_header + self.data, list(self.packets), self.encoding,
                                 self.sample_rate, self.header.encoder_delay_samples, self.num_samples)
        return decode(self.data, self.encoding)

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def request_id(self) -> str:
        return self.header.request_id

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (f"Audio({self.duration:.2f} s, {self.num_samples} samples at {self.sample_rate} Hz, "
                f"{tts_pb2.AudioEncoding.Name(self.encoding)}, request_id={self.request_id!r})")

    def pcm16(self) -> np.ndarray:
        """The samples as int16 (exactly the server's bytes for 16-bit encodings)."""
        if self.encoding in (tts_pb2.AUDIO_ENCODING_PCM_S16LE, tts_pb2.AUDIO_ENCODING_WAV):
            return np.frombuffer(self.data, dtype="<i2")
        return to_pcm16(self.samples)

    def to_wav(self) -> bytes:
        """A complete 16-bit WAV file."""
        return wav_bytes(self.pcm16(), self.sample_rate)

    def save(self, path: str | Path) -> Path:
        """Write a file by its suffix: `.wav` 16-bit WAV; `.ogg/.opus` Ogg Opus; `.mp3`; `.flac`; `.aac`
        (ADTS); `.ul/.ulaw` and `.al/.alaw` raw G.711; `.pcm/.raw/.s16/.f32/.bin` the raw bytes received.

        A stream received in the file's own format is written as received (header and chunks);
        any other combination is decoded and encoded again, which needs `barkstream[formats]`.
        Raw files hold `data` as received (its encoding is `self.encoding`); any other suffix
        is refused rather than guessed.
        """
        from .transcode import FILE_FORMATS

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".wav":
            path.write_bytes(self.to_wav())
        elif suffix in _RAW_SUFFIXES:
            path.write_bytes(self.data)
        elif suffix in FILE_FORMATS:
            fmt = FILE_FORMATS[suffix]
            if fmt.encoding == self.encoding:
                path.write_bytes(self.header.container_header + self.data)
            else:
                from .transcode import encode_file

                path.write_bytes(encode_file(self.samples, self.sample_rate, fmt))
        else:
            raise ValueError(f"{path}: use .wav, .ogg/.opus, .mp3, .flac, .aac, .ulaw, .alaw, or .pcm/.raw/.f32 "
                             "for the raw stream bytes")
        return path

    def _repr_html_(self) -> str:
        """An audio player in Jupyter."""
        b64 = base64.b64encode(self.to_wav()).decode("ascii")
        return f'<audio controls src="data:audio/wav;base64,{b64}"></audio>'

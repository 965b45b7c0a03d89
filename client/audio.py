"""What a caller gets back: `AudioChunk`s while streaming, one `Audio` for a whole synthesis.

Both keep the bytes exactly as the server sent them (`data`, in the requested encoding, so
they can go straight to a player or a socket) and decode to numpy on demand (`samples`:
float32 in [-1, 1] for 16-bit audio, unclipped for float32 streams), because a player wants
the bytes and an application doing signal processing wants floats.
"""

from __future__ import annotations

import base64
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


def bytes_per_sample(encoding: int) -> int:
    return 4 if encoding == tts_pb2.AUDIO_ENCODING_FLOAT32_LE else 2


def decode(data: bytes, encoding: int) -> np.ndarray:
    """Chunk bytes (never a container header) -> float32 samples."""
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

    @property
    def samples(self) -> np.ndarray:
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

    samples: float32 mono samples. data: the audio bytes as received (no container header).
    header / summary: the server's StreamHeader and SynthesisSummary (timings, real-time
    factor, per-stage timings). time_to_first_audio: seconds until the first chunk reached
    the caller.
    """

    samples: np.ndarray
    sample_rate: int
    encoding: int
    data: bytes = field(repr=False)
    header: tts_pb2.StreamHeader = field(repr=False)
    summary: tts_pb2.SynthesisSummary | None = field(default=None, repr=False)
    time_to_first_audio: float | None = None

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def request_id(self) -> str:
        return self.header.request_id

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (f"Audio({self.duration:.2f} s, {len(self.samples)} samples at {self.sample_rate} Hz, "
                f"{tts_pb2.AudioEncoding.Name(self.encoding)}, request_id={self.request_id!r})")

    def pcm16(self) -> np.ndarray:
        """The samples as int16 (exactly the server's bytes for 16-bit encodings)."""
        if self.encoding != tts_pb2.AUDIO_ENCODING_FLOAT32_LE:
            return np.frombuffer(self.data, dtype="<i2")
        return to_pcm16(self.samples)

    def to_wav(self) -> bytes:
        """A complete 16-bit WAV file."""
        return wav_bytes(self.pcm16(), self.sample_rate)

    def save(self, path: str | Path) -> Path:
        """Write a file: `.wav` -> 16-bit WAV; `.pcm/.raw/.s16/.f32/.bin` -> the raw bytes received.

        Raw files hold `data` as received (its encoding is `self.encoding`); any other suffix
        is refused rather than guessed.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".wav":
            path.write_bytes(self.to_wav())
        elif suffix in _RAW_SUFFIXES:
            path.write_bytes(self.data)
        else:
            raise ValueError(f"{path}: use a .wav file, or .pcm/.raw/.f32 for the raw stream bytes")
        return path

    def _repr_html_(self) -> str:
        """An audio player in Jupyter."""
        b64 = base64.b64encode(self.to_wav()).decode("ascii")
        return f'<audio controls src="data:audio/wav;base64,{b64}"></audio>'

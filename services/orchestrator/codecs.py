"""Incremental encoders for the compressed encodings (G.711, Opus, Ogg Opus, MP3, FLAC, AAC), on PyAV.

PyAV's wheels carry FFmpeg with libopus, LAME, FLAC, AAC and G.711: no codec is written
here. An encoder is fed the stream's PCM chunk by chunk and returns, for each, the bytes (or
Opus packets) the codec finished with it, so audio leaves as it is made; `finish()` drains
the codec and writes the final frame or page, so that the header bytes and every chunk's
bytes, concatenated in order, are a valid file. `close()` frees a cancelled stream's codec.

Framing: raw codec packets where they are self-framing (G.711 bytes, MP3 frames, FLAC frames
behind a STREAMINFO header, Opus packets kept apart), FFmpeg's muxer where a container is
the format (Ogg pages for Ogg Opus, ADTS headers for AAC). The Ogg muxer writes a page per
20 ms packet; FFmpeg holds the latest page back until the next one or the end.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from barkstream.client.audio import to_pcm16

from .formats import AudioFormat, Encoding

OPUS_HEAD_RATE = 48_000  # OpusHead's pre-skip counts samples at 48 kHz (RFC 7845)
# Samples of silence the encoders put before the audio (FFmpeg's `initial_padding` of these
# encoders; PyAV does not expose it): LAME's 576-sample delay plus the 529 of the MP3
# decoder's filterbank, and AAC-LC's one frame.
MP3_ENCODER_DELAY = 576 + 529
AAC_ENCODER_DELAY = 1024


@dataclass(frozen=True)
class CodecSpec:
    codec: str
    sample_format: str  # what the codec is fed: s16 from to_pcm16 (lossless paths) or float
    muxer: str | None = None  # None: raw packets


CODECS = {
    Encoding.MULAW: CodecSpec("pcm_mulaw", "s16"),
    Encoding.ALAW: CodecSpec("pcm_alaw", "s16"),
    Encoding.OPUS: CodecSpec("libopus", "flt"),
    Encoding.OGG_OPUS: CodecSpec("libopus", "flt", muxer="ogg"),
    Encoding.MP3: CodecSpec("libmp3lame", "fltp"),
    Encoding.FLAC: CodecSpec("flac", "s16"),
    Encoding.AAC: CodecSpec("aac", "fltp", muxer="adts"),
}


@dataclass(frozen=True)
class Encoded:
    """What one push (or the finish) produced: bytes, or, for raw Opus, the packets kept apart."""

    data: bytes = b""
    packets: tuple[bytes, ...] = ()


class _Sink(io.RawIOBase):
    """Where a muxer writes; taken after each chunk."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # noqa: ANN001 - a buffer
        self._buffer += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


class CodecEncoder:
    """One stream's codec: push float PCM at the output rate, get what it encoded."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self.spec = CODECS[fmt.encoding]
        self.closed = False
        self._pts = 0
        self._sink = _Sink()
        self._container = None
        if self.spec.muxer is None:
            self._codec = av.CodecContext.create(self.spec.codec, "w")
            self._configure(self._codec)
            self._codec.open()
            self._encode_frame = self._codec.encode
        else:
            # flush_packets: every muxed packet reaches the sink at once (no 32 KiB I/O buffer);
            # page_duration: one Ogg page per Opus packet, so pages complete as audio arrives.
            options = {"flush_packets": "1", **({"page_duration": "20000"} if self.spec.muxer == "ogg" else {})}
            self._container = av.open(self._sink, "w", format=self.spec.muxer, options=options)
            stream = self._container.add_stream(self.spec.codec, rate=fmt.sample_rate_hz, layout="mono")
            self._codec = stream.codec_context
            self._configure(self._codec)
            self._container.start_encoding()
            self._encode_frame = stream.encode  # packets that know their stream, for the muxer
        self._header = self._sink.take() if self._container is not None else self._raw_header()

    def _configure(self, ctx) -> None:  # noqa: ANN001 - av's AudioCodecContext
        ctx.sample_rate = self.format.sample_rate_hz
        ctx.layout = "mono"
        ctx.format = self.spec.sample_format
        ctx.time_base = Fraction(1, self.format.sample_rate_hz)
        if self.format.bit_rate_bps:
            ctx.bit_rate = self.format.bit_rate_bps  # a fixed rate: LAME encodes CBR

    def _raw_header(self) -> bytes:
        if self.format.encoding is Encoding.FLAC:
            # "fLaC", then the STREAMINFO block the encoder made (flagged as the last metadata block).
            streaminfo = bytes(self._codec.extradata)[:34]
            return b"fLaC" + struct.pack(">I", 0x80 << 24 | len(streaminfo)) + streaminfo
        return b""

    def header(self) -> bytes:
        """Bytes before the first chunk: the Ogg OpusHead/OpusTags pages, FLAC's STREAMINFO, or nothing."""
        return self._header

    @property
    def delay_samples(self) -> int:
        """Samples (at the output rate) of encoder delay at the start of the decoded stream."""
        if self.spec.codec == "libopus":
            pre_skip = struct.unpack_from("<H", bytes(self._codec.extradata), 10)[0]
            return round(pre_skip * self.format.sample_rate_hz / OPUS_HEAD_RATE)
        return {"libmp3lame": MP3_ENCODER_DELAY, "aac": AAC_ENCODER_DELAY}.get(self.spec.codec, 0)

    def push(self, samples: np.ndarray) -> Encoded:
        """Encode a chunk of float PCM (shape (n,)); returns what the codec finished."""
        if not len(samples):
            return Encoded()
        if self.spec.sample_format == "s16":
            planes = to_pcm16(samples)[None, :]  # (1, n) int16, rounded like PCM_S16LE
            frame = av.AudioFrame.from_ndarray(planes, format="s16", layout="mono")
        else:
            planes = np.clip(samples, -1.0, 1.0).astype(np.float32)[None, :]  # (1, n)
            frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout="mono")
        frame.sample_rate = self.format.sample_rate_hz
        frame.pts = self._pts
        self._pts += len(samples)
        return self._encode(frame)

    def finish(self) -> Encoded:
        """End of stream: drain the codec; the container writes its last page or frame."""
        out = self._encode(None)
        if self._container is not None:
            self._container.close()
            out = Encoded(out.data + self._sink.take())
        self.closed = True
        return out

    def close(self) -> None:
        """Free the codec of a stream that ends early (cancelled, failed); its bytes are dropped."""
        if not self.closed:
            self.closed = True
            if self._container is not None:
                self._container.close()
            self._sink.take()

    def _encode(self, frame: av.AudioFrame | None) -> Encoded:
        packets = self._encode_frame(frame)
        if self._container is not None:
            for packet in packets:
                self._container.mux(packet)
            return Encoded(self._sink.take())
        chunks = tuple(bytes(p) for p in packets)
        if self.format.encoding is Encoding.OPUS:
            return Encoded(packets=chunks)
        return Encoded(b"".join(chunks))

"""Decoding and writing the compressed encodings on the client, with PyAV (`barkstream[formats]`).

Optional: the light client reads and writes PCM and WAV with numpy alone. PyAV is imported
only when compressed audio must be decoded (`Audio.samples` of an MP3 stream) or a file
written in a format other than the one received (`Audio.save("x.mp3")` of a PCM stream).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from barkstream.v1 import tts_pb2

E = tts_pb2
INSTALL_HINT = "pip install 'barkstream[formats]'"
OPUS_RATES = (8_000, 12_000, 16_000, 24_000, 48_000)


@dataclass(frozen=True)
class FileFormat:
    encoding: int  # the stream encoding whose bytes are already this file
    muxer: str
    codec: str


# File suffix -> how to write it (and which received encoding is that file byte for byte).
FILE_FORMATS = {
    ".ogg": FileFormat(E.AUDIO_ENCODING_OGG_OPUS, "ogg", "libopus"),
    ".opus": FileFormat(E.AUDIO_ENCODING_OGG_OPUS, "ogg", "libopus"),
    ".mp3": FileFormat(E.AUDIO_ENCODING_MP3, "mp3", "libmp3lame"),
    ".flac": FileFormat(E.AUDIO_ENCODING_FLAC, "flac", "flac"),
    ".aac": FileFormat(E.AUDIO_ENCODING_AAC, "adts", "aac"),
    ".ul": FileFormat(E.AUDIO_ENCODING_MULAW, "mulaw", "pcm_mulaw"),
    ".ulaw": FileFormat(E.AUDIO_ENCODING_MULAW, "mulaw", "pcm_mulaw"),
    ".al": FileFormat(E.AUDIO_ENCODING_ALAW, "alaw", "pcm_alaw"),
    ".alaw": FileFormat(E.AUDIO_ENCODING_ALAW, "alaw", "pcm_alaw"),
}
# The demuxer that reads each compressed stream's bytes.
_DEMUXERS = {E.AUDIO_ENCODING_OGG_OPUS: "ogg", E.AUDIO_ENCODING_MP3: "mp3", E.AUDIO_ENCODING_FLAC: "flac",
             E.AUDIO_ENCODING_AAC: "aac", E.AUDIO_ENCODING_MULAW: "mulaw", E.AUDIO_ENCODING_ALAW: "alaw"}


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise ImportError(f"compressed audio needs PyAV: {INSTALL_HINT}") from None
    return av


def decode_stream(data: bytes, packets: list[bytes], encoding: int, sample_rate: int, delay: int,
                  num_samples: int) -> np.ndarray:
    """A whole compressed stream -> float32 samples aligned with the PCM (delay dropped, padding cut)."""
    av = _av()
    if encoding == E.AUDIO_ENCODING_OPUS:
        decoder = av.CodecContext.create("opus", "r")
        decoder.sample_rate, decoder.layout = sample_rate, "mono"
        frames = [f for p in packets for f in decoder.decode(av.Packet(p))]
    else:
        options = {"sample_rate": str(sample_rate), "ch_layout": "mono"} if encoding in (
            E.AUDIO_ENCODING_MULAW, E.AUDIO_ENCODING_ALAW) else {}
        with av.open(io.BytesIO(data), "r", format=_DEMUXERS[encoding], options=options) as container:
            frames = list(container.decode(audio=0))
        delay = 0 if encoding == E.AUDIO_ENCODING_OGG_OPUS else delay  # Ogg's demuxer drops the pre-skip
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    planes = [f.to_ndarray().reshape(-1) for frame in frames for f in resampler.resample(frame)]
    samples = np.concatenate(planes).astype(np.float32) if planes else np.zeros(0, np.float32)
    return samples[delay:delay + num_samples]


def encode_file(samples: np.ndarray, sample_rate: int, fmt: FileFormat) -> bytes:
    """Float samples -> a complete file of `fmt` (Opus at its nearest rate, 48 kHz for 22.05/44.1)."""
    av = _av()
    rate = sample_rate if fmt.codec != "libopus" or sample_rate in OPUS_RATES else 48_000
    out = io.BytesIO()
    with av.open(out, "w", format=fmt.muxer) as container:
        stream = container.add_stream(fmt.codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.clip(samples, -1.0, 1.0).astype(np.float32)[None, :],  # (1, n)
                                           format="fltp", layout="mono")
        frame.sample_rate, frame.pts = sample_rate, 0
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(resampled):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()

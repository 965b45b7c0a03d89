"""Decoding encoded streams with decoders other than the ones that encoded them.

Files and byte streams go through Debian's `ffmpeg` command line (its demuxers and its own
decoders: the native Opus, MP3, AAC, FLAC and G.711 decoders, none of them libopus or LAME).
Raw Opus packets have no container the command line reads, so they go one by one through
FFmpeg's native `opus` decoder (not libopus, which encoded them).
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np

from barkstream.v1 import tts_pb2

E = tts_pb2

# The ffmpeg demuxer for each encoding's byte stream.
DEMUXERS = {
    E.AUDIO_ENCODING_MULAW: "mulaw", E.AUDIO_ENCODING_ALAW: "alaw", E.AUDIO_ENCODING_OGG_OPUS: "ogg",
    E.AUDIO_ENCODING_MP3: "mp3", E.AUDIO_ENCODING_FLAC: "flac", E.AUDIO_ENCODING_AAC: "aac",
    E.AUDIO_ENCODING_WAV: "wav",
}
# Samples per codec frame at `rate`: how far a decoded duration may differ from the PCM's.
FRAME_SAMPLES = {
    E.AUDIO_ENCODING_OGG_OPUS: lambda rate: rate // 50, E.AUDIO_ENCODING_OPUS: lambda rate: rate // 50,
    E.AUDIO_ENCODING_MP3: lambda rate: 1152 if rate >= 32_000 else 576, E.AUDIO_ENCODING_AAC: lambda rate: 1024,
}
# Waveform SNR floors (dB) on the test signals. G.711 quantizes to ~8 bits: about 38 dB
# measured, the issue asks 35. The lossy codecs code perceptually, not the waveform: at
# their default bit rates they measure 19-33 dB here, so these floors (a few dB under) catch
# what breaks a stream (a lost or doubled frame, a wrong rate or delay, clipping: all under
# 5 dB) without asserting more fidelity than the codec promises.
SNR_FLOOR_DB = {
    E.AUDIO_ENCODING_MULAW: 35.0, E.AUDIO_ENCODING_ALAW: 35.0, E.AUDIO_ENCODING_OGG_OPUS: 15.0,
    E.AUDIO_ENCODING_OPUS: 15.0, E.AUDIO_ENCODING_MP3: 18.0, E.AUDIO_ENCODING_AAC: 20.0,
}


def ffmpeg_decode(data: bytes, encoding: int, rate: int, sample_format: str = "f32le") -> np.ndarray:
    """An encoded byte stream -> mono samples at `rate` (float32, or int16 for s16le)."""
    assert shutil.which("ffmpeg"), "the tests need Debian's ffmpeg (apt-get install -y ffmpeg; .ci/run does)"
    raw_pcm = ["-ar", str(rate), "-ac", "1"] if encoding in (E.AUDIO_ENCODING_MULAW, E.AUDIO_ENCODING_ALAW) else []
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", DEMUXERS[encoding], *raw_pcm, "-i", "pipe:0",
           "-f", sample_format, "-ac", "1", "-ar", str(rate), "pipe:1"]
    out = subprocess.run(cmd, input=data, capture_output=True, check=True, timeout=60).stdout
    return np.frombuffer(out, "<f4" if sample_format == "f32le" else "<i2")


def opus_packets_decode(packets: list[bytes], rate: int) -> np.ndarray:
    import av

    decoder = av.CodecContext.create("opus", "r")  # FFmpeg's native decoder, not libopus
    decoder.sample_rate, decoder.layout = rate, "mono"
    frames = [f.to_ndarray().astype(np.float32).reshape(-1) for p in packets for f in decoder.decode(av.Packet(p))]
    return np.concatenate(frames) if frames else np.zeros(0, np.float32)


def best_lag(decoded: np.ndarray, reference: np.ndarray, max_lag: int = 3000) -> int:
    """The offset of `reference` in `decoded` (least squared error over the overlap)."""
    n = len(reference)
    errors = [float(np.mean((decoded[lag:lag + n] - reference[:len(decoded[lag:lag + n])]) ** 2))
              for lag in range(min(max_lag, max(0, len(decoded) - n // 2)))]
    return int(np.argmin(errors))


def snr_db(decoded: np.ndarray, reference: np.ndarray) -> float:
    n = min(len(decoded), len(reference))
    noise = float(np.sum((decoded[:n] - reference[:n]) ** 2))
    return 10 * np.log10(float(np.sum(reference[:n] ** 2)) / max(noise, 1e-20))

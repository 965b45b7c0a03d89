"""Output audio: format validation, chunking, resampling against one-shot soxr, WAV containers."""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest
import soxr

from barkstream.client.audio import finalize_wav_header
from barkstream.services.common.errors import InvalidRequest
from barkstream.services.orchestrator.audio import UNKNOWN_WAV_SIZE, AudioEncoder, encode_samples, wav_header
from barkstream.services.orchestrator.formats import (
    NATIVE_SAMPLE_RATE,
    SUPPORTED_SAMPLE_RATES,
    AudioFormat,
    Encoding,
    resolve_format,
)
from barkstream.v1 import tts_pb2


def speechlike(n: int, seed: int = 0) -> np.ndarray:
    """Band-limited noise plus tones, peak ~0.6: like decoded speech, not a pure sine."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / NATIVE_SAMPLE_RATE
    tones = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.15 * np.sin(2 * np.pi * 3100 * t)
    noise = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same") * 0.1
    return (tones + noise).astype(np.float32)


def feed(encoder: AudioEncoder, pcm: np.ndarray, piece_sizes: list[int]) -> list:
    chunks, start = [], 0
    for size in piece_sizes:
        chunks += encoder.push(pcm[start:start + size])
        start += size
    chunks += encoder.push(pcm[start:])
    return chunks + encoder.flush()


def decode(chunks, encoding: Encoding) -> np.ndarray:
    data = b"".join(c.data for c in chunks)
    if encoding is Encoding.FLOAT32_LE:
        return np.frombuffer(data, "<f4")
    return np.frombuffer(data, "<i2").astype(np.float32) / 32767


# ---------------------------------------------------------------- validation


def test_encoding_numbers_match_proto():
    for encoding in Encoding:
        assert tts_pb2.AudioEncoding.Value(f"AUDIO_ENCODING_{encoding.name}") == encoding.value


def test_resolve_format_defaults():
    assert resolve_format() == AudioFormat(Encoding.PCM_S16LE, 24_000, 100)
    fmt = resolve_format(tts_pb2.AUDIO_ENCODING_WAV, 22_050, 25)
    assert (fmt.encoding, fmt.sample_rate_hz, fmt.chunk_duration_ms) == (Encoding.WAV, 22_050, 25)
    assert fmt.samples_per_chunk == 551  # round(551.25)


@pytest.mark.parametrize(("kwargs", "must_say"), [
    ({"sample_rate_hz": 11_025}, ["11025", "8000, 16000, 22050, 24000, 44100, 48000"]),
    ({"chunk_duration_ms": 10}, ["10", "20..500"]),
    ({"chunk_duration_ms": 501}, ["501", "20..500"]),
    ({"encoding": 99}, ["99", "PCM_S16LE", "FLOAT32_LE", "WAV", "MULAW", "OGG_OPUS", "AAC"]),
])
def test_resolve_format_errors_say_what_to_change(kwargs, must_say):
    with pytest.raises(InvalidRequest) as info:
        resolve_format(**kwargs)
    assert isinstance(info.value, ValueError)
    for text in must_say:
        assert text in str(info.value)


# ---------------------------------------------------------------- chunking


@pytest.mark.parametrize("rate", SUPPORTED_SAMPLE_RATES)
@pytest.mark.parametrize("chunk_ms", [20, 100, 500])
def test_chunks_have_the_requested_duration(rate, chunk_ms):
    fmt = resolve_format(tts_pb2.AUDIO_ENCODING_PCM_S16LE, rate, chunk_ms)
    pcm = speechlike(30_000)
    chunks = feed(AudioEncoder(fmt), pcm, [1, 319, 4800, 7, 960])
    assert abs(fmt.samples_per_chunk - rate * chunk_ms / 1000) <= 0.5
    assert all(c.num_samples == fmt.samples_per_chunk for c in chunks[:-1])
    assert 0 < chunks[-1].num_samples <= fmt.samples_per_chunk
    assert all(len(c.data) == c.num_samples * 2 for c in chunks)
    assert [c.start_sample for c in chunks] == list(np.cumsum([0] + [c.num_samples for c in chunks[:-1]]))
    resampled = pcm if rate == NATIVE_SAMPLE_RATE else soxr.resample(pcm, NATIVE_SAMPLE_RATE, rate)
    expected_total = len(resampled)
    assert sum(c.num_samples for c in chunks) == expected_total


def test_push_returns_only_full_chunks_and_flush_the_rest():
    encoder = AudioEncoder(resolve_format(chunk_duration_ms=20))  # 480 samples at 24 kHz
    assert encoder.push(np.zeros(479, np.float32)) == []
    chunks = encoder.push(np.zeros(500, np.float32))
    assert [c.num_samples for c in chunks] == [480, 480]
    assert [c.num_samples for c in encoder.flush()] == [19]
    assert encoder.flush() == []
    assert encoder.samples_out == 979


def test_segments_flush_separately_and_keep_one_timeline():
    fmt = resolve_format(tts_pb2.AUDIO_ENCODING_FLOAT32_LE, 16_000, 20)
    encoder = AudioEncoder(fmt)
    a, b = speechlike(10_000, 1), speechlike(7_000, 2)
    first = feed(encoder, a, [2_000])
    second = feed(encoder, b, [333])
    assert second[0].start_sample == first[-1].start_sample + first[-1].num_samples
    # Each segment resampled on its own equals one-shot resampling of that segment.
    np.testing.assert_allclose(decode(first, fmt.encoding), soxr.resample(a, 24_000, 16_000), atol=1e-6)
    np.testing.assert_allclose(decode(second, fmt.encoding), soxr.resample(b, 24_000, 16_000), atol=1e-6)


# ---------------------------------------------------------------- resampling


@pytest.mark.parametrize("rate", [r for r in SUPPORTED_SAMPLE_RATES if r != NATIVE_SAMPLE_RATE])
def test_streaming_resampling_matches_one_shot(rate):
    pcm = speechlike(48_000, seed=rate)
    fmt = resolve_format(tts_pb2.AUDIO_ENCODING_FLOAT32_LE, rate, 40)
    sizes = list(np.random.default_rng(rate).integers(1, 2_000, size=40))
    streamed = decode(feed(AudioEncoder(fmt), pcm, sizes), fmt.encoding)
    one_shot = soxr.resample(pcm, NATIVE_SAMPLE_RATE, rate, quality="HQ")
    assert len(streamed) == len(one_shot)
    np.testing.assert_allclose(streamed, one_shot, atol=1e-6)


def test_native_rate_is_passed_through_exactly():
    pcm = speechlike(5_000)
    fmt = resolve_format(tts_pb2.AUDIO_ENCODING_FLOAT32_LE, 0, 20)
    np.testing.assert_array_equal(decode(feed(AudioEncoder(fmt), pcm, [100, 2_000]), fmt.encoding), pcm)


def test_resampled_tone_keeps_its_frequency():
    t = np.arange(24_000) / 24_000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    fmt = resolve_format(tts_pb2.AUDIO_ENCODING_FLOAT32_LE, 8_000, 100)
    out = decode(feed(AudioEncoder(fmt), tone, [777] * 20), fmt.encoding)
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) * 8_000 / len(out) == pytest.approx(440, abs=2)


# ---------------------------------------------------------------- sample conversion


def test_int16_clips_and_rounds():
    samples = np.array([-2.0, -1.0, -0.5, 0.0, 1e-5, 0.5, 1.0, 3.0], np.float32)
    ints = np.frombuffer(encode_samples(samples, Encoding.PCM_S16LE), "<i2")
    assert ints.tolist() == [-32767, -32767, -16384, 0, 0, 16384, 32767, 32767]


def test_float32_is_not_clipped():
    samples = np.array([-1.5, 0.25, 1.5], np.float32)
    assert np.frombuffer(encode_samples(samples, Encoding.FLOAT32_LE), "<f4").tolist() == [-1.5, 0.25, 1.5]


def test_push_rejects_non_mono():
    with pytest.raises(ValueError, match="mono"):
        AudioEncoder(resolve_format()).push(np.zeros((2, 10), np.float32))


# ---------------------------------------------------------------- WAV


def test_streaming_wav_header_fields():
    header = AudioEncoder(resolve_format(tts_pb2.AUDIO_ENCODING_WAV, 44_100, 20)).header()
    assert len(header) == 44
    fields = struct.unpack("<4sI4s4sIHHIIHH4sI", header)
    assert fields[0::2][:2] == (b"RIFF", b"WAVE") and (fields[3], fields[11]) == (b"fmt ", b"data")
    # fmt chunk size, PCM tag, channels, rate, byte rate, block align, bits per sample
    assert fields[4:11] == (16, 1, 1, 44_100, 88_200, 2, 16)
    assert fields[1] == fields[12] == UNKNOWN_WAV_SIZE
    assert AudioEncoder(resolve_format(tts_pb2.AUDIO_ENCODING_PCM_S16LE)).header() == b""


def finalize_wav(stream: bytes) -> bytes:
    """A streamed WAV (header + data) with its real sizes, as the SDK saves it."""
    return finalize_wav_header(stream[:44], len(stream) - 44) + stream[44:]


def test_streamed_wav_reads_and_finalized_wav_is_valid():
    fmt = resolve_format(tts_pb2.AUDIO_ENCODING_WAV, 16_000, 20)
    encoder = AudioEncoder(fmt)
    chunks = feed(encoder, speechlike(24_000), [5_000])
    data = b"".join(c.data for c in chunks)
    stream = encoder.header() + data

    # Python's wave reads the streaming form (unknown size) up to the end of the bytes.
    with wave.open(io.BytesIO(stream)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 16_000)
        assert reader.readframes(10**9) == data

    finalized = finalize_wav(stream)
    assert finalized == wav_header(16_000, num_samples=len(data) // 2) + data
    with wave.open(io.BytesIO(finalized)) as reader:
        assert reader.getnframes() == 16_000 == sum(c.num_samples for c in chunks)
        assert reader.readframes(reader.getnframes()) == data
    assert struct.unpack("<I", finalized[4:8])[0] == len(finalized) - 8

    with pytest.raises(ValueError, match="RIFF"):
        finalize_wav(data)


def test_generate_writes_the_same_int16_as_the_stream(tmp_path):
    """`barkstream generate` rounds like the server and the SDK (it used to truncate)."""
    from barkstream.services.cli.generate import write_wav

    x = np.array([1.6, -1.6, 16383.5, 40000.0], np.float32) / 32767
    write_wav(tmp_path / "g.wav", x, 24_000)
    with wave.open(str(tmp_path / "g.wav")) as reader:
        written = reader.readframes(4)
    assert written == encode_samples(x, Encoding.PCM_S16LE)
    assert np.frombuffer(written, "<i2").tolist() == [2, -2, 16384, 32767]

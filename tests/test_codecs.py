"""The compressed encodings, checked by decoders that did not encode them (tests/codec_helpers.py).

Each stream is encoded chunk by chunk across two segments (the codec runs on across the
segment boundary) and compared with the PCM the same input gives as FLOAT32_LE: the delay the
header states, the duration within one codec frame, a waveform SNR floor per codec.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from barkstream.client.audio import to_pcm16
from barkstream.services.common.errors import InvalidRequest
from barkstream.services.orchestrator.audio import AudioEncoder
from barkstream.services.orchestrator.codecs import CodecEncoder
from barkstream.services.orchestrator.formats import Encoding, resolve_format
from barkstream.v1 import tts_pb2

from .codec_helpers import (
    FRAME_SAMPLES,
    SNR_FLOOR_DB,
    best_lag,
    ffmpeg_decode,
    opus_packets_decode,
    snr_db,
)

E = tts_pb2
LOSSY_AND_G711 = [E.AUDIO_ENCODING_MULAW, E.AUDIO_ENCODING_ALAW, E.AUDIO_ENCODING_OGG_OPUS, E.AUDIO_ENCODING_OPUS,
                  E.AUDIO_ENCODING_MP3, E.AUDIO_ENCODING_AAC]


def speechlike(n: int, seed: int = 0) -> np.ndarray:
    """Tones plus band-limited noise at 24 kHz, peak ~0.6: like decoded speech, not a pure sine."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 24_000
    tones = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.15 * np.sin(2 * np.pi * 3100 * t)
    noise = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same") * 0.1
    return (tones + noise).astype(np.float32)


def run(encoder: AudioEncoder, pcm: np.ndarray, piece: int = 7_000) -> list:
    """Two segments (halves of `pcm`) pushed in pieces; the second ends the stream."""
    chunks, half = [], len(pcm) // 2
    for seg, last in ((pcm[:half], False), (pcm[half:], True)):
        for i in range(0, len(seg), piece):
            chunks += encoder.push(seg[i:i + piece])
        chunks += encoder.flush(end_of_stream=last)
    return chunks


def reference_pcm(pcm: np.ndarray, rate: int) -> np.ndarray:
    chunks = run(AudioEncoder(resolve_format(E.AUDIO_ENCODING_FLOAT32_LE, rate)), pcm)
    return np.frombuffer(b"".join(c.data for c in chunks), "<f4")


def decoded(encoder: AudioEncoder, chunks: list) -> np.ndarray:
    fmt = encoder.format
    if fmt.encoding is Encoding.OPUS:
        assert all(c.data == b"" for c in chunks)
        return opus_packets_decode([p for c in chunks for p in c.packets], fmt.sample_rate_hz)
    return ffmpeg_decode(encoder.header() + b"".join(c.data for c in chunks), fmt.encoding, fmt.sample_rate_hz)


@pytest.mark.parametrize(("encoding", "rate"), [(e, 0) for e in LOSSY_AND_G711] + [
    (E.AUDIO_ENCODING_MULAW, 16_000), (E.AUDIO_ENCODING_OGG_OPUS, 16_000), (E.AUDIO_ENCODING_MP3, 48_000),
    (E.AUDIO_ENCODING_AAC, 8_000)])
def test_decodes_to_the_same_pcm_with_the_stated_delay(encoding: int, rate: int):
    fmt = resolve_format(encoding, rate)
    pcm = speechlike(48_000)
    encoder = AudioEncoder(fmt)
    chunks = run(encoder, pcm)
    reference = reference_pcm(pcm, fmt.sample_rate_hz)
    assert sum(c.num_samples for c in chunks) == len(reference)
    got = decoded(encoder, chunks)
    # Ogg carries the pre-skip and its demuxer drops it; raw MP3/AAC/Opus decode with the delay in front.
    expected_lag = 0 if encoding == E.AUDIO_ENCODING_OGG_OPUS else encoder.delay_samples
    lag = best_lag(got, reference)
    assert lag == expected_lag, (lag, expected_lag)
    frame = FRAME_SAMPLES.get(encoding, lambda r: 0)(fmt.sample_rate_hz)
    assert 0 <= len(got) - lag - len(reference) <= frame, (len(got), lag, len(reference), frame)
    snr = snr_db(got[lag:], reference)
    assert snr >= SNR_FLOOR_DB[encoding], f"{fmt.encoding.name} at {fmt.sample_rate_hz} Hz: SNR {snr:.1f} dB"


def test_flac_is_lossless_against_pcm16():
    fmt = resolve_format(E.AUDIO_ENCODING_FLAC, 22_050)
    pcm = speechlike(30_000)
    encoder = AudioEncoder(fmt)
    chunks = run(encoder, pcm)
    header = encoder.header()
    assert header[:4] == b"fLaC" and len(header) == 42  # the STREAMINFO block, flagged last
    got = ffmpeg_decode(header + b"".join(c.data for c in chunks), fmt.encoding, 22_050, sample_format="s16le")
    np.testing.assert_array_equal(got, to_pcm16(reference_pcm(pcm, 22_050)))


@pytest.mark.parametrize("encoding", [E.AUDIO_ENCODING_OGG_OPUS, E.AUDIO_ENCODING_OPUS, E.AUDIO_ENCODING_MP3,
                                      E.AUDIO_ENCODING_FLAC, E.AUDIO_ENCODING_AAC, E.AUDIO_ENCODING_MULAW])
def test_the_first_chunk_carries_playable_audio(encoding: int):
    """No buffering to the end: header + the first 100 ms chunk already decode to audio.

    What it decodes to is at least a codec frame; the encoders' lookahead (Opus 6.5 ms, MP3 and
    AAC about a frame) is what lags, and comes with the next chunk.
    """
    fmt = resolve_format(encoding)
    encoder = AudioEncoder(fmt)
    first = encoder.push(speechlike(4_800))[0]  # 200 ms in: the resampler's latency is covered
    assert first.num_samples == fmt.samples_per_chunk and first.start_sample == 0
    if encoding == E.AUDIO_ENCODING_OPUS:
        assert len(first.packets) >= 4  # 20 ms packets
        got = opus_packets_decode(list(first.packets), fmt.sample_rate_hz)
    else:
        got = ffmpeg_decode(encoder.header() + first.data, encoding, fmt.sample_rate_hz)
    assert len(got) >= min(fmt.samples_per_chunk, 576), len(got)
    encoder.close()


def test_a_stream_ending_on_a_chunk_boundary_gets_a_final_empty_chunk_with_the_last_frames():
    encoder = AudioEncoder(resolve_format(E.AUDIO_ENCODING_MP3, 24_000, 100))
    chunks = encoder.push(speechlike(4_800)) + encoder.flush(end_of_stream=True)
    assert [c.num_samples for c in chunks] == [2_400, 2_400, 0]
    assert chunks[-1].data and chunks[-1].start_sample == 4_800


def test_close_frees_the_codec_and_finish_happens_once():
    encoder = AudioEncoder(resolve_format(E.AUDIO_ENCODING_OGG_OPUS))
    encoder.push(speechlike(9_000))
    encoder.close()
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is CodecEncoder and not o.closed]


@pytest.mark.parametrize(("fields", "must_say"), [
    ({"encoding": E.AUDIO_ENCODING_OPUS, "sample_rate_hz": 44_100},
     ["sample_rate_hz=44100", "OPUS", "8000, 12000, 16000, 24000, 48000"]),
    ({"encoding": E.AUDIO_ENCODING_OGG_OPUS, "bit_rate_bps": 1_000}, ["bit_rate_bps=1000", "6000..510000"]),
    ({"encoding": E.AUDIO_ENCODING_MP3, "bit_rate_bps": 100_000}, ["bit_rate_bps=100000", "MP3", "64000", "160000"]),
    ({"encoding": E.AUDIO_ENCODING_MP3, "sample_rate_hz": 48_000, "bit_rate_bps": 8_000}, ["32000", "320000"]),
    ({"encoding": E.AUDIO_ENCODING_AAC, "sample_rate_hz": 8_000, "bit_rate_bps": 64_000}, ["16000..48000"]),
    ({"encoding": E.AUDIO_ENCODING_FLAC, "bit_rate_bps": 64_000}, ["bit_rate_bps", "FLAC", "leave it 0"]),
    ({"encoding": E.AUDIO_ENCODING_MULAW, "bit_rate_bps": 64_000}, ["bit_rate_bps", "MULAW"]),
])
def test_what_a_codec_cannot_do_is_refused_naming_the_field(fields, must_say):
    with pytest.raises(InvalidRequest) as info:
        resolve_format(**fields)
    for text in must_say:
        assert text in str(info.value), str(info.value)


def test_defaults_per_codec():
    assert (resolve_format(E.AUDIO_ENCODING_MULAW).sample_rate_hz, resolve_format(E.AUDIO_ENCODING_ALAW).bit_rate_bps) \
        == (8_000, 0)
    opus = resolve_format(E.AUDIO_ENCODING_OPUS)
    assert (opus.sample_rate_hz, opus.bit_rate_bps) == (48_000, 32_000)
    assert resolve_format(E.AUDIO_ENCODING_MP3, bit_rate_bps=128_000).bit_rate_bps == 128_000
    assert resolve_format(E.AUDIO_ENCODING_AAC, 8_000).bit_rate_bps == 48_000  # the codec's ceiling there
    assert resolve_format(E.AUDIO_ENCODING_FLAC).sample_rate_hz == 24_000

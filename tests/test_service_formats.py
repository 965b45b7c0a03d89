"""Every encoding over real gRPC: the stream decodes (by another decoder) to the PCM of the same request.

Greedy + seed makes a request's audio deterministic, so a FLOAT32_LE request at the same rate
is the reference. The lossy codecs' SNR floors are asserted in test_codecs.py on speech-like
signals through the same encoder: the random test checkpoint's audio is mostly a DC offset
(98% of its energy below 500 Hz), which Opus's encoder filters out by design, so a waveform
SNR on it would measure that filter, not the stream. Here the lossy streams must decode with
the stated delay and the duration within a frame. Also: the first encoded bytes leave before
the synthesis ends, a cancelled stream leaves no encoder behind, and what a codec cannot do
is INVALID_ARGUMENT.
"""

from __future__ import annotations

import gc
import time

import grpc
import numpy as np
import pytest

from barkstream.services.orchestrator.codecs import CodecEncoder
from barkstream.v1 import tts_pb2, tts_pb2_grpc

from .codec_helpers import FRAME_SAMPLES, SNR_FLOOR_DB, best_lag, ffmpeg_decode, opus_packets_decode, snr_db
from .service_helpers import (
    ONE_SEGMENT,
    THREE_SEGMENTS,
    VOICE,
    engine_load,
    idle,
    poll,
    rpc_error,
    synth_request,
    synthesize,
)

E = tts_pb2
COMPRESSED = [E.AUDIO_ENCODING_MULAW, E.AUDIO_ENCODING_ALAW, E.AUDIO_ENCODING_OGG_OPUS, E.AUDIO_ENCODING_OPUS,
              E.AUDIO_ENCODING_MP3, E.AUDIO_ENCODING_FLAC, E.AUDIO_ENCODING_AAC]
G711 = (E.AUDIO_ENCODING_MULAW, E.AUDIO_ENCODING_ALAW)
DEFAULT_RATES = {E.AUDIO_ENCODING_MULAW: 8_000, E.AUDIO_ENCODING_ALAW: 8_000, E.AUDIO_ENCODING_OGG_OPUS: 48_000,
                 E.AUDIO_ENCODING_OPUS: 48_000}


@pytest.fixture(scope="module")
def reference(embedded_server):
    """FLOAT32_LE audio of the test request at a rate (cached: each costs a synthesis)."""
    cache: dict[int, np.ndarray] = {}

    def get(rate: int) -> np.ndarray:
        if rate not in cache:
            r = synthesize(embedded_server.target, synth_request(ONE_SEGMENT, VOICE, sample_rate_hz=rate))
            cache[rate] = r.float32()
        return cache[rate]

    return get


def decode(r, encoding: int) -> np.ndarray:
    rate = r.header.sample_rate_hz
    if encoding == E.AUDIO_ENCODING_OPUS:
        return opus_packets_decode([p for c in r.chunks for p in c.packets], rate)
    return ffmpeg_decode(r.header.container_header + r.data, encoding, rate)


@pytest.mark.parametrize("encoding", COMPRESSED, ids=[E.AudioEncoding.Name(e)[15:] for e in COMPRESSED])
def test_every_encoding_decodes_to_the_pcm_of_the_same_request(server, reference, encoding: int):
    r = synthesize(server.target, synth_request(ONE_SEGMENT, VOICE, encoding=encoding))
    rate = DEFAULT_RATES.get(encoding, 24_000)
    assert (r.header.encoding, r.header.sample_rate_hz) == (encoding, rate)
    expected = reference(rate)
    # num_samples counts the PCM each chunk encodes: the same totals as the PCM stream.
    assert sum(c.num_samples for c in r.chunks) == r.summary.total_samples == len(expected)
    got = decode(r, encoding)
    if encoding == E.AUDIO_ENCODING_FLAC:
        np.testing.assert_array_equal(ffmpeg_decode(r.header.container_header + r.data, encoding, rate, "s16le"),
                                      np.rint(np.clip(expected, -1, 1) * 32767).astype(np.int16))
        return
    lag = best_lag(got, expected)
    assert lag == (0 if encoding == E.AUDIO_ENCODING_OGG_OPUS else r.header.encoder_delay_samples)
    assert 0 <= len(got) - lag - len(expected) <= FRAME_SAMPLES.get(encoding, lambda _: 0)(rate)
    if encoding in G711:
        snr = snr_db(got[lag:], expected)
        assert snr >= SNR_FLOOR_DB[encoding], f"SNR {snr:.1f} dB"


def test_header_states_bit_rate_and_delay(server):
    r = synthesize(server.target, synth_request(ONE_SEGMENT, VOICE, encoding=E.AUDIO_ENCODING_OGG_OPUS,
                                                sample_rate_hz=24_000, bit_rate_bps=24_000))
    assert (r.header.bit_rate_bps, r.header.encoder_delay_samples) == (24_000, 156)  # 312 at 48 kHz
    assert r.header.container_header[:4] == b"OggS" and b"OpusHead" in r.header.container_header
    pcm = synthesize(server.target, synth_request(ONE_SEGMENT, VOICE, encoding=E.AUDIO_ENCODING_WAV))
    assert (pcm.header.bit_rate_bps, pcm.header.encoder_delay_samples) == (0, 0)


@pytest.mark.parametrize("encoding", [E.AUDIO_ENCODING_OGG_OPUS, E.AUDIO_ENCODING_OPUS, E.AUDIO_ENCODING_MP3],
                         ids=["OGG_OPUS", "OPUS", "MP3"])
def test_first_encoded_bytes_arrive_before_the_synthesis_ends(server, monkeypatch, encoding: int):
    """Segment 0's encoded audio is on the client while later segments are still generated."""
    engine = server.app.runners["semantic"].engine
    step = engine.step

    def paced_step() -> bool:
        worked = step()
        if worked:
            time.sleep(0.01)  # a real model's pace; the tiny one would finish before anything is read
        return worked

    monkeypatch.setattr(engine, "step", paced_step)
    with grpc.insecure_channel(server.target) as channel:
        call = tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(
            synth_request(THREE_SEGMENTS, VOICE, encoding=encoding, max_duration_s=2.0), timeout=120)
        it = iter(call)
        header = next(it).header
        first = next(it).chunk
        first_seen = time.monotonic()
        rest = list(it)
        ended = time.monotonic()
    assert first.segment_index == 0 and (first.data or first.packets)
    later = [m.chunk for m in rest if m.HasField("chunk")]
    assert later[-1].segment_index == 2 and rest[-1].HasField("summary")
    assert ended - first_seen > 0.1, "the first chunk came with the end of the synthesis"
    if encoding == E.AUDIO_ENCODING_OPUS:
        assert len(opus_packets_decode(list(first.packets), header.sample_rate_hz)) >= 960
    else:
        assert len(ffmpeg_decode(header.container_header + first.data, encoding, header.sample_rate_hz)) >= 576


def test_a_cancelled_stream_leaves_no_encoder_behind(server):
    app = server.app
    with grpc.insecure_channel(server.target) as channel:
        call = tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(
            synth_request(THREE_SEGMENTS, VOICE, encoding=E.AUDIO_ENCODING_OGG_OPUS, max_duration_s=2.0),
            timeout=120)
        it = iter(call)
        assert next(it).HasField("header") and next(it).HasField("chunk")
        call.cancel()
        assert rpc_error(lambda: list(it)).code() == grpc.StatusCode.CANCELLED
    assert poll(lambda: idle(app), timeout=10), engine_load(app)

    def no_open_encoder() -> bool:
        gc.collect()
        return not [o for o in gc.get_objects() if type(o) is CodecEncoder and not o.closed]

    assert poll(no_open_encoder, timeout=10)


@pytest.mark.parametrize(("fields", "needle"), [
    ({"encoding": 42}, "encoding=42"),
    ({"encoding": E.AUDIO_ENCODING_OPUS, "sample_rate_hz": 44_100}, "sample_rate_hz=44100"),
    ({"encoding": E.AUDIO_ENCODING_MP3, "bit_rate_bps": 1}, "bit_rate_bps=1"),
    ({"encoding": E.AUDIO_ENCODING_AAC, "bit_rate_bps": 10**6}, "bit_rate_bps=1000000"),
    ({"encoding": E.AUDIO_ENCODING_PCM_S16LE, "bit_rate_bps": 64_000}, "bit_rate_bps=64000"),
], ids=["unknown encoding", "opus rate", "mp3 bit rate", "aac bit rate", "pcm bit rate"])
def test_what_a_codec_cannot_do_is_invalid_argument_before_the_header(server, fields, needle):
    received: list = []
    with grpc.insecure_channel(server.target) as channel:
        call = tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(synth_request(ONE_SEGMENT, VOICE, **fields),
                                                                 timeout=30)
        err = rpc_error(lambda: received.extend(call))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in err.details(), err.details()
    assert ("use" in err.details() or "leave it 0" in err.details()) and received == []

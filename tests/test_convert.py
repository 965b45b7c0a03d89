"""Protobuf <-> numpy for stage messages, and request parameters -> the core's params."""

from __future__ import annotations

import numpy as np
import pytest

from barkstream.services.bark import params as bark_params
from barkstream.services.common import convert
from barkstream.services.common.errors import InvalidRequest
from barkstream.v1 import common_pb2, tts_pb2


@pytest.mark.parametrize("shape", [(0,), (7,), (2, 5), (8, 3), (2, 0)])
def test_array_round_trip(shape):
    arr = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    msg = common_pb2.TokenArray.FromString(convert.array_to_pb(arr).SerializeToString())
    back = convert.array_from_pb(msg, "x")
    assert back.dtype == np.int64 and back.shape == shape
    np.testing.assert_array_equal(back, arr)


def test_packed_encoding_is_compact():
    frames = np.random.default_rng(0).integers(0, 1024, size=(8, 75))
    assert convert.array_to_pb(frames).ByteSize() < frames.size * 2 + 16


def test_empty_and_shape_mismatch():
    assert convert.is_empty(common_pb2.TokenArray())
    assert not convert.is_empty(convert.array_to_pb(np.zeros(0, np.int64)))
    with pytest.raises(InvalidRequest, match=r"x: shape \[2, 3\] needs 6 values but 5"):
        convert.array_from_pb(common_pb2.TokenArray(values=[1, 2, 3, 4, 5], shape=[2, 3]), "x")
    with pytest.raises(TypeError):
        convert.array_to_pb(np.zeros(3, np.float32))


def test_typed_arrays_check_shape_and_range():
    pb = convert.array_to_pb
    np.testing.assert_array_equal(convert.semantic_from_pb(pb(np.array([0, 9999])), "s"), [0, 9999])
    assert convert.coarse_from_pb(pb(np.zeros((2, 4), np.int64)), "c").shape == (2, 4)
    assert convert.fine_from_pb(pb(np.full((8, 4), 1023)), "f").shape == (8, 4)
    assert convert.text_tokens_from_pb(pb(np.array([101, 119546])), "t").tolist() == [101, 119546]
    cases = [
        (convert.semantic_from_pb, np.array([10000]), r"history: value 10000 is out of range; .* 0..9999"),
        (convert.semantic_from_pb, np.zeros((2, 2), np.int64), r"shape \[2, 2\] is not semantic tokens"),
        (convert.coarse_from_pb, np.zeros((8, 2), np.int64), r"history: shape \[8, 2\] .* expected \[2, t\]"),
        (convert.fine_from_pb, np.full((8, 1), -1), r"value -1 is out of range; values must be 0..1023"),
        (convert.text_tokens_from_pb, np.zeros(0, np.int64), r"expected \[n\] with n >= 1"),
        (convert.text_tokens_from_pb, np.array([119547]), r"values must be 0..119546"),
    ]
    for fn, arr, message in cases:
        with pytest.raises(InvalidRequest, match=message):
            fn(pb(arr), "history")


def test_chunk_sequence_checks_order_and_totals():
    seq = convert.ChunkSequence("semantic")
    chunks = [convert.token_chunk(np.arange(n), request_id="r", segment_index=0, sequence_number=i,
                                  offset=off) for i, (n, off) in enumerate([(3, 0), (2, 3)])]
    for chunk in chunks:
        seq.accept(chunk, len(chunk.tokens.values))
    seq.check_end(common_pb2.InputEnd(total=5))
    seq.check_end(common_pb2.InputEnd())
    with pytest.raises(InvalidRequest, match="end.total is 4 but 5"):
        seq.check_end(common_pb2.InputEnd(total=4))
    with pytest.raises(InvalidRequest, match="sequence_number 0 arrived where 2"):
        seq.accept(chunks[0], 3)
    late = convert.token_chunk(np.arange(1), request_id="r", segment_index=0, sequence_number=2, offset=9)
    with pytest.raises(InvalidRequest, match="offset 9 arrived where 5"):
        seq.accept(late, 1)


def test_pcm_round_trip():
    pcm = np.linspace(-1.2, 1.2, 321, dtype=np.float32)
    chunk = convert.pcm_chunk(pcm, request_id="r", segment_index=1, sequence_number=0, start_sample=320)
    assert (chunk.num_samples, chunk.sample_rate_hz, len(chunk.pcm)) == (321, 24_000, 321 * 4)
    np.testing.assert_array_equal(convert.pcm_from_bytes(chunk.pcm), pcm)
    with pytest.raises(InvalidRequest, match="whole number of float32"):
        convert.pcm_from_bytes(b"\0" * 5)


def test_unset_params_are_suno_defaults():
    params = convert.generation_params_from_pb(tts_pb2.SynthesisParams())
    assert params == bark_params.GenerationParams()
    assert convert.seed_from_pb(tts_pb2.SynthesizeRequest()) is None
    assert convert.seed_from_pb(tts_pb2.SynthesizeRequest(seed=0)) == 0


def test_set_params_override_defaults():
    msg = tts_pb2.SynthesisParams(
        semantic=common_pb2.SemanticParams(sampling=common_pb2.SamplingParams(temperature=0.9, top_k=50),
                                           min_eos_p=0.0, max_gen_duration_s=5.0, allow_early_stop=False),
        coarse=common_pb2.CoarseParams(sampling=common_pb2.SamplingParams(greedy=True),
                                       max_coarse_history=300),
        fine=common_pb2.FineParams(temperature=0.3))
    params = convert.generation_params_from_pb(msg)
    assert params.semantic.sampling == bark_params.SamplingParams(temperature=0.9, top_k=50)
    assert (params.semantic.min_eos_p, params.semantic.max_gen_duration_s) == (0.0, 5.0)
    assert params.semantic.allow_early_stop is False
    assert params.coarse.sampling.greedy and params.coarse.sampling.temperature == 0.7
    assert params.coarse.max_coarse_history == 300 and params.coarse.sliding_window_len == 60
    assert params.fine.sampling == bark_params.SamplingParams(temperature=0.3)


@pytest.mark.parametrize(("msg", "message"), [
    (tts_pb2.SynthesisParams(semantic=common_pb2.SemanticParams(
        sampling=common_pb2.SamplingParams(temperature=0.0))),
     r"params.semantic.sampling.temperature=0.*greedy=true"),
    (tts_pb2.SynthesisParams(fine=common_pb2.FineParams(temperature=0.0)),
     r"params.fine.temperature=0.*greedy"),
    (tts_pb2.SynthesisParams(coarse=common_pb2.CoarseParams(
        sampling=common_pb2.SamplingParams(top_p=1.5))), r"params.coarse.sampling: .*top_p"),
    (tts_pb2.SynthesisParams(semantic=common_pb2.SemanticParams(min_eos_p=2.0)),
     r"params.semantic: .*min_eos_p"),
    (tts_pb2.SynthesisParams(coarse=common_pb2.CoarseParams(max_coarse_history=10)),
     r"params.coarse: .*max_coarse_history"),
])
def test_bad_params_are_invalid_request_naming_the_field(msg, message):
    with pytest.raises(InvalidRequest, match=message):
        convert.generation_params_from_pb(msg)

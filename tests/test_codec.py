"""Codec: one-shot decode against encodec and Suno's bark, streaming against one-shot.

Random weights (the `encodec` package's own init, seeded); no download. Random
codec weights give quiet audio (peak ~0.1), so errors are compared to the
signal's peak.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable

import encodec
import numpy as np
import pytest
import torch

from barkstream.services.model.codec import Codec, randomize_codebooks
from barkstream.services.model.codec_stream import StreamingDecoder, StreamState

HOP = 320
REL_TOL = 5e-5  # max abs error / peak; measured ~2.5e-6 (fp32 summation order), so a real bug is far off


def _codes(seed: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, 1024, shape, generator=torch.Generator().manual_seed(seed))


def _assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = want.abs().max().item()
    assert scale > 0
    err = (got - want).abs().max().item()
    assert err <= REL_TOL * scale, f"max abs error {err:.3g} vs peak {scale:.3g}"


@pytest.fixture(scope="module")
def reference() -> encodec.EncodecModel:
    """The encodec package's model as bark builds it: weight norm hooks on, 6 kbps."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's weight_norm deprecation, inside encodec
        torch.manual_seed(1234)
        model = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
    with torch.no_grad():
        randomize_codebooks(model, torch.Generator().manual_seed(1234))  # encodec's are all zero
    model.set_target_bandwidth(6.0)
    return model.eval()


@pytest.fixture(scope="module")
def codec(reference: encodec.EncodecModel) -> Codec:
    return Codec.from_state_dict(reference.state_dict())


@pytest.fixture(scope="module")
def decoder(codec: Codec) -> StreamingDecoder:
    return StreamingDecoder(codec)


# --- one-shot decode -------------------------------------------------------------------------------


def test_decode_matches_encodec_package(codec: Codec, reference: encodec.EncodecModel) -> None:
    codes = _codes(0, 2, 8, 50)
    with torch.inference_mode():
        want = reference.decode([(codes, None)])  # (B, 1, T * 320), weight norm recomputed per call
    got = codec.decode(codes)
    assert got.shape == (2, 50 * HOP)
    _assert_close(got, want[:, 0])


@pytest.mark.parity
def test_decode_matches_bark_codec_decode(
    codec: Codec, reference: encodec.EncodecModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    generation = pytest.importorskip("bark.generation")
    monkeypatch.setitem(generation.models, "codec", reference)
    monkeypatch.setitem(generation.models_devices, "codec", "cpu")
    monkeypatch.setattr(generation, "OFFLOAD_CPU", False)
    codes = _codes(1, 3, 8, 40)
    got = codec.decode(codes)
    for row in range(3):
        want = generation.codec_decode(codes[row].numpy())  # Suno's path: (T * 320,) numpy
        _assert_close(got[row], torch.from_numpy(np.asarray(want)))


def test_from_state_dict_is_strict(reference: encodec.EncodecModel) -> None:
    sd = reference.state_dict()
    no_encoder = {k: v for k, v in sd.items() if not k.startswith("encoder.")}
    codec = Codec.from_state_dict(no_encoder)
    assert codec.model.encoder is None
    _assert_close(codec.decode(_codes(2, 1, 8, 10)), Codec.from_state_dict(sd).decode(_codes(2, 1, 8, 10)))

    missing = dict(no_encoder)
    del missing["decoder.model.15.conv.conv.weight_g"]
    with pytest.raises(ValueError, match="misses"):
        Codec.from_state_dict(missing)
    with pytest.raises(ValueError, match="misses"):
        Codec.from_state_dict({k: v for k, v in no_encoder.items() if ".layers.7." not in k})
    with pytest.raises(ValueError, match="unexpected"):
        Codec.from_state_dict({**no_encoder, "decoder.model.99.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        Codec.from_state_dict({**no_encoder, "decoder.model.0.conv.conv.bias": torch.zeros(3)})
    partial_encoder = {**no_encoder, "encoder.model.0.conv.conv.bias": sd["encoder.model.0.conv.conv.bias"]}
    with pytest.raises(ValueError, match="misses"):
        Codec.from_state_dict(partial_encoder)


def test_random_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    a, b = Codec.random(3), Codec.random(3)
    assert torch.rand(1) == before
    codes = _codes(3, 1, 8, 8)
    assert torch.equal(a.decode(codes), b.decode(codes))


def test_decode_rejects_bad_codes(codec: Codec) -> None:
    with pytest.raises(ValueError):
        codec.decode(_codes(0, 1, 7, 10))
    with pytest.raises(ValueError):
        codec.decode(_codes(0, 1, 8, 10).float())


# --- streaming -------------------------------------------------------------------------------------


def _engine(
    decoder: StreamingDecoder, seqs: list[torch.Tensor], chunk: Callable[[], int], joins: list[int]
) -> list[torch.Tensor]:
    """Decode streams like a batching engine: stream i joins at step joins[i], every row gets
    the same chunk per step, finished rows are flushed and dropped (select), new ones concatenated."""
    outs: list[list[torch.Tensor]] = [[] for _ in seqs]
    pos = [0] * len(seqs)
    rows: list[int] = []  # stream id of each state row
    state = decoder.init_state(0)
    step = 0
    while rows or step <= max(joins):
        for i, j in enumerate(joins):
            if j == step:
                state, rows = StreamState.concat([state, decoder.init_state(1)]), rows + [i]
        step += 1
        if not rows:
            continue
        t = min([chunk()] + [seqs[i].shape[-1] - pos[i] for i in rows])
        codes = torch.stack([seqs[i][:, pos[i] : pos[i] + t] for i in rows])  # (B, 8, t)
        pcm, lengths, state = decoder.step(codes, state)
        assert pcm.shape[-1] == max(lengths)
        for r, i in enumerate(rows):
            outs[i].append(pcm[r, : lengths[r]])
            pos[i] += t
        done = [r for r, i in enumerate(rows) if pos[i] == seqs[i].shape[-1]]
        if done:
            tail, lengths = decoder.flush(state.select(done))
            for k, r in enumerate(done):
                outs[rows[r]].append(tail[k, : lengths[k]])
            keep = [r for r in range(len(rows)) if r not in done]
            state, rows = state.select(keep), [rows[r] for r in keep]
    return [torch.cat(o) for o in outs]


CHUNKINGS = {"1": lambda rng: 1, "7": lambda rng: 7, "60": lambda rng: 60, "random": lambda rng: rng.randint(1, 25)}
SCENARIOS = {  # (lengths, join steps)
    "B1": ([100], [0]),
    "B3": ([90, 41, 5], [0, 0, 0]),
    "B3-staggered": ([60, 33, 12], [0, 2, 5]),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_streaming_equals_one_shot(codec: Codec, decoder: StreamingDecoder, chunking: str, scenario: str) -> None:
    lengths, joins = SCENARIOS[scenario]
    seqs = [_codes(10 + i, 8, n) for i, n in enumerate(lengths)]
    rng = random.Random(chunking + scenario)
    outs = _engine(decoder, seqs, lambda: CHUNKINGS[chunking](rng), joins)
    for seq, out in zip(seqs, outs, strict=True):
        _assert_close(out, codec.decode(seq[None])[0])


def test_latency_is_seven_frames(codec: Codec, decoder: StreamingDecoder) -> None:
    codes = _codes(20, 1, 8, 12)
    full = codec.decode(codes)[0]
    state, emitted = decoder.init_state(1), []
    for k in range(1, 13):
        pcm, lengths, state = decoder.step(codes[..., k - 1 : k], state)
        emitted.append(pcm[0, : lengths[0]])
        n = sum(e.numel() for e in emitted)
        assert n == decoder.emitted_samples(k) == (k * HOP if k >= 7 else 0)
        if n:  # what is out is final: equal to the one-shot decode of the *whole* sequence
            _assert_close(torch.cat(emitted), full[:n])
    tail, lengths = decoder.flush(state)
    assert lengths == [0]

    # 7 is the true minimum: with reflect padding, the first sample of one-shot depends on frame 6.
    changed = codes.clone()
    changed[..., 6] = (changed[..., 6] + 1) % 1024
    assert not torch.equal(codec.decode(changed)[0, :1], full[:1])


@pytest.mark.parametrize("n", [1, 3, 6, 7])
def test_short_streams_come_out_at_flush(codec: Codec, decoder: StreamingDecoder, n: int) -> None:
    codes = _codes(30 + n, 1, 8, n)
    pcm, lengths, state = decoder.step(codes, decoder.init_state(1))
    tail, tail_lengths = decoder.flush(state)
    assert lengths[0] + tail_lengths[0] == n * HOP
    assert (lengths[0] == 0) == (n < 7)
    _assert_close(torch.cat([pcm[0, : lengths[0]], tail[0, : tail_lengths[0]]]), codec.decode(codes)[0])


def test_select_and_concat_keep_streams_exact(codec: Codec, decoder: StreamingDecoder) -> None:
    seqs = _codes(40, 3, 8, 40)
    late = _codes(41, 1, 8, 30)
    a_pcm, _, a = decoder.step(seqs[..., :10], decoder.init_state(3))  # all three started
    b_pcm, _, b = decoder.step(late[..., :3], decoder.init_state(1))  # still buffering
    assert b_pcm.shape[-1] == 0

    # Drop row 1, swap rows 0 and 2, duplicate row 2, add the late stream: rows in different phases.
    state = StreamState.concat([a.select([2, 0, 2]), b])
    assert state.frames == (10, 10, 10, 3)
    codes = torch.cat([seqs[[2, 0, 2], :, 10:30], late[..., 3:23]])  # (4, 8, 20)
    pcm, lengths, state = decoder.step(codes, state)
    assert lengths == [20 * HOP] * 3 + [23 * HOP]
    tail, tail_lengths = decoder.flush(state)
    assert tail_lengths == [0] * 4

    for r, src in enumerate([2, 0, 2]):
        want = codec.decode(seqs[src : src + 1, :, :30])[0]
        _assert_close(torch.cat([a_pcm[src], pcm[r, : lengths[r]]]), want)
    _assert_close(pcm[3, : lengths[3]], codec.decode(late[..., :23])[0])
    assert torch.equal(pcm[0], pcm[2])


def test_step_rejects_mismatched_batch(decoder: StreamingDecoder) -> None:
    with pytest.raises(ValueError):
        decoder.step(_codes(0, 2, 8, 4), decoder.init_state(3))

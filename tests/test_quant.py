"""Inference formats of the linears: oneDNN-packed (exact up to rounding) and int8 weight-only (opt-in)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from barkstream.services.bark.params import SamplingParams, SemanticParams
from barkstream.services.model.gpt import KVCache
from barkstream.services.model.quant import (
    Int8Linear,
    PackedLinear,
    linear_weight_bytes,
    packing_available,
    prepare_linears,
    quantize_int8,
)
from barkstream.services.stages.jobs import Job
from barkstream.services.stages.models import ModelOptions, load_stage_models
from barkstream.services.stages.semantic import SemanticEngine, SemanticRequest

from .model_helpers import PACKABLE, twin_gpts

needs_onednn = pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN packed linear")


def linear(n_in: int = 256, n_out: int = 384, bias: bool = False, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out, bias=bias).eval().requires_grad_(False)


def test_int8_quantization_error_is_half_a_step():
    w = torch.randn(64, 96)
    q, scales = quantize_int8(w)
    assert q.dtype == torch.int8 and scales.shape == (64,)
    assert int(q.abs().max()) <= 127
    err = (q.float() * scales[:, None] - w).abs()
    assert bool((err <= scales[:, None] / 2 + 1e-7).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
def test_int8_linear_is_close_to_float(dtype, bias):
    lin = linear(bias=bias).to(dtype)
    q = Int8Linear(lin)
    x = torch.randn(2, 5, 256, dtype=dtype)
    got, ref = q(x), lin(x)
    assert got.shape == ref.shape and got.dtype == dtype
    rel = float((got.float() - ref.float()).norm() / ref.float().norm())
    assert rel < 0.02, rel  # int8 weights (and bf16 compute): about 1% relative error


def test_int8_stores_a_quarter_of_the_bytes():
    model = nn.Sequential(linear(256, 512), nn.GELU(), linear(512, 256))
    fp32 = linear_weight_bytes(model)
    prepare_linears(model, "int8")
    assert all(isinstance(m, Int8Linear) for m in (model[0], model[2]))
    assert linear_weight_bytes(model) == pytest.approx(fp32 / 4, rel=0.02)


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_linear_matches_f_linear(dtype):
    lin = linear(bias=True).to(dtype)
    packed = PackedLinear(lin)
    x = torch.randn(3, 7, 256, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(packed(x), lin(x), atol=tol, rtol=tol)


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_linear_rows_do_not_depend_on_the_batch(dtype):
    """A row's result is bit-identical whether it is computed alone, in a decode batch or in a prefill."""
    for n_in, n_out in ((768, 2304), (768, 768), (768, 3072), (3072, 768), (768, 10048), (1024, 4096), (4096, 1024)):
        packed = PackedLinear(linear(n_in, n_out).to(dtype))
        x = torch.randn(600, n_in, dtype=dtype)
        alone = packed(x[:1])
        for rows in (2, 3, 8, 257, 600):
            assert torch.equal(packed(x[:rows])[:1], alone), (n_in, n_out, rows)


def test_prepare_packs_only_big_cpu_linears():
    model = nn.Sequential(linear(64, 64), linear(256, 512, seed=1))
    prepare_linears(model)
    assert type(model[0]) is nn.Linear  # small: left alone (same rounding as before)
    assert isinstance(model[1], PackedLinear) == packing_available()
    assert type(prepare_linears(nn.Sequential(linear(256, 512)), pack=False)[0]) is nn.Linear


def test_bad_quantize_mode_is_refused():
    with pytest.raises(ValueError, match="quantize"):
        prepare_linears(nn.Sequential(linear()), "int4")
    with pytest.raises(ValueError, match="quantize"):
        ModelOptions(quantize="int4").validate()


def test_serve_config_checks_quantize():
    from barkstream.services.app import ServeConfig

    assert ServeConfig(quantize="int8").quantize == "int8"
    with pytest.raises(ValueError, match="quantize"):
        ServeConfig(quantize="fp4")


def test_generate_cli_takes_quantize():
    from barkstream.services.cli.main import build_parser

    args = build_parser().parse_args(["generate", "hi", "-o", "x.wav", "--quantize", "int8"])
    assert args.quantize == "int8"
    assert build_parser().parse_args(["generate", "hi", "-o", "x.wav"]).quantize == "none"


@torch.inference_mode()
def test_int8_gpt_logits_follow_float32():
    cfg = PACKABLE
    ref, q = twin_gpts(cfg)
    prepare_linears(q, "int8")
    ids = torch.randint(0, 300, (2, 20))
    a = ref(ref.embed(ids), KVCache.allocate(cfg, 2, 64, "cpu", torch.float32), start=0)
    b = q(q.embed(ids), KVCache.allocate(cfg, 2, 64, "cpu", torch.float32), start=0)
    assert float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]) > 0.99


def test_int8_stage_models_generate(tiny_checkpoint):
    """The opt-in mode runs end to end through an engine (tiny weights: only that it works, not agreement)."""
    models = load_stage_models(tiny_checkpoint, ["semantic"], ModelOptions(quantize="int8"))
    assert any(isinstance(m, Int8Linear) for m in models.semantic.modules())
    engine, job = SemanticEngine(models.semantic, max_batch=2), Job()
    params = SemanticParams(SamplingParams(greedy=True), max_gen_duration_s=0.2, allow_early_stop=False)
    engine.add(job, SemanticRequest([100, 101, 102], None, params))
    while engine.busy():
        engine.step()
    tokens = np.concatenate(job.chunks)
    assert len(tokens) == 10 and tokens.max() < 10_000

"""The fast paths give the same results as the plain ones (no timing here: see benchmarks/).

CPU: batched on-device greedy choice = per-row choice; the static-shape decode
step (what a CUDA graph replays) = the dynamic step; flash-attn's KV-cache call
convention, against a reference implementation of its kernel; the float32
KV cache of 16-bit models on CPU; an engine driven through the static decoder.
GPU (`-m gpu`, skipped without CUDA): CUDA-graph replay, bf16 engines, the
SDPA flash backend.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from barkstream.services.bark import constants as C
from barkstream.services.bark.params import CoarseParams, FineParams, SamplingParams, SemanticParams
from barkstream.services.model.attention import attend_kvcache
from barkstream.services.model.config import GPTConfig
from barkstream.services.model.gpt import GPT, KVCache, StaticDecoder, cache_dtype
from barkstream.services.model.quant import prepare_linears
from barkstream.services.stages.coarse import CoarseEngine, CoarseRequest, greedy_coarse_tokens, logit_range
from barkstream.services.stages.fine import FineEngine, FineRequest
from barkstream.services.stages.jobs import Job
from barkstream.services.stages.semantic import (
    SemanticEngine,
    SemanticRequest,
    greedy_semantic_tokens,
    next_semantic_token,
)

from .model_helpers import PACKABLE, twin_gpts

CFG = GPTConfig(block_size=64, input_vocab_size=50, output_vocab_size=50, n_layer=2, n_head=2, n_embd=16)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def small_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CFG).eval()


def drain(engine) -> None:
    while engine.busy():
        engine.step()


# ----------------------------------------------------------------------------------------- batched choice


def test_batched_semantic_choice_equals_row_by_row():
    torch.manual_seed(0)
    logits = torch.randn(6, 10_048) * 4
    logits[1, C.SEMANTIC_EOS_TOKEN] = 50.0  # EOS wins
    logits[2, C.SEMANTIC_EOS_TOKEN] = logits[2, :10_000].max() - 0.3  # p(EOS) high without winning
    logits[4, C.SEMANTIC_EOS_TOKEN] = 50.0  # would win, but this row may not stop early
    params = [SemanticParams(SamplingParams(t, greedy=True), min_eos_p=m, allow_early_stop=a)
              for t, m, a in [(0.7, 0.2, True), (0.7, 0.2, True), (1.0, 0.1, True), (0.5, None, True),
                              (0.7, 0.2, False), (1.3, 0.9, True)]]
    tokens, stops = greedy_semantic_tokens(logits, params)
    expected = [next_semantic_token(logits[i], p, None) for i, p in enumerate(params)]
    assert tokens.tolist() == [t for t, _ in expected]
    assert stops.tolist() == [s for _, s in expected]
    assert stops.tolist()[:3] == [False, True, True] and not stops[4]


def test_batched_coarse_choice_equals_row_by_row():
    from barkstream.services.model.sampling import probabilities

    torch.manual_seed(1)
    logits = torch.randn(5, 12_096) * 3
    steps = [0, 1, 2, 7, 60]
    starts = [logit_range(s)[0] for s in steps]
    temps = [0.7, 0.7, 1.0, 0.5, 0.9]
    got = greedy_coarse_tokens(logits, starts, temps).tolist()
    for k, (lo, t) in enumerate(zip(starts, temps, strict=True)):
        probs = probabilities(logits[k, lo:lo + C.CODEBOOK_SIZE], SamplingParams(t, greedy=True))
        assert got[k] == int(torch.argmax(probs)) + lo


def test_batched_fine_windows_equal_one_by_one(tiny_models):
    """Greedy windows of different `rel` (history) predicted in one batch = each alone."""
    rng = np.random.default_rng(2)
    greedy = FineParams(SamplingParams(0.5, greedy=True))
    engine = FineEngine(tiny_models.fine, max_batch=4)
    members = []
    for _ in range(3):
        job = Job()
        engine.add(job, FineRequest(None, greedy, 0))
        members.append(engine.members[-1])
    windows = [(np.concatenate([rng.integers(0, 1024, (1024, 2)), np.full((1024, 6), 1024)], axis=1), rel, m)
               for rel, m in zip((0, 100, 512), members, strict=True)]
    together = engine.run_windows(windows)
    for w, got in zip(windows, together, strict=True):
        np.testing.assert_array_equal(got, engine.run_windows([w])[0])
        np.testing.assert_array_equal(got[: w[1]], w[0][: w[1]])  # columns before rel are kept


# ----------------------------------------------------------------------------------------- static decode step


def prefilled(model: GPT, lengths: list[int], max_len: int = 64) -> tuple[KVCache, torch.Tensor]:
    """A cache of len(lengths) rows, row i holding a prefix of lengths[i] random tokens; their last tokens."""
    torch.manual_seed(3)
    cache = KVCache.allocate(CFG, 4, max_len, "cpu", torch.float32)
    last = []
    for i, n in enumerate(lengths):
        ids = torch.randint(0, 50, (1, n + 1))
        row = KVCache(cache.k[:, i:i + 1], cache.v[:, i:i + 1])
        model(model.embed(ids[:, :n]), row, start=0)
        last.append(ids[0, n])
    return cache, torch.stack(last)[:, None]


@torch.inference_mode()
def test_static_step_equals_dynamic_step():
    model = small_gpt()
    lengths = [5, 17, 9]  # 3 rows: padded to a bucket of 4; positions differ per row
    cache_a, last = prefilled(model, lengths)
    cache_b = KVCache(cache_a.k.clone(), cache_a.v.clone())
    pos = torch.tensor(lengths)
    n = len(lengths)
    dynamic = model(model.embed(last), KVCache(cache_a.k[:, :n], cache_a.v[:, :n]), pos=pos[:, None])
    decoder = StaticDecoder(model, cache_b, graphs=True, kv_bucket=8)  # graphs are CUDA-only: eager here
    assert decoder.shape(n, max(lengths) + 1) == (4, 24)
    static = decoder(last, pos, max(lengths) + 1)
    torch.testing.assert_close(static, dynamic, atol=1e-6, rtol=1e-6)
    for i, p in enumerate(lengths):  # the real rows' caches got the same new entries
        torch.testing.assert_close(cache_b.k[:, i, :, : p + 1], cache_a.k[:, i, :, : p + 1])
    assert decoder.shape(1, 60) == (1, 64) and decoder.shape(4, 64) == (4, 64)


@torch.inference_mode()
def test_per_row_step_without_kv_len_matches():
    model = small_gpt()
    cache, last = prefilled(model, [4, 11])
    view = KVCache(cache.k[:, :2].clone(), cache.v[:, :2].clone())
    pos = torch.tensor([[4], [11]])
    a = model(model.embed(last), view, pos=pos)  # kv_len from pos (a device sync)
    view = KVCache(cache.k[:, :2].clone(), cache.v[:, :2].clone())
    b = model(model.embed(last), view, pos=pos, kv_len=40)  # a longer, bucketed read: masked the same
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def _greedy_semantic(n_tokens: float) -> SemanticParams:
    return SemanticParams(SamplingParams(0.7, greedy=True), min_eos_p=None,
                          max_gen_duration_s=n_tokens / C.SEMANTIC_RATE_HZ, allow_early_stop=False)


def test_semantic_engine_through_the_static_decoder(tiny_models):
    """What the engine does on a GPU (bucketed static steps), run eagerly: the same tokens."""
    reqs = [SemanticRequest(list(range(100, 100 + k)), None, _greedy_semantic(d), 0)
            for k, d in ((5, 9.5), (12, 4.5), (30, 14.5))]

    def run(static: bool) -> list[np.ndarray]:
        engine = SemanticEngine(tiny_models.semantic, max_batch=4)
        if static:
            engine.decoder = StaticDecoder(engine.model, engine.cache, graphs=False)
        jobs = [Job() for _ in reqs]
        engine.add(jobs[0], reqs[0])
        engine.step()
        engine.step()
        for j, r in zip(jobs[1:], reqs[1:], strict=True):  # join late: rows at different positions
            engine.add(j, r)
        drain(engine)
        return [np.concatenate(j.chunks) for j in jobs]

    for a, b in zip(run(False), run(True), strict=True):
        np.testing.assert_array_equal(a, b)


def test_coarse_engine_through_the_static_decoder(tiny_models):
    rng = np.random.default_rng(4)
    sems = [rng.integers(0, 10_000, n) for n in (40, 70)]

    def run(static: bool) -> list[np.ndarray]:
        engine = CoarseEngine(tiny_models.coarse, max_batch=4)
        if static:
            engine.decoder = StaticDecoder(engine.model, engine.cache, graphs=False)
        jobs = []
        for sem in sems:
            job = Job()
            stream = engine.add(job, CoarseRequest(None, None, CoarseParams(SamplingParams(greedy=True)), 0))
            stream.feed(sem)
            stream.close()
            jobs.append(job)
        drain(engine)
        return [np.concatenate(j.chunks, axis=1) for j in jobs]

    for a, b in zip(run(False), run(True), strict=True):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------- flash-attn glue


def _reference_flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, causal=False):
    """flash-attn's documented semantics, in torch: append k/v at cache_seqlens, attend to [0, seqlen]."""
    out = []
    for b in range(q.shape[0]):
        n = int(cache_seqlens[b])
        k_cache[b, n:n + 1] = k[b]
        v_cache[b, n:n + 1] = v[b]
        qb, kb, vb = (t.transpose(0, 1)[None] for t in (q[b], k_cache[b, : n + 1], v_cache[b, : n + 1]))
        out.append(F.scaled_dot_product_attention(qb, kb, vb)[0].transpose(0, 1))  # (1, H, D)
    return torch.stack(out)  # (B, 1, H, D)


def test_flash_kvcache_call_writes_our_cache_and_attends_each_prefix(monkeypatch):
    fake = types.ModuleType("flash_attn")
    fake.flash_attn_with_kvcache = _reference_flash_attn_with_kvcache
    monkeypatch.setitem(sys.modules, "flash_attn", fake)
    torch.manual_seed(5)
    B, H, T, D = 3, 2, 16, 8
    cache_k, cache_v = torch.randn(B, H, T, D), torch.randn(B, H, T, D)
    q, k, v = torch.randn(B, H, 1, D), torch.randn(B, H, 1, D), torch.randn(B, H, 1, D)
    seqlens = torch.tensor([3, 9, 0])
    ours_k, ours_v = cache_k.clone(), cache_v.clone()
    got = attend_kvcache(q, k, v, ours_k, ours_v, seqlens)
    # The SDPA path: scatter at each row's position, masked attention over the bucket.
    index = seqlens[:, None, None, None].expand(B, H, 1, D)
    cache_k.scatter_(2, index, k)
    cache_v.scatter_(2, index, v)
    mask = (torch.arange(T)[None, :] <= seqlens[:, None])[:, None, None, :]
    ref = F.scaled_dot_product_attention(q, cache_k, cache_v, attn_mask=mask)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours_k, cache_k)
    torch.testing.assert_close(ours_v, cache_v)


# ----------------------------------------------------------------------------------------- 16-bit on CPU


def test_cpu_caches_are_float32_under_16_bit_weights():
    assert cache_dtype(torch.bfloat16, "cpu") == torch.float32
    assert cache_dtype(torch.bfloat16, "cuda") == torch.bfloat16
    assert cache_dtype(torch.float32, "cpu") == torch.float32


@torch.inference_mode()
def test_bf16_model_with_float32_cache_follows_float32():
    cfg = PACKABLE
    ref, half = twin_gpts(cfg)
    prepare_linears(half.to(torch.bfloat16))
    ids = torch.randint(0, 300, (1, 12))
    a = ref(ref.embed(ids), KVCache.allocate(cfg, 1, 64, "cpu", torch.float32), start=0)
    cache = KVCache.allocate(cfg, 1, 64, "cpu", cache_dtype(torch.bfloat16, "cpu"))
    b = half(half.embed(ids), cache, start=0)
    b2 = half(half.embed(ids[:, -1:]), cache, start=12)
    assert b.dtype == torch.float32 and b2.shape == (1, 300)
    assert float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]) > 0.99


# ----------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@cuda
@torch.inference_mode()
def test_cuda_graph_replay_equals_eager_static_step():
    model = small_gpt().cuda()
    lengths = [5, 17, 9]
    cache, last = prefilled(model.cpu(), lengths)
    model = model.cuda()
    cache = KVCache(cache.k.cuda(), cache.v.cuda())
    twin = KVCache(cache.k.clone(), cache.v.clone())
    pos = torch.tensor(lengths, device="cuda")
    eager = StaticDecoder(model, twin, graphs=False)(last.cuda(), pos, max(lengths) + 1).clone()
    graphed = StaticDecoder(model, cache, graphs=True)
    out = graphed(last.cuda(), pos, max(lengths) + 1).clone()
    assert graphed.captured  # captured once ...
    again = graphed(last.cuda(), pos, max(lengths) + 1)  # ... and replayed
    torch.testing.assert_close(out, eager, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(again, out)


@pytest.mark.gpu
@cuda
def test_bf16_engines_on_cuda_match_their_eager_selves(tiny_checkpoint):
    """The same static steps, replayed from CUDA graphs or launched op by op: the same tokens."""
    from barkstream.services.stages.models import ModelOptions, load_stage_models

    models = load_stage_models(tiny_checkpoint, ["semantic"], ModelOptions(device="cuda", dtype="bfloat16"))
    req = SemanticRequest(list(range(100, 120)), None, _greedy_semantic(20.5), 0)

    def run(graphs: bool) -> np.ndarray:
        engine, job = SemanticEngine(models.semantic, max_batch=4), Job()
        assert engine.decoder is not None and engine.cache.k.dtype == torch.bfloat16
        engine.decoder = StaticDecoder(engine.model, engine.cache, graphs=graphs)
        engine.add(job, req)
        drain(engine)
        return np.concatenate(job.chunks)

    np.testing.assert_array_equal(run(True), run(False))


@pytest.mark.gpu
@cuda
@torch.inference_mode()
def test_sdpa_flash_backend_runs_our_prefill():
    """Our GPT's prefill under SDPA's flash kernel only (it raises where flash cannot run) equals the
    same prefill on the math kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = small_gpt().cuda().to(torch.bfloat16)
    ids = torch.randint(0, 50, (1, 40), device="cuda")
    logits = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH):
        cache = KVCache.allocate(CFG, 1, 64, "cuda", torch.bfloat16)
        with sdpa_kernel(backend):
            logits[backend] = model(model.embed(ids), cache, start=0).float()
    torch.testing.assert_close(logits[SDPBackend.FLASH_ATTENTION], logits[SDPBackend.MATH], atol=3e-2, rtol=3e-2)


@pytest.mark.gpu
@cuda
@torch.inference_mode()
def test_int8_linears_on_cuda():
    from barkstream.services.model.quant import Int8Linear

    lin = torch.nn.Linear(256, 512, bias=False).cuda().to(torch.bfloat16)
    x = torch.randn(4, 256, device="cuda", dtype=torch.bfloat16)
    rel = float((Int8Linear(lin)(x).float() - lin(x).float()).norm() / lin(x).float().norm())
    assert rel < 0.02

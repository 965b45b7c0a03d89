"""The causal GPT's cache paths agree with a plain full forward, per row, whatever the batch."""

from __future__ import annotations

import torch

from barkstream.services.model.config import GPTConfig
from barkstream.services.model.gpt import GPT, KVCache
from barkstream.services.model.kv_cache import Step

CFG = GPTConfig(block_size=64, input_vocab_size=50, output_vocab_size=50, n_layer=2, n_head=2, n_embd=16)


def model() -> GPT:
    torch.manual_seed(0)
    return GPT(CFG).eval()


def full_logits(m: GPT, ids: torch.Tensor) -> torch.Tensor:
    """Every position's logits from one causal forward (reference)."""
    cache = KVCache.allocate(CFG, 1, ids.shape[1], "cpu", torch.float32)
    out = []
    for t in range(1, ids.shape[1] + 1):
        cache = KVCache.allocate(CFG, 1, t, "cpu", torch.float32)
        out.append(m(m.embed(ids[:, :t]), cache, start=0)[0])
    return torch.stack(out)


@torch.inference_mode()
def test_incremental_decoding_matches_full_forward():
    m = model()
    ids = torch.randint(0, 50, (1, 20))
    ref = full_logits(m, ids)
    cache = KVCache.allocate(CFG, 1, 64, "cpu", torch.float32)
    got = [m(m.embed(ids[:, :8]), cache, start=0)[0]]
    for t in range(8, 20):
        got.append(m(m.embed(ids[:, t:t + 1]), cache, start=t)[0])
    torch.testing.assert_close(torch.stack(got), ref[7:], atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_rows_at_different_positions_match_running_alone():
    m = model()
    seqs = [torch.randint(0, 50, (1, n)) for n in (5, 12, 9)]
    alone = [full_logits(m, s)[-1] for s in seqs]
    # Right-padded prefill of everything but each row's last token, then one decode step per row.
    T = max(s.shape[1] for s in seqs) - 1
    ids = torch.zeros(3, T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : s.shape[1] - 1] = s[0, :-1]
    cache = KVCache.allocate(CFG, 3, 64, "cpu", torch.float32)
    m(m.embed(ids), cache, start=0)
    last = torch.stack([s[0, -1] for s in seqs])[:, None]
    pos = torch.tensor([[s.shape[1] - 1] for s in seqs])
    got = m(m.embed(last), cache, pos=pos)
    for i in range(3):
        torch.testing.assert_close(got[i], alone[i], atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_cache_select_keeps_rows():
    cache = KVCache.allocate(CFG, 3, 8, "cpu", torch.float32)
    cache.k[:, 2] = 7.0
    kept = cache.select(torch.tensor([2]))
    assert kept.k.shape[1] == 1 and bool((kept.k == 7.0).all())


@torch.inference_mode()
def test_layer_cache_writes_its_positions_and_returns_what_to_attend():
    cache = KVCache.allocate(CFG, 2, 8, "cpu", torch.float32)
    layer = cache.layer(1)
    k = torch.ones(2, CFG.n_head, 3, CFG.head_dim)  # (B, H, T, D)
    keys, values = layer.update(Step(start=2), torch.arange(2, 5).expand(2, 3), k, 2 * k)
    assert keys.shape[2] == 5 and bool((keys[:, :, 2:] == 1).all()) and bool((keys[:, :, :2] == 0).all())
    assert bool((values[:, :, 2:] == 2).all()) and bool((cache.k[0] == 0).all())  # layer 0 untouched
    # Per-row positions: row 0 writes slot 6, row 1 slot 0; the first kv_len slots come back.
    pos = torch.tensor([[6], [0]])
    keys, _ = layer.update(Step.per_row(pos, 7), pos, 3 * k[:, :, :1], 3 * k[:, :, :1])
    assert keys.shape[2] == 7
    assert bool((cache.k[1, 0, :, 6] == 3).all()) and bool((cache.k[1, 1, :, 0] == 3).all())
    assert bool((cache.k[1, 1, :, 6] == 0).all())


@torch.inference_mode()
def test_cache_rows_are_views_and_move_row_copies_a_row():
    cache = KVCache.allocate(CFG, 3, 8, "cpu", torch.float32)
    cache.rows(1, 3).k[:, 1] = 5.0  # row 2 of the whole cache
    assert bool((cache.k[:, 2] == 5.0).all()) and bool((cache.k[:, :2] == 0).all())
    cache.move_row(2, 0)
    assert bool((cache.k[:, 0] == 5.0).all()) and bool((cache.v[:, 0] == 0).all())

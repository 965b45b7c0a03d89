"""The stage benchmark's ideal-batching bound: the arithmetic behind the numbers in benchmarks/RESULTS.md."""

from __future__ import annotations

import pytest

from benchmarks.stages import batching_bound


def test_bound_counts_weights_once_per_step_and_every_rows_cache():
    # Two requests of 2 and 3 tokens: 1 and 2 decode steps at positions 257, 258 (258, 259 cached keys).
    b = batching_bound((2, 3), weight_bytes=10, kv_bytes_per_pos=1, bandwidth=1.0,
                       prefill_alone_s=0.0, prefill_batched_s=0.0)
    assert b["decode_bytes_alone"] == (10 + 258) + (10 + 258) + (10 + 259)
    assert b["decode_bytes_batched"] == (10 + 258 + 258) + (10 + 259)
    assert b["speed_up"] == pytest.approx(805 / 795)


def test_without_a_kv_cache_batching_shares_everything():
    lengths = (160, 220, 580)
    b = batching_bound(lengths, 1000, 0, 1.0, 0.0, 0.0)
    assert b["speed_up"] == pytest.approx(sum(n - 1 for n in lengths) / (max(lengths) - 1))


def test_without_weights_batching_shares_nothing_and_prefills_count():
    assert batching_bound((50, 90), 0, 7, 1e9, 0.0, 0.0)["speed_up"] == pytest.approx(1.0)
    slow_prefill = batching_bound((50, 90), 10**6, 7, 1e9, prefill_alone_s=2.0, prefill_batched_s=2.0)
    fast_prefill = batching_bound((50, 90), 10**6, 7, 1e9, prefill_alone_s=0.0, prefill_batched_s=0.0)
    assert 1.0 < slow_prefill["speed_up"] < fast_prefill["speed_up"]

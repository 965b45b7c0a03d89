"""Sampling functions: Suno's filter order, greedy, and seeded reproducibility."""

from __future__ import annotations

import math

import pytest
import torch

from barkstream.services.bark.params import GenerationParams, SamplingParams
from barkstream.services.model.sampling import draw, make_generator, probabilities, top_k_filter, top_p_filter


def test_top_k_keeps_k_best():
    logits = torch.tensor([1.0, 5.0, 3.0, 4.0])
    out = top_k_filter(logits, 2)
    assert torch.isinf(out[[0, 2]]).all() and torch.equal(out[[1, 3]], logits[[1, 3]])


def test_top_p_keeps_the_smallest_set_reaching_p_and_always_the_best():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.isfinite(top_p_filter(logits, 0.7)).tolist() == [True, True, False, False]
    assert torch.isfinite(top_p_filter(logits, 0.01)).tolist() == [True, False, False, False]


def test_greedy_is_argmax_of_filtered_probabilities():
    logits = torch.tensor([0.1, 2.0, 1.9])
    p = probabilities(logits, SamplingParams(temperature=0.7, greedy=True))
    assert draw(p, SamplingParams(greedy=True), None) == 1
    assert math.isclose(float(p.sum()), 1.0, rel_tol=1e-6)


def test_seeded_draws_repeat_and_streams_differ():
    p = torch.softmax(torch.randn(1000), dim=-1)
    params = SamplingParams(temperature=1.0)
    a = [draw(p, params, g) for g in [make_generator(42, 0)] for _ in range(20)]
    g = make_generator(42, 0)
    b = [draw(p, params, g) for _ in range(20)]
    g1 = make_generator(42, 1)
    c = [draw(p, params, g1) for _ in range(20)]
    assert a == b and a != c


@pytest.mark.parametrize("bad", [dict(semantic_temp=-1.0), dict(coarse_temp=float("nan")), dict(top_p=0.0),
                                 dict(top_p=1.5), dict(top_k=0), dict(min_eos_p=2.0), dict(max_duration_s=-1.0),
                                 dict(fine_temp=float("inf")), dict(semantic_temp=3.4028235677973366e38),
                                 dict(coarse_temp=1e7)])
def test_bad_params_are_rejected_with_a_message(bad):
    with pytest.raises(ValueError, match=r"\w"):
        GenerationParams.build(**bad)


def test_the_largest_temperature_still_gives_a_distribution():
    from barkstream.services.bark.params import MAX_TEMPERATURE

    logits = torch.randn(100) * 30
    probs = probabilities(logits, SamplingParams(temperature=MAX_TEMPERATURE, top_k=1))
    assert torch.isfinite(probs).all() and math.isclose(float(probs.sum()), 1.0, rel_tol=1e-5)

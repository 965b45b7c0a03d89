"""The streaming stages' input queue: what it accepts, what it refuses, and how the engine drains it."""

from __future__ import annotations

import numpy as np
import pytest

from barkstream.services.stages.inputs import COARSE_FRAMES, FINE_FRAMES, SEMANTIC_TOKENS, InputStream


def test_take_returns_everything_fed_in_order_and_then_the_end():
    s = InputStream(SEMANTIC_TOKENS)
    assert s.take() == (None, False)
    s.feed([1, 2])
    s.feed(np.array([3]))
    tokens, ended = s.take()
    assert tokens.tolist() == [1, 2, 3] and tokens.dtype == np.int64 and not ended
    s.feed([4])
    s.close()
    tokens, ended = s.take()
    assert tokens.tolist() == [4] and ended and s.ended


def test_take_with_a_limit_leaves_the_rest_queued():
    s = InputStream(FINE_FRAMES)
    s.feed(np.arange(8 * 5).reshape(8, 5) % 1024)
    s.close()
    first, ended = s.take(3)
    assert first.shape == (8, 3) and not ended and not s.ended
    rest, ended = s.take(3)
    assert rest.shape == (8, 2) and ended
    np.testing.assert_array_equal(np.concatenate([first, rest], axis=1), np.arange(40).reshape(8, 5))


@pytest.mark.parametrize(("spec", "chunk", "message"), [
    (SEMANTIC_TOKENS, [5, 10000], r"semantic tokens must be in \[0, 10000\)"),
    (SEMANTIC_TOKENS, [[1, 2]], r"semantic tokens must be a 1-D sequence"),
    (COARSE_FRAMES, np.zeros((3, 4)), r"coarse frames must have shape \(2, t\), got \(3, 4\)"),
    (COARSE_FRAMES, -np.ones((2, 1)), r"coarse codes must be in \[0, 1024\)"),
    (FINE_FRAMES, np.zeros(8), r"fine frames must have shape \(8, t\)"),
])
def test_bad_chunks_are_refused_at_feed(spec, chunk, message):
    s = InputStream(spec)
    with pytest.raises(ValueError, match=message):
        s.feed(chunk)
    assert s.take() == (None, False)  # nothing of it entered


def test_feed_after_close_is_refused():
    s = InputStream(COARSE_FRAMES)
    s.close()
    with pytest.raises(ValueError, match="coarse input already closed"):
        s.feed(np.zeros((2, 1)))

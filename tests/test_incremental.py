"""The latency-aware schedule and the incremental segmenter (pure functions, words as tokens)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barkstream.services.bark.incremental import IncrementalSegmenter
from barkstream.services.bark.schedule import Schedule, SegmentPolicy, growth_for, schedule_segments
from barkstream.services.bark.segment import normalize_text, split_text

PARAGRAPH = ("The quick brown fox jumps over the lazy dog, and then it runs away into the forest. "
             "Nobody saw where it went, but everybody heard the birds. It was a calm and quiet evening "
             "with a warm wind from the south and no clouds at all. The end.")


def words(text: str) -> int:
    return len(text.split())


def test_fixed_schedule_is_split_text():
    policy = SegmentPolicy(Schedule.FIXED, max_tokens=12)
    assert schedule_segments(PARAGRAPH, words, policy) == split_text(PARAGRAPH, words, 12)


def test_latency_aware_starts_short_and_grows_to_the_budget():
    policy = SegmentPolicy(Schedule.LATENCY_AWARE, max_tokens=20, first_tokens=4)
    segments = schedule_segments(PARAGRAPH, words, policy)
    sizes = [words(s) for s in segments]
    assert sizes[0] <= 4
    before = 0
    for size in sizes:
        assert size <= policy.budget(before)
        before += size
    assert max(sizes) > 4  # it grew
    assert " ".join(segments) == normalize_text(PARAGRAPH)
    assert len(segments) > len(split_text(PARAGRAPH, words, 20))


def test_budget_is_bounded_by_what_came_before():
    policy = SegmentPolicy(Schedule.LATENCY_AWARE, max_tokens=48, first_tokens=10)
    assert [policy.budget(b) for b in (0, 5, 10, 20, 100)] == [10, 12, 15, 20, 48]
    assert SegmentPolicy(max_tokens=48, first_tokens=10, growth=1.0).budget(30) == 40
    assert SegmentPolicy(Schedule.FIXED, max_tokens=7).budget(0) == 7


@pytest.mark.parametrize("max_tokens", [0, 257])
def test_budget_range(max_tokens):
    with pytest.raises(ValueError, match="1..256"):
        SegmentPolicy(max_tokens=max_tokens)


def feed(segmenter: IncrementalSegmenter, pieces, t0=0.0, step=0.01):
    out = []
    for i, piece in enumerate(pieces):
        out += [(i, s) for s in segmenter.push(piece, t0 + i * step)]
    return out


def test_sentence_is_cut_when_it_is_complete():
    seg = IncrementalSegmenter(words, SegmentPolicy(Schedule.FIXED, 48))
    assert seg.push("Hello there.", 0.0) == []  # "there." may be "there.5"? no, but "3." may be "3.5"
    assert seg.push(" How", 0.1) == ["Hello there."]
    assert seg.push(" are you? I am", 0.2) == ["How are you?"]
    assert seg.flush() == ["I am"]
    assert seg.buffered_chars == 0


def test_a_number_still_arriving_is_never_split():
    seg = IncrementalSegmenter(words, SegmentPolicy(Schedule.FIXED, 48))
    pieces = ["It costs 3", ".", "5", "0 dollars", ". Then", " more."]
    out = feed(seg, pieces)
    assert [s for _, s in out] == ["It costs 3.50 dollars."]
    assert seg.flush() == ["Then more."]


def test_token_pieces_make_the_same_segments_as_whole_text():
    seg = IncrementalSegmenter(words, SegmentPolicy(Schedule.FIXED, 48))
    pieces = [c for c in PARAGRAPH]  # one character at a time
    out = [s for _, s in feed(seg, pieces)] + seg.flush()
    sentences = ["The quick brown fox jumps over the lazy dog, and then it runs away into the forest.",
                 "Nobody saw where it went, but everybody heard the birds.",
                 "It was a calm and quiet evening with a warm wind from the south and no clouds at all.", "The end."]
    assert out == sentences


def test_latency_aware_first_segment_leaves_before_the_sentence_ends():
    seg = IncrementalSegmenter(words, SegmentPolicy(Schedule.LATENCY_AWARE, 48, first_tokens=5))
    words_in = (PARAGRAPH.split(" "))
    out = feed(seg, [w + " " for w in words_in])
    first_piece, first = out[0]
    assert first == "The quick brown fox jumps"
    assert first_piece < words_in.index("forest.")
    rest = [s for _, s in out[1:]] + seg.flush()
    assert " ".join([first, *rest]) == normalize_text(PARAGRAPH)


def test_max_wait_cuts_at_the_last_complete_word():
    seg = IncrementalSegmenter(words, SegmentPolicy(Schedule.FIXED, 48), max_wait_s=0.5)
    assert seg.push("so this is a long thought wit", 1.0) == []
    assert seg.deadline() == 1.5
    assert seg.poll(1.4) == []
    assert seg.poll(1.5) == ["so this is a long thought"]
    assert seg.buffered_chars == len("wit")
    assert seg.push("hout end", 1.6) == []
    assert seg.flush() == ["without end"]


def test_clear_drops_the_buffer():
    seg = IncrementalSegmenter(words)
    seg.push("half a sent", 0.0)
    seg.clear()
    assert seg.buffered_chars == 0 and seg.deadline() is None
    assert seg.flush() == []


def test_empty_and_blank_pieces_do_nothing():
    seg = IncrementalSegmenter(words)
    assert seg.push("", 0.0) == [] and seg.push("   ", 0.0) == []
    assert seg.deadline() is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=15), min_size=1, max_size=40),
       st.sampled_from([Schedule.FIXED, Schedule.LATENCY_AWARE]), st.integers(min_value=1, max_value=20))
def test_any_piece_sizes_keep_the_text_and_the_budgets(cuts, schedule, max_tokens):
    """Whatever the piece sizes, the segments say the text in order and respect each budget."""
    policy = SegmentPolicy(schedule, max_tokens, first_tokens=3)
    seg = IncrementalSegmenter(words, policy)
    pieces, i = [], 0
    for n in cuts:
        pieces.append(PARAGRAPH[i:i + n])
        i += n
    pieces.append(PARAGRAPH[i:])
    out = [s for _, s in feed(seg, pieces)] + seg.flush()
    assert " ".join(out).split() == "".join(pieces).split()
    assert all(words(s) <= max_tokens for s in out)


def test_growth_follows_the_servers_speed():
    """(1 - r) / r with a margin: a segment of d_0 + g * S seconds is ready while S seconds play, at r s per
    audio s."""
    assert growth_for(0.5) == pytest.approx(0.7) and growth_for(0.8) == pytest.approx(0.7 * 0.25)
    assert growth_for(0.2) == 2.0 and growth_for(1.5) == 0.1  # clipped both ways
    assert growth_for(0.0) == 0.5  # unknown: the default

"""The long-form segmenter: coarsest boundary first, every segment within the token budget."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barkstream.services.bark.segment import normalize_text, split_text


def words(text: str) -> int:
    return len(text.split())


def test_sentences_are_packed_up_to_the_budget():
    text = "One two three. Four five six. Seven eight nine. Ten."
    assert split_text(text, words, max_tokens=6) == ["One two three. Four five six.", "Seven eight nine. Ten."]


def test_long_sentence_splits_at_clauses_then_words():
    text = "alpha beta gamma, delta epsilon zeta, eta theta iota kappa lambda mu nu xi omicron"
    segments = split_text(text, words, max_tokens=4)
    assert segments[0] == "alpha beta gamma,"
    assert segments[1] == "delta epsilon zeta,"
    assert all(words(s) <= 4 for s in segments)
    assert " ".join(segments) == text


def test_runs_without_spaces_split_between_characters():
    text = "x" * 50
    segments = split_text(text, len, max_tokens=16)
    assert "".join(segments) == text
    assert all(len(s) <= 16 for s in segments)


def test_whitespace_and_empty_text():
    assert split_text("  \n\t ", words) == []
    assert normalize_text("a \n\n b\tc ") == "a b c"


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=400), st.integers(min_value=1, max_value=30))
def test_every_segment_fits_and_no_word_is_lost(text, budget):
    segments = split_text(text, len, max_tokens=budget)
    assert all(1 <= len(s) <= budget for s in segments)
    assert "".join(segments).replace(" ", "") == normalize_text(text).replace(" ", "")


@pytest.mark.parametrize("text", ["Hello there. How are you? Fine!", "こんにちは。元気ですか？はい。"])
def test_real_tokenizer_budget(tokenizer, text):
    segments = split_text(text, tokenizer.count, max_tokens=4)
    assert len(segments) >= 2
    assert all(tokenizer.count(s) <= 4 for s in segments)

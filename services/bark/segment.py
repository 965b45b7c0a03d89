"""Long text -> segments Bark can speak one at a time (torch-free).

Bark reads at most 256 text tokens and speaks about 14 s per generation, so
Suno's advice for long form is to split at sentences and generate them in
turn with one voice. We split at sentence ends, then clause punctuation, then
spaces, then (for runs with no spaces at all) between characters, and pack the
pieces greedily so each segment stays within a token budget. The orchestrator
and the offline CLI share this one function, so both produce the same
segments for the same text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

DEFAULT_MAX_SEGMENT_TOKENS = 48  # ~10-14 s of speech; well under the model's 256

_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])\s+|(?<=[。！？])")
_CLAUSE_END = re.compile(r"(?<=[,;:，；：、—–])\s*")
_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Suno's whitespace rule: runs of whitespace become one space, ends stripped."""
    return re.sub(r"\s+", " ", text).strip()


def split_text(
    text: str,
    count_tokens: Callable[[str], int],
    max_tokens: int = DEFAULT_MAX_SEGMENT_TOKENS,
) -> list[str]:
    """Split `text` into segments of at most `max_tokens` tokens each, at the coarsest boundaries."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    text = normalize_text(text)
    if not text:
        return []
    pieces: list[str] = []
    for sentence in _split(text, _SENTENCE_END):
        pieces.extend(_fit(sentence, count_tokens, max_tokens))
    return _pack(pieces, count_tokens, max_tokens)


def _split(text: str, pattern: re.Pattern[str]) -> list[str]:
    return [p.strip() for p in pattern.split(text) if p and p.strip()]


def _fit(piece: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Break one piece down (clauses, words, characters) until every part fits."""
    if count_tokens(piece) <= max_tokens:
        return [piece]
    for pattern in (_CLAUSE_END, _SPACE):
        parts = _split(piece, pattern)
        if len(parts) > 1:
            out: list[str] = []
            for part in parts:
                out.extend(_fit(part, count_tokens, max_tokens))
            return _pack(out, count_tokens, max_tokens)
    return _split_chars(piece, count_tokens, max_tokens)


def _split_chars(piece: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """A run without spaces (a long URL, CJK text): cut it into the longest fitting prefixes."""
    out = []
    rest = piece
    while rest:
        lo, hi = 1, len(rest)
        while lo < hi:  # longest prefix within the budget
            mid = (lo + hi + 1) // 2
            if count_tokens(rest[:mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        out.append(rest[:lo])
        rest = rest[lo:]
    return out


def _pack(pieces: list[str], count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Join consecutive pieces with spaces while the result stays within the budget."""
    segments: list[str] = []
    for piece in pieces:
        if segments and count_tokens(segments[-1] + " " + piece) <= max_tokens:
            segments[-1] = segments[-1] + " " + piece
        else:
            segments.append(piece)
    return segments

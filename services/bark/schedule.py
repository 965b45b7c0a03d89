"""Which text goes into which segment: the fixed and the latency-aware schedules (torch-free).

Time to first audio is dominated by the first segment's semantic and coarse generation,
so the latency-aware schedule makes the first segment short (a clause or a few words) and
lets later segments grow toward the budget: segment i's budget is `first_tokens + growth *
(tokens of segments 0..i-1)`. Why: with a server taking r seconds per second of audio,
segment i is ready in time when d_i <= d_0 + S_(i-1) * (1 - r) / r (d: durations, S: the sum
before it; the listener hears segments 0..i-1 while i is generated), so growth 0.5 keeps up
down to r = 2/3 and reaches the 48-token budget by the fifth segment. The fixed
schedule packs every segment up to the budget (the offline behaviour before sessions).

Shorter segments start faster; longer ones give Bark's prosody over more words. A text of up
to 256 tokens in one FIXED segment of budget 256 is exactly Suno's single-pass generation.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .segment import DEFAULT_MAX_SEGMENT_TOKENS, normalize_text, split_text

MAX_SEGMENT_TOKENS = 256  # the semantic model reads at most 256 text tokens
FIRST_SEGMENT_TOKENS = 10  # about two to three seconds of speech: a clause or a few words
GROWTH = 0.5  # a segment's budget grows by this many tokens per token already dispatched
MIN_GROWTH, MAX_GROWTH = 0.1, 2.0
SPEED_MARGIN = 0.7  # measured speed varies (other sessions, other tenants): grow a little slower than it allows

CountTokens = Callable[[str], int]


class Schedule(enum.IntEnum):
    """Numbers equal barkstream.v1.SegmentSchedule's (0 = the default, LATENCY_AWARE)."""

    LATENCY_AWARE = 1
    FIXED = 2


@dataclass(frozen=True)
class SegmentPolicy:
    """How text is cut: the schedule and the token budget per segment (1..256)."""

    schedule: Schedule = Schedule.LATENCY_AWARE
    max_tokens: int = DEFAULT_MAX_SEGMENT_TOKENS
    first_tokens: int = FIRST_SEGMENT_TOKENS
    growth: float = GROWTH

    def __post_init__(self) -> None:
        if not 1 <= self.max_tokens <= MAX_SEGMENT_TOKENS:
            raise ValueError(f"max_tokens={self.max_tokens}: use 1..{MAX_SEGMENT_TOKENS}")
        if self.first_tokens < 1 or not self.growth > 0:
            raise ValueError(f"first_tokens={self.first_tokens}, growth={self.growth}: use 1 or more, and > 0")

    def budget(self, tokens_before: int) -> int:
        """The token budget of the next segment, given the tokens of the segments before it."""
        if self.schedule is Schedule.FIXED:
            return self.max_tokens
        return min(self.max_tokens, self.first_tokens + int(self.growth * tokens_before))


def growth_for(real_time_factor: float) -> float:
    """The growth that keeps segments ahead of playback on a server this fast (see the module doc).

    A session measures its own real-time factor (generation time / audio time) as segments
    finish and grows later segments only as fast as that speed allows: (1 - r) / r, with a
    margin for the speed's ups and downs on a shared machine, clipped.
    """
    if not real_time_factor > 0:
        return GROWTH
    ideal = (1.0 - real_time_factor) / real_time_factor
    return min(MAX_GROWTH, max(MIN_GROWTH, SPEED_MARGIN * ideal))


def schedule_segments(text: str, count_tokens: CountTokens, policy: SegmentPolicy = SegmentPolicy(),
                      tokens_before: int = 0) -> list[str]:
    """Cut `text` into segments under `policy`; `tokens_before`: tokens already spoken in this stream."""
    if policy.schedule is Schedule.FIXED:
        return split_text(text, count_tokens, policy.max_tokens)
    rest = normalize_text(text)
    out: list[str] = []
    while rest:
        budget = policy.budget(tokens_before)
        if budget == policy.max_tokens:  # from here on every segment has the full budget
            return out + split_text(rest, count_tokens, budget)
        parts = split_text(rest, count_tokens, budget)
        if not parts:
            break
        out.append(parts[0])
        tokens_before += count_tokens(parts[0])
        rest = " ".join(parts[1:])
    return out

"""Segmentation of text that is still arriving (a real-time session's input), torch-free.

Text comes in pieces of any size (an LLM's tokens, words, sentences). A segment is cut
- when a sentence ends: sentence punctuation followed by whitespace (a trailing "3." may be
  the start of "3.5"; CJK full stops need no space),
- when the complete words waiting exceed the schedule's budget for the next segment (the
  latency-aware schedule's short first segment is cut this way, at a clause if one fits),
- when text has waited `max_wait_s` without a boundary (then at the last complete word),
- on flush and at the end of input: everything buffered, even a partial word.
A word (or number) is complete only once whitespace follows it, so nothing still arriving is
ever split except by an explicit flush. Time is passed in (`now`), so the segmenter is a pure
state machine that tests drive without sleeping.
"""

from __future__ import annotations

import re

from .schedule import CountTokens, SegmentPolicy, schedule_segments
from .segment import normalize_text

DEFAULT_MAX_WAIT_S = 1.0
MIN_MAX_WAIT_MS = 50
MAX_MAX_WAIT_MS = 10_000

# The end of a sentence that can no longer change: punctuation, closing quotes, then whitespace.
_SENTENCE_DONE = re.compile(r"[.!?…]+[\"'”’)\]]*\s|[。！？]")
_SPACE = re.compile(r"\s")


class IncrementalSegmenter:
    """Buffers arriving text and hands out segments as soon as they may be spoken."""

    def __init__(self, count_tokens: CountTokens, policy: SegmentPolicy | None = None,
                 max_wait_s: float = DEFAULT_MAX_WAIT_S) -> None:
        self.count_tokens = count_tokens
        self.policy = policy or SegmentPolicy()
        self.max_wait_s = max_wait_s
        self.tokens_dispatched = 0  # drives the schedule's growing budgets
        self._buffer = ""
        self._since: float | None = None  # when the oldest buffered text arrived

    @property
    def buffered_chars(self) -> int:
        return len(self._buffer)

    def deadline(self) -> float | None:
        """When `poll` would cut waiting text (None: nothing is waiting)."""
        return None if self._since is None else self._since + self.max_wait_s

    def push(self, text: str, now: float) -> list[str]:
        """Add a piece (joined verbatim); the segments that are now complete."""
        if not text:
            return []
        self._buffer += text
        if self._since is None and self._buffer.strip():
            self._since = now
        out = self._take_sentences()
        out += self._take_over_budget()
        if out:
            self._since = None
        self._restart_wait(now)
        return out

    def poll(self, now: float) -> list[str]:
        """Text that waited `max_wait_s` with no boundary: its complete words."""
        if self._since is None or now < self._since + self.max_wait_s:
            return []
        end = self._complete_end()
        out = self._dispatch(self._buffer[:end]) if end else []
        self._buffer = self._buffer[end:]
        self._since = None
        self._restart_wait(now)
        return out

    def flush(self) -> list[str]:
        """Everything buffered, even a word that may not be complete (flush and end of input)."""
        out = self._dispatch(self._buffer)
        self._buffer = ""
        self._since = None
        return out

    def clear(self) -> None:
        """Drop what is buffered (barge-in); the schedule keeps its place."""
        self._buffer = ""
        self._since = None

    # -- internals
    def _take_sentences(self) -> list[str]:
        ends = [m.end() for m in _SENTENCE_DONE.finditer(self._buffer)]
        if not ends:
            return []
        out = self._dispatch(self._buffer[:ends[-1]])
        self._buffer = self._buffer[ends[-1]:]
        return out

    def _take_over_budget(self) -> list[str]:
        """Complete words beyond the next segment's budget: every segment but the last one."""
        end = self._complete_end()
        if not end:
            return []
        complete = normalize_text(self._buffer[:end])
        if self.count_tokens(complete) <= self.policy.budget(self.tokens_dispatched):
            return []
        parts = schedule_segments(complete, self.count_tokens, self.policy, self.tokens_dispatched)
        if len(parts) < 2:
            return []
        out = self._account(parts[:-1])
        self._buffer = parts[-1] + " " + self._buffer[end:]
        return out

    def _complete_end(self) -> int:
        """Index just after the buffer's last whitespace: the words before it are complete."""
        ends = [m.end() for m in _SPACE.finditer(self._buffer)]
        return ends[-1] if ends else 0

    def _dispatch(self, text: str) -> list[str]:
        if not text.strip():
            return []
        return self._account(schedule_segments(text, self.count_tokens, self.policy, self.tokens_dispatched))

    def _account(self, segments: list[str]) -> list[str]:
        for s in segments:
            self.tokens_dispatched += self.count_tokens(s)
        return segments

    def _restart_wait(self, now: float) -> None:
        """The wait restarts with what is left: a cut resets it, an empty buffer stops it."""
        if not self._buffer.strip():
            self._buffer = ""
            self._since = None
        elif self._since is None:
            self._since = now

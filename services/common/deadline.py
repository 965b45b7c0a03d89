"""Passing a caller's deadline on to downstream calls.

A Synthesize deadline must bound the whole pipeline: when the orchestrator calls a stage, it
gives that call what is left of its own deadline, so an expired request stops everywhere
instead of leaving stages generating audio nobody will receive.
"""

from __future__ import annotations

from typing import Protocol


class HasTimeRemaining(Protocol):
    def time_remaining(self) -> float | None: ...


def remaining_timeout(context: HasTimeRemaining, margin_s: float = 0.0) -> float | None:
    """Seconds left of the caller's deadline minus `margin_s`, for a downstream call's `timeout=`.

    None when the caller set no deadline (the downstream call then has none either). Never
    negative: 0 makes the downstream call fail at once with DEADLINE_EXCEEDED, which is right.
    `margin_s` keeps some time back to report a downstream failure before our own deadline.

    gRPC sends a deadline as a relative timeout with about two significant digits, rounded up
    (e.g. 3.949 s travels as 4.0 s), so a stage may see slightly more time than we passed. The
    exact deadline is still enforced where it was set, and its expiry cancels every hop below.
    """
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return max(0.0, remaining - margin_s)

"""The live progress line of `barkstream say`, on a terminal only.

On stderr, rewritten in place at most ~10 times a second, so it never mixes with audio on
stdout and costs nothing measurable; when stderr is not a terminal (a script, a log, CI) it
stays silent, because a log full of carriage returns helps nobody.
"""

from __future__ import annotations

import time
from typing import TextIO

from ._stream import Progress

_MIN_INTERVAL_S = 0.1


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def describe(p: Progress) -> str:
    rtf = p.real_time_factor
    return (f"segments {p.segments_done}/{p.segment_count} | audio {p.audio_seconds:.2f} s | "
            f"first audio {_seconds(p.time_to_first_audio)} | RTF {'-' if rtf is None else f'{rtf:.2f}'} | "
            f"{p.elapsed:.1f} s")


class ProgressLine:
    def __init__(self, out: TextIO, enabled: bool) -> None:
        self.out = out
        self.enabled = enabled
        self._last = 0.0
        self._width = 0

    def update(self, p: Progress, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < _MIN_INTERVAL_S):
            return
        self._last = now
        self._show(describe(p))

    def finish(self, p: Progress, destination: str) -> None:
        """Replace the live line with the final one."""
        if self.enabled:
            self._show(f"{describe(p)} -> {destination}")
            self.out.write("\n")
            self.out.flush()

    def clear(self) -> None:
        if self.enabled and self._width:
            self.out.write("\r" + " " * self._width + "\r")
            self.out.flush()
            self._width = 0

    def _show(self, text: str) -> None:
        pad = max(0, self._width - len(text))
        self.out.write("\r" + text + " " * pad)
        self.out.flush()
        self._width = len(text)

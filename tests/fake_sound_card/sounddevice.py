"""A stand-in for the `sounddevice` package (the `[play]` extra): PortAudio's pull model without a device.

Test machines have no sound card. This module has the part of sounddevice's API that
barkstream's player uses (`RawOutputStream` in callback mode, `PortAudioError`): a thread
pulls `blocksize` frames through the callback every block period, faster than real time, and
keeps what it was given. Set BARKSTREAM_FAKE_SOUND_CARD_LOG to a file to have every closed
stream append one line: `<bytes played> <non-silent bytes>`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

LOG_ENV = "BARKSTREAM_FAKE_SOUND_CARD_LOG"


class PortAudioError(Exception):
    """sounddevice's error type (never raised here: the fake device always opens)."""


class RawOutputStream:
    def __init__(self, *, samplerate: float, channels: int, dtype: str, callback: Callable[..., None],
                 blocksize: int = 480, speedup: float = 8.0, **_: Any) -> None:
        self.width = {"int16": 2, "float32": 4}[dtype] * channels
        self.samplerate, self.callback, self.blocksize = samplerate, callback, blocksize
        self.period = blocksize / samplerate / speedup
        self.played = bytearray()
        self.pulls: list[tuple[float, bytes]] = []  # (when, the block the callback filled)
        self.running = threading.Event()
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.running.set()
        self.thread.start()

    def _run(self) -> None:
        while self.running.is_set():
            block = bytearray(self.blocksize * self.width)
            self.callback(block, self.blocksize, None, None)
            self.played += block
            self.pulls.append((time.monotonic(), bytes(block)))
            time.sleep(self.period)

    def stop(self) -> None:
        self.running.clear()
        if self.thread.is_alive():
            self.thread.join(5)

    abort = stop

    def close(self) -> None:
        self.stop()
        self.closed = True
        log = os.environ.get(LOG_ENV)
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{len(self.played)} {sum(1 for b in self.played if b)}\n")

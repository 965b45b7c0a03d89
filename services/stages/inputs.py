"""The input side of a streaming stage: chunks fed by one thread, taken by the engine's.

Coarse, fine and codec all read an upstream stage's output while it is still
being produced: the servicer (or the in-process pipeline) calls `feed` and
`close` from its own thread, and the engine `take`s what has arrived between
decode steps. `InputStream` is that queue, with the checks on what may enter it
(shape and code range), so a bad chunk fails at `feed` with a clear error.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bark import constants as C


@dataclass(frozen=True)
class InputSpec:
    """What a stage accepts: 1-D tokens (`rows` None) or (rows, t) frames, values in [0, high)."""

    name: str  # the upstream stage, used in error messages
    rows: int | None
    high: int

    def check(self, chunk: np.ndarray) -> None:
        if self.rows is None:
            if chunk.ndim != 1:
                raise ValueError(f"{self.name} tokens must be a 1-D sequence, got shape {chunk.shape}")
        elif chunk.ndim != 2 or chunk.shape[0] != self.rows:
            raise ValueError(f"{self.name} frames must have shape ({self.rows}, t), got {chunk.shape}")
        if chunk.size and (chunk.min() < 0 or chunk.max() >= self.high):
            unit = "tokens" if self.rows is None else "codes"
            raise ValueError(f"{self.name} {unit} must be in [0, {self.high})")


SEMANTIC_TOKENS = InputSpec("semantic", None, C.SEMANTIC_VOCAB_SIZE)
COARSE_FRAMES = InputSpec("coarse", C.N_COARSE_CODEBOOKS, C.CODEBOOK_SIZE)
FINE_FRAMES = InputSpec("fine", C.N_FINE_CODEBOOKS, C.CODEBOOK_SIZE)


class InputStream:
    """A thread-safe feed/close queue of int64 chunks along their last axis (time)."""

    def __init__(self, spec: InputSpec):
        self.spec = spec
        self._pending: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._closed = False

    def feed(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, dtype=np.int64)
        self.spec.check(chunk)
        with self._lock:
            if self._closed:
                raise ValueError(f"{self.spec.name} input already closed")
            self._pending.append(chunk)

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def take(self, limit: int | None = None) -> tuple[np.ndarray | None, bool]:
        """What has arrived since the last take (None if nothing), and whether the input has ended with it.

        With `limit`, at most that many steps along the time axis are taken and the rest stays queued.
        """
        with self._lock:
            if not self._pending:
                return None, self._closed
            chunk = np.concatenate(self._pending, axis=-1)
            if limit is None:
                self._pending = []
            else:
                chunk, rest = chunk[..., :limit], chunk[..., limit:]
                self._pending = [rest] if rest.shape[-1] else []
            return chunk, self._closed and not self._pending

    @property
    def ended(self) -> bool:
        """Closed, and everything fed has been taken."""
        with self._lock:
            return self._closed and not self._pending


class StreamingEngine:
    """What the coarse, fine and codec engines share: the open streams they are fed through.

    Each member has a `job` and a `stream` (an `InputStream`); the engine keeps it until the
    stream has ended and its output has left, or the job is cancelled.
    """

    members: list[Any]

    def fail_all(self, error: BaseException) -> None:
        for m in self.members:
            m.job.finish(error)
        self.members = []

    def busy(self) -> bool:
        return bool(self.members)

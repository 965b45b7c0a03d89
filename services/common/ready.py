"""Dependencies that exist only after the warm-up, handed to servicers when they are built.

A server registers its servicers before the port opens, so that health probes see the
process while the models load; the engines, tokenizer and voices the servicers call are
made by the warm-up. Each servicer is built once, holding a `Ready` per dependency; the
warm-up fills them. A call that arrives first (only unary calls can: admission refuses
streams until the warm-up is done) gets UNAVAILABLE instead of an AttributeError.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class NotReady(RuntimeError):
    """The server is still starting; `abort_on_error` answers UNAVAILABLE."""


class Ready(Generic[T]):
    """One value made by the warm-up, set once."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._value: T | None = None
        self._set = False

    def set(self, value: T) -> None:
        if self._set:
            raise RuntimeError(f"{self.what} is already set: the warm-up runs once")
        self._value, self._set = value, True

    @property
    def is_set(self) -> bool:
        return self._set

    def get(self) -> T:
        if not self._set:
            raise NotReady(f"the server is still starting ({self.what} not loaded): retry shortly")
        return self._value  # type: ignore[return-value]

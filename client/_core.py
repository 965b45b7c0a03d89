"""What the sync and asyncio clients share: constructor arguments and per-call options."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ._channel import (
    DEFAULT_RETRY,
    DEFAULT_TARGET,
    MIB,
    ChannelConfig,
    ChannelOption,
    Credentials,
    RetryPolicy,
    call_metadata,
    make_config,
)


class _Default(enum.Enum):
    """Marks 'use the client's setting' for per-call options, where None already means something."""

    CLIENT = "client"


CLIENT_DEFAULT = _Default.CLIENT
Timeout = float | None | _Default


@dataclass(frozen=True)
class CallOptions:
    """The keyword arguments of one stub call."""

    timeout: float | None
    wait_for_ready: bool
    metadata: tuple[tuple[str, str], ...]

    def kwargs(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "wait_for_ready": self.wait_for_ready, "metadata": self.metadata}


class ClientCore:
    """Validated settings of a client; no I/O, so both clients construct it the same way."""

    def __init__(self, target: str = DEFAULT_TARGET, *, tls: bool | Credentials | None = None,
                 token: str | None = None, timeout: float | None = None, wait_for_ready: bool = False,
                 retry: RetryPolicy | None = DEFAULT_RETRY, health_check: bool = True,
                 keepalive_time_s: float = 30.0, max_message_bytes: int = 16 * MIB,
                 metadata: dict[str, str] | tuple[tuple[str, str], ...] | None = None,
                 options: list[ChannelOption] | tuple[ChannelOption, ...] | None = None) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout={timeout}: use a positive number of seconds, or None for no deadline")
        self.config: ChannelConfig = make_config(
            target, tls, token, retry=retry, health_check=health_check, keepalive_time_s=keepalive_time_s,
            max_message_bytes=max_message_bytes, metadata=metadata, options=options)
        self.timeout = timeout
        self.wait_for_ready = wait_for_ready
        self._metadata = call_metadata(self.config)

    def call_options(self, timeout: Timeout = CLIENT_DEFAULT, wait_for_ready: bool | None = None) -> CallOptions:
        if timeout is CLIENT_DEFAULT:
            timeout = self.timeout
        elif timeout is not None and timeout <= 0:
            raise ValueError(f"timeout={timeout}: use a positive number of seconds, or None for no deadline")
        ready = self.wait_for_ready if wait_for_ready is None else wait_for_ready
        return CallOptions(timeout, ready, self._metadata)

    def describe(self, kind: str) -> str:
        security = "insecure" if self.config.tls is None else "tls"
        return f"{kind}({self.config.target!r}, {security})"

"""Typed errors: every failed call raises a `BarkstreamError` subclass, never a bare grpc.RpcError.

Callers decide what to do from the type alone: fix the request (`InvalidRequest`), back off
(`Overloaded`, with the server's `retry_after` hint), retry or fail over (`Unavailable`),
give up on this call (`DeadlineExceeded`, also a `TimeoutError`), or fix credentials
(`Unauthenticated`, `PermissionDenied`). The server's message is the exception's text, and
the original grpc error stays reachable as `.rpc_error`.

    try:
        audio = client.synthesize(text)
    except barkstream.client.Overloaded as e:
        time.sleep(e.retry_after or 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

RETRY_AFTER_METADATA_KEY = "retry-after-ms"

Metadata = Sequence[tuple[str, str | bytes]]


class BarkstreamError(Exception):
    """Base of every error the SDK raises for a failed call."""

    #: The gRPC status code that caused it (None for errors raised by the SDK itself).
    code: grpc.StatusCode | None = None
    #: True when the same call may succeed later without changes.
    retryable: bool = False

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None,
                 trailing_metadata: Metadata = (), rpc_error: grpc.RpcError | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.trailing_metadata = tuple(trailing_metadata)
        self.rpc_error = rpc_error

    def __str__(self) -> str:
        name = self.code.name if self.code is not None else None
        return f"{name}: {self.message}" if name else self.message


class InvalidRequest(BarkstreamError, ValueError):
    """The request itself is wrong (empty text, unknown voice, unsupported sample rate): fix it."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class Overloaded(BarkstreamError):
    """The server is at its limit of concurrent streams. Retry after `retry_after` seconds."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retryable = True

    @property
    def retry_after(self) -> float | None:
        """The server's hint (seconds) from trailing metadata `retry-after-ms`, or None."""
        for key, value in self.trailing_metadata:
            if key == RETRY_AFTER_METADATA_KEY:
                try:
                    return max(0.0, float(value) / 1000.0)
                except (TypeError, ValueError):
                    return None
        return None


class Unavailable(BarkstreamError, ConnectionError):
    """The server cannot be reached, is warming up or is draining: retry (maybe elsewhere)."""

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class DeadlineExceeded(BarkstreamError, TimeoutError):
    """The call's timeout passed before it finished (raised mid-stream too)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(BarkstreamError):
    """No token, or the server did not accept it."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(BarkstreamError):
    """The token is valid but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Cancelled(BarkstreamError):
    """The call was cancelled by the server or the transport (not by this caller)."""

    code = grpc.StatusCode.CANCELLED


class ServerError(BarkstreamError):
    """Anything else (INTERNAL, UNKNOWN, UNIMPLEMENTED...): a bug or a mismatched server."""


_BY_CODE: dict[grpc.StatusCode, type[BarkstreamError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequest,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.CANCELLED: Cancelled,
}


DEADLINE_WORDING = "the call did not finish within its timeout"
_NAME_THE_TARGET = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def error_class(code: grpc.StatusCode) -> type[BarkstreamError]:
    """The exception type a status code maps to."""
    return _BY_CODE.get(code, ServerError)


def from_rpc_error(err: grpc.RpcError, target: str = "") -> BarkstreamError:
    """Translate a grpc error (sync or aio) into the matching typed error.

    `target` is added to UNAVAILABLE and DEADLINE_EXCEEDED messages, which otherwise do not
    say which server could not be reached or did not answer in time.
    """
    code = _call(err, "code") or grpc.StatusCode.UNKNOWN
    details = _call(err, "details") or code.name.lower().replace("_", " ")
    trailing = _call(err, "trailing_metadata") or ()
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        details = _deadline_wording(details)
    if code in _NAME_THE_TARGET and target and target not in details:
        details = f"{target}: {details}"
    return error_class(code)(details, code=code, trailing_metadata=trailing, rpc_error=err)


def _deadline_wording(details: str) -> str:
    """One wording, whether gRPC ran out of time locally ("Deadline Exceeded") or the server said so."""
    said = details.strip()
    generic = said.lower() in ("", "deadline exceeded", "deadline_exceeded")
    return DEADLINE_WORDING + ("" if generic else f": {said}")


def _call(err: grpc.RpcError, name: str) -> Any:
    method = getattr(err, name, None)
    return method() if callable(method) else None

"""One error type for HTTP and WebSocket answers, and the gRPC status -> HTTP status / close code map.

HTTP errors carry OpenAI's error JSON (`{"error": {"message", "type", "param", "code"}}`), so
the `openai` package and tools built on it raise their usual exception types with our message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc

from ..common.admission import RETRY_AFTER_METADATA_KEY

# gRPC status -> (HTTP status, OpenAI error type). Anything else is the upstream's fault: 502.
_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.CANCELLED: (499, "cancelled"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
}
# WebSocket close codes: the standard ones where they fit, else 4000 + the HTTP status.
WS_NORMAL = 1000
WS_UNSUPPORTED_DATA = 1003
WS_INVALID_PAYLOAD = 1007
WS_POLICY = 1008
WS_TOO_BIG = 1009
WS_INTERNAL = 1011


@dataclass(eq=False)
class ApiError(Exception):
    """A request that ends with `status`; `retry_after_s` becomes a Retry-After header (429, 503)."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    retry_after_s: int | None = None

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after_s)} if self.retry_after_s is not None else {}

    @property
    def close_code(self) -> int:
        """The WebSocket close code of this error."""
        return WS_INTERNAL if self.status >= 500 and self.status not in (503, 504) else 4000 + self.status

    def event(self) -> dict:
        """The JSON error event a WebSocket client gets before the close frame."""
        return {"type": "error", "status": self.status, "code": self.code or self.type, "message": self.message}


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, "invalid_request_error", param, code)


def from_rpc_error(err: grpc.RpcError) -> ApiError:
    """The HTTP face of an orchestrator status (its message passes through: it names the field)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else "") or code.name.lower()
    status, kind = _HTTP.get(code, (502, "upstream_error"))
    if status == 502:
        details = f"the speech service failed ({code.name})"
    retry = None
    if status in (429, 503):
        retry = 1
        trailing = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
        for key, value in trailing or ():
            if key == RETRY_AFTER_METADATA_KEY:
                try:
                    retry = max(1, math.ceil(int(value) / 1000))
                except (TypeError, ValueError):
                    pass
    return ApiError(status, details, kind, None, code.name.lower(), retry)

"""Reading a JSON request body within a size limit: 413 beyond it, 400 for bytes that are not UTF-8 JSON."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from .errors import ApiError, invalid


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object. The size is checked as bytes arrive, so a huge or endless
    chunked body is refused after max_bytes, without buffering it."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise _too_large(max_bytes)
    data = bytearray()
    async for piece in request.stream():
        data += piece
        if len(data) > max_bytes:
            raise _too_large(max_bytes)
    return parse_json_object(bytes(data))


def parse_json_object(data: bytes | str) -> dict[str, Any]:
    """Strict JSON: UTF-8 only, no NaN/Infinity, no lone surrogates in strings, an object at the top."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as e:
        raise invalid(f"the body is not valid UTF-8 (byte {e.start})", code="invalid_utf8") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise invalid(f"the body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(value, dict):
        raise invalid(f"the body must be a JSON object, not {type(value).__name__}", code="invalid_json")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"the request body is larger than {max_bytes} bytes", "invalid_request_error",
                    None, "body_too_large")


def text_field(body: dict[str, Any], name: str, default: str | None = None, *, required: bool = False) -> str:
    """A string field that protobuf can carry (valid UTF-8: no lone surrogates from `\\ud800` escapes)."""
    if name not in body or body[name] is None:
        if required:
            raise invalid(f"'{name}' is required", name, "missing_required_parameter")
        return default or ""
    value = body[name]
    if not isinstance(value, str):
        raise invalid(f"'{name}' must be a string, not {type(value).__name__}", name, "invalid_type")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(f"'{name}' holds a lone surrogate (\\ud800-\\udfff): not valid Unicode text", name,
                      "invalid_utf8") from None
    return value

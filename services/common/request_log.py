"""One log line per finished call: who asked for what, how it went, how it ended (no torch).

`RequestLog` is a server interceptor on every barkstream server (installed by ServerHandle).
The public TextToSpeech calls are logged at INFO, the stage services' at DEBUG (an operator
follows requests at the front door; a stage's per-stream lines are for debugging). Servicers
add fields through `spans.annotate(...)` (or `note(...)`), which land in the record of the call
running in the current context; the interceptor adds the method, peer, duration and the status
code the caller got, when the call really ends (server_calls.py).

    plain: request method=barkstream.v1.TextToSpeech/Synthesize status=OK request_id=7f3a... peer=ipv4:10.0.0.7:51234
           voice=v2/en_speaker_6 text_chars=42 segments=2 time_to_first_audio_ms=812.4 real_time_factor=0.73 ...
    json:  {"event": "request", "method": "barkstream.v1.TextToSpeech/Synthesize", "status": "OK", ...}
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import grpc

from barkstream.v1 import tts_pb2

from .server_calls import REQUEST_ID_METADATA, CallInterceptor, reset_var

log = logging.getLogger("barkstream.requests")

LOG_FORMATS = ("plain", "json")
PUBLIC_PREFIX = "/" + tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name + "/"
# Always in the line, in this order (null / "-" when the call never got that far).
FIELDS = ("method", "status", "request_id", "peer", "voice", "text_chars", "segments", "time_to_first_audio_ms",
          "real_time_factor", "duration_ms")

_RECORD: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("barkstream_request_record",
                                                                                 default=None)


def note(**fields: Any) -> None:
    """Add fields to the log line of the call running in this context (ignored outside a call)."""
    record = _RECORD.get()
    if record is not None:
        record.update((k, v) for k, v in fields.items() if v is not None)


class RequestLog(CallInterceptor):
    def __init__(self, log_format: str = "plain") -> None:
        if log_format not in LOG_FORMATS:
            raise ValueError(f"log_format={log_format!r}: use plain or json")
        self.log_format = log_format

    def started(self, method: str, metadata: Mapping[str, str], context: grpc.aio.ServicerContext):
        level = logging.INFO if method.startswith(PUBLIC_PREFIX) else logging.DEBUG
        if not log.isEnabledFor(level):
            return None
        record: dict[str, Any] = {"request_id": metadata.get(REQUEST_ID_METADATA)}
        return level, method, context.peer(), record, _RECORD.set(record), time.perf_counter()

    def ended(self, state, context, code: grpc.StatusCode, error: BaseException | None) -> None:
        if state is None:
            return
        level, method, peer, record, token, started = state
        reset_var(token)
        fields = {"method": method.lstrip("/"), "status": code.name, "peer": peer,
                  "duration_ms": round((time.perf_counter() - started) * 1000, 1), **record}
        log.log(level, "%s", format_line(fields, self.log_format))


def format_line(fields: Mapping[str, Any], log_format: str) -> str:
    """The line for `fields`: FIELDS first (missing ones as null or -), then the rest in the order given."""
    ordered = {k: fields.get(k) for k in FIELDS}
    ordered.update((k, v) for k, v in fields.items() if k not in ordered)
    ordered = {k: round(v, 4) if isinstance(v, float) else v for k, v in ordered.items()}
    if log_format == "json":
        return json.dumps({"event": "request", **ordered}, ensure_ascii=False)
    return "request " + " ".join(f"{k}={_plain(v)}" for k, v in ordered.items())


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or any(c in text for c in ' "=\\\n') else text

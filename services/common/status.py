"""Turning exceptions into the right gRPC status at the servicer edge.

The core raises plain Python exceptions (ValueError subclasses for bad input); servicers wrap
their body in `abort_on_error` so a user's mistake reaches the caller as INVALID_ARGUMENT with
the core's message, a downstream stage's status passes through unchanged (the orchestrator
must not turn a stage's INVALID_ARGUMENT or RESOURCE_EXHAUSTED into INTERNAL), and only real
bugs become INTERNAL, logged with their traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from barkstream.services.common.admission import RETRY_AFTER_METADATA_KEY
from barkstream.services.common.errors import InvalidRequest
from barkstream.services.common.ready import NotReady

log = logging.getLogger(__name__)

ExceptionTypes = tuple[type[BaseException], ...]

# Downstream statuses that describe the caller's request or the system's load, passed on as
# they are. Anything else from a stage (UNKNOWN, INTERNAL, DATA_LOSS, ...) is our fault.
_PASS_THROUGH = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
})


def _retry_hint(err: grpc.aio.AioRpcError) -> tuple[tuple[str, str], ...]:
    trailing = err.trailing_metadata() or ()
    return tuple((k, v) for k, v in trailing if k == RETRY_AFTER_METADATA_KEY and isinstance(v, str))


@contextlib.asynccontextmanager
async def abort_on_error(context: grpc.aio.ServicerContext, *, invalid: ExceptionTypes = (),
                         where: str = "") -> AsyncIterator[None]:
    """Map exceptions raised in the body to a status via `context.abort`.

    invalid: the core's exception types that mean "fix the request" (e.g. a VoiceError); they
      and `InvalidRequest` become INVALID_ARGUMENT with their message.
    where: prefix naming the hop for downstream errors, e.g. "coarse stage".
    TimeoutError becomes DEADLINE_EXCEEDED, NotReady (still warming up) UNAVAILABLE. Aborts and
    cancellation pass through untouched.
    """
    try:
        yield
    except grpc.aio.AbortError:
        raise
    except (InvalidRequest, *invalid) as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except grpc.aio.AioRpcError as exc:
        prefix = f"{where}: " if where else ""
        if exc.code() in _PASS_THROUGH:
            await context.abort(exc.code(), f"{prefix}{exc.details()}", trailing_metadata=_retry_hint(exc))
        log.error("downstream call failed: %s%s %s", prefix, exc.code().name, exc.details())
        await context.abort(grpc.StatusCode.INTERNAL, f"{prefix}internal error ({exc.code().name})")
    except TimeoutError:
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
    except NotReady as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    except Exception:
        log.exception("unexpected error in %s", where or "servicer")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")

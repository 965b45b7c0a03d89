"""Seeing every server call from its start to its real end, for interceptors that report on calls.

A grpc.aio interceptor only sees the handler: a streaming RPC's handler returns at once and its
work runs while gRPC iterates the response generator. `CallInterceptor` wraps the handler so
that `ended` runs when the call is really over (the last response sent, the stream cancelled,
or the servicer aborted), with the status code the caller receives. The telemetry interceptor
(spans, durations) and the request log are its two users.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Mapping
from typing import Any

import grpc

# The request id a call carries in its metadata (the orchestrator sets it on its stage calls).
REQUEST_ID_METADATA = "x-request-id"
# Probes and tooling, not traffic: not reported.
UNREPORTED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
ARITIES = {(False, False): "unary_unary", (False, True): "unary_stream", (True, False): "stream_unary",
            (True, True): "stream_stream"}


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Calls `started` before each reported call and `ended` once it is over; subclasses say what to do."""

    def started(self, method: str, metadata: Mapping[str, str], context: grpc.aio.ServicerContext) -> Any:
        """The call begins (in the call's own task and context); returns what `ended` gets."""
        raise NotImplementedError

    def ended(self, state: Any, context: grpc.aio.ServicerContext, code: grpc.StatusCode,
              error: BaseException | None) -> None:
        """The call is over with `code`; `error` is what the handler raised, if anything."""
        raise NotImplementedError

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or method.startswith(UNREPORTED_PREFIXES) or not is_async(handler):
            return handler  # sync behaviours: the generated UNIMPLEMENTED stubs (grpc.aio runs them in a thread)
        metadata = {k: v for k, v in handler_call_details.invocation_metadata or () if isinstance(v, str)}
        arity = ARITIES[(handler.request_streaming, handler.response_streaming)]
        # A coroutine (a unary response, or a stream written with context.write) is awaited;
        # an async generator is iterated: grpc.aio tells them apart by their kind, so must we.
        wrap = self._streaming if inspect.isasyncgenfunction(getattr(handler, arity)) else self._unary
        return handler._replace(**{arity: wrap(getattr(handler, arity), method, metadata)})

    def _finish(self, state: Any, context, error: BaseException | None) -> None:
        self.ended(state, context, server_code(context, error), error)

    def _unary(self, behavior, method, metadata):
        async def handle(request, context):
            state = self.started(method, metadata, context)
            try:
                response = await behavior(request, context)
            except BaseException as e:
                self._finish(state, context, e)
                raise
            self._finish(state, context, None)
            return response

        return handle

    def _streaming(self, behavior, method, metadata):
        async def handle(request, context):
            state = self.started(method, metadata, context)
            responses = behavior(request, context)
            error = None
            try:
                async for response in responses:
                    yield response
            except BaseException as e:  # GeneratorExit: gRPC dropped the stream (cancelled)
                error = e
                raise
            finally:
                try:
                    await responses.aclose()  # the servicer's cleanup runs now, not when collected
                finally:
                    self._finish(state, context, error)

        return handle


def is_async(handler: grpc.RpcMethodHandler) -> bool:
    """Whether the method's behaviour is a coroutine or async generator function (every servicer of ours)."""
    behavior = handler.stream_stream or handler.stream_unary or handler.unary_stream or handler.unary_unary
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)


def server_code(context, error: BaseException | None) -> grpc.StatusCode:
    """The status the caller gets: the one the servicer set, else what `error` means."""
    try:
        code = context.code()
    except Exception:  # noqa: BLE001 - older grpc: no code() on the aio context
        code = None
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        remaining = context.time_remaining()
        return grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 \
            else grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def reset_var(token: contextvars.Token) -> None:
    """Undo a ContextVar.set made when the call started. A response generator that gRPC abandons is
    closed later from another task, where the token cannot be reset; that context dies with its task."""
    try:
        token.var.reset(token)
    except ValueError:
        pass

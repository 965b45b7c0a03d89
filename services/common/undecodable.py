"""Requests that are not valid protobuf get INVALID_ARGUMENT, on every RPC of every service (no torch).

gRPC deserializes a request before any servicer code runs; when that fails (a string field
holding invalid UTF-8 or an encoded lone surrogate, corrupt wire format) grpcio logs a traceback
and answers UNKNOWN. `RejectUndecodable` (installed by ServerHandle on every server) wraps each
method's request deserializer so that a failure becomes a marker instead of an exception, and
each method's behaviour so that the marker is answered with INVALID_ARGUMENT and a message that
says what is wrong. Methods added later are covered without any code of their own.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from .server_calls import ARITIES, is_async

INVALID_UTF8 = "String field had bad UTF-8"


class Undecodable:
    """What the deserializer returns for bytes that do not parse; `message` is for the caller."""

    def __init__(self, error: DecodeError) -> None:
        reason = str(error).rsplit(": ", 1)[-1]
        self.message = "request is not valid protobuf: " + (
            "a string field holds invalid UTF-8" if reason == INVALID_UTF8 else reason)


class RejectUndecodable(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None or not is_async(handler):
            return handler  # sync behaviours (e.g. the generated UNIMPLEMENTED stubs) are left as they are
        arity = ARITIES[(handler.request_streaming, handler.response_streaming)]
        behavior = getattr(handler, arity)
        # Async generators stay async generators; coroutines (unary responses, or streaming ones
        # written with context.write) stay coroutines: grpc.aio tells them apart by their kind.
        if handler.request_streaming:
            wrapped = _stream_generator(behavior) if inspect.isasyncgenfunction(behavior) else _stream(behavior)
        else:
            wrapped = _unary_generator(behavior) if inspect.isasyncgenfunction(behavior) else _unary(behavior)
        return handler._replace(request_deserializer=_tolerant(handler.request_deserializer), **{arity: wrapped})


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def tolerant(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as e:
            return Undecodable(e)

    return tolerant


async def _checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    """The request stream, aborting the call at the first message that did not parse."""
    async for request in requests:
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        yield request


def _unary(behavior):
    async def handle(request, context):
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return await behavior(request, context)

    return handle


def _unary_generator(behavior):
    async def handle(request, context):
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        async with aclosing(behavior(request, context)) as responses:
            async for response in responses:
                yield response

    return handle


def _stream(behavior):
    async def handle(requests, context):
        return await behavior(_checked(requests, context), context)

    return handle


def _stream_generator(behavior):
    async def handle(requests, context):
        async with aclosing(behavior(_checked(requests, context), context)) as responses:
            async for response in responses:
                yield response

    return handle

"""StreamingSynthesize's protobuf <-> the session's inputs and events (realtime.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from barkstream.v1 import tts_pb2

from ..common.errors import InvalidRequest
from .messages import chunk_pb
from .realtime import Clear, Cleared, Event, Flush, SegmentDone, SegmentStarted, Text
from .synthesis import SentChunk


async def first_config(requests: AsyncIterator[tts_pb2.StreamingSynthesizeRequest]) -> tts_pb2.SessionConfig:
    """The session's configuration: it must be the first message."""
    async for request in requests:
        kind = request.WhichOneof("payload")
        if kind != "config":
            raise InvalidRequest(f"the first message of a session must be `config`, got {kind or 'an empty message'}: "
                                 "send the SessionConfig first, then text")
        return request.config
    raise InvalidRequest("the request stream ended before its `config`: send a SessionConfig first")


async def inputs_from_pb(requests: AsyncIterator[tts_pb2.StreamingSynthesizeRequest]
                         ) -> AsyncIterator[Text | Flush | Clear]:
    """The messages after the configuration; an empty text piece is nothing to say and is skipped."""
    async for request in requests:
        kind = request.WhichOneof("payload")
        if kind == "text":
            if request.text:
                yield Text(request.text)
        elif kind == "flush":
            yield Flush()
        elif kind == "clear":
            yield Clear()
        elif kind == "config":
            raise InvalidRequest("a session takes one `config`, as its first message; a second one is refused")
        else:
            raise InvalidRequest("a message without payload: set one of text, flush or clear")


def event_to_pb(event: Event) -> tts_pb2.StreamingSynthesizeResponse:
    if isinstance(event, SentChunk):
        return tts_pb2.StreamingSynthesizeResponse(chunk=chunk_pb(event))
    if isinstance(event, SegmentStarted):
        return tts_pb2.StreamingSynthesizeResponse(segment_started=tts_pb2.SegmentStarted(
            segment_index=event.index, text=event.text, start_sample=event.start_sample))
    if isinstance(event, SegmentDone):
        return tts_pb2.StreamingSynthesizeResponse(segment_done=tts_pb2.SegmentDone(
            segment_index=event.index, end_sample=event.end_sample, interrupted=event.interrupted))
    assert isinstance(event, Cleared)
    return tts_pb2.StreamingSynthesizeResponse(cleared=tts_pb2.Cleared(
        at_sample=event.at_sample, segment_indices=list(event.indices)))

"""The shared body of the stage RPCs; the bidi ones take config first, then input chunks, then an end marker.

A reader task feeds the engine's stream while the servicer yields the engine's
output; a broken or invalid input stream fails the job, which ends the output
with the right status instead of a hang.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

from ..common import convert
from ..common.errors import InvalidRequest
from ..common.spans import annotate
from ..common.status import abort_on_error


async def first_message(requests: AsyncIterator[Any], config_field: str) -> Any:
    """The stream's first message, which must carry `config_field`."""
    try:
        first = await anext(requests)
    except StopAsyncIteration:
        raise InvalidRequest(f"empty request stream: send a message with {config_field} first") from None
    if first.WhichOneof("payload") != config_field:
        raise InvalidRequest(f"the first message must carry {config_field}, got {first.WhichOneof('payload')}")
    return first


class Failable(Protocol):
    """The engine job's side of the stream (a stages.bridge.JobBridge)."""

    def fail(self, error: BaseException) -> None: ...


def start_reader(requests: AsyncIterator[Any], bridge: Failable, input_field: str,
                 parse: Callable[[Any], Any], feed: Callable[[Any], None], close: Callable[[], None],
                 wake: Callable[[], None]) -> asyncio.Task:
    """Consume input chunks into the engine's stream on a task of its own."""

    async def read() -> None:
        sequence = convert.ChunkSequence(input_field)
        try:
            async for msg in requests:
                kind = msg.WhichOneof("payload")
                if kind == input_field:
                    data = parse(msg)
                    sequence.accept(getattr(msg, input_field), data.shape[-1])
                    feed(data)
                    wake()
                elif kind == "end":
                    sequence.check_end(msg.end)
                    close()
                    wake()
                    return
                else:
                    raise InvalidRequest(f"unexpected {kind!r} message after the config")
            raise InvalidRequest("the input stream ended without an end message")
        except asyncio.CancelledError:
            raise
        except ValueError as e:
            bridge.fail(e if isinstance(e, InvalidRequest) else InvalidRequest(str(e)))
        except Exception as e:  # noqa: BLE001 - e.g. the caller went away: stop the job
            bridge.fail(e)
        finally:
            wake()

    return asyncio.create_task(read())


@dataclass(frozen=True)
class Inputs:
    """A bidi stage's input side: the request stream after its config, fed into the engine's `stream`."""

    requests: AsyncIterator[Any]
    stream: Any  # has feed(data) and close()
    field: str
    parse: Callable[[Any], Any]


async def engine_outputs(runner: Any, attach: Callable[[Any], None],
                         inputs: Inputs | None = None) -> AsyncIterator[Any]:
    """The body every stage shares: hand a job to the engine, feed it its inputs, yield what it emits.

    `attach(job)` runs on the engine thread. `inputs`: the bidi stages' streamed input (the
    semantic stage has none: its whole request is in `attach`). Use under
    `contextlib.aclosing` so that a caller who goes away cancels the job and the reader at
    once (the slot is freed at the engine's next step).
    """
    bridge = runner.open(attach)
    reader = None if inputs is None else start_reader(
        inputs.requests, bridge, inputs.field, inputs.parse, inputs.stream.feed, inputs.stream.close, runner.wake)
    try:
        async for item in bridge:
            yield item
    finally:
        if reader is not None:
            reader.cancel()
        bridge.job.cancel()
        runner.wake()


async def frame_chunks(runner: Any, cfg: Any, stream: Any, seed: int | None, inputs: Inputs,
                       response: Callable[..., Any]) -> AsyncIterator[Any]:
    """The coarse and fine bodies: frames in, frames out as numbered chunks, then the end message.

    `response` is the RPC's response message class (`chunk=` / `end=` payloads).
    """
    annotate(request_id=cfg.request_id, segment_index=cfg.segment_index)
    outputs = engine_outputs(runner, lambda job: runner.engine.attach(job, stream, seed), inputs)
    numbering = convert.TokenChunks(cfg.request_id, cfg.segment_index)
    async with aclosing(outputs):
        async for frames in outputs:
            yield response(chunk=numbering.chunk(frames))
    yield response(end=numbering.end())


class FrameStage:
    """The coarse and fine servicers' Generate: config first, then frames in; frames out, then the end.

    A subclass says what differs: `where` (for errors), `input_field` and `response` (its messages),
    `start(cfg)` (the engine stream and seed for a config) and `parse(message)` (one input chunk).
    """

    where: str
    input_field: str
    response: Callable[..., Any]

    def __init__(self, runner: Any, admission: Any) -> None:
        self.runner = runner  # Ready[EngineRunner]
        self.admission = admission

    def start(self, cfg: Any) -> tuple[Any, int | None]:
        raise NotImplementedError

    def parse(self, message: Any) -> Any:
        raise NotImplementedError

    async def Generate(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:  # noqa: N802
        async with self.admission.slot(context), abort_on_error(context, where=self.where):
            cfg = (await first_message(request_iterator, "config")).config
            stream, seed = self.start(cfg)
            inputs = Inputs(request_iterator, stream, self.input_field, self.parse)
            body = frame_chunks(self.runner.get(), cfg, stream, seed, inputs, self.response)
            async with aclosing(body):  # a caller who goes away frees the engine row at once
                async for message in body:
                    yield message

"""One Synthesize call: segments pipelined through the four stage services.

Per segment, four streams are chained: semantic tokens are forwarded to the
coarse stage as they arrive, coarse frames to the fine stage, fine frames to
the codec, and PCM comes back. Segment i+1 starts once segment i's semantic
stream has ended (its semantic then overlaps segment i's coarse/fine/codec);
without a voice, segments after the first wait for the first one's codes,
which become their voice (Suno's long-form method). Audio leaves in segment
order. No torch here: the orchestrator only moves tokens.

When a stage replica fails, the segment's whole chain runs again on other replicas and the
client's stream continues where it was, without gap or duplicate (recovery.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from barkstream.v1 import common_pb2, stages_pb2

from ..bark.params import GenerationParams, long_form_prompt, segment_seed
from ..bark.voices import VoicePrompt
from ..common import convert
from ..common.spans import segment_span
from .recovery import SegmentAttempt, StageFailed, choose_replicas, describe, fine_reference, request_seed
from .stage_clients import STAGES, StageClients

__all__ = ["SegmentCodes", "StageFailed", "SynthesisSession"]

log = logging.getLogger(__name__)

_END = object()


@dataclass
class SegmentCodes:
    semantic: list[np.ndarray] = field(default_factory=list)
    coarse: list[np.ndarray] = field(default_factory=list)
    fine: list[np.ndarray] = field(default_factory=list)

    def voice(self) -> VoicePrompt | None:
        """These codes as a voice prompt (Suno's `output_full`, cut for long form); None when too short."""
        return long_form_prompt(np.concatenate(self.semantic) if self.semantic else np.zeros(0, np.int64),
                                _cat(self.coarse, 2), _cat(self.fine, 8))


@dataclass
class StageTimes:
    started: float = 0.0
    first_output: float | None = None
    ended: float | None = None


@dataclass
class SegmentRun:
    index: int
    token_ids: np.ndarray
    codes: SegmentCodes = field(default_factory=SegmentCodes)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    semantic_done: asyncio.Event = field(default_factory=asyncio.Event)
    codes_done: asyncio.Event = field(default_factory=asyncio.Event)
    times: dict[str, StageTimes] = field(default_factory=dict)
    sent: int = 0  # PCM samples handed to the reader (the client has them, or will)


class SynthesisSession:
    def __init__(
        self,
        stages: StageClients,
        request_id: str,
        segment_ids: Sequence[np.ndarray],
        voice: VoicePrompt | None,
        params: GenerationParams,
        seed: int | None,
        timeout: float | None,
        metadata: Sequence[tuple[str, str]] = (),
        tracer=None,
    ):
        self.stages = stages
        self.tracer = tracer  # telemetry: a span per segment, parent of its stage calls' client spans
        self.request_id = request_id
        self.voice = voice
        self.params = params
        # Never None: a retried segment must reproduce the tokens of its failed run.
        self.seed = request_seed(seed)
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.metadata = tuple(metadata)
        self.segments = [SegmentRun(i, ids) for i, ids in enumerate(segment_ids)]
        self._calls: list[grpc.aio.Call] = []
        self._failure: BaseException | None = None

    def _timeout(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    async def pcm(self) -> AsyncIterator[tuple[int, np.ndarray | None]]:
        """Yields (segment index, float PCM at 24 kHz) in order, and (index, None) at each segment end."""
        first = self.segments[0]
        tasks = [asyncio.create_task(self._segment(s, self.segments[s.index - 1] if s.index else None, first),
                                     name=f"{self.request_id}-seg{s.index}") for s in self.segments]
        try:
            for seg in self.segments:
                while True:
                    item = await seg.queue.get()
                    if item is _END:
                        yield seg.index, None
                        break
                    if isinstance(item, BaseException):
                        raise item
                    yield seg.index, item
        finally:
            for call in self._calls:
                call.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _segment(self, seg: SegmentRun, previous: SegmentRun | None, voice_from: SegmentRun | None) -> None:
        """Run one segment: after `previous`'s semantic stage, with the request's voice or, without one,
        the voice `voice_from` generated (Suno's long-form method; `voice_from` itself runs without)."""
        try:
            if previous is not None:
                await previous.semantic_done.wait()
            voice = self.voice
            long_form = voice is None and voice_from is not None and voice_from is not seg
            if long_form:
                await voice_from.codes_done.wait()
                voice = voice_from.codes.voice()
            with segment_span(self.tracer, seg.index, text_tokens=len(seg.token_ids), long_form_voice=long_form):
                await self._segment_with_retries(seg, voice)
            seg.queue.put_nowait(_END)
        except BaseException as e:  # noqa: BLE001 - every failure must reach the reader, or it hangs
            task = asyncio.current_task()
            if isinstance(e, asyncio.CancelledError) and task is not None and task.cancelling():
                raise
            self._fail(e)

    async def _segment_with_retries(self, seg: SegmentRun, voice: VoicePrompt | None) -> None:
        """Run the segment's chain; on a retryable stage failure, again on other replicas."""
        excluded: dict[str, set[int]] = {stage: set() for stage in STAGES}
        failure: BaseException | None = None
        for number in range(1, self.stages.max_attempts + 1):
            try:
                replicas = await choose_replicas(self.stages, excluded)
            except StageFailed:
                if failure is None:
                    raise
                raise failure from None  # no replica left to retry on: the failure says why
            if failure is not None:
                log.warning("request %s segment %d: %s; rerunning the segment on other replicas (attempt %d of "
                            "%d), skipping %d samples already sent", self.request_id, seg.index, describe(failure),
                            number, self.stages.max_attempts, seg.sent)
            attempt = self._attempt(number, seg, replicas)
            try:
                await self._run(seg, voice, attempt)
                return
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # Nobody cancelled this task: a stage call was cancelled under it. gRPC cancels a
                # call whose request iterator raised (the upstream stage failed; `_forward` recorded
                # why), and reading a locally cancelled call raises CancelledError, not an RpcError.
                failure = attempt.fail(RuntimeError("a stage stream was cancelled"))
            except Exception as e:  # noqa: BLE001 - classified below
                failure = attempt.fail(e)
            finally:
                attempt.cancel()  # free the surviving stages' slots of this run at once
            if (not isinstance(failure, StageFailed) or not failure.retryable
                    or number == self.stages.max_attempts or self._timeout() == 0.0):
                raise failure
            replica = attempt.replicas[failure.stage]
            if failure.code is not grpc.StatusCode.RESOURCE_EXHAUSTED:  # a full replica is healthy, just busy
                self.stages.targets[failure.stage].mark_failed(replica, self.stages.cooldown_s)
            excluded[failure.stage].add(replica.index)
            failure.replica = replica.address

    def _attempt(self, number: int, seg: SegmentRun, replicas: dict) -> SegmentAttempt:
        """A run of `seg` that resumes after what the client has and matches earlier codes."""
        complete = seg.codes_done.is_set()  # then later segments may already use these codes as their voice
        reference = fine_reference(seg.codes.fine) if number > 1 and (seg.sent or complete) else None
        if not complete:
            seg.codes = SegmentCodes()
        return SegmentAttempt(number, replicas, skip=seg.sent, reference=reference,
                              record=None if complete else seg.codes)

    def _fail(self, error: BaseException) -> None:
        """Hand the session's first failure to every segment's reader and waiter."""
        error = self._failure or error
        self._failure = error
        for s in self.segments:
            s.semantic_done.set()
            s.codes_done.set()
            s.queue.put_nowait(error)

    def _call_kwargs(self) -> dict:
        return {"timeout": self._timeout(),
                "metadata": self.metadata + self.stages.call_metadata + (("x-request-id", self.request_id),)}

    async def _run(self, seg: SegmentRun, voice: VoicePrompt | None, attempt: SegmentAttempt) -> None:
        rid, i = self.request_id, seg.index
        seed = segment_seed(self.seed, i)
        seed_kw = {} if seed is None else {"seed": seed}
        sem_req = stages_pb2.SemanticGenerateRequest(
            request_id=rid, segment_index=i, text_tokens=convert.array_to_pb(seg.token_ids),
            params=convert.semantic_params_to_pb(self.params.semantic), **seed_kw)
        if voice is not None:
            convert.array_to_pb(voice.semantic_prompt, sem_req.history)
        seg.times["semantic"] = StageTimes(time.monotonic())
        sem_call = attempt.track(attempt.stub("semantic").Generate(sem_req, **self._call_kwargs()))
        self._calls.append(sem_call)

        coarse_cfg = stages_pb2.CoarseConfig(request_id=rid, segment_index=i,
                                             params=convert.coarse_params_to_pb(self.params.coarse), **seed_kw)
        fine_cfg = stages_pb2.FineConfig(request_id=rid, segment_index=i,
                                         params=convert.fine_params_to_pb(self.params.fine), **seed_kw)
        if voice is not None:
            convert.array_to_pb(voice.semantic_prompt, coarse_cfg.semantic_history)
            convert.array_to_pb(voice.coarse_prompt, coarse_cfg.coarse_history)
            convert.array_to_pb(voice.fine_prompt, fine_cfg.fine_history)

        def on_semantic_end() -> None:
            seg.semantic_done.set()

        def on_fine_end() -> None:
            seg.codes_done.set()

        coarse_in = self._forward("semantic", sem_call, seg, attempt, on_semantic_end,
                                  lambda: stages_pb2.CoarseGenerateRequest(config=coarse_cfg),
                                  lambda chunk: stages_pb2.CoarseGenerateRequest(semantic=chunk),
                                  lambda end: stages_pb2.CoarseGenerateRequest(end=end))
        seg.times["coarse"] = StageTimes(time.monotonic())
        coarse_call = attempt.track(attempt.stub("coarse").Generate(coarse_in, **self._call_kwargs()))
        self._calls.append(coarse_call)
        fine_in = self._forward("coarse", coarse_call, seg, attempt, None,
                                lambda: stages_pb2.FineGenerateRequest(config=fine_cfg),
                                lambda chunk: stages_pb2.FineGenerateRequest(coarse=chunk),
                                lambda end: stages_pb2.FineGenerateRequest(end=end))
        seg.times["fine"] = StageTimes(time.monotonic())
        fine_call = attempt.track(attempt.stub("fine").Generate(fine_in, **self._call_kwargs()))
        self._calls.append(fine_call)
        codec_cfg = stages_pb2.CodecConfig(request_id=rid, segment_index=i)
        codec_in = self._forward("fine", fine_call, seg, attempt, on_fine_end,
                                 lambda: stages_pb2.CodecDecodeRequest(config=codec_cfg),
                                 lambda chunk: stages_pb2.CodecDecodeRequest(fine=chunk),
                                 lambda end: stages_pb2.CodecDecodeRequest(end=end))
        seg.times["codec"] = times = StageTimes(time.monotonic())
        codec_call = attempt.track(attempt.stub("codec").Decode(codec_in, **self._call_kwargs()))
        self._calls.append(codec_call)
        try:
            async for resp in codec_call:
                if resp.HasField("chunk"):
                    if times.first_output is None:
                        times.first_output = time.monotonic()
                    pcm = attempt.fresh(convert.pcm_from_bytes(resp.chunk.pcm))
                    if len(pcm):
                        seg.queue.put_nowait(pcm)
                        seg.sent += len(pcm)
                elif resp.HasField("end"):
                    times.ended = time.monotonic()
        except grpc.aio.AioRpcError as e:
            raise attempt.fail(StageFailed("codec", e)) from None

    async def _forward(self, stage, call, seg, attempt: SegmentAttempt, on_end, config, wrap, end):
        """Relay one stage's output chunks as the next stage's input stream (config first, end last).

        Each chunk is recorded (and, on a rerun, checked) through `attempt`.
        """
        times = seg.times[stage]
        yield config()
        sequence = offset = 0
        try:
            async for resp in call:
                if resp.HasField("chunk"):
                    array = convert.array_from_pb(resp.chunk.tokens, f"{stage} output")
                    if times.first_output is None:
                        times.first_output = time.monotonic()
                    attempt.observe(stage, array)
                    yield wrap(convert.token_chunk(array, request_id=self.request_id, segment_index=seg.index,
                                                   sequence_number=sequence, offset=offset))
                    sequence += 1
                    offset += array.shape[-1]
                elif resp.HasField("end"):
                    break
        except grpc.aio.AioRpcError as e:
            raise attempt.fail(StageFailed(stage, e)) from None
        except Exception as e:  # e.g. malformed stage output: recorded, since gRPC only logs it
            attempt.fail(e)
            raise
        times.ended = time.monotonic()
        if on_end is not None:
            on_end()
        yield end(common_pb2.InputEnd(total=offset))

    def stage_timings(self) -> list[tuple[str, int, StageTimes]]:
        return [(name, s.index, t) for s in self.segments for name, t in s.times.items()]


def _cat(arrays: list[np.ndarray], rows: int) -> np.ndarray:
    return np.concatenate(arrays, axis=1) if arrays else np.zeros((rows, 0), np.int64)

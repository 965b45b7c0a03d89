"""TextToSpeech: protobuf <-> the orchestrator's request checks and synthesis runs.

Everything a caller can get wrong is checked (request.py) before any model work and
answered with INVALID_ARGUMENT and a message that says what to change.
"""

from __future__ import annotations

import time
from contextlib import aclosing

import grpc

from barkstream.v1 import tts_pb2, tts_pb2_grpc

from ..bark.incremental import IncrementalSegmenter
from ..bark.tokenizer import TokenizerError
from ..bark.voices import VoiceError
from ..common.admission import Admission
from ..common.ready import Ready
from ..common.spans import annotate
from ..common.status import abort_on_error
from ..telemetry import Telemetry
from .audio import AudioEncoder
from .live import LiveSynthesis
from .messages import chunk_pb, header_pb, summary_pb
from .options import max_wait_from_pb, segment_policy_from_pb, voice_prompt_to_pb
from .realtime import RealtimeSession, SessionLimit
from .realtime_pb import event_to_pb, first_config, inputs_from_pb
from .request import OrchestratorLimits, segment_ids, stream_options
from .session import StageFailed
from .synthesis import Pipeline, Summary, Synthesis, stage_timings

__all__ = ["OrchestratorLimits", "TextToSpeechServicer"]

# A stage's own failure that is not the caller's doing means "try again": the stage went away.
_STAGE_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}


class TextToSpeechServicer(tts_pb2_grpc.TextToSpeechServicer):
    def __init__(self, pipeline: Ready[Pipeline], admission: Admission,
                 limits: OrchestratorLimits, telemetry: Telemetry | None = None):
        self.pipeline = pipeline
        self.admission = admission
        self.limits = limits
        self.telemetry = telemetry or Telemetry()
        self.sessions: set[RealtimeSession] = set()  # the sessions running now (observability, tests)

    async def Synthesize(self, request: tts_pb2.SynthesizeRequest, context: grpc.aio.ServicerContext):
        async with self.admission.slot(context), abort_on_error(
                context, invalid=(VoiceError, TokenizerError), where="orchestrator"):
            started = time.monotonic()
            annotate(voice=request.voice or None, text_chars=len(request.text))  # logged even when refused
            pipeline = self.pipeline.get()
            options = stream_options(request, pipeline.voices)
            policy = segment_policy_from_pb(request.segmentation, self.limits.max_segment_tokens)
            segments = segment_ids(request.text, pipeline.tokenizer, self.limits, policy)
            annotate(request_id=options.request_id, segments=len(segments), encoding=options.format.encoding.name,
                     sample_rate_hz=options.format.sample_rate_hz)
            run = Synthesis(pipeline.stages, options, segments, context.time_remaining(), self.telemetry, started)
            try:
                yield tts_pb2.SynthesizeResponse(header=header_pb(options, run.encoder, len(segments)))
                async with aclosing(run.chunks()) as chunks:  # a cancelled stream stops its stage calls at once
                    async for sent in chunks:
                        yield tts_pb2.SynthesizeResponse(chunk=chunk_pb(sent))
            except StageFailed as e:
                await _abort_stage(context, e)
            finally:
                run.close()  # a cancelled or failed stream leaves no encoder behind
            summary = summary_pb(run.summary())
            if request.return_voice_prompt:
                first = run.session.segments[0].codes
                spoken = options.voice or first.voice()
                if spoken is not None:
                    voice_prompt_to_pb(spoken, summary.voice_prompt)
            yield tts_pb2.SynthesizeResponse(summary=summary)

    async def StreamingSynthesize(self, request_iterator, context: grpc.aio.ServicerContext):
        async with self.admission.slot(context), abort_on_error(
                context, invalid=(VoiceError, TokenizerError), where="orchestrator"):
            started = time.monotonic()
            config = await first_config(request_iterator)
            annotate(voice=config.voice or None, session=True)
            pipeline = self.pipeline.get()
            options = stream_options(config, pipeline.voices)
            policy = segment_policy_from_pb(config.segmentation, self.limits.max_segment_tokens)
            segmenter = IncrementalSegmenter(pipeline.tokenizer.count, policy, max_wait_from_pb(config.segmentation))
            annotate(request_id=options.request_id, encoding=options.format.encoding.name,
                     sample_rate_hz=options.format.sample_rate_hz)
            encoder = AudioEncoder(options.format)
            remaining, limit = context.time_remaining(), self.limits.session.max_session_s
            live = LiveSynthesis(pipeline.stages, options.request_id, options.voice, options.params, options.seed,
                                 limit if remaining is None else min(remaining, limit), tracer=self.telemetry.tracer)
            session = RealtimeSession(live, segmenter, pipeline.tokenizer.encode, encoder, self.limits.session)
            session.stats.started = started
            self.sessions.add(session)
            try:
                yield tts_pb2.StreamingSynthesizeResponse(header=header_pb(options, encoder, 0))
                async with aclosing(session.events(inputs_from_pb(request_iterator))) as events:
                    async for event in events:  # a cancelled session stops its stage calls at once
                        yield event_to_pb(event)
            except StageFailed as e:
                await _abort_stage(context, e)
            except SessionLimit as e:
                await context.abort(grpc.StatusCode[e.status], str(e))
            finally:
                self.sessions.discard(session)
                encoder.close()
            stats = session.stats
            first = None if stats.first_audio is None else stats.first_audio - started
            run = Summary(options.request_id, stats.samples, options.format.sample_rate_hz, stats.segments,
                          stats.chunks, first, time.monotonic() - started, stage_timings(live.stage_timings()))
            self.telemetry.synthesis_done(first, run.real_time_factor, run.audio_seconds)
            summary = summary_pb(run)
            spoken = live.spoken_voice() if config.return_voice_prompt else None
            if spoken is not None:
                voice_prompt_to_pb(spoken, summary.voice_prompt)
            yield tts_pb2.StreamingSynthesizeResponse(summary=summary)

    async def ListVoices(self, request: tts_pb2.ListVoicesRequest, context: grpc.aio.ServicerContext):
        async with abort_on_error(context, where="orchestrator"):
            out = tts_pb2.ListVoicesResponse()
            for name in self.pipeline.get().voices.list():
                language = _language(name)
                if not request.language or request.language == language:
                    out.voices.add(name=name, language=language)
            return out


async def _abort_stage(context: grpc.aio.ServicerContext, e: StageFailed) -> None:
    code = e.code if e.code in _STAGE_CODES else grpc.StatusCode.UNAVAILABLE
    await context.abort(code, str(e), trailing_metadata=e.trailing)


def _language(name: str) -> str:
    """`v2/en_speaker_6` -> `en`; names without a language prefix give ''."""
    base = name.rsplit("/", 1)[-1]
    head = base.split("_", 1)[0]
    return head if len(head) == 2 and head.isalpha() else ""

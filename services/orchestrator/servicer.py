"""TextToSpeech: validates, splits, resolves the voice, and streams the session's audio.

Everything a caller can get wrong is checked here, before any model work, and
answered with INVALID_ARGUMENT and a message that says what to change.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import grpc
import numpy as np

from barkstream.v1 import tts_pb2, tts_pb2_grpc

from ..bark.incremental import IncrementalSegmenter
from ..bark.schedule import SegmentPolicy, schedule_segments
from ..bark.segment import DEFAULT_MAX_SEGMENT_TOKENS
from ..bark.tokenizer import BarkTokenizer, TokenizerError
from ..bark.voices import VoiceError, VoiceLibrary
from ..common import convert
from ..common.admission import Admission
from ..common.audio import AudioEncoder, resolve_format
from ..common.errors import InvalidRequest
from ..common.status import abort_on_error
from ..common.telemetry import Telemetry, annotate
from .live import LiveSynthesis
from .options import generated_voice, max_wait_from_pb, resolve_voice, segment_policy_from_pb, voice_prompt_to_pb
from .realtime import RealtimeSession, SessionLimit, SessionLimits
from .realtime_pb import event_to_pb, first_config, inputs_from_pb
from .session import StageFailed, SynthesisSession
from .stage_clients import StageClients

_STAGE_ENUM = {"semantic": 1, "coarse": 2, "fine": 3, "codec": 4}
# A stage's own failure that is not the caller's doing means "try again": the stage went away.
_STAGE_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}


@dataclass(frozen=True)
class OrchestratorLimits:
    max_text_chars: int = 4000
    max_segments: int = 64
    max_segment_tokens: int = DEFAULT_MAX_SEGMENT_TOKENS
    session: SessionLimits = SessionLimits()


class TextToSpeechServicer(tts_pb2_grpc.TextToSpeechServicer):
    def __init__(self, stages: StageClients, tokenizer: BarkTokenizer, voices: VoiceLibrary,
                 admission: Admission, limits: OrchestratorLimits = OrchestratorLimits(),
                 telemetry: Telemetry | None = None):
        self.stages = stages
        self.telemetry = telemetry or Telemetry()
        self.tokenizer = tokenizer
        self.voices = voices
        self.admission = admission
        self.limits = limits
        self.sessions: set[RealtimeSession] = set()  # the sessions running now (observability, tests)

    def _segments(self, text: str, policy: SegmentPolicy) -> list[np.ndarray]:
        if not text.strip():
            raise InvalidRequest("text is empty: send some words to speak")
        if len(text) > self.limits.max_text_chars:
            raise InvalidRequest(f"text has {len(text)} characters; the limit is {self.limits.max_text_chars}: "
                                 "split it into several requests")
        if "\x00" in text:
            raise InvalidRequest("text contains NUL characters: remove them")
        segments = schedule_segments(text, self.tokenizer.count, policy)
        ids = [np.asarray(self.tokenizer.encode(s), dtype=np.int64) for s in segments]
        ids = [i for i in ids if len(i)]
        if not ids:
            raise InvalidRequest("text has nothing Bark can read (no tokens): send words")
        if len(ids) > self.limits.max_segments:
            raise InvalidRequest(f"text makes {len(ids)} segments; the limit is {self.limits.max_segments}: "
                                 "send shorter text")
        return ids

    async def Synthesize(self, request: tts_pb2.SynthesizeRequest, context: grpc.aio.ServicerContext):
        async with self.admission.slot(context), abort_on_error(
                context, invalid=(VoiceError, TokenizerError), where="orchestrator"):
            started = time.monotonic()
            fmt = resolve_format(request.encoding, request.sample_rate_hz, request.chunk_duration_ms)
            params = convert.generation_params_from_pb(request.params)
            voice = resolve_voice(self.voices, request.voice, request.voice_prompt)
            policy = segment_policy_from_pb(request.segmentation, self.limits.max_segment_tokens)
            segment_ids = self._segments(request.text, policy)
            request_id = _request_id(request.request_id) or uuid.uuid4().hex
            annotate(request_id=request_id, voice=request.voice or None, segments=len(segment_ids),
                     text_chars=len(request.text), encoding=fmt.encoding.name, sample_rate_hz=fmt.sample_rate_hz)
            encoder = AudioEncoder(fmt)
            yield tts_pb2.SynthesizeResponse(header=tts_pb2.StreamHeader(
                request_id=request_id, encoding=fmt.encoding.value, sample_rate_hz=fmt.sample_rate_hz, channels=1,
                segment_count=len(segment_ids), chunk_duration_ms=fmt.chunk_duration_ms,
                samples_per_chunk=fmt.samples_per_chunk, container_header=encoder.header(), voice=request.voice))
            session = SynthesisSession(self.stages, request_id, segment_ids, voice, params,
                                       convert.seed_from_pb(request), context.time_remaining(),
                                       tracer=self.telemetry.tracer)
            sequence = 0
            first_audio: float | None = None
            try:
                async for segment, pcm in session.pcm():
                    for c in (encoder.flush() if pcm is None else encoder.push(pcm)):
                        if first_audio is None:
                            first_audio = time.monotonic()
                        yield tts_pb2.SynthesizeResponse(chunk=tts_pb2.AudioChunk(
                            sequence_number=sequence, segment_index=segment, start_sample=c.start_sample,
                            data=c.data, num_samples=c.num_samples))
                        sequence += 1
            except StageFailed as e:
                code = e.code if e.code in _STAGE_CODES else grpc.StatusCode.UNAVAILABLE
                await context.abort(code, str(e), trailing_metadata=e.trailing)
            summary = self._summary(request_id, encoder.samples_out, fmt.sample_rate_hz, len(segment_ids), sequence,
                                    started, first_audio, session.stage_timings())
            if request.return_voice_prompt:
                first = session.segments[0].codes
                spoken = voice or generated_voice(first.semantic, first.coarse, first.fine)
                if spoken is not None:
                    voice_prompt_to_pb(spoken, summary.voice_prompt)
            yield tts_pb2.SynthesizeResponse(summary=summary)

    def _summary(self, request_id: str, samples: int, rate: int, segments: int, chunks: int, started: float,
                 first_audio: float | None, timings) -> tts_pb2.SynthesisSummary:
        wall = time.monotonic() - started
        audio_s = samples / rate
        summary = tts_pb2.SynthesisSummary(
            request_id=request_id, total_samples=samples, audio_seconds=audio_s, segment_count=segments,
            chunk_count=chunks, time_to_first_audio_ms=0.0 if first_audio is None else (first_audio - started) * 1000,
            wall_ms=wall * 1000, real_time_factor=wall / audio_s if audio_s else 0.0)
        self.telemetry.synthesis_done(None if first_audio is None else first_audio - started,
                                      wall / audio_s if audio_s else None, audio_s)
        for stage, index, t in timings:
            if t.ended is not None:
                summary.stage_timings.add(
                    stage=_STAGE_ENUM[stage], segment_index=index, total_ms=(t.ended - t.started) * 1000,
                    first_output_ms=0.0 if t.first_output is None else (t.first_output - t.started) * 1000)
        return summary

    async def StreamingSynthesize(self, request_iterator, context: grpc.aio.ServicerContext):
        async with self.admission.slot(context), abort_on_error(
                context, invalid=(VoiceError, TokenizerError), where="orchestrator"):
            started = time.monotonic()
            config = await first_config(request_iterator)
            fmt = resolve_format(config.encoding, config.sample_rate_hz, config.chunk_duration_ms)
            params = convert.generation_params_from_pb(config.params)
            voice = resolve_voice(self.voices, config.voice, config.voice_prompt)
            policy = segment_policy_from_pb(config.segmentation, self.limits.max_segment_tokens)
            segmenter = IncrementalSegmenter(self.tokenizer.count, policy, max_wait_from_pb(config.segmentation))
            request_id = _request_id(config.request_id) or uuid.uuid4().hex
            annotate(request_id=request_id, voice=config.voice or None, session=True, encoding=fmt.encoding.name,
                     sample_rate_hz=fmt.sample_rate_hz)
            yield tts_pb2.StreamingSynthesizeResponse(header=tts_pb2.StreamHeader(
                request_id=request_id, encoding=fmt.encoding.value, sample_rate_hz=fmt.sample_rate_hz, channels=1,
                chunk_duration_ms=fmt.chunk_duration_ms, samples_per_chunk=fmt.samples_per_chunk,
                container_header=AudioEncoder(fmt).header(), voice=config.voice))
            remaining = context.time_remaining()
            limit = self.limits.session.max_session_s
            live = LiveSynthesis(self.stages, request_id, voice, params, convert.seed_from_pb(config),
                                 limit if remaining is None else min(remaining, limit), tracer=self.telemetry.tracer)
            session = RealtimeSession(live, segmenter, self.tokenizer.encode, fmt, self.limits.session)
            session.stats.started = started
            self.sessions.add(session)
            try:
                async for event in session.events(inputs_from_pb(request_iterator)):
                    yield event_to_pb(event)
            except StageFailed as e:
                code = e.code if e.code in _STAGE_CODES else grpc.StatusCode.UNAVAILABLE
                await context.abort(code, str(e), trailing_metadata=e.trailing)
            except SessionLimit as e:
                await context.abort(grpc.StatusCode[e.status], str(e))
            finally:
                self.sessions.discard(session)
            stats = session.stats
            summary = self._summary(request_id, stats.samples, fmt.sample_rate_hz, stats.segments, stats.chunks,
                                    started, stats.first_audio, live.stage_timings())
            spoken = live.spoken_voice() if config.return_voice_prompt else None
            if spoken is not None:
                voice_prompt_to_pb(spoken, summary.voice_prompt)
            yield tts_pb2.StreamingSynthesizeResponse(summary=summary)

    async def ListVoices(self, request: tts_pb2.ListVoicesRequest, context: grpc.aio.ServicerContext):
        if self.voices is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is still starting: retry shortly")
        names = self.voices.list()
        out = tts_pb2.ListVoicesResponse()
        for name in names:
            language = _language(name)
            if request.language and request.language != language:
                continue
            out.voices.add(name=name, language=language)
        return out


MAX_REQUEST_ID_LEN = 128


def _request_id(value: str) -> str:
    """The caller's request id, if it can travel as gRPC metadata (printable ASCII) to the stages and logs."""
    if len(value) > MAX_REQUEST_ID_LEN or not all(" " <= c <= "~" for c in value):
        raise InvalidRequest(f"request_id must be at most {MAX_REQUEST_ID_LEN} printable ASCII characters")
    return value


def _language(name: str) -> str:
    """`v2/en_speaker_6` -> `en`; names without a language prefix give ''."""
    base = name.rsplit("/", 1)[-1]
    head = base.split("_", 1)[0]
    return head if len(head) == 2 and head.isalpha() else ""

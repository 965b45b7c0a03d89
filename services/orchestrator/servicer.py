"""TextToSpeech: protobuf <-> the orchestrator's request checks and synthesis runs.

Everything a caller can get wrong is checked (request.py) before any model work and
answered with INVALID_ARGUMENT and a message that says what to change.
"""

from __future__ import annotations

import time
from contextlib import aclosing

import grpc

from barkstream.v1 import tts_pb2, tts_pb2_grpc

from ..bark.tokenizer import TokenizerError
from ..bark.voices import VoiceError
from ..common.admission import Admission
from ..common.ready import Ready
from ..common.spans import annotate
from ..common.status import abort_on_error
from ..telemetry import Telemetry
from .messages import chunk_pb, header_pb, summary_pb
from .request import OrchestratorLimits, segment_ids, stream_options
from .session import StageFailed
from .synthesis import Pipeline, Synthesis

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

    async def Synthesize(self, request: tts_pb2.SynthesizeRequest, context: grpc.aio.ServicerContext):
        async with self.admission.slot(context), abort_on_error(
                context, invalid=(VoiceError, TokenizerError), where="orchestrator"):
            started = time.monotonic()
            annotate(voice=request.voice or None, text_chars=len(request.text))  # logged even when refused
            pipeline = self.pipeline.get()
            options = stream_options(request, pipeline.voices)
            segments = segment_ids(request.text, pipeline.tokenizer, self.limits)
            annotate(request_id=options.request_id, segments=len(segments), encoding=options.format.encoding.name,
                     sample_rate_hz=options.format.sample_rate_hz)
            run = Synthesis(pipeline.stages, options, segments, context.time_remaining(), self.telemetry, started)
            try:
                yield tts_pb2.SynthesizeResponse(header=header_pb(options, run.encoder, len(segments)))
                async with aclosing(run.chunks()) as chunks:  # a cancelled stream stops its stage calls at once
                    async for sent in chunks:
                        yield tts_pb2.SynthesizeResponse(chunk=chunk_pb(sent))
            except StageFailed as e:
                code = e.code if e.code in _STAGE_CODES else grpc.StatusCode.UNAVAILABLE
                await context.abort(code, str(e), trailing_metadata=e.trailing)
            finally:
                run.close()  # a cancelled or failed stream leaves no encoder behind
            yield tts_pb2.SynthesizeResponse(summary=summary_pb(run.summary()))

    async def ListVoices(self, request: tts_pb2.ListVoicesRequest, context: grpc.aio.ServicerContext):
        async with abort_on_error(context, where="orchestrator"):
            out = tts_pb2.ListVoicesResponse()
            for name in self.pipeline.get().voices.list():
                language = _language(name)
                if not request.language or request.language == language:
                    out.voices.add(name=name, language=language)
            return out


def _language(name: str) -> str:
    """`v2/en_speaker_6` -> `en`; names without a language prefix give ''."""
    base = name.rsplit("/", 1)[-1]
    head = base.split("_", 1)[0]
    return head if len(head) == 2 and head.isalpha() else ""

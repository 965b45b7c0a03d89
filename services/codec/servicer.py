"""CodecService: fine frames in, 24 kHz float PCM out from the exact streaming decoder."""

from __future__ import annotations

from contextlib import aclosing

import grpc

from barkstream.v1 import common_pb2, stages_pb2, stages_pb2_grpc

from ..bark import constants as C
from ..common import convert
from ..common.admission import Admission
from ..common.ready import Ready
from ..common.spans import annotate
from ..common.status import abort_on_error
from ..common.streaming import Inputs, engine_outputs, first_message
from ..stages.codec import CodecStream
from ..stages.runner import EngineRunner


class CodecServicer(stages_pb2_grpc.CodecServiceServicer):
    def __init__(self, runner: Ready[EngineRunner], admission: Admission):
        self.runner = runner
        self.admission = admission

    async def Decode(self, request_iterator, context: grpc.aio.ServicerContext):
        async with self.admission.slot(context), abort_on_error(context, where="codec stage"):
            cfg = (await first_message(request_iterator, "config")).config
            stream = CodecStream()
            annotate(request_id=cfg.request_id, segment_index=cfg.segment_index)
            runner = self.runner.get()
            outputs = engine_outputs(runner, lambda job: runner.engine.attach(job, stream), Inputs(
                request_iterator, stream, "fine", lambda m: convert.fine_from_pb(m.fine.tokens, "fine")))
            sequence = start = 0
            async with aclosing(outputs):
                async for pcm in outputs:
                    yield stages_pb2.CodecDecodeResponse(chunk=convert.pcm_chunk(
                        pcm, request_id=cfg.request_id, segment_index=cfg.segment_index,
                        sequence_number=sequence, start_sample=start, sample_rate_hz=C.SAMPLE_RATE))
                    sequence, start = sequence + 1, start + len(pcm)
            yield stages_pb2.CodecDecodeResponse(end=common_pb2.StageEnd(
                request_id=cfg.request_id, segment_index=cfg.segment_index, total=start))

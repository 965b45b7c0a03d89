"""FineService: coarse frames in, all 8 codebooks out as soon as a window makes them final."""

from __future__ import annotations

from contextlib import aclosing

import grpc

from barkstream.v1 import common_pb2, stages_pb2, stages_pb2_grpc

from ..common import convert
from ..common.admission import Admission
from ..common.spans import annotate
from ..common.status import abort_on_error
from ..common.streaming import engine_outputs, first_message
from ..stages.fine import FineRequest, FineStream
from ..stages.runner import EngineRunner


def request_from_pb(cfg: stages_pb2.FineConfig) -> FineRequest:
    hist = None if convert.is_empty(cfg.fine_history) else convert.fine_from_pb(cfg.fine_history,
                                                                               "config.fine_history")
    return FineRequest(hist, convert.fine_params_from_pb(cfg.params, "config.params"), convert.seed_from_pb(cfg))


class FineServicer(stages_pb2_grpc.FineServiceServicer):
    def __init__(self, runner: EngineRunner, admission: Admission):
        self.runner = runner
        self.admission = admission

    async def Generate(self, request_iterator, context: grpc.aio.ServicerContext):
        async with self.admission.slot(context), abort_on_error(context, where="fine stage"):
            cfg = (await first_message(request_iterator, "config")).config
            core = request_from_pb(cfg)
            stream = FineStream(core)
            annotate(request_id=cfg.request_id, segment_index=cfg.segment_index)
            outputs = engine_outputs(request_iterator, self.runner, stream,
                                     lambda job: self.runner.engine.attach(job, stream, core.seed), "coarse",
                                     lambda m: convert.coarse_from_pb(m.coarse.tokens, "coarse"))
            sequence = offset = 0
            async with aclosing(outputs):
                async for frames in outputs:
                    yield stages_pb2.FineGenerateResponse(chunk=convert.token_chunk(
                        frames, request_id=cfg.request_id, segment_index=cfg.segment_index,
                        sequence_number=sequence, offset=offset))
                    sequence, offset = sequence + 1, offset + frames.shape[1]
            yield stages_pb2.FineGenerateResponse(end=common_pb2.StageEnd(
                request_id=cfg.request_id, segment_index=cfg.segment_index, total=offset))

"""FineService: coarse frames in, all 8 codebooks out as soon as a window makes them final."""

from __future__ import annotations

from contextlib import aclosing

import grpc

from barkstream.v1 import stages_pb2, stages_pb2_grpc

from ..common import convert
from ..common.admission import Admission
from ..common.ready import Ready
from ..common.spans import annotate
from ..common.status import abort_on_error
from ..common.streaming import Inputs, engine_outputs, first_message
from ..stages.fine import FineRequest, FineStream
from ..stages.runner import EngineRunner


def request_from_pb(cfg: stages_pb2.FineConfig) -> FineRequest:
    hist = None if convert.is_empty(cfg.fine_history) else convert.fine_from_pb(cfg.fine_history,
                                                                               "config.fine_history")
    return FineRequest(hist, convert.fine_params_from_pb(cfg.params, "config.params"), convert.seed_from_pb(cfg))


class FineServicer(stages_pb2_grpc.FineServiceServicer):
    def __init__(self, runner: Ready[EngineRunner], admission: Admission):
        self.runner = runner
        self.admission = admission

    async def Generate(self, request_iterator, context: grpc.aio.ServicerContext):
        async with self.admission.slot(context), abort_on_error(context, where="fine stage"):
            cfg = (await first_message(request_iterator, "config")).config
            core = request_from_pb(cfg)
            stream = FineStream(core)
            annotate(request_id=cfg.request_id, segment_index=cfg.segment_index)
            runner = self.runner.get()
            outputs = engine_outputs(runner, lambda job: runner.engine.attach(job, stream, core.seed), Inputs(
                request_iterator, stream, "coarse", lambda m: convert.coarse_from_pb(m.coarse.tokens, "coarse")))
            numbering = convert.TokenChunks(cfg.request_id, cfg.segment_index)
            async with aclosing(outputs):
                async for frames in outputs:
                    yield stages_pb2.FineGenerateResponse(chunk=numbering.chunk(frames))
            yield stages_pb2.FineGenerateResponse(end=numbering.end())

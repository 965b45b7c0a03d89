"""CoarseService: semantic chunks in, coarse frames out, one chunk per finished 60-token window."""

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
from ..stages.coarse import CoarseRequest, CoarseStream
from ..stages.runner import EngineRunner


def request_from_pb(cfg: stages_pb2.CoarseConfig) -> CoarseRequest:
    sem = None if convert.is_empty(cfg.semantic_history) else convert.semantic_from_pb(
        cfg.semantic_history, "config.semantic_history")
    coarse = None if convert.is_empty(cfg.coarse_history) else convert.coarse_from_pb(
        cfg.coarse_history, "config.coarse_history")
    if (sem is None) != (coarse is None):
        raise ValueError("config: give both semantic_history and coarse_history (a voice), or neither")
    return CoarseRequest(sem, coarse, convert.coarse_params_from_pb(cfg.params, "config.params"),
                         convert.seed_from_pb(cfg))


class CoarseServicer(stages_pb2_grpc.CoarseServiceServicer):
    def __init__(self, runner: Ready[EngineRunner], admission: Admission):
        self.runner = runner
        self.admission = admission

    async def Generate(self, request_iterator, context: grpc.aio.ServicerContext):
        async with self.admission.slot(context), abort_on_error(context, where="coarse stage"):
            cfg = (await first_message(request_iterator, "config")).config
            core = request_from_pb(cfg)
            stream = CoarseStream(core)
            annotate(request_id=cfg.request_id, segment_index=cfg.segment_index)
            runner = self.runner.get()
            inputs = Inputs(request_iterator, stream, "semantic",
                            lambda m: convert.semantic_from_pb(m.semantic.tokens, "semantic"))
            outputs = engine_outputs(runner, lambda job: runner.engine.attach(job, stream, core.seed), inputs)
            numbering = convert.TokenChunks(cfg.request_id, cfg.segment_index)
            async with aclosing(outputs):
                async for frames in outputs:
                    yield stages_pb2.CoarseGenerateResponse(chunk=numbering.chunk(frames))
            yield stages_pb2.CoarseGenerateResponse(end=numbering.end())

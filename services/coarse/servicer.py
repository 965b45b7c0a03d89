"""CoarseService: semantic chunks in, coarse frames out, one chunk per finished 60-token window."""

from __future__ import annotations

from contextlib import aclosing

import grpc

from barkstream.v1 import common_pb2, stages_pb2, stages_pb2_grpc

from ..common import convert
from ..common.admission import Admission
from ..common.spans import annotate
from ..common.status import abort_on_error
from ..common.streaming import engine_outputs, first_message
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
    def __init__(self, runner: EngineRunner, admission: Admission):
        self.runner = runner
        self.admission = admission

    async def Generate(self, request_iterator, context: grpc.aio.ServicerContext):
        async with self.admission.slot(context), abort_on_error(context, where="coarse stage"):
            cfg = (await first_message(request_iterator, "config")).config
            core = request_from_pb(cfg)
            stream = CoarseStream(core)
            annotate(request_id=cfg.request_id, segment_index=cfg.segment_index)
            outputs = engine_outputs(request_iterator, self.runner, stream,
                                     lambda job: self.runner.engine.attach(job, stream, core.seed), "semantic",
                                     lambda m: convert.semantic_from_pb(m.semantic.tokens, "semantic"))
            sequence = offset = 0
            async with aclosing(outputs):
                async for frames in outputs:
                    yield stages_pb2.CoarseGenerateResponse(chunk=convert.token_chunk(
                        frames, request_id=cfg.request_id, segment_index=cfg.segment_index,
                        sequence_number=sequence, offset=offset))
                    sequence, offset = sequence + 1, offset + frames.shape[1]
            yield stages_pb2.CoarseGenerateResponse(end=common_pb2.StageEnd(
                request_id=cfg.request_id, segment_index=cfg.segment_index, total=offset))

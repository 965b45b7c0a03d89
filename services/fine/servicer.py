"""FineService: coarse frames in, all 8 codebooks out as soon as a window makes them final."""

from __future__ import annotations

import numpy as np

from barkstream.v1 import stages_pb2, stages_pb2_grpc

from ..common import convert
from ..common.streaming import FrameStage
from ..stages.fine import FineRequest, FineStream


def request_from_pb(cfg: stages_pb2.FineConfig) -> FineRequest:
    hist = None if convert.is_empty(cfg.fine_history) else convert.fine_from_pb(cfg.fine_history,
                                                                               "config.fine_history")
    return FineRequest(hist, convert.fine_params_from_pb(cfg.params, "config.params"), convert.seed_from_pb(cfg))


class FineServicer(FrameStage, stages_pb2_grpc.FineServiceServicer):
    where = "fine stage"
    input_field = "coarse"
    response = stages_pb2.FineGenerateResponse

    def start(self, cfg: stages_pb2.FineConfig) -> tuple[FineStream, int | None]:
        core = request_from_pb(cfg)
        return FineStream(core), core.seed

    def parse(self, message: stages_pb2.FineGenerateRequest) -> np.ndarray:
        return convert.coarse_from_pb(message.coarse.tokens, "coarse")

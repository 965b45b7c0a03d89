"""CoarseService: semantic chunks in, coarse frames out, one chunk per finished 60-token window."""

from __future__ import annotations

import numpy as np

from barkstream.v1 import stages_pb2, stages_pb2_grpc

from ..common import convert
from ..common.streaming import FrameStage
from ..stages.coarse import CoarseRequest, CoarseStream


def request_from_pb(cfg: stages_pb2.CoarseConfig) -> CoarseRequest:
    sem = None if convert.is_empty(cfg.semantic_history) else convert.semantic_from_pb(
        cfg.semantic_history, "config.semantic_history")
    coarse = None if convert.is_empty(cfg.coarse_history) else convert.coarse_from_pb(
        cfg.coarse_history, "config.coarse_history")
    if (sem is None) != (coarse is None):
        raise ValueError("config: give both semantic_history and coarse_history (a voice), or neither")
    return CoarseRequest(sem, coarse, convert.coarse_params_from_pb(cfg.params, "config.params"),
                         convert.seed_from_pb(cfg))


class CoarseServicer(FrameStage, stages_pb2_grpc.CoarseServiceServicer):
    where = "coarse stage"
    input_field = "semantic"
    response = stages_pb2.CoarseGenerateResponse

    def start(self, cfg: stages_pb2.CoarseConfig) -> tuple[CoarseStream, int | None]:
        core = request_from_pb(cfg)
        return CoarseStream(core), core.seed

    def parse(self, message: stages_pb2.CoarseGenerateRequest) -> np.ndarray:
        return convert.semantic_from_pb(message.semantic.tokens, "semantic")

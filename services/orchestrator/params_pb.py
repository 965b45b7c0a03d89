"""Core stage params -> the stage services' protobuf params (the inverse of common.convert's)."""

from __future__ import annotations

from barkstream.v1 import common_pb2

from ..bark.params import CoarseParams, FineParams, SamplingParams, SemanticParams


def _sampling(p: SamplingParams) -> common_pb2.SamplingParams:
    msg = common_pb2.SamplingParams(temperature=p.temperature, greedy=p.greedy)
    if p.top_k is not None:
        msg.top_k = p.top_k
    if p.top_p is not None:
        msg.top_p = p.top_p
    return msg


def semantic_params_to_pb(p: SemanticParams) -> common_pb2.SemanticParams:
    msg = common_pb2.SemanticParams(sampling=_sampling(p.sampling), allow_early_stop=p.allow_early_stop)
    if p.min_eos_p is not None:
        msg.min_eos_p = p.min_eos_p
    if p.max_gen_duration_s is not None:
        msg.max_gen_duration_s = p.max_gen_duration_s
    return msg


def coarse_params_to_pb(p: CoarseParams) -> common_pb2.CoarseParams:
    return common_pb2.CoarseParams(sampling=_sampling(p.sampling), max_coarse_history=p.max_coarse_history,
                                   sliding_window_len=p.sliding_window_len)


def fine_params_to_pb(p: FineParams) -> common_pb2.FineParams:
    return common_pb2.FineParams(temperature=p.sampling.temperature, greedy=p.sampling.greedy)

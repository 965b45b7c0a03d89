"""Protobuf <-> numpy and core params, both ways, for every message (no torch).

Arrays travel as `TokenArray` (packed int32 values + shape, row-major; see common.proto).
Everything arriving from the wire is checked here, once, with messages that name the field
and say what is expected, so the core can trust its inputs and a caller's mistake becomes
INVALID_ARGUMENT (InvalidRequest) instead of an IndexError deep in a model.

Arrays handed to the core are int64 (what torch embeddings index with, and the dtype of
Suno's voice presets). PCM is float32 little-endian bytes.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
from google.protobuf.message import Message

from barkstream.services.bark import constants as C
from barkstream.services.bark import params as bark_params
from barkstream.services.common.errors import InvalidRequest
from barkstream.v1 import common_pb2, stages_pb2, tts_pb2

# BERT multilingual cased ids: Suno offsets them by 10048 and pads with 129595, so valid ids
# are below 129595 - 10048 = 119547 (the tokenizer's vocabulary size).
TEXT_VOCAB_SIZE = C.TEXT_PAD_TOKEN - C.TEXT_ENCODING_OFFSET

# --------------------------------------------------------------------------- arrays


def array_to_pb(array: np.ndarray, out: common_pb2.TokenArray | None = None) -> common_pb2.TokenArray:
    """Any integer array -> TokenArray (values must fit int32)."""
    arr = np.asarray(array)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"token arrays must be integers, got {arr.dtype}")
    msg = common_pb2.TokenArray() if out is None else out
    msg.Clear()
    msg.shape.extend(arr.shape)
    msg.values.extend(arr.astype(np.int32).ravel().tolist())
    return msg


def is_empty(msg: common_pb2.TokenArray) -> bool:
    """True for an unset/empty array (e.g. "no voice prompt")."""
    return not msg.values and not msg.shape


def array_from_pb(msg: common_pb2.TokenArray, field: str) -> np.ndarray:
    """TokenArray -> int64 array of its shape; checks len(values) == product(shape)."""
    shape = tuple(msg.shape)
    expected = math.prod(shape) if shape else 0
    if len(msg.values) != expected:
        raise InvalidRequest(f"{field}: shape {list(shape)} needs {expected} values but {len(msg.values)} "
                             "were sent; set `shape` to the array's dimensions (row-major values)")
    return np.asarray(msg.values, dtype=np.int64).reshape(shape)


def _check_range(arr: np.ndarray, field: str, upper: int) -> np.ndarray:
    if arr.size and (arr.min() < 0 or arr.max() >= upper):
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise InvalidRequest(f"{field}: value {bad} is out of range; values must be 0..{upper - 1}")
    return arr


def _check_rows(arr: np.ndarray, field: str, rows: int, what: str) -> np.ndarray:
    if arr.ndim != 2 or arr.shape[0] != rows:
        raise InvalidRequest(f"{field}: shape {list(arr.shape)} is not {what}; expected [{rows}, t]")
    return arr


def semantic_from_pb(msg: common_pb2.TokenArray, field: str) -> np.ndarray:
    """Semantic tokens, shape (n,), values 0..9999."""
    arr = array_from_pb(msg, field)
    if arr.ndim != 1:
        raise InvalidRequest(f"{field}: shape {list(arr.shape)} is not semantic tokens; expected [n]")
    return _check_range(arr, field, C.SEMANTIC_VOCAB_SIZE)


def text_tokens_from_pb(msg: common_pb2.TokenArray, field: str) -> np.ndarray:
    """BERT ids without Bark's offset, shape (n,), values 0..119546."""
    arr = array_from_pb(msg, field)
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidRequest(f"{field}: shape {list(arr.shape)} is not text tokens; expected [n] with n >= 1")
    return _check_range(arr, field, TEXT_VOCAB_SIZE)


def coarse_from_pb(msg: common_pb2.TokenArray, field: str) -> np.ndarray:
    """Coarse frames, shape (2, t), values 0..1023."""
    arr = _check_rows(array_from_pb(msg, field), field, C.N_COARSE_CODEBOOKS, "coarse frames")
    return _check_range(arr, field, C.CODEBOOK_SIZE)


def fine_from_pb(msg: common_pb2.TokenArray, field: str) -> np.ndarray:
    """Fine frames, shape (8, t), values 0..1023."""
    arr = _check_rows(array_from_pb(msg, field), field, C.N_FINE_CODEBOOKS, "fine frames")
    return _check_range(arr, field, C.CODEBOOK_SIZE)


# --------------------------------------------------------------------------- chunks


def token_chunk(tokens: np.ndarray, *, request_id: str, segment_index: int, sequence_number: int,
                offset: int) -> common_pb2.TokenChunk:
    chunk = common_pb2.TokenChunk(request_id=request_id, segment_index=segment_index,
                                  sequence_number=sequence_number, offset=offset)
    array_to_pb(tokens, chunk.tokens)
    return chunk


class TokenChunks:
    """Numbers a stage's output arrays as TokenChunks: sequence from 0, offset = tokens/frames before."""

    def __init__(self, request_id: str, segment_index: int) -> None:
        self.request_id = request_id
        self.segment_index = segment_index
        self.sequence = 0
        self.offset = 0

    def chunk(self, tokens: np.ndarray) -> common_pb2.TokenChunk:
        out = token_chunk(tokens, request_id=self.request_id, segment_index=self.segment_index,
                          sequence_number=self.sequence, offset=self.offset)
        self.sequence, self.offset = self.sequence + 1, self.offset + tokens.shape[-1]
        return out

    def end(self) -> common_pb2.StageEnd:
        return common_pb2.StageEnd(request_id=self.request_id, segment_index=self.segment_index, total=self.offset)


class ChunkSequence:
    """Checks that incoming chunks are consecutive and contiguous, and counts what arrived.

    The bidi stages forward chunks straight into their windows; a lost or reordered chunk would
    silently produce different audio, so it is refused instead.
    """

    def __init__(self, field: str) -> None:
        self.field = field
        self.next_sequence = 0
        self.total = 0  # tokens or frames received (the last axis)

    def accept(self, chunk: common_pb2.TokenChunk, length: int) -> None:
        if chunk.sequence_number != self.next_sequence:
            raise InvalidRequest(f"{self.field}: sequence_number {chunk.sequence_number} arrived where "
                                 f"{self.next_sequence} was expected; send chunks in order, numbered from 0")
        if chunk.offset != self.total:
            raise InvalidRequest(f"{self.field}: offset {chunk.offset} arrived where {self.total} was "
                                 "expected; offset is the count of tokens/frames sent before this chunk")
        self.next_sequence += 1
        self.total += length

    def check_end(self, end: common_pb2.InputEnd) -> None:
        if end.total and end.total != self.total:
            raise InvalidRequest(f"{self.field}: end.total is {end.total} but {self.total} were received")


def pcm_to_bytes(pcm: np.ndarray) -> bytes:
    """Float PCM -> float32 little-endian bytes."""
    return np.asarray(pcm, dtype="<f4").ravel().tobytes()


def pcm_from_bytes(data: bytes) -> np.ndarray:
    """float32 little-endian bytes -> float32 array (n,)."""
    if len(data) % 4:
        raise InvalidRequest(f"pcm: {len(data)} bytes is not a whole number of float32 samples")
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def pcm_chunk(pcm: np.ndarray, *, request_id: str, segment_index: int, sequence_number: int,
              start_sample: int, sample_rate_hz: int = C.SAMPLE_RATE) -> stages_pb2.PcmChunk:
    samples = np.asarray(pcm, dtype=np.float32).ravel()
    return stages_pb2.PcmChunk(request_id=request_id, segment_index=segment_index,
                               sequence_number=sequence_number, start_sample=start_sample,
                               pcm=pcm_to_bytes(samples), num_samples=len(samples),
                               sample_rate_hz=sample_rate_hz)


# --------------------------------------------------------------------------- parameters


def present_fields(msg: Message) -> dict[str, Any]:
    """The fields a sender actually set (explicit presence), nested messages as dicts."""
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        out[fd.name] = present_fields(value) if isinstance(value, Message) else value
    return out


def seed_from_pb(msg: Message) -> int | None:
    """`optional uint64 seed` -> int, or None when unset (= nondeterministic)."""
    return msg.seed if msg.HasField("seed") else None  # type: ignore[attr-defined]


def _validated(params: Any, field: str) -> Any:
    try:
        params.validate()
    except ValueError as exc:
        raise InvalidRequest(f"{field}: {exc}") from None
    return params


def _temperature(value: float, field: str) -> float:
    if value == 0:
        raise InvalidRequest(f"{field}=0: temperature must be > 0; "
                             "for argmax decoding set greedy=true instead")
    return value


def sampling_from_pb(msg: common_pb2.SamplingParams, default: bark_params.SamplingParams,
                     field: str) -> bark_params.SamplingParams:
    """Set fields of `msg` over `default` (the stage's Suno defaults)."""
    values = present_fields(msg)
    if "temperature" in values:
        values["temperature"] = _temperature(values["temperature"], f"{field}.temperature")
    return _validated(replace(default, **values), field)


def semantic_params_from_pb(msg: common_pb2.SemanticParams,
                            field: str = "params.semantic") -> bark_params.SemanticParams:
    default = bark_params.SemanticParams()
    values = {k: v for k, v in present_fields(msg).items() if k != "sampling"}
    sampling = sampling_from_pb(msg.sampling, default.sampling, f"{field}.sampling")
    return _validated(replace(default, sampling=sampling, **values), field)


def coarse_params_from_pb(msg: common_pb2.CoarseParams,
                          field: str = "params.coarse") -> bark_params.CoarseParams:
    default = bark_params.CoarseParams()
    values = {k: v for k, v in present_fields(msg).items() if k != "sampling"}
    sampling = sampling_from_pb(msg.sampling, default.sampling, f"{field}.sampling")
    return _validated(replace(default, sampling=sampling, **values), field)


def fine_params_from_pb(msg: common_pb2.FineParams, field: str = "params.fine") -> bark_params.FineParams:
    default = bark_params.FineParams()
    values = present_fields(msg)
    if "temperature" in values:
        values["temperature"] = _temperature(values["temperature"], f"{field}.temperature")
    return _validated(replace(default, sampling=replace(default.sampling, **values)), field)


def generation_params_from_pb(msg: tts_pb2.SynthesisParams,
                              field: str = "params") -> bark_params.GenerationParams:
    """The public request's params -> the core's GenerationParams (what the CLI builds too)."""
    return bark_params.GenerationParams(semantic_params_from_pb(msg.semantic, f"{field}.semantic"),
                                        coarse_params_from_pb(msg.coarse, f"{field}.coarse"),
                                        fine_params_from_pb(msg.fine, f"{field}.fine"))


# Core params -> protobuf: what the orchestrator forwards to the stages (the inverse of the above).


def sampling_to_pb(p: bark_params.SamplingParams) -> common_pb2.SamplingParams:
    msg = common_pb2.SamplingParams(temperature=p.temperature, greedy=p.greedy)
    if p.top_k is not None:
        msg.top_k = p.top_k
    if p.top_p is not None:
        msg.top_p = p.top_p
    return msg


def semantic_params_to_pb(p: bark_params.SemanticParams) -> common_pb2.SemanticParams:
    msg = common_pb2.SemanticParams(sampling=sampling_to_pb(p.sampling), allow_early_stop=p.allow_early_stop)
    if p.min_eos_p is not None:
        msg.min_eos_p = p.min_eos_p
    if p.max_gen_duration_s is not None:
        msg.max_gen_duration_s = p.max_gen_duration_s
    return msg


def coarse_params_to_pb(p: bark_params.CoarseParams) -> common_pb2.CoarseParams:
    return common_pb2.CoarseParams(sampling=sampling_to_pb(p.sampling), max_coarse_history=p.max_coarse_history,
                                   sliding_window_len=p.sliding_window_len)


def fine_params_to_pb(p: bark_params.FineParams) -> common_pb2.FineParams:
    return common_pb2.FineParams(temperature=p.sampling.temperature, greedy=p.sampling.greedy)

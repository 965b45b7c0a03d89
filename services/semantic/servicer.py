"""SemanticService: protobuf <-> the semantic engine; semantic tokens stream out as they are sampled."""

from __future__ import annotations

from contextlib import aclosing

import grpc
import numpy as np

from barkstream.v1 import stages_pb2, stages_pb2_grpc

from ..bark.tokenizer import BarkTokenizer
from ..common import convert
from ..common.admission import Admission
from ..common.errors import InvalidRequest
from ..common.ready import Ready
from ..common.spans import annotate
from ..common.status import abort_on_error
from ..common.streaming import engine_outputs
from ..stages.runner import EngineRunner
from ..stages.semantic import SemanticRequest


def request_from_pb(msg: stages_pb2.SemanticGenerateRequest, tokenizer: BarkTokenizer | None) -> SemanticRequest:
    if msg.HasField("text_tokens"):
        ids = convert.text_tokens_from_pb(msg.text_tokens, "text_tokens")
    elif msg.HasField("text"):
        if tokenizer is None:
            raise InvalidRequest("this semantic server has no tokenizer: send text_tokens")
        ids = tokenizer.encode(msg.text)
    else:
        raise InvalidRequest("set text or text_tokens")
    if len(ids) == 0:
        raise InvalidRequest("the text has no tokens: send some words")
    history = None if convert.is_empty(msg.history) else convert.semantic_from_pb(msg.history, "history")
    return SemanticRequest(list(ids), history, convert.semantic_params_from_pb(msg.params, "params"),
                           convert.seed_from_pb(msg))


class SemanticServicer(stages_pb2_grpc.SemanticServiceServicer):
    def __init__(self, runner: Ready[EngineRunner], admission: Admission, tokenizer: Ready[BarkTokenizer | None]):
        self.runner = runner
        self.admission = admission
        self.tokenizer = tokenizer

    async def Generate(self, request: stages_pb2.SemanticGenerateRequest, context: grpc.aio.ServicerContext):
        async with self.admission.slot(context), abort_on_error(context, where="semantic stage"):
            core = request_from_pb(request, self.tokenizer.get())
            annotate(request_id=request.request_id, segment_index=request.segment_index,
                     text_tokens=len(core.text_ids), history_tokens=0 if core.history is None else len(core.history))
            runner = self.runner.get()
            outputs = engine_outputs(runner, lambda job: runner.engine.add(job, core))
            # Tokens come one step at a time; they leave in chunks of at least chunk_size.
            chunk_size = max(1, request.chunk_size)
            numbering = convert.TokenChunks(request.request_id, request.segment_index)
            pending: list[np.ndarray] = []
            async with aclosing(outputs):
                async for tokens in outputs:
                    pending.append(tokens)
                    if sum(len(t) for t in pending) >= chunk_size:
                        yield stages_pb2.SemanticGenerateResponse(chunk=numbering.chunk(np.concatenate(pending)))
                        pending = []
            if pending:
                yield stages_pb2.SemanticGenerateResponse(chunk=numbering.chunk(np.concatenate(pending)))
            yield stages_pb2.SemanticGenerateResponse(end=numbering.end())

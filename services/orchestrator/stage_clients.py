"""Channels from the orchestrator to the four stages, balanced per stream.

A stage target is either one gRPC target (e.g. `dns:///coarse.bark.svc:50051`,
which Kubernetes headless Services resolve to every pod; the `round_robin`
policy then spreads calls, i.e. streams, over them) or a comma-separated list
of addresses, each with its own channel, picked in turn per stream.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import grpc

from barkstream.v1 import stages_pb2_grpc

SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
})


class StageTarget:
    def __init__(self, target: str, stub_class: type, options: Sequence[tuple[str, object]] = (),
                 credentials: grpc.ChannelCredentials | None = None):
        addresses = [t.strip() for t in target.split(",") if t.strip()]
        if not addresses:
            raise ValueError("a stage target needs at least one address")
        opts = [*options, ("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 0)]
        if credentials is None:
            self.channels = [grpc.aio.insecure_channel(a, options=opts) for a in addresses]
        else:
            self.channels = [grpc.aio.secure_channel(a, credentials, options=opts) for a in addresses]
        self.stubs = [stub_class(c) for c in self.channels]
        self._next = itertools.cycle(range(len(self.stubs)))

    def stub(self):
        return self.stubs[next(self._next)]

    async def close(self) -> None:
        for c in self.channels:
            await c.close()


class StageClients:
    def __init__(self, semantic: str, coarse: str, fine: str, codec: str,
                 options: Sequence[tuple[str, object]] = (), credentials: grpc.ChannelCredentials | None = None):
        self._semantic = StageTarget(semantic, stages_pb2_grpc.SemanticServiceStub, options, credentials)
        self._coarse = StageTarget(coarse, stages_pb2_grpc.CoarseServiceStub, options, credentials)
        self._fine = StageTarget(fine, stages_pb2_grpc.FineServiceStub, options, credentials)
        self._codec = StageTarget(codec, stages_pb2_grpc.CodecServiceStub, options, credentials)

    def semantic(self) -> stages_pb2_grpc.SemanticServiceStub:
        return self._semantic.stub()

    def coarse(self) -> stages_pb2_grpc.CoarseServiceStub:
        return self._coarse.stub()

    def fine(self) -> stages_pb2_grpc.FineServiceStub:
        return self._fine.stub()

    def codec(self) -> stages_pb2_grpc.CodecServiceStub:
        return self._codec.stub()

    async def close(self) -> None:
        for t in (self._semantic, self._coarse, self._fine, self._codec):
            await t.close()

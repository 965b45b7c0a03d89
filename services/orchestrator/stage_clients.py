"""Channels from the orchestrator to the four stages, balanced per stream, with failover.

A stage target is either one gRPC target (e.g. `dns:///coarse.bark.svc:50051`,
which Kubernetes headless Services resolve to every pod; the `round_robin`
policy then spreads calls, i.e. streams, over them) or a comma-separated list
of addresses, each with its own channel (a replica), picked in turn per stream.

Failover (see recovery.py): when a replica fails a stream, the orchestrator marks it failed
for a short cool-down and retries that segment elsewhere. With a list of addresses the retry
excludes the failed replica, so it surely lands on another. With one `dns:///` target there
is one channel: the retry goes through the same channel and lands on another pod only when
gRPC has already dropped the dead pod's subchannel (it does once the connection breaks, which
a killed pod causes at once); list the replicas' addresses when that is not good enough.

Stage channels reconnect quickly (backoff capped at about a second), so a stage that restarts
on the same address is used again within a second or two of it listening.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import grpc

from barkstream.v1 import stages_pb2_grpc

SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
})
STAGES = ("semantic", "coarse", "fine", "codec")
# A stage that comes back must be found again quickly: gRPC's default reconnect backoff grows
# to two minutes, during which every stream sent there would fail at once.
RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
_RESOLVER_SCHEMES = ("dns:", "xds:")


@dataclass(eq=False)
class Replica:
    """One channel to one stage address (or, for a `dns:///` target, to all its pods)."""

    index: int
    address: str
    channel: grpc.aio.Channel
    stub: object
    failed_until: float = 0.0  # time.monotonic() before which new streams prefer other replicas

    def cooling_down(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.failed_until

    def usable_now(self) -> bool:
        """Worth a stream without waiting: not recently failed, and not between reconnect attempts."""
        state = self.channel.get_state(try_to_connect=True)
        return not self.cooling_down() and state is not grpc.ChannelConnectivity.TRANSIENT_FAILURE


class StageTarget:
    def __init__(self, target: str, stub_class: type, options: Sequence[tuple[str, object]] = (),
                 credentials: grpc.ChannelCredentials | None = None, name: str = "stage",
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = ()):
        addresses = [t.strip() for t in target.split(",") if t.strip()]
        if not addresses:
            raise ValueError("a stage target needs at least one address")
        self.name = name
        # One resolver target (dns:///...) is many pods behind one channel: a retry may reuse it.
        self.balanced = len(addresses) == 1 and addresses[0].startswith(_RESOLVER_SCHEMES)
        opts = [*RECONNECT_OPTIONS, *options, ("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 0)]
        if credentials is None:
            self.channels = [grpc.aio.insecure_channel(a, options=opts, interceptors=interceptors or None)
                             for a in addresses]
        else:
            self.channels = [grpc.aio.secure_channel(a, credentials, options=opts, interceptors=interceptors or None)
                             for a in addresses]
        self.stubs = [stub_class(c) for c in self.channels]
        self.replicas = [Replica(i, a, c, s) for i, (a, c, s) in enumerate(zip(addresses, self.channels, self.stubs,
                                                                             strict=True))]
        self._next = itertools.cycle(range(len(self.stubs)))

    def stub(self):
        return self.stubs[next(self._next)]

    def candidates(self, exclude: Collection[int] = ()) -> list[Replica]:
        """Replicas not in `exclude`, in round-robin order (each call starts one further)."""
        start = next(self._next)
        ordered = self.replicas[start:] + self.replicas[:start]
        if self.balanced:
            return ordered  # one channel over many pods: never give up on it for one failure
        return [r for r in ordered if r.index not in exclude]

    async def pick(self, exclude: Collection[int] = (), probe_s: float = 1.5) -> Replica | None:
        """A replica for one stream, or None when none is reachable.

        Healthy replicas first, in turn. Failing that, the recently failed or disconnected ones
        get up to `probe_s` (together) to connect (a restarted stage is back within a reconnect
        backoff), so a dead stage costs a prompt UNAVAILABLE, not a hang.
        """
        candidates = self.candidates(exclude)
        for replica in candidates:
            if replica.usable_now():
                return replica
        # Probe the others at once, so that a stage with no live replica costs `probe_s`, not n times it.
        probes = {asyncio.ensure_future(_connects(r.channel, probe_s)): r for r in candidates}
        try:
            while probes:
                done, _ = await asyncio.wait(probes, return_when=asyncio.FIRST_COMPLETED)
                for probe in done:
                    replica = probes.pop(probe)
                    if probe.result():
                        return replica
        finally:
            for probe in probes:
                probe.cancel()
        return None

    def mark_failed(self, replica: Replica, cooldown_s: float) -> None:
        replica.failed_until = max(replica.failed_until, time.monotonic() + cooldown_s)

    async def close(self) -> None:
        for c in self.channels:
            await c.close()


async def _connects(channel: grpc.aio.Channel, timeout: float) -> bool:
    """True once `channel` is READY, False if `timeout` passes first."""
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout)
    except TimeoutError:
        return False
    return True


class StageClients:
    """The four stage targets and how the orchestrator uses them.

    call_metadata: sent with every stage call (the embedded server's internal token).
    max_attempts: runs of one segment's stage chain when replicas fail (1 = no retries).
    cooldown_s: how long a failed replica gets no new streams while others are healthy.
    probe_s: how long a stream waits for a failed or disconnected replica to connect.
    """

    def __init__(self, semantic: str, coarse: str, fine: str, codec: str,
                 options: Sequence[tuple[str, object]] = (), credentials: grpc.ChannelCredentials | None = None,
                 *, call_metadata: Sequence[tuple[str, str]] = (), max_attempts: int = 3, cooldown_s: float = 5.0,
                 probe_s: float = 1.5, interceptors: Sequence[grpc.aio.ClientInterceptor] = ()):
        if max_attempts < 1:
            raise ValueError(f"max_attempts={max_attempts}: use 1 (no retries) or more")
        # interceptors: e.g. telemetry's client spans (W3C trace context in the metadata) and RPC metrics.
        ic = tuple(interceptors)
        self._semantic = StageTarget(semantic, stages_pb2_grpc.SemanticServiceStub, options, credentials, "semantic",
                                     ic)
        self._coarse = StageTarget(coarse, stages_pb2_grpc.CoarseServiceStub, options, credentials, "coarse", ic)
        self._fine = StageTarget(fine, stages_pb2_grpc.FineServiceStub, options, credentials, "fine", ic)
        self._codec = StageTarget(codec, stages_pb2_grpc.CodecServiceStub, options, credentials, "codec", ic)
        self.targets: dict[str, StageTarget] = dict(zip(STAGES, (self._semantic, self._coarse, self._fine,
                                                                 self._codec), strict=True))
        self.call_metadata = tuple(call_metadata)
        self.max_attempts = max_attempts
        self.cooldown_s = cooldown_s
        self.probe_s = probe_s

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

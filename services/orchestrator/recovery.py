"""Transparent recovery of a segment whose stage replica failed mid-stream.

Why a retry can be invisible to the client: generation is a pure function of the request,
the segment's seed and the checkpoint. Every segment gets `segment_seed(seed, i)`, and a
request without a seed gets a random 63-bit one here (`request_seed`), so running a segment's
stage chain again on other replicas with the same checkpoint reproduces the same tokens
(greedy or sampled) and the same PCM. The orchestrator counts the samples it has already
passed on for the segment and drops that many from the rerun, so the client's stream has no
gap and no duplicate.

The pieces (the loop itself is `SynthesisSession._segment_with_retries`):
- `SegmentAttempt`: one run of a segment's four-call chain on one replica per stage; it knows
  its calls (to cancel them all when one fails), the first failure (the root cause), how
  many samples to skip, and the fine codes an earlier run produced, which the rerun must
  reproduce over their overlap: if it does not (replicas with different checkpoints or
  settings), the stream fails with a clear status rather than play spliced audio.
- `StageFailed`: a stage call's status, the stage and whether another replica may help.
- `choose_replicas`: one replica per stage for an attempt, skipping the replicas that already
  failed this segment (stage_clients.StageTarget.pick).

Retryable failures are UNAVAILABLE (the replica died, is draining or unreachable),
RESOURCE_EXHAUSTED (it is full; another may not be) and ABORTED, plus a locally cancelled
chain (gRPC cancels a stage call whose input stream broke because the stage before it
failed) and grpc.aio's local "Internal error from Core" (a bidi call the server ended while
the orchestrator was still writing to it). Everything else (INVALID_ARGUMENT,
DEADLINE_EXCEEDED, INTERNAL) is final. Retries are bounded by StageClients.max_attempts per
segment and by the call's deadline.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from ..common.admission import RETRY_AFTER_METADATA_KEY
from .stage_clients import STAGES, Replica, StageClients

log = logging.getLogger(__name__)

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                             grpc.StatusCode.ABORTED})
# What grpc.aio's client reports, instead of the server's status, when a bidi call ends while the
# client still writes to it (e.g. a draining stage refusing a new stream): a transport failure,
# not a verdict of the stage, so it is retried like UNAVAILABLE.
LOCAL_CORE_ERROR = "Internal error from Core"
SEED_BITS = 63


def request_seed(seed: int | None) -> int:
    """The request's seed, or a fresh random one, so that a retried segment reproduces its tokens."""
    return secrets.randbits(SEED_BITS) if seed is None else int(seed)


class StageFailed(Exception):
    """A stage stream failed; carries which stage, the status and whether a retry may help."""

    def __init__(self, stage: str, error: grpc.aio.AioRpcError | None = None, *,
                 code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, details: str = "",
                 retryable: bool | None = None):
        trailing: tuple[tuple[str, str], ...] = ()
        if error is not None:
            code, details = error.code(), error.details() or error.code().name
            trailing = tuple((k, v) for k, v in (error.trailing_metadata() or ())
                             if k == RETRY_AFTER_METADATA_KEY and isinstance(v, str))
            if code is grpc.StatusCode.INTERNAL and details == LOCAL_CORE_ERROR:
                code, details = grpc.StatusCode.UNAVAILABLE, f"the stream broke ({LOCAL_CORE_ERROR})"
        super().__init__(f"{stage} stage: {details or code.name}")
        self.stage = stage
        self.code = code
        self.trailing = trailing
        self.replica = ""  # the failed replica's address, once known
        self.retryable = code in RETRYABLE_CODES if retryable is None else retryable


@dataclass(eq=False)
class SegmentAttempt:
    """One run of a segment's stage chain: its replicas, calls, first failure and resume state.

    skip: samples of the segment the client already has; dropped from this run's PCM.
    reference: (8, n) fine codes an earlier run of the segment produced; this run must match them.
    record: the lists this run appends its codes to (None: the segment's codes are already
      complete and may have been used as a voice, so they stay as they are).
    """

    number: int
    replicas: dict[str, Replica]
    skip: int = 0
    reference: np.ndarray | None = None
    record: object | None = None
    calls: list[grpc.aio.Call] = field(default_factory=list)
    failure: BaseException | None = None
    fine_seen: int = 0

    def stub(self, stage: str):
        return self.replicas[stage].stub

    def track(self, call: grpc.aio.Call) -> grpc.aio.Call:
        self.calls.append(call)
        return call

    def fail(self, error: BaseException) -> BaseException:
        """Keep the first failure: later ones are its consequences (cancelled downstream calls)."""
        if self.failure is None:
            self.failure = error
        return self.failure

    def observe(self, stage: str, array: np.ndarray) -> None:
        """Record a stage's output chunk; a rerun's fine codes must equal the earlier run's."""
        if self.record is not None:
            getattr(self.record, stage).append(array)
        if stage != "fine" or self.reference is None:
            return
        start, n = self.fine_seen, array.shape[-1]
        end = min(start + n, self.reference.shape[-1])
        if end > start and not np.array_equal(array[:, :end - start], self.reference[:, start:end]):
            raise StageFailed("fine", code=grpc.StatusCode.UNAVAILABLE, retryable=False, details=(
                f"the segment's rerun on another replica produced different codes from frame {start} on "
                "(replicas must share one checkpoint and settings), so the stream cannot resume without "
                "a gap; retry the request"))
        self.fine_seen += n

    def fresh(self, pcm: np.ndarray) -> np.ndarray:
        """The part of `pcm` the client does not have yet."""
        if self.skip <= 0:
            return pcm
        drop = min(self.skip, len(pcm))
        self.skip -= drop
        return pcm[drop:]

    def cancel(self) -> None:
        for call in self.calls:
            call.cancel()


def fine_reference(chunks: Sequence[np.ndarray]) -> np.ndarray | None:
    return np.concatenate(chunks, axis=1) if chunks else None


async def choose_replicas(stages: StageClients, excluded: dict[str, set[int]]) -> dict[str, Replica]:
    """One replica per stage; StageFailed(UNAVAILABLE) naming the stage when one has none left."""
    chosen: dict[str, Replica] = {}
    for stage in STAGES:
        target = stages.targets[stage]
        replica = await target.pick(excluded.get(stage, ()), stages.probe_s)
        if replica is None:
            tried = ", ".join(r.address for r in target.replicas)
            raise StageFailed(stage, code=grpc.StatusCode.UNAVAILABLE, retryable=False,
                              details=f"no replica available (tried {tried}); retry shortly")
        chosen[stage] = replica
    return chosen


def describe(failure: BaseException) -> str:
    if isinstance(failure, StageFailed):
        return f"{failure.stage} {failure.code.name}: {failure}" + (f" on {failure.replica}" if failure.replica else "")
    return f"{type(failure).__name__}: {failure}"

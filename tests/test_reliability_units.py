"""The recovery pieces on their own: resuming PCM, checking a rerun's codes, picking replicas.

The end-to-end proofs (replicas killed mid-stream) are in test_reliability_faults.py; these
pin down the arithmetic and the choices they rest on, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc
import numpy as np
import pytest

from barkstream.services.cli import serve as cli_serve
from barkstream.services.orchestrator.recovery import (
    SEED_BITS,
    SegmentAttempt,
    StageFailed,
    choose_replicas,
    request_seed,
)
from barkstream.services.orchestrator.session import SegmentCodes
from barkstream.services.orchestrator.stage_clients import StageClients, StageTarget
from barkstream.v1 import stages_pb2_grpc

from .reliability_helpers import free_port


def test_a_rerun_drops_exactly_the_samples_the_client_has():
    pcm = np.arange(1000, dtype=np.float32)
    attempt = SegmentAttempt(2, {}, skip=250)
    pieces = [attempt.fresh(chunk) for chunk in np.split(pcm, [100, 240, 260, 600])]
    assert [len(p) for p in pieces] == [0, 0, 10, 340, 400]
    np.testing.assert_array_equal(np.concatenate(pieces), pcm[250:])
    assert attempt.fresh(pcm[:5]).shape == (5,), "nothing left to skip"


def test_a_rerun_must_reproduce_the_codes_it_replaces():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 1024, (8, 30))
    record = SegmentCodes()
    attempt = SegmentAttempt(2, {}, reference=reference, record=record)
    attempt.observe("fine", reference[:, :12])
    attempt.observe("fine", reference[:, 12:30])
    attempt.observe("fine", rng.integers(0, 1024, (8, 5)))  # beyond what the earlier run made: nothing to compare
    assert [a.shape[1] for a in record.fine] == [12, 18, 5]
    diverged = reference[:, :10].copy()
    diverged[3, 7] += 1
    with pytest.raises(StageFailed, match="different codes from frame 0") as info:
        SegmentAttempt(2, {}, reference=reference).observe("fine", diverged)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and not info.value.retryable


def test_stage_failures_say_whether_another_replica_may_help():
    def failed(code: grpc.StatusCode, trailing=()) -> StageFailed:
        error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), "details")
        return StageFailed("coarse", error)

    assert failed(grpc.StatusCode.UNAVAILABLE).retryable
    busy = failed(grpc.StatusCode.RESOURCE_EXHAUSTED, [("retry-after-ms", "250"), ("other", "x")])
    assert busy.retryable and busy.trailing == (("retry-after-ms", "250"),)
    for code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL):
        assert not failed(code).retryable
    assert str(failed(grpc.StatusCode.UNAVAILABLE)) == "coarse stage: details"
    # grpc.aio's own INTERNAL for a bidi call the server ended mid-write: transport, not verdict.
    broke = StageFailed("coarse", grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(),
                                                       grpc.aio.Metadata(), "Internal error from Core"))
    assert broke.retryable and broke.code == grpc.StatusCode.UNAVAILABLE


def test_every_request_gets_a_seed_so_a_rerun_repeats_it():
    assert request_seed(7) == 7 and request_seed(2**64 - 1) == 2**64 - 1
    seeds = {request_seed(None) for _ in range(50)}
    assert len(seeds) == 50 and all(0 <= s < 2**SEED_BITS for s in seeds)


def test_replicas_are_taken_in_turn_and_a_failed_one_is_excluded_or_avoided():
    async def main() -> None:
        target = StageTarget("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", stages_pb2_grpc.CoarseServiceStub)
        try:
            assert [target.candidates()[0].index for _ in range(4)] == [0, 1, 2, 0]
            assert [r.index for r in target.candidates(exclude={1})] == [2, 0]  # starts at 1, skips it
            target.mark_failed(target.replicas[2], 5.0)
            assert target.replicas[2].cooling_down() and not target.replicas[2].usable_now()
            balanced = StageTarget("dns:///coarse.example:50062", stages_pb2_grpc.CoarseServiceStub)
            assert balanced.balanced and [r.index for r in balanced.candidates(exclude={0})] == [0]
            await balanced.close()
        finally:
            await target.close()

    asyncio.run(main())


def test_a_dead_replica_costs_a_bounded_probe_not_a_hang():
    async def main() -> float:
        dead = f"127.0.0.1:{free_port()}"  # nothing listens there
        three_dead = ",".join(f"127.0.0.1:{free_port()}" for _ in range(3))
        clients = StageClients(three_dead, dead, dead, dead, probe_s=0.3)
        try:
            target = clients.targets["semantic"]
            for replica in target.replicas:
                target.mark_failed(replica, 5.0)
            started = time.monotonic()
            with pytest.raises(StageFailed, match="semantic stage: no replica available") as info:
                await choose_replicas(clients, {})
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
            assert await target.pick(exclude={0, 1, 2}) is None
            return time.monotonic() - started
        finally:
            await clients.close()

    assert asyncio.run(main()) < 0.8, "three dead replicas are probed together, not one after another"


def test_serve_has_every_security_and_limit_flag():
    parser = argparse.ArgumentParser()
    cli_serve.register(parser.add_subparsers())
    help_text = parser._subparsers._group_actions[0].choices["serve"].format_help()
    for flag in ("--tls-cert-file", "--tls-key-file", "--tls-client-ca-file", "--auth-token-file", "--auth-token",
                 "--max-streams-per-client", "--max-queued-streams", "--stage-tls-ca-file", "--stage-tls-cert-file",
                 "--stage-tls-key-file", "--stage-tls-server-name", "--stage-attempts", "--max-concurrent-streams",
                 "--max-receive-message-bytes", "--max-text-chars"):
        assert flag in help_text, flag
    assert "BARKSTREAM_AUTH_TOKEN" in help_text

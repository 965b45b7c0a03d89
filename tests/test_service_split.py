"""The split deployment: `barkstream serve semantic|coarse|fine|codec|orchestrator`, five processes.

Tokens and PCM cross four real gRPC hops on loopback; greedy + seed still gives the offline
Synthesizer's audio. Losing a stage process mid-stream must reach the client as UNAVAILABLE
within seconds, never a hang.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from barkstream.services.bark.voices import VoiceLibrary
from barkstream.v1 import tts_pb2_grpc

from .conftest import SplitCluster
from .service_helpers import THREE_SEGMENTS, VOICE, offline_synthesis, rpc_error, synth_request, synthesize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.mark.parametrize("voice", [VOICE, ""], ids=["voice", "no-voice"])
def test_split_stream_equals_offline_synthesis(split_cluster, synthesizer, tiny_checkpoint, voice: str):
    r = synthesize(split_cluster.target, synth_request(THREE_SEGMENTS, voice))
    assert r.header.segment_count == 3 and r.summary is not None
    assert [c.sequence_number for c in r.chunks] == list(range(len(r.chunks)))
    prompt = VoiceLibrary([tiny_checkpoint.voices_dir]).load(voice) if voice else None
    expected = offline_synthesis(synthesizer, THREE_SEGMENTS, prompt).audio
    got = r.float32()
    assert got.shape == expected.shape
    assert float(np.max(np.abs(got - expected))) < 1e-4
    # Every stage reported its timing for every segment.
    assert len(r.summary.stage_timings) == 4 * 3


def test_killing_a_stage_mid_stream_is_unavailable_within_seconds(tiny_checkpoint_dir, tmp_path):
    cluster = SplitCluster(tiny_checkpoint_dir, tmp_path)
    try:
        coarse = cluster.procs["coarse"]
        with grpc.insecure_channel(cluster.target) as channel:
            # Nine segments, no voice: segment k's semantic waits for segment k-1's, and segments
            # 1.. wait for segment 0's codes, so when segment 0's first audio arrives most of the
            # later segments have not reached coarse yet (~8 semantic runs vs. one codec decode).
            call = tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(
                synth_request(" ".join([THREE_SEGMENTS] * 3), "", max_duration_s=2.0), timeout=120)
            it = iter(call)
            assert next(it).HasField("header")
            assert next(it).HasField("chunk")
            coarse.proc.kill()
            killed = time.monotonic()
            err = rpc_error(lambda: list(it))
            elapsed = time.monotonic() - killed
        assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
        assert "coarse" in err.details(), err.details()
        assert elapsed < 5.0, f"the client learned of the dead stage after {elapsed:.1f} s"
        # New requests fail fast too while the stage is gone.
        started = time.monotonic()
        err = rpc_error(lambda: synthesize(cluster.target, synth_request(THREE_SEGMENTS, VOICE), timeout=60))
        assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
        assert time.monotonic() - started < 5.0
        assert coarse.proc.wait(10) == -9
    finally:
        codes = cluster.stop()
    assert {role: code for role, code in codes.items() if role != "coarse"} == dict.fromkeys(
        ("orchestrator", "codec", "fine", "semantic"), 0)

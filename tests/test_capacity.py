"""The capacity model and the pipeline simulation (benchmarks/sim.py, capacity.py, costs.py) on cases worked by hand.

Costs here are round numbers so every expected time can be added up on paper: a semantic prefill of 1 s and
decode steps of 0.1 s, coarse prefills of 2 s and steps of 0.2 s, fine windows of 5 s, codec chunks of 32
frames 0.32 s. A segment of 20 semantic tokens makes 60 coarse tokens (one window), 30 frames (0.4 s).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from benchmarks import capacity, costs
from benchmarks.capacity_check import background_threads, semantic_tokens, workload
from benchmarks.sim import Curve, Deployment, Request, StageCosts, Voice, audio_seconds, coarse_steps, simulate


def flat(seconds: float) -> Curve:
    return Curve(((1, seconds), (8, seconds)))


ROUND = StageCosts(flat(1.0), flat(0.1), flat(2.0), flat(0.2), flat(5.0), flat(0.32), coarse_prefill_len=257)
ONE_SEGMENT = 1.0 + 19 * 0.1 + (2.0 + 59 * 0.2) + 5.0 + 0.32 * 30 / 32  # semantic, coarse, fine, codec = 22.0


def test_curve_interpolates_between_measured_batches_and_extends_the_last_slope():
    c = Curve(((1, 1.0), (4, 2.5), (8, 6.5)))
    assert c(1) == 1.0 and c(2) == pytest.approx(1.5) and c(6) == pytest.approx(4.5)
    assert c(10) == pytest.approx(8.5)
    assert Curve(((2, 3.0),))(4) == pytest.approx(6.0)  # one point: proportional to the batch


def test_segment_arithmetic_follows_bark():
    assert coarse_steps(20) == 60 and coarse_steps(25) == 74  # floor(n * 75 / 49.9) frames, 2 tokens each
    assert audio_seconds(20) == pytest.approx(30 * 320 / 24000)
    # The voice's prompts, trimmed as stages.coarse.prepare_history does: 209 semantic tokens at most.
    assert Voice(300, 700, 600).coarse_history() == (209, 626)
    assert Voice(0, 0, 0).coarse_history() == (0, 0)


def test_one_stream_goes_through_the_stages_one_after_the_other():
    result = simulate([Request(0.0, (20,))], ROUND, Deployment())
    (s,) = result.streams
    assert s.ttfa == pytest.approx(ONE_SEGMENT) and s.ended == pytest.approx(ONE_SEGMENT)
    assert s.rtf == pytest.approx(ONE_SEGMENT / 0.4)
    busy = {stage: seconds for stage, (seconds,) in result.busy_s.items()}
    assert busy == pytest.approx({"semantic": 2.9, "coarse": 13.8, "fine": 5.0, "codec": 0.3})
    # All four calls open at once; each ends with its stage's output (what the HPAs count).
    assert result.open_calls == pytest.approx({"semantic": 2.9 / 22, "coarse": 16.7 / 22, "fine": 21.7 / 22,
                                               "codec": 1.0})


def test_streams_that_arrive_together_share_every_step():
    costs = StageCosts(Curve(((1, 1.0), (2, 1.5))), Curve(((1, 0.1), (2, 0.15))), Curve(((1, 2.0), (2, 3.0))),
                       Curve(((1, 0.2), (2, 0.3))), Curve(((1, 5.0), (2, 8.0))), Curve(((1, 0.32), (2, 0.48))),
                       coarse_prefill_len=257)
    result = simulate([Request(0.0, (20,)), Request(0.0, (20,))], costs, Deployment())
    expected = (1.5 + 19 * 0.15) + (3.0 + 59 * 0.3) + 8.0 + 0.48 * 30 / 32
    assert [s.ttfa for s in result.streams] == pytest.approx([expected, expected])
    assert result.mean_batch == pytest.approx({"semantic": 2, "coarse": 2, "fine": 2, "codec": 2})
    # A stage whose engine takes one row at a time runs their windows in turn.
    one_fine = simulate([Request(0.0, (20,)), Request(0.0, (20,))], costs,
                        Deployment(max_batch={"semantic": 2, "coarse": 2, "fine": 1, "codec": 2}))
    coarse_end = (1.5 + 19 * 0.15) + (3.0 + 59 * 0.3)
    assert [s.ended for s in one_fine.streams] == pytest.approx([coarse_end + 5.0 + 0.3, coarse_end + 10.0 + 0.3])


def test_replicas_on_shared_cores_run_at_the_cores_share():
    """Two streams, a replica each, on one core: every step runs at half speed; on two cores, at full speed."""
    two = dict.fromkeys(("semantic", "coarse", "fine", "codec"), 2)
    reqs = [Request(0.0, (20,)), Request(0.0, (20,))]
    shared = simulate(reqs, ROUND, Deployment(two, cores=1))
    assert [s.ended for s in shared.streams] == pytest.approx([2 * ONE_SEGMENT] * 2)
    own = simulate(reqs, ROUND, Deployment(two, cores=2))
    assert [s.ended for s in own.streams] == pytest.approx([ONE_SEGMENT] * 2)


def test_background_load_slows_the_shared_cores_less_than_a_quiet_machine():
    quiet, busy = Deployment(cores=2), Deployment(cores=2, background=2.0)
    assert [quiet.speed(k) for k in (1, 2, 4)] == pytest.approx([1.0, 1.0, 0.5])
    # beside 2 busy threads a step measured alone got 2/3 of a core; with 2 of ours running, 1/2; with 4, 1/3
    assert [busy.speed(k) for k in (1, 2, 4)] == pytest.approx([1.0, 0.75, 0.5])
    assert Deployment().speed(100) == 1.0  # pods with their own cores
    assert background_threads(0.5, 2.0) == pytest.approx(3.0) and background_threads(1.0, 2.0) == 0.0


def test_next_segment_starts_when_the_semantic_stream_ends_and_its_window_joins_the_running_one():
    result = simulate([Request(0.0, (20, 20))], ROUND, Deployment())
    # semantic: segment 0 in 0..2.9, segment 1 in 2.9..5.8. coarse: segment 0's window prefills 2.9..4.9, then
    # decodes (steps end at 5.1 .. 5.9); at 5.9 segment 1's window prefills (..7.9), then both decode together:
    # segment 0's 54 steps left end at 18.7, segment 1's 59 at 19.7. fine: 18.7..23.7, then 23.7..28.7.
    # codec: 23.7..24.0 and 28.7..29.0.
    (s,) = result.streams
    assert s.first_audio == pytest.approx(24.0) and s.ended == pytest.approx(29.0)
    assert s.stall_s == pytest.approx(29.0 - (24.0 + 0.4))  # segment 1 was due when segment 0 had played


def test_a_later_arrival_joins_the_engines_between_steps():
    result = simulate([Request(0.0, (20,)), Request(0.35, (20,))], ROUND, Deployment())
    first, second = result.streams
    # The second request's prefill waits for the first's (ends at 1.0) and runs 1.0..2.0, then both decode
    # together to 3.9; coarse prefills both windows at once (..5.9) and decodes them to 17.7; fine 22.7; codec 23.0.
    assert first.ended == pytest.approx(23.0) and first.ttfa == pytest.approx(23.0)
    assert second.ttfa == pytest.approx(23.0 - 0.35)


def test_service_workload_is_the_service_benchmarks_requests():
    assert [semantic_tokens(d) for d in (0.5, 0.75, 1.0, 1.25)] == [25, 38, 50, 63]
    # 3.51 s and 14.0 s of audio at N = 4 and 16: the service benchmark's own totals (benchmarks/RESULTS.md)
    assert sum(audio_seconds(r.segments[0]) for r in workload(4)) == pytest.approx(3.507, abs=1e-3)
    assert sum(audio_seconds(r.segments[0]) for r in workload(16)) == pytest.approx(14.03, abs=1e-2)


def test_sizing_takes_the_largest_batch_that_keeps_the_target_rtf():
    # Semantic steps get slower with the batch: 0.005 s + 0.004 s per row; 499 tokens (10 s) per segment.
    costs = StageCosts(flat(0.1), Curve(((1, 0.009), (8, 0.037))), flat(0.1), flat(0.001), flat(0.1),
                       flat(0.001), coarse_prefill_len=257)
    work = capacity.Workload(segment_tokens=499, first_tokens=100)
    cycle = capacity.cycle_seconds("semantic", costs, 4, 499, Voice())
    assert cycle == pytest.approx(0.1 + 498 * 0.021)  # a row of a batch of 4 makes 10 s of audio in 10.56 s
    # Over a stream (2 s + 10 s + 10 s of audio): 0.3 + 1095 (0.005 + 0.004 b) s <= 21.97 s for b <= 3.7.
    sizes = capacity.size(costs, Voice(), rtf=1.0, ttfa=100.0, work=replace(work, utilization=1.0))
    assert sizes["semantic"].batch == 3 and sizes["semantic"].streams_per_pod == 3  # 3 rows: 3.5 s of audio per s
    assert sizes["semantic"].pods(10) == 4 and sizes["semantic"].pods(1000) == 334
    assert capacity.hpa_target(sizes["semantic"]) == 3 and capacity.hpa_target(sizes["semantic"], 0.5) == 1
    table, data = capacity.sizing_table(sizes, (10, 100), 1.0, 100.0, work)
    assert data["bottleneck"] == "semantic" and data["stages"]["semantic"]["pods"] == {10: 4, 100: 34}


def test_a_stage_too_slow_for_one_stream_is_named_and_not_sized():
    slow_fine = StageCosts(flat(0.1), flat(0.001), flat(0.1), flat(0.001), flat(30.0), flat(0.001))
    sizes = capacity.size(slow_fine, Voice(), rtf=1.0, ttfa=100.0)
    assert sizes["fine"].batch == sizes["fine"].streams_per_pod == 0 and sizes["fine"].pods(10) is None
    # a window for each of a stream's segments (2 s, 10 s, 10 s of audio): 90 s for 22 s
    assert sizes["fine"].best_rtf == pytest.approx(90.0 / (audio_seconds(100) + 2 * audio_seconds(499)))
    _, data = capacity.sizing_table(sizes, (10,), 1.0, 100.0, capacity.Workload())
    assert data["bottleneck"] == "fine"


def test_a_tight_first_audio_target_lowers_the_batch_where_it_costs_most():
    costs = StageCosts(flat(0.1), Curve(((1, 0.001), (8, 0.008))), flat(0.01), flat(0.0001), flat(0.1),
                       flat(0.001), coarse_prefill_len=257)
    loose = capacity.size(costs, Voice(), rtf=1.0, ttfa=100.0)
    # A stream's 2 + 10 + 10 s of audio take a row 3 x 0.1 + 1095 x 0.008 s at batch 8: the pod makes 19.4 s of
    # audio per second, and 80% of it feeds 15 streams.
    assert loose["semantic"].batch == 8 and loose["semantic"].streams_per_pod == 15
    # First segment of 100 tokens (150 frames): semantic 0.1 + 99 x 0.001 b, coarse 5 windows x 0.0159,
    # fine 0.1, codec 0.001: within 0.75 s for b <= 4.74.
    tight = capacity.size(costs, Voice(), rtf=1.0, ttfa=0.75)
    assert tight["semantic"].batch == 4 and tight["semantic"].streams_per_pod == 15  # 0.8 x 4 x 21.97 / 4.68
    assert sum(s.first_audio_s for s in tight.values()) == pytest.approx(0.1 + 0.396 + 0.0795 + 0.1 + 0.001)
    assert [tight[s].batch for s in ("coarse", "fine", "codec")] == [8, 8, 8]  # flat costs: nothing to gain


def test_cost_curves_measure_every_engine_and_feed_the_model(tiny_checkpoint_dir, tmp_path):
    data = costs.measure(tiny_checkpoint_dir, costs.Settings((1, 2), 2, 1))
    curves = data["curves"]
    for points in (curves["semantic"]["prefill"], curves["semantic"]["step"], curves["coarse"]["prefill"],
                   curves["coarse"]["step"], curves["fine"]["window"], curves["codec"]["chunk"]):
        assert [b for b, _ in points] == [1, 2] and all(s > 0 for _, s in points)
    assert curves["coarse"]["prefill_len"] > 257  # the semantic window, the infer token and the voice's history
    assert data["memory"]["semantic"]["kv_mb_per_row"] > 0
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(data))
    loaded, voice, _ = capacity.load_costs(path)
    assert loaded.fine_window(2) == curves["fine"]["window"][1][1] and voice.semantic == data["voice"]["semantic"]
    result = simulate(workload(2), loaded, Deployment(), voice)
    assert all(s.ttfa > 0 and s.ended >= s.first_audio for s in result.streams)

"""Capacity model: pods per stage for N concurrent streams, from measured stage cost curves.

Input: benchmarks/out/costs.json (`python -m benchmarks costs`: each engine's
step cost against its batch size on the machine that will serve). For a
workload of segments of n semantic tokens, one pod of a stage at batch b
turns b segments through the stage in one "cycle":

    semantic  prefill(b) + (n - 1) step(b)              (257-position prefill, then a token per step)
    coarse    k (prefill(b) + 59 step(b))               (k = 60-token windows per segment)
    fine      w window(b)                               (w = 1024-frame windows per segment)
    codec     c chunk(b)                                (c = 32-frame chunks per segment)

so a row gets A / cycle(b) audio seconds per second (A / cycle summed over
a stream's segments, the short first one included) and the pod b times that.
A stream at real-time factor r needs 1 / r audio seconds per second, and its
segments a row at least that fast: among the batches whose rows are, a pod
runs the one with the most output and feeds floor(output x r x utilization)
streams (a faster row idles between a stream's segments or serves another's;
utilization 0.8 leaves room for queueing), and N streams need
ceil(N / streams per pod) pods. A stage whose single row is too slow cannot
serve the target at all (more pods do not help one stream): the table says
which RTF it can give. The simulation (benchmarks/sim.py), run on the sized
deployment, says what the streams then get, time to first audio and player
stalls included.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from barkstream.services.bark import constants as C

from .common import OUT_DIR, Table, percentile
from .sim import STAGES, Curve, Deployment, Request, StageCosts, Voice, audio_seconds, coarse_steps, simulate

SEGMENT_TOKENS = 499  # ~10 s of speech: what the orchestrator's 48-token text segments give
FIRST_SEGMENT_TOKENS = 100  # ~2 s: a short first segment (DESIGN.md section 2: the main latency lever)


def load_costs(path: Path) -> tuple[StageCosts, Voice, dict]:
    """StageCosts and the voice's prompt lengths from a costs.json; the raw data too."""
    data = json.loads(Path(path).read_text())
    c = data["curves"]

    def curve(points) -> Curve:
        return Curve(tuple((int(b), float(s)) for b, s in points))

    costs = StageCosts(curve(c["semantic"]["prefill"]), curve(c["semantic"]["step"]),
                       curve(c["coarse"]["prefill"]), curve(c["coarse"]["step"]), curve(c["fine"]["window"]),
                       curve(c["codec"]["chunk"]), coarse_prefill_len=int(c["coarse"]["prefill_len"]),
                       codec_frames=int(c["codec"]["frames"]))
    v = data["voice"]
    return costs, Voice(v["semantic"], v["coarse"], v["fine"]), data


def cycle_seconds(stage: str, costs: StageCosts, batch: int, n: int, voice: Voice) -> float:
    """Seconds one pod needs to take `batch` segments of n semantic tokens through `stage`."""
    frames = coarse_steps(n) // 2
    if stage == "semantic":
        return costs.semantic_prefill(batch) + (n - 1) * costs.semantic_step(batch)
    if stage == "coarse":
        windows = math.ceil(2 * frames / C.SLIDING_WINDOW_LEN)
        return windows * (costs.coarse_prefill(batch) + (C.SLIDING_WINDOW_LEN - 1) * costs.coarse_step(batch))
    if stage == "fine":
        hist = min(C.FINE_MAX_HISTORY, voice.fine)
        windows = max(0, math.ceil((frames - (C.FINE_WINDOW - hist)) / C.FINE_STRIDE)) + 1
        return windows * costs.fine_window(batch)
    if stage == "codec":
        return math.ceil(frames / costs.codec_frames) * costs.codec_chunk(batch)
    raise ValueError(f"unknown stage {stage!r}")


def first_audio_seconds(stage: str, costs: StageCosts, batch: int, n_first: int, voice: Voice) -> float:
    """This stage's share of the time to first audio at `batch`: the first segment's semantic and coarse work up
    to the first fine window's frames (a whole short segment), one fine window, one codec chunk."""
    frames = min(coarse_steps(n_first) // 2, C.FINE_WINDOW - min(C.FINE_MAX_HISTORY, voice.fine))
    tokens = min(n_first, math.ceil(frames * 2 / C.SEMANTIC_TO_COARSE_RATIO))
    if stage in ("semantic", "coarse"):  # the tokens the first fine window reads, through the whole stage
        return cycle_seconds(stage, costs, batch, tokens, voice)
    if stage == "fine":
        return costs.fine_window(batch)
    return costs.codec_chunk(batch)


@dataclass(frozen=True)
class Workload:
    segment_tokens: int = SEGMENT_TOKENS  # semantic tokens of each segment after the first
    first_tokens: int = FIRST_SEGMENT_TOKENS  # the first segment's (a short one starts the audio sooner)
    segments: int = 3  # per stream, in the simulation
    max_batch: int = 8
    utilization: float = 0.8  # of a pod's output the sizing plans to use: headroom for bursts and queueing

    def stream(self) -> tuple[int, ...]:
        """Semantic tokens of one stream's segments."""
        return (self.first_tokens,) + (self.segment_tokens,) * (self.segments - 1)


@dataclass(frozen=True)
class StageSize:
    stage: str
    batch: int  # rows a pod runs at once; 0: one row is too slow for the target RTF
    pod_audio_per_s: float  # audio seconds a pod turns out per second at that batch (or at batch 1)
    streams_per_pod: int  # streams at the target RTF that output feeds
    best_rtf: float  # the RTF one stream alone gets from this stage
    first_audio_s: float  # this stage's share of the time to first audio at that batch

    def pods(self, streams: int) -> int | None:
        return None if self.streams_per_pod == 0 else math.ceil(streams / self.streams_per_pod)


def size(costs: StageCosts, voice: Voice, rtf: float, ttfa: float, work: Workload = Workload()
         ) -> dict[str, StageSize]:
    """Per stage, the batch that turns out the most audio while each row still keeps RTF <= rtf, lowered (where
    that gains the most) until the stages' shares of the first audio add up to at most `ttfa`; a pod then
    feeds `audio per second x rtf x utilization` streams (a row faster than a stream idles between its
    segments, or serves another's)."""
    segments, audio = work.stream(), sum(audio_seconds(n) for n in work.stream())
    speed = {st: {b: audio / sum(cycle_seconds(st, costs, b, n, voice) for n in segments)
                  for b in range(1, work.max_batch + 1)} for st in STAGES}
    batch = {st: max([b for b, v in speed[st].items() if v >= 1 / rtf], key=lambda b: b * speed[st][b], default=0)
             for st in STAGES}

    def first(st: str, b: int) -> float:
        return first_audio_seconds(st, costs, max(1, b), work.first_tokens, voice)

    while sum(first(st, b) for st, b in batch.items()) > ttfa:
        lowerable = [st for st, b in batch.items() if b > 1]
        if not lowerable:
            break  # even alone the first audio takes longer: the table shows how long
        worst = max(lowerable, key=lambda st: first(st, batch[st]) - first(st, batch[st] - 1))
        batch[worst] -= 1
    out = {}
    for st, b in batch.items():
        pod = b * speed[st][b] if b else speed[st][1]
        streams = max(1, math.floor(pod * rtf * work.utilization + 1e-9)) if b else 0
        out[st] = StageSize(st, b, pod, streams, 1 / speed[st][1], first(st, b))
    return out


def hpa_target(size_: StageSize, open_calls: float = 1.0) -> int:
    """barkstream_streams_active per pod the HPA keeps: the stage calls of the streams a pod serves (a stream
    holds `open_calls` of them open on average)."""
    return max(1, math.floor(size_.streams_per_pod * open_calls))


def sizing_table(sizes: dict[str, StageSize], streams: tuple[int, ...], rtf: float, ttfa: float,
                 work: Workload) -> tuple[Table, dict]:
    table = Table(f"Pods per stage for RTF <= {rtf:g} and first audio <= {ttfa:g} s (segments of "
                  f"{work.segment_tokens} semantic tokens = {audio_seconds(work.segment_tokens):.1f} s, the first "
                  f"{work.first_tokens} = {audio_seconds(work.first_tokens):.1f} s)",
                  ["stage", "alone: RTF", "batch (MAX_BATCH)", "pod audio s / s", "streams / pod",
                   "first audio share s", *[f"pods for {s}" for s in streams]])
    data: dict = {"stages": {}}
    for st, s in sizes.items():
        pods = [s.pods(k) for k in streams]
        table.add(st, s.best_rtf, s.batch or "too slow", s.pod_audio_per_s, s.streams_per_pod, s.first_audio_s,
                  *[p if p is not None else "-" for p in pods])
        data["stages"][st] = {"best_rtf": s.best_rtf, "batch": s.batch, "streams_per_pod": s.streams_per_pod,
                              "pod_audio_per_s": s.pod_audio_per_s, "first_audio_s": s.first_audio_s,
                              "pods": dict(zip(streams, pods, strict=True))}
    if all(s.streams_per_pod for s in sizes.values()):
        data["bottleneck"] = min(sizes.values(), key=lambda s: (s.streams_per_pod, -s.best_rtf)).stage
    else:
        data["bottleneck"] = max(sizes.values(), key=lambda s: s.best_rtf).stage
    data["first_audio_s"] = sum(s.first_audio_s for s in sizes.values())
    return table, data


def simulate_sized(costs: StageCosts, voice: Voice, sizes: dict[str, StageSize], streams: int,
                   work: Workload) -> dict:
    """The sized deployment in the simulation under `streams` concurrent streams: three times as many arrive
    evenly over three times a stream's audio, so that about `streams` are in flight at any time."""
    replicas = {st: s.pods(streams) or 1 for st, s in sizes.items()}
    segments = work.stream()
    spread = 3 * sum(audio_seconds(n) for n in segments)
    reqs = [Request(spread * i / (3 * streams), segments) for i in range(3 * streams)]
    batch = {st: max(1, s.batch) for st, s in sizes.items()}  # each stage's BARKSTREAM_MAX_BATCH set to its batch
    result = simulate(reqs, costs, Deployment(replicas, batch), voice)
    ttfa, rtf = [s.ttfa for s in result.streams], [s.rtf for s in result.streams]
    return {"replicas": replicas, "max_batch": batch,
            "ttfa_p50": percentile(ttfa, 50), "ttfa_p95": percentile(ttfa, 95),
            "rtf_p50": percentile(rtf, 50), "rtf_p95": percentile(rtf, 95),
            "stall_p95": percentile([s.stall_s for s in result.streams], 95), "mean_batch": result.mean_batch,
            "open_calls": result.open_calls}


def memory_table(raw: dict, batch: dict[str, int]) -> Table:
    """Memory a stage pod needs for its model and its preallocated KV cache (`batch` rows of 1024 positions)."""
    table = Table("Memory per stage pod (MiB; the cost run's dtype and device)",
                  ["stage", "weights", "KV cache per row", "MAX_BATCH", "weights + KV cache",
                   "measured peak, batches 1-8 (CUDA)"])
    for stage, m in raw.get("memory", {}).items():
        kv = m.get("kv_mb_per_row", 0.0)
        table.add(stage, m["weights_mb"], kv or "-", batch[stage], m["weights_mb"] + batch[stage] * kv,
                  m.get("cuda_peak_mb_at_max_batch", "-"))
    return table


def main(costs_path: Path | None, streams: tuple[int, ...], rtf: float, ttfa: float, work: Workload = Workload(),
         simulate_up_to: int = 100) -> dict:
    costs_path = Path(costs_path or OUT_DIR / "costs.json")
    costs, voice, raw = load_costs(costs_path)
    m = raw.get("machine", {})
    print(f"capacity model from {costs_path}: {raw.get('device', '?')} {raw.get('dtype', '?')}, {m.get('cpu', '?')}, "
          f"{m.get('torch_threads', '?')} torch threads, GPU {m.get('gpu', '?')}, measured {m.get('time', '?')}")
    sizes = size(costs, voice, rtf, ttfa, work)
    table, data = sizing_table(sizes, streams, rtf, ttfa, work)
    print(table.render())
    print(f"\nbottleneck: {data['bottleneck']}; first audio (sum of the shares): {data['first_audio_s']:.2f} s")
    print(memory_table(raw, {st: max(1, s.batch) for st, s in sizes.items()}).render())
    data["simulated"] = {}
    if not all(s.streams_per_pod for s in sizes.values()):
        print(f"not simulated: a stage cannot give one stream RTF {rtf:g} here (see 'alone: RTF')")
        return {"costs": str(costs_path), "rtf": rtf, "ttfa": ttfa, "workload": work.__dict__, "sizing": data}
    data["simulated"] = simulate_table(costs, voice, sizes, tuple(s for s in streams if s <= simulate_up_to), rtf,
                                       ttfa, work)
    print(hpa_table(sizes, streams, data).render())
    return {"costs": str(costs_path), "rtf": rtf, "ttfa": ttfa, "workload": work.__dict__, "sizing": data}


def simulate_table(costs: StageCosts, voice: Voice, sizes: dict[str, StageSize], streams: tuple[int, ...],
                   rtf: float, ttfa: float, work: Workload) -> dict:
    sim_table = Table(f"The sized deployment in the simulation ({work.segments} segments per stream, arriving "
                      "evenly: that many in flight)",
                      ["streams", "replicas sem/coarse/fine/codec", "TTFA p50 s", "TTFA p95 s", "RTF p50", "RTF p95",
                       "player stall p95 s", "meets TTFA, no stall"])
    out = {}
    for k in streams:
        sim = out[k] = simulate_sized(costs, voice, sizes, k, work)
        sim_table.add(k, "/".join(str(sim["replicas"][st]) for st in STAGES), sim["ttfa_p50"], sim["ttfa_p95"],
                      sim["rtf_p50"], sim["rtf_p95"], sim["stall_p95"],
                      sim["ttfa_p95"] <= ttfa and sim["stall_p95"] <= 0.05 * rtf)
    print(sim_table.render())
    return out


def hpa_table(sizes: dict[str, StageSize], streams: tuple[int, ...], data: dict) -> Table:
    simulated = data["simulated"]
    open_calls = simulated[max(simulated)]["open_calls"] if simulated else {}
    hpa = Table("HPA settings that follow (barkstream_streams_active counts stage calls: a stream holds this "
                "many open per stage on average in the simulation)",
                ["stage", "open calls per stream", "averageValue", "minReplicas", "maxReplicas"])
    for st, s in sizes.items():
        calls = open_calls.get(st, 1.0)
        hpa.add(st, calls, hpa_target(s, calls), s.pods(min(streams)), s.pods(max(streams)))
        data["stages"][st]["hpa"] = {"open_calls": calls, "average_value": hpa_target(s, calls),
                                     "min_replicas": s.pods(min(streams)), "max_replicas": s.pods(max(streams))}
    return hpa

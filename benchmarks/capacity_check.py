"""The capacity model against the real services on this machine.

Back to back, in one command: measure the stage cost curves (a separate
process, one torch thread, as the servers run), predict with the simulation
what the service benchmark's split runs will give (N = 4 and 16 streams of its
requests; one replica per stage, then two replicas of the stage the prediction
finds busiest), run them (`barkstream serve` processes on 127.0.0.1, one torch
thread each, sharing this machine's cores) and put prediction beside
measurement.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from barkstream.services.bark import constants as C

from . import service
from .capacity import load_costs
from .common import OUT_DIR, Table, machine, percentile, write_report
from .sim import STAGES, Deployment, Request, SimResult, StageCosts, Voice, simulate

CONCURRENCY = (4, 16)


def semantic_tokens(max_duration_s: float) -> int:
    """Tokens the semantic engine emits before `max_gen_duration_s` stops it (no early stop: greedy, random weights)."""
    n, duration = 0, 0.0
    while True:
        n += 1
        duration += 1 / C.SEMANTIC_RATE_HZ  # the engine's own accumulation (stages/semantic.py)
        if duration > max_duration_s:
            return n


def workload(n: int) -> list[Request]:
    """The service benchmark's n requests (one segment each), all sent at once."""
    return [Request(0.0, (semantic_tokens(d),)) for _, d, _ in service.requests(n, service.FULL)]


def predict(costs: StageCosts, voice: Voice, replicas: dict[str, int], n: int, cores: float,
            background: float) -> SimResult:
    return simulate(workload(n), costs, Deployment(replicas, service.MAX_BATCH, cores, background), voice)


def background_threads(cpu_share: float, cores: float) -> float:
    """Other programs' busy threads while the costs were measured, from the share of a core the (one-thread)
    measuring process got: share = cores / (1 + background) when below 1."""
    return max(0.0, cores / max(cpu_share, 1e-3) - 1) if cpu_share < 0.98 else 0.0


def summary(ttfa: list[float], rtf: list[float], wall: float) -> dict[str, float]:
    return {"wall_s": wall, "ttfa_p50": percentile(ttfa, 50), "ttfa_p95": percentile(ttfa, 95),
            "rtf_p50": percentile(rtf, 50), "rtf_p95": percentile(rtf, 95)}


def run_split(checkpoint: Path, replicas: list[dict[str, int]], extra: list[str]) -> list[dict[int, dict]]:
    """Each replica layout's measured runs at every N. One set of stage processes serves all layouts: layout k's
    orchestrator targets the first replicas[k][stage] of each stage's processes."""
    log_dir = Path(tempfile.mkdtemp(prefix="barkstream-capacity-"))
    most = {st: max(r[st] for r in replicas) for st in STAGES}
    servers = [service.Server(st, checkpoint, log_dir, extra) for st in STAGES for _ in range(most[st])]
    orchestrators = []
    try:
        for layout in replicas:
            targets = [f"--{st}-target=" + ",".join(s.target for s in [s for s in servers if s.role == st][:k])
                       for st, k in layout.items()]
            orchestrators.append(service.Server("orchestrator", checkpoint, log_dir, [*extra, *targets]))
        for s in servers + orchestrators:
            service.wait_serving(s)
        out = []
        for orch in orchestrators:
            service.run_streams(orch.target, service.requests(1, service.QUICK))  # warm-up
            runs = {}
            for n in CONCURRENCY:
                load_before = os.getloadavg()[0]
                wall, results = service.run_streams(orch.target, service.requests(n, service.FULL))
                ok = [r for r in results if r.error is None and r.first_audio is not None]
                runs[n] = {**summary([r.first_audio - r.started for r in ok],
                                     [(r.ended - r.started) / r.audio_s for r in ok], wall),
                           "errors": len(results) - len(ok), "load_average": [load_before, os.getloadavg()[0]]}
                print(f"measured {layout_name(replicas[len(out)])} N={n}: {runs[n]}", flush=True)
            out.append(runs)
        return out
    finally:
        for s in servers + orchestrators:
            s.stop()


def layout_name(replicas: dict[str, int]) -> str:
    extra = [f"{k} x {st}" for st, k in replicas.items() if k > 1]
    return "one replica per stage" if not extra else ", ".join(extra)


def main(checkpoint: Path, quick: bool, device: str = "cpu", dtype: str = "float32") -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the servers' threads (service.Server inherits it)
    os.environ["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "benchmarks", "costs", "--threads", "1", "--checkpoint", str(checkpoint),
           "--device", device, "--service-dtype", dtype, *(["--quick"] if quick else [])]
    subprocess.run(cmd, check=True, env=env)
    costs, voice, raw = load_costs(OUT_DIR / "costs.json")
    cores = float(os.cpu_count() or 1)
    background = {"dedicated cores": 0.0, "measured background": background_threads(raw["cpu_share"], cores)}
    one = dict.fromkeys(STAGES, 1)
    base = predict(costs, voice, one, max(CONCURRENCY), cores, 0.0)
    slowest = max(STAGES, key=lambda st: sum(base.busy_s[st]))
    layouts = [one, {**one, slowest: 2}]
    predicted: dict[str, list] = {}
    for variant, bg in background.items():
        predicted[variant] = []
        for layout in layouts:
            runs = {}
            for n in CONCURRENCY:
                r = predict(costs, voice, layout, n, cores, bg)
                runs[n] = {**summary([s.ttfa for s in r.streams], [s.rtf for s in r.streams], r.wall_s),
                           "busy_s": r.busy_s, "mean_batch": r.mean_batch}
            predicted[variant].append(runs)
    print(f"predicted ({cores:g} cores, background threads {background}; busiest stage at N=16: {slowest})",
          flush=True)
    write_report("capacity_prediction", [], {"cores": cores, "background": background, "slowest": slowest,
                                             "layouts": layouts, "predicted": predicted})  # before the runs
    measured = run_split(checkpoint, layouts, ["--device", device, "--dtype", dtype])
    variants = list(background)
    table = Table(f"Split service runs: the simulation from the cost curves against measurement ({cores:g} cores, "
                  f"{background['measured background']:.1f} busy threads of others while the costs were measured)",
                  ["layout", "N", "metric", "measured", *[f"predicted, {v}" for v in variants],
                   *[f"error, {v}" for v in variants]])
    for k, layout in enumerate(layouts):
        for n in CONCURRENCY:
            for metric in ("wall_s", "ttfa_p50", "ttfa_p95", "rtf_p50", "rtf_p95"):
                m = measured[k][n][metric]
                pred = [predicted[v][k][n][metric] for v in variants]
                table.add(layout_name(layout), n, metric, m, *pred, *[f"{(x / m - 1) * 100:+.0f}%" for x in pred])
    data = {"machine": machine(), "costs_machine": raw.get("machine"), "cores": cores, "background": background,
            "slowest": slowest,
            "layouts": layouts, "predicted": predicted, "measured": measured}
    write_report("capacity_check", [table], data)
    return data

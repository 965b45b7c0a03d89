"""Stage benchmark: decode steps, per-stage throughput and end-to-end time, against transformers.

Everything runs in this process on the random bark-small checkpoint (real
sizes, random weights), greedy, with a voice preset of that checkpoint:

1. decode step at batch 1 (the semantic model, ~250..500 cached positions):
   ours float32 / bfloat16 / int8 weight-only, transformers float32, and the
   weight-streaming floor (bytes of weights one step reads / read bandwidth of
   this machine, measured between the steps);
2. end to end (semantic -> coarse -> fine -> codec), batch 1 and batch 8,
   every stage timed: tokens/s, frames/s, wall seconds per audio second;
   transformers on the same token counts, and token agreement of every
   variant with float32 (ours) and of ours with transformers;
3. continuous batching: 8 requests of different lengths through one engine
   against the same 8 one at a time (semantic; coarse in full mode), and a
   short request arriving while a long one runs.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from barkstream.services.bark import constants as C
from barkstream.services.bark.params import CoarseParams, FineParams, SamplingParams, SemanticParams
from barkstream.services.model.gpt import cache_dtype
from barkstream.services.model.quant import Int8Linear, PackedLinear, linear_weight_bytes
from barkstream.services.stages.coarse import CoarseEngine, CoarseRequest
from barkstream.services.stages.fine import FineEngine, FineRequest
from barkstream.services.stages.jobs import Job
from barkstream.services.stages.models import ModelOptions, StageModels, load_stage_models
from barkstream.services.stages.semantic import MERGED_LEN as SEMANTIC_PREFIX_POSITIONS
from barkstream.services.stages.semantic import SemanticEngine, SemanticRequest

from .common import Table, interleaved, machine, median, read_bandwidth, rss_mb, write_report


def variants(device: str = "cpu") -> dict[str, ModelOptions]:
    """Our precisions. On CUDA the engines replay their decode steps from CUDA graphs."""
    return {
        "fp32": ModelOptions(device, dtype="float32"),
        "bf16": ModelOptions(device, dtype="bfloat16"),
        "int8": ModelOptions(device, dtype="bfloat16" if device.startswith("cuda") else "float32", quantize="int8"),
    }


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work before reading a clock (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Settings:
    n_tokens: int  # semantic tokens per request end to end (49.9 per audio second)
    n_tokens_b8: int  # the same at batch 8
    step_reps: int  # interleaved repetitions of the decode-step measurement (8 steps each)
    concurrent_lengths: tuple[int, ...]  # semantic tokens of the 8 concurrent requests
    hf_batch8: bool
    coarse_concurrency: bool


FULL = Settings(100, 25, 16, (160, 220, 280, 340, 400, 460, 520, 580), hf_batch8=True, coarse_concurrency=True)
QUICK = Settings(50, 25, 10, (60, 80, 100, 120, 140, 160, 180, 200), hf_batch8=False, coarse_concurrency=False)
BATCH8_VARIANTS = ("fp32", "bf16")  # int8 is a batch-1 latency mode: its CPU kernel's cost grows with the rows


def greedy_params(n_tokens: int) -> tuple[SemanticParams, CoarseParams, FineParams]:
    """Greedy at Suno's temperatures; exactly n semantic tokens (no early stop, a duration of n - 0.5 tokens)."""
    semantic = SemanticParams(SamplingParams(C.DEFAULT_SEMANTIC_TEMP, greedy=True), min_eos_p=None,
                              max_gen_duration_s=(n_tokens - 0.5) / C.SEMANTIC_RATE_HZ, allow_early_stop=False)
    return (semantic, CoarseParams(SamplingParams(C.DEFAULT_COARSE_TEMP, greedy=True)),
            FineParams(SamplingParams(C.DEFAULT_FINE_TEMP, greedy=True)))


def text_ids(n: int, seed: int = 0) -> list[list[int]]:
    """n different 'texts' of 20..40 multilingual-BERT ids (the random checkpoint's tokenizer is a stub)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(1000, 30000, int(rng.integers(20, 41))).tolist() for _ in range(n)]


def drain(engine) -> None:
    while engine.busy():
        engine.step()


def stream_all(engine, request, inputs) -> list[np.ndarray]:
    """One whole input stream per item of `inputs` (all under `request`), run together in a coarse or fine
    engine to the end; each stream's output frames (C, T)."""
    jobs = []
    for x in inputs:
        job = Job()
        stream = engine.add(job, request)
        stream.feed(x)
        stream.close()
        jobs.append(job)
    drain(engine)
    return [np.concatenate(j.chunks, axis=1) for j in jobs]


@dataclass
class Run:
    semantic: np.ndarray  # (B, n)
    coarse: np.ndarray  # (B, 2, T)
    fine: np.ndarray  # (B, 8, T)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


class Ours:
    """Our four stages in this process, stage after stage, the batch in one engine per stage."""

    def __init__(self, checkpoint, options: ModelOptions, max_batch: int = 8):
        self.device = options.device
        self.models: StageModels = load_stage_models(checkpoint, options=options)
        self.semantic = SemanticEngine(self.models.semantic, max_batch)
        self.coarse_engine = CoarseEngine(self.models.coarse, max_batch)
        self.fine_engine = FineEngine(self.models.fine, max_batch)

    @torch.inference_mode()
    def run(self, texts: list[list[int]], voice, n_tokens: int) -> Run:
        sp, cp, fp = greedy_params(n_tokens)
        seconds = {}
        t0 = time.perf_counter()
        jobs = [Job() for _ in texts]
        for job, ids in zip(jobs, texts, strict=True):
            self.semantic.add(job, SemanticRequest(ids, voice.semantic_prompt, sp, seed=0))
        drain(self.semantic)
        semantic = np.stack([np.concatenate(j.chunks) for j in jobs])  # (B, n)
        seconds["semantic"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        coarse_request = CoarseRequest(voice.semantic_prompt, voice.coarse_prompt, cp, 0)
        coarse = np.stack(stream_all(self.coarse_engine, coarse_request, semantic))  # (B, 2, T)
        seconds["coarse"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        fine = np.stack(stream_all(self.fine_engine, FineRequest(voice.fine_prompt, fp, 0), coarse))  # (B, 8, T)
        seconds["fine"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        self.models.codec.decode(torch.from_numpy(fine).to(self.device))
        sync(self.device)
        seconds["codec"] = time.perf_counter() - t0
        return Run(semantic, coarse, fine, seconds)


def run_hf(hf, texts: list[list[int]], voice, n_tokens: int) -> Run:
    seconds = {}
    t0 = time.perf_counter()
    semantic = hf.semantic(texts, voice, n_tokens)
    seconds["semantic"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    coarse = hf.coarse(semantic, voice)
    seconds["coarse"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fine = hf.fine(coarse, voice)
    seconds["fine"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hf.decode(fine)
    seconds["codec"] = time.perf_counter() - t0
    return Run(semantic, coarse, fine, seconds)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of equal tokens position by position (shapes must match; 0 when they do not)."""
    return float((a == b).mean()) if a.shape == b.shape else 0.0


def audio_seconds(run: Run) -> float:
    return run.fine.shape[0] * run.fine.shape[2] * C.SAMPLES_PER_FRAME / C.SAMPLE_RATE


# ------------------------------------------------------------------------------------------ decode step


class EngineStepper:
    """One long greedy request in a batch-1 semantic engine; `step` is one engine decode step."""

    def __init__(self, model, voice):
        self.model, self.voice = model, voice
        self.device = next(model.parameters()).device
        self.positions: list[int] = []  # of every step (its attention reads position + 1 cached keys per layer)
        self.reset()

    def reset(self) -> None:
        sp, _, _ = greedy_params(600)  # then a fresh request: positions stay inside the 1024 context
        self.engine = SemanticEngine(self.model, max_batch=1)
        self.job = Job()
        self.engine.add(self.job, SemanticRequest(text_ids(1, 7)[0], self.voice.semantic_prompt, sp))
        with torch.inference_mode():
            self.engine.step()  # prefill

    @torch.inference_mode()
    def step(self) -> None:
        if not self.engine.busy():
            self.reset()
        self.positions.append(self.engine.rows[0].position)
        self.engine.step()  # reads its tokens back: a GPU step is complete when it returns


class LinearsOnly:
    """A model's linears in model order on one row: the weight stream of a decode step without its attention."""

    def __init__(self, model):
        p = next(model.parameters())
        self.linears = [m for m in model.modules() if isinstance(m, nn.Linear | PackedLinear | Int8Linear)]
        self.inputs = [torch.randn(1, 1, m.in_features, device=p.device, dtype=p.dtype) for m in self.linears]

    @torch.inference_mode()
    def step(self) -> None:
        for m, x in zip(self.linears, self.inputs, strict=True):
            m(x)


def step_bytes(model) -> int:
    """Weight bytes one decode step reads: every linear (as stored), the norms, one embedding row each."""
    norms = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "layernorm" in n)
    rows = 2 * model.config.n_embd * next(model.parameters()).element_size()
    return linear_weight_bytes(model) + norms + rows


def kv_bytes_per_position(model) -> int:
    """Bytes of keys and values one cached position holds for one row (every layer), as the engines store them."""
    c, p = model.config, next(model.parameters())
    return 2 * c.n_layer * c.n_embd * cache_dtype(p.dtype, p.device).itemsize


def bench_decode_step(ours: dict[str, Ours], hf, voice, reps: int) -> tuple[list[Table], dict]:
    from .hf_baseline import HFStepper

    steppers = {name: EngineStepper(o.models.semantic, voice) for name, o in ours.items()}
    hf_stepper = HFStepper(hf) if hf is not None else None
    device = next(iter(ours.values())).device
    buffer = torch.ones(128 * 2**20, device=device)  # 512 MiB: far beyond any cache
    k = 8

    def timed(stepper):
        def run() -> float:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(k):
                stepper.step()
            sync(device)
            return (time.perf_counter() - t0) / k
        return run

    timers = {name: timed(s) for name, s in steppers.items()}
    if hf_stepper is not None:
        timers["transformers fp32"] = timed(hf_stepper)
    # The same linears without the rest of the step: what the weight stream alone costs through our kernels.
    parts = {f"{name} linears only": name for name in ("fp32", "int8") if name in ours}
    for part, name in parts.items():
        timers[part] = timed(LinearsOnly(ours[name].models.semantic))
    timers["bandwidth"] = lambda: read_bandwidth(buffer, lambda: sync(device))
    samples = interleaved(timers, reps)
    bw = median(samples.pop("bandwidth"))
    linears = {name: median(samples.pop(part)) for part, name in parts.items()}
    fp32_step = median(samples["fp32"])
    table = Table("Semantic decode step, batch 1 (median of interleaved repetitions)",
                  ["variant", "step ms", "weights read MB", "floor ms", "step / floor", "vs fp32", "vs transformers"])
    hf_step = median(samples.get("transformers fp32", [float("nan")]))
    data = {"read_bandwidth_gb_s": bw / 1e9, "steps_ms": {}, "breakdown": {}}
    for name, values in samples.items():
        step = median(values)
        model = ours[name].models.semantic if name in ours else ours["fp32"].models.semantic
        nbytes = step_bytes(model)
        floor = nbytes / bw
        table.add(name, step * 1e3, nbytes / 1e6, floor * 1e3, step / floor, step / fp32_step, step / hf_step)
        data["steps_ms"][name] = {"median": step * 1e3, "all": [v * 1e3 for v in values], "bytes": nbytes,
                                  "floor_ms": floor * 1e3}
    table.add("(read bandwidth)", f"{bw / 1e9:.1f} GB/s", "", "", "", "", "")

    parts_table = Table("Where a batch-1 decode step's time goes (same run; floor = bytes / read bandwidth)",
                        ["variant", "part", "ms", "MB read", "floor ms", "x floor", "share of step"])
    for name, lin in linears.items():
        model, step = ours[name].models.semantic, data["steps_ms"][name]["median"] / 1e3
        kv = statistics.mean(steppers[name].positions) + 1  # cached positions each step's attention reads
        kv_bytes = kv * kv_bytes_per_position(model)
        w_bytes = step_bytes(model)
        parts_table.add(name, "linears alone (the weight stream)", lin * 1e3, w_bytes / 1e6, w_bytes / bw * 1e3,
                        lin * bw / w_bytes, lin / step)
        parts_table.add(name, f"attention (~{kv:.0f} cached positions) + other ops", (step - lin) * 1e3,
                        kv_bytes / 1e6, kv_bytes / bw * 1e3, (step - lin) * bw / kv_bytes, (step - lin) / step)
        parts_table.add(name, "whole step", step * 1e3, (w_bytes + kv_bytes) / 1e6, (w_bytes + kv_bytes) / bw * 1e3,
                        step * bw / (w_bytes + kv_bytes), 1.0)
        data["breakdown"][name] = {"linears_ms": lin * 1e3, "rest_ms": (step - lin) * 1e3, "kv_positions": kv,
                                   "kv_bytes": kv_bytes, "weight_bytes": w_bytes}
    return [table, parts_table], data


# ------------------------------------------------------------------------------------------ end to end


def bench_end_to_end(ours: dict[str, Ours], hf, voice, settings: Settings) -> tuple[list[Table], dict]:
    table = Table("End to end (semantic -> coarse -> fine -> codec), greedy, same token counts",
                  ["batch", "variant", "audio s", "wall s", "wall s / audio s", "semantic tok/s", "coarse tok/s",
                   "fine frames/s", "codec frames/s", "speed-up vs transformers"])
    agree = Table("Token agreement (position by position, end to end: a divergence propagates downstream)",
                  ["batch", "variant", "against", "semantic", "coarse", "fine"])
    data: dict = {}
    for batch, n in ((1, settings.n_tokens), (8, settings.n_tokens_b8)):
        texts = text_ids(batch, seed=batch)
        runs: dict[str, Run] = {}
        for name, o in ours.items():
            if batch == 1 or name in BATCH8_VARIANTS:
                runs[name] = o.run(texts, voice, n)
        if hf is not None and (batch == 1 or settings.hf_batch8):
            runs["transformers fp32"] = run_hf(hf, texts, voice, n)
        hf_total = runs["transformers fp32"].total if "transformers fp32" in runs else float("nan")
        for name, r in runs.items():
            frames = r.fine.shape[0] * r.fine.shape[2]
            table.add(batch, name, audio_seconds(r), r.total, r.total / audio_seconds(r),
                      r.semantic.size / r.seconds["semantic"], 2 * frames / r.seconds["coarse"],
                      frames / r.seconds["fine"], frames / r.seconds["codec"], hf_total / r.total)
        ref = runs["fp32"]
        data[f"batch{batch}"] = {}
        for name, r in runs.items():
            same = [agreement(r.semantic, ref.semantic), agreement(r.coarse, ref.coarse), agreement(r.fine, ref.fine)]
            if name != "fp32":
                agree.add(batch, name, "ours fp32", *same)
            data[f"batch{batch}"][name] = {"seconds": r.seconds, "total_s": r.total, "audio_s": audio_seconds(r),
                                           "shape": r.fine.shape, "agreement_with_fp32": same}
    return [table, agree], data


# ------------------------------------------------------------------------------------------ batching


def bench_concurrency(o: Ours, voice, settings: Settings, bandwidth: float) -> tuple[Table, dict]:
    """8 requests of different lengths: one engine (continuous batching) against one at a time.

    Also what an ideal engine would get for the same requests on this machine: every decode step
    streaming its bytes (weights once per step, every row's cached keys and values) at `bandwidth`
    (B/s), alone and batched, and the prefills as long as they measured here (they are compute-bound).
    """
    model = o.models.semantic
    texts = text_ids(len(settings.concurrent_lengths), seed=3)
    reqs = [SemanticRequest(t, voice.semantic_prompt, greedy_params(n)[0], 0)
            for t, n in zip(texts, settings.concurrent_lengths, strict=True)]
    total = sum(settings.concurrent_lengths)
    prefill_s: dict[str, list[float]] = {"batched": [], "alone": []}

    def drain_timing_prefill(engine, key: str) -> None:
        t0 = time.perf_counter()
        engine.step()  # the admitted requests' prefill
        prefill_s[key].append(time.perf_counter() - t0)
        drain(engine)

    def together() -> tuple[float, list[np.ndarray]]:
        engine = SemanticEngine(model, max_batch=len(reqs))
        jobs = [Job() for _ in reqs]
        t0 = time.perf_counter()
        for j, r in zip(jobs, reqs, strict=True):
            engine.add(j, r)
        with torch.inference_mode():
            drain_timing_prefill(engine, "batched")
        return time.perf_counter() - t0, [np.concatenate(j.chunks) for j in jobs]

    def alone() -> tuple[float, list[np.ndarray]]:
        engine, out, t0 = SemanticEngine(model, max_batch=1), [], time.perf_counter()
        for r in reqs:
            job = Job()
            engine.add(job, r)
            with torch.inference_mode():
                drain_timing_prefill(engine, "alone")
            out.append(np.concatenate(job.chunks))
        return time.perf_counter() - t0, out

    t_batch, toks_batch = together()
    t_alone, toks_alone = alone()
    same = all(np.array_equal(a, b) for a, b in zip(toks_batch, toks_alone, strict=True))
    bound = batching_bound(settings.concurrent_lengths, step_bytes(model), kv_bytes_per_position(model), bandwidth,
                           sum(prefill_s["alone"]), sum(prefill_s["batched"]))
    table = Table("Continuous batching: 8 concurrent requests of different lengths through one engine (fp32)",
                  ["stage", "requests (tokens)", "one at a time tok/s", "batched tok/s", "speed-up",
                   "same tokens as alone"])
    table.add("semantic", f"8 ({min(settings.concurrent_lengths)}..{max(settings.concurrent_lengths)})",
              total / t_alone, total / t_batch, t_alone / t_batch, same)
    table.add("semantic", f"the same, ideal: every step's bytes at {bandwidth / 1e9:.1f} GB/s",
              total / bound["alone_s"], total / bound["batched_s"], bound["speed_up"], "")
    data = {"semantic": {"alone_s": t_alone, "batched_s": t_batch, "tokens": total, "same_tokens": same,
                         "prefill_s": prefill_s, "bound": bound}}
    if settings.coarse_concurrency:
        row, data["coarse"] = _coarse_concurrency(o, voice, settings)
        table.add(*row)
    arrival = _late_short_request(model, voice, settings)
    data["late_short_request"] = arrival
    table.add("semantic", f"short ({arrival['short_tokens']}) arrives after {arrival['joined_after_steps']} steps "
              f"of a long one ({arrival['long_tokens']})",
              "", "", "", f"short finished first: {arrival['short_finished_first']} "
                          f"({arrival['short_s']:.1f} s vs long {arrival['long_s']:.1f} s)")
    return table, data


def batching_bound(lengths: tuple[int, ...], weight_bytes: int, kv_bytes_per_pos: int, bandwidth: float,
                   prefill_alone_s: float, prefill_batched_s: float) -> dict:
    """Seconds for the requests alone and batched if every decode step ran at the read bandwidth.

    A step reads the weights once however many rows it has, but each row's own cached keys and
    values (position + 1 of them): batching shares the first and not the second. A request of n
    tokens takes its prefill (which yields the first token) and n - 1 decode steps at positions
    257, 258, ...
    """
    start = SEMANTIC_PREFIX_POSITIONS

    def kv(p: int) -> int:
        return (p + 1) * kv_bytes_per_pos

    alone = sum(weight_bytes + kv(start + t) for n in lengths for t in range(n - 1))
    batched = sum(weight_bytes + sum(kv(start + t) for n in lengths if t < n - 1) for t in range(max(lengths) - 1))
    alone_s, batched_s = prefill_alone_s + alone / bandwidth, prefill_batched_s + batched / bandwidth
    return {"alone_s": alone_s, "batched_s": batched_s, "speed_up": alone_s / batched_s,
            "decode_bytes_alone": alone, "decode_bytes_batched": batched}


def _coarse_concurrency(o: Ours, voice, settings: Settings) -> tuple[list, dict]:
    _, cp, _ = greedy_params(1)
    rng = np.random.default_rng(5)
    sems = [rng.integers(0, C.SEMANTIC_VOCAB_SIZE, n // 4) for n in settings.concurrent_lengths]

    def run(max_batch: int) -> tuple[float, list[np.ndarray]]:
        engine, out, t0 = CoarseEngine(o.models.coarse, max_batch), [], time.perf_counter()
        request = CoarseRequest(voice.semantic_prompt, voice.coarse_prompt, cp, 0)
        groups = [sems] if max_batch > 1 else [[s] for s in sems]
        for group in groups:
            with torch.inference_mode():
                out += stream_all(engine, request, group)
        return time.perf_counter() - t0, out

    t_batch, a = run(len(sems))
    t_alone, b = run(1)
    tokens = sum(x.size for x in a)
    same = all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    return (["coarse", f"8 ({tokens // 8} avg tokens, windows share steps)", tokens / t_alone, tokens / t_batch,
             t_alone / t_batch, same],
            {"alone_s": t_alone, "batched_s": t_batch, "tokens": tokens, "same_tokens": same})


def _late_short_request(model, voice, settings: Settings) -> dict:
    long_n, short_n, after = max(settings.concurrent_lengths), min(settings.concurrent_lengths) // 2, 20
    engine = SemanticEngine(model, max_batch=2)
    texts = text_ids(2, seed=11)
    long_job, short_job = Job(), Job()
    done: dict[str, float] = {}
    t0 = time.perf_counter()
    engine.add(long_job, SemanticRequest(texts[0], voice.semantic_prompt, greedy_params(long_n)[0], 0))
    steps = 0
    with torch.inference_mode():
        while engine.busy():
            engine.step()
            steps += 1
            if steps == after + 1:  # the prefill, then `after` decode steps
                engine.add(short_job, SemanticRequest(texts[1], voice.semantic_prompt, greedy_params(short_n)[0], 0))
            for name, job in (("long", long_job), ("short", short_job)):
                if job.done and name not in done:
                    done[name] = time.perf_counter() - t0
    return {"long_tokens": long_n, "short_tokens": short_n, "joined_after_steps": after,
            "long_s": done["long"], "short_s": done["short"], "short_finished_first": done["short"] < done["long"]}


# ------------------------------------------------------------------------------------------ main


def targets(step: dict, e2e: dict, conc: dict) -> Table:
    """The issue's done-means that this benchmark measures, with this run's numbers."""
    t = Table("Targets (this run)", ["target", "measured", "met"])
    ms = {k: v["median"] for k, v in step["steps_ms"].items()}
    fp32, floor = ms["fp32"], step["steps_ms"]["fp32"]["floor_ms"]
    t.add("fp32 decode step <= 1.2x weight-streaming floor", f"{fp32 / floor:.2f}x", fp32 / floor <= 1.2)
    if "transformers fp32" in ms:
        hf = ms["transformers fp32"]
        t.add("fp32 decode step >= 1.4x faster than transformers", f"{hf / fp32:.2f}x", hf / fp32 >= 1.4)
    t.add("int8 decode step <= 0.4x fp32 step", f"{ms['int8'] / fp32:.2f}x", ms["int8"] / fp32 <= 0.4)
    b1 = e2e.get("batch1", {})
    if "transformers fp32" in b1:
        hf_total = b1["transformers fp32"]["total_s"]
        same = b1["transformers fp32"]["agreement_with_fp32"]
        speed = hf_total / b1["fp32"]["total_s"]
        t.add("end to end b1: fp32 >= 1.3x transformers, identical tokens",
              f"{speed:.2f}x, tokens equal: {all(a == 1.0 for a in same)}", speed >= 1.3 and all(a == 1 for a in same))
        speed = hf_total / b1["bf16"]["total_s"]
        agree = b1["bf16"]["agreement_with_fp32"]
        t.add("end to end b1: bf16 >= 3x transformers fp32 (agreement with fp32: sem/coarse/fine)",
              f"{speed:.2f}x ({agree[0]:.2f}/{agree[1]:.2f}/{agree[2]:.2f})", speed >= 3)
    sem = conc["semantic"]
    t.add("8 concurrent requests: semantic aggregate tok/s >= 4x batch 1",
          f"{sem['alone_s'] / sem['batched_s']:.2f}x (an engine at full bandwidth: {sem['bound']['speed_up']:.2f}x)",
          sem["alone_s"] / sem["batched_s"] >= 4)
    late = conc["late_short_request"]
    t.add("a short request arriving during a long one finishes first",
          f"{late['short_s']:.1f} s vs {late['long_s']:.1f} s", late["short_finished_first"])
    return t



def main(checkpoint: Path, quick: bool, with_hf: bool = True, device: str = "cpu") -> dict:
    from barkstream.services.bark.voices import VoiceLibrary
    from barkstream.services.checkpoint.load import load_checkpoint

    settings = QUICK if quick else FULL
    info = machine()
    print(f"stages benchmark ({'quick' if quick else 'full'}) on {info['cpu']}, {info['cores']} cores, "
          f"{info['torch_threads']} torch threads, GPU: {info['gpu']}", flush=True)
    ck = load_checkpoint(checkpoint)
    voice_name = VoiceLibrary([ck.voices_dir]).list()[0]
    voice = VoiceLibrary([ck.voices_dir]).load(voice_name)
    t0 = time.perf_counter()
    ours = {name: Ours(ck, options) for name, options in variants(device).items()}
    del ck  # the models hold their own weights
    hf = None
    if with_hf:
        from .hf_baseline import HFBark

        hf = HFBark(checkpoint, device)
    print(f"models loaded in {time.perf_counter() - t0:.0f} s; measuring decode steps ...", flush=True)
    step_tables, step_data = bench_decode_step(ours, hf, voice, settings.step_reps)
    for t in step_tables:
        print(t.render(), flush=True)
    print("end to end ...", flush=True)
    e2e_tables, e2e_data = bench_end_to_end(ours, hf, voice, settings)
    for t in e2e_tables:
        print(t.render(), flush=True)
    del hf
    print("continuous batching ...", flush=True)
    conc_table, conc_data = bench_concurrency(ours["fp32"], voice, settings,
                                              step_data["read_bandwidth_gb_s"] * 1e9)
    tables = [*step_tables, *e2e_tables, conc_table, targets(step_data, e2e_data, conc_data)]
    data = {"machine": info, "settings": settings.__dict__, "voice": voice_name, "decode_step": step_data,
            "end_to_end": e2e_data, "concurrency": conc_data, "process_memory": rss_mb()}
    print("\n# stages benchmark results", flush=True)
    write_report("stages", tables, data)
    return data

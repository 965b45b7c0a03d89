"""Stage cost curves: what one engine step costs against its batch size, per stage, in this process.

The capacity model (benchmarks/capacity.py) and the pipeline simulation
(benchmarks/sim.py) take these as input. Each stage's real engine runs the
real step on the random bark-small checkpoint, greedy, with a voice preset:
semantic prefill (257 positions) and decode step; coarse window prefill (the
semantic window, the infer token and the voice's coarse history) and decode
step; one 1024-frame fine window; a 32-frame codec chunk. Batch sizes 1..8;
decode steps are the median of many, prefills and windows of a few. Memory:
the weights and the KV cache one row holds, and on CUDA the peak a batch
allocates.

Torch threads: set them as the servers run (the service benchmark runs every
server with one), or the curves describe another machine.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from barkstream.services.bark import constants as C
from barkstream.services.model.quant import PackedLinear
from barkstream.services.stages.coarse import CoarseEngine, CoarseRequest
from barkstream.services.stages.codec import CodecEngine
from barkstream.services.stages.fine import FineEngine, FineRequest
from barkstream.services.stages.jobs import Job
from barkstream.services.stages.models import ModelOptions, load_stage_models
from barkstream.services.stages.semantic import SemanticEngine, SemanticRequest

from .common import Table, machine, write_report
from .stages import greedy_params, sync, text_ids


@dataclass(frozen=True)
class Settings:
    batches: tuple[int, ...]
    decode_steps: int  # decode steps timed per batch size (median)
    reps: int  # prefills and windows timed per batch size (median)
    fine_batches: tuple[int, ...] | None = None  # default: `batches` (a window is compute-bound: linear in b)


FULL = Settings((1, 2, 4, 8), 24, 3)
QUICK = Settings((1, 2, 4, 8), 12, 1, fine_batches=(1, 8))


def _timed(device, fn) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def semantic_curves(model, voice, settings: Settings) -> dict:
    device = next(model.parameters()).device
    sp = greedy_params(settings.decode_steps + 2)[0]
    out: dict = {"prefill": [], "step": []}
    for b in settings.batches:
        prefills, steps = [], []
        for rep in range(settings.reps):
            engine = SemanticEngine(model, max_batch=max(settings.batches))
            for ids in text_ids(b, seed=rep):
                engine.add(Job(), SemanticRequest(ids, voice.semantic_prompt, sp, 0))
            prefills.append(_timed(device, engine.step))
            if rep == 0:
                steps = [_timed(device, engine.step) for _ in range(settings.decode_steps)]
        out["prefill"].append([b, statistics.median(prefills)])
        out["step"].append([b, statistics.median(steps)])
    return out


def coarse_curves(model, voice, settings: Settings) -> dict:
    device = next(model.parameters()).device
    cp = greedy_params(1)[1]
    rng = np.random.default_rng(0)
    out: dict = {"prefill": [], "step": []}
    for b in settings.batches:
        prefills, steps = [], []
        for rep in range(settings.reps):
            engine = CoarseEngine(model, max_batch=max(settings.batches))
            request = CoarseRequest(voice.semantic_prompt, voice.coarse_prompt, cp, 0)
            for _ in range(b):
                stream = engine.add(Job(), request)
                stream.feed(rng.integers(0, C.SEMANTIC_VOCAB_SIZE, 60))  # one whole 60-token window
                stream.close()
            prefills.append(_timed(device, engine.step))  # every stream's first window starts at once
            out["prefill_len"] = engine.rows[0].position
            if rep == 0:
                steps = [_timed(device, engine.step) for _ in range(min(settings.decode_steps, 58))]
        out["prefill"].append([b, statistics.median(prefills)])
        out["step"].append([b, statistics.median(steps)])
    return out


def fine_curve(model, voice, settings: Settings) -> list:
    device = next(model.parameters()).device
    fp = greedy_params(1)[2]
    rng = np.random.default_rng(1)
    out = []
    batches = settings.fine_batches or settings.batches
    for b in batches:
        times = []
        for _ in range(settings.reps):
            engine = FineEngine(model, max_batch=max(batches))
            for _ in range(b):
                stream = engine.add(Job(), FineRequest(voice.fine_prompt, fp, 0))
                stream.feed(rng.integers(0, C.CODEBOOK_SIZE, (2, 300)))  # shorter than a window: one window
                stream.close()
            times.append(_timed(device, engine.step))
        out.append([b, statistics.median(times)])
    return out


def codec_curve(codec, settings: Settings, device: str, frames: int = 32) -> list:
    rng = np.random.default_rng(2)
    out = []
    for b in settings.batches:
        engine = CodecEngine(codec, max_batch=max(settings.batches), max_frames_per_step=frames)
        for _ in range(b):
            stream = engine.add(Job())
            stream.feed(rng.integers(0, C.CODEBOOK_SIZE, (C.N_FINE_CODEBOOKS, frames * (settings.decode_steps + 1))))
        engine.step()  # the first chunk fills the decoder's left context
        times = [_timed(device, engine.step) for _ in range(settings.decode_steps)]
        out.append([b, statistics.median(times)])
    return out


def memory(models) -> dict:
    """Bytes of each stage's weights and, for the GPT stages, of one row's KV cache (1024 positions)."""
    def nbytes(m) -> int:  # oneDNN-packed linears (CPU) keep their weights outside the parameters
        packed = sum(x.weight_bytes() for x in m.modules() if isinstance(x, PackedLinear))
        return packed + sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])

    out = {name: {"weights_mb": nbytes(getattr(models, name)) / 2**20} for name in ("semantic", "coarse", "fine",
                                                                                      "codec")}
    for name in ("semantic", "coarse"):
        engine = SemanticEngine(models.semantic, 1) if name == "semantic" else CoarseEngine(models.coarse, 1)
        out[name]["kv_mb_per_row"] = (engine.cache.k.numel() + engine.cache.v.numel()) \
            * engine.cache.k.element_size() / 2**20
    return out


def measure(checkpoint: Path, settings: Settings, device: str = "cpu", dtype: str = "float32") -> dict:
    from barkstream.services.bark.voices import VoiceLibrary
    from barkstream.services.checkpoint.load import load_checkpoint

    from .service import VOICE

    ck = load_checkpoint(checkpoint)
    voice = VoiceLibrary([ck.voices_dir]).load(VOICE)
    models = load_stage_models(ck, options=ModelOptions(device, dtype))
    del ck
    cuda = torch.device(device).type == "cuda"
    peaks: dict[str, float] = {}

    def peak(stage: str, fn):
        """Run one stage's measurement; on CUDA, record the most memory it allocated (weights, cache, work)."""
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        out = fn()
        if cuda:
            peaks[stage] = torch.cuda.max_memory_allocated() / 2**20
        return out

    t0, cpu0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        semantic_curves(models.semantic, voice, Settings((1,), 2, 1))  # warm-up: first allocations
        curves = {"semantic": peak("semantic", lambda: semantic_curves(models.semantic, voice, settings)),
                  "coarse": peak("coarse", lambda: coarse_curves(models.coarse, voice, settings)),
                  "fine": {"window": peak("fine", lambda: fine_curve(models.fine, voice, settings))},
                  "codec": {"chunk": peak("codec", lambda: codec_curve(models.codec, settings, device)),
                            "frames": 32}}
    mem = memory(models)
    for stage, mb in peaks.items():
        mem[stage]["cuda_peak_mb_at_max_batch"] = mb  # every model of the process is resident: an upper bound
    return {"curves": curves, "memory": mem, "voice": {
        "name": VOICE, "semantic": len(voice.semantic_prompt), "coarse": voice.coarse_prompt.shape[1],
        "fine": voice.fine_prompt.shape[1]}, "seconds": time.perf_counter() - t0,
        # The share of a core this process got while measuring: below 1, other programs were busy on this
        # machine (with one torch thread, `cores / share - 1` busy threads of theirs).
        "cpu_share": (time.process_time() - cpu0) / (time.perf_counter() - t0)}


def main(checkpoint: Path, quick: bool, device: str = "cpu", dtype: str = "float32") -> dict:
    settings = QUICK if quick else FULL
    info = machine()
    print(f"stage cost curves ({'quick' if quick else 'full'}) on {info['cpu']}, {info['torch_threads']} torch "
          f"threads, GPU: {info['gpu']}", flush=True)
    data = measure(checkpoint, settings, device, dtype)
    c = data["curves"]
    table = Table(f"Engine step cost against batch size ({dtype}, {device}, {info['torch_threads']} threads), ms",
                  ["batch", "semantic prefill", "semantic step", f"coarse prefill ({c['coarse']['prefill_len']} pos)",
                   "coarse step", "fine window", "codec 32 frames"])
    for b in settings.batches:
        table.add(b, *(1e3 * dict(curve).get(b, float("nan"))
                       for curve in (c["semantic"]["prefill"], c["semantic"]["step"], c["coarse"]["prefill"],
                                     c["coarse"]["step"], c["fine"]["window"], c["codec"]["chunk"])))
    mem = Table("Memory per stage (MiB)", ["stage", "weights", "KV cache per row (1024 positions)"])
    for name, m in data["memory"].items():
        mem.add(name, m["weights_mb"], m.get("kv_mb_per_row", float("nan")))
    print(f"\nthis process got {data['cpu_share']:.2f} of a core while measuring", flush=True)
    write_report("costs", [table, mem], {"machine": info, "settings": settings.__dict__, "device": device,
                                         "dtype": dtype, **data})
    return data

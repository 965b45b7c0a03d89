"""Shared pieces of the benchmarks: the checkpoint, timing, memory, machine facts, output.

Every comparison is measured in the same run as its baseline, repetitions of
the variants interleaved (A B C A B C ...) so that a noisy neighbour slows all
of them alike, and summarised by the median.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "out"
DEFAULT_CHECKPOINT = Path.home() / ".cache" / "barkstream" / "random-small"  # shared with `serve --random-checkpoint`


def random_small_checkpoint(path: Path | None = None) -> Path:
    """The random bark-small checkpoint (real sizes, random weights), written once (~1.6 GB, seconds)."""
    from barkstream.services.checkpoint.random_writer import write_random_checkpoint

    out = Path(path or DEFAULT_CHECKPOINT)
    if not (out / "config.json").is_file():
        print(f"writing a random bark-small checkpoint to {out} ...", flush=True)
        write_random_checkpoint(out, size="small", seed=0)
    return out


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def interleaved(variants: dict[str, Callable[[], float | None]], reps: int) -> dict[str, list[float]]:
    """Run each variant once per repetition, in turn; a variant returns its own measure or None (= wall time)."""
    out: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            value = fn()
            out[name].append(time.perf_counter() - t0 if value is None else value)
    return out


def read_bandwidth(buffer, sync: Callable[[], None] = lambda: None) -> float:
    """Bytes per second of one pass of `buffer.sum()` (a read-only stream, like a decode step's weights)."""
    sync()
    t0 = time.perf_counter()
    buffer.sum()
    sync()
    return buffer.numel() * buffer.element_size() / (time.perf_counter() - t0)


def rss_mb(pid: int | str = "self") -> dict[str, float]:
    """Resident memory of a process in MiB (Linux): now, at its peak (VmRSS, VmHWM), and the private part
    (RssAnon: what the process alone holds; the rest is file pages such as shared libraries and
    memory-mapped files, which other processes share and the kernel can reclaim)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    nan = float("nan")
    return {"rss_mb": out.get("VmRSS", nan), "peak_rss_mb": out.get("VmHWM", nan),
            "private_mb": out.get("RssAnon", nan)}


def machine() -> dict:
    """What the numbers ran on."""
    import torch

    cpu, flags = platform.processor(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = value.split()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "isa": [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile") if f in flags],
        "memory_gib": round(mem_gib, 1),
        "gpu": gpu or "none",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


@dataclass
class Table:
    """A printable table that also lands in the JSON."""

    title: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)

    def add(self, *cells) -> None:
        self.rows.append(list(cells))

    def render(self) -> str:
        cells = [[_fmt(c) for c in row] for row in self.rows]
        widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(self.columns)]
        line = " | ".join(h.ljust(w) for h, w in zip(self.columns, widths, strict=True))
        rule = "-|-".join("-" * w for w in widths)
        body = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
        return "\n".join([f"\n## {self.title}", line, rule, *body])

    def to_json(self) -> dict:
        return {"title": self.title, "columns": self.columns, "rows": self.rows}


def _fmt(value) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3g}"
    return str(value)


def write_report(name: str, tables: list[Table], data: dict, out_dir: Path = OUT_DIR) -> Path:
    """Print every table and write `<out_dir>/<name>.json` (tables + raw data + machine)."""
    for t in tables:
        print(t.render(), flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps({"tables": [t.to_json() for t in tables], **data}, indent=1, default=str))
    print(f"\nwrote {path}", flush=True)
    return path

"""Service benchmark: N concurrent Synthesize streams through gRPC, embedded and split.

Servers are started as real processes (`barkstream serve`): "embedded" is one
process with all five services, "split" is four stage processes and an
orchestrator talking gRPC over loopback. The baseline, in this process, is the
offline `Synthesizer` doing the same work (same texts, voice, seeds, greedy
parameters, batch size): the audio must come out the same, and the overhead
is how much longer the service takes for it.

Per stream: time to first audio (client-side, from sending the request to the
first audio chunk), real-time factor (wall time / audio seconds); per run:
aggregate audio seconds per wall second. Resident memory of every server
process is read from /proc after the runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .common import Table, interleaved, machine, median, percentile, rss_mb, write_report

TEXTS = [
    "Hello world, my dog likes pizza and music.",
    "The music is made by Bark, the voice of Suno.",
    "I like the speech of the cute dog and the cat.",
    "The cute cat sighs and laughs at the voice of the text today.",
]
VOICE = "v2/en_speaker_0"
SEED = 1234
MAX_BATCH = 8


@dataclass(frozen=True)
class Settings:
    concurrency: tuple[int, ...]
    reps: tuple[int, ...]  # interleaved repetitions per concurrency (walls: median)
    durations_s: tuple[float, ...]  # max semantic duration, cycled over the requests (different lengths)


FULL = Settings((1, 4, 16), (3, 1, 1), (0.5, 0.75, 1.0, 1.25))
QUICK = Settings((1, 4), (2, 1), (0.4, 0.6))


def requests(n: int, settings: Settings) -> list[tuple[str, float, int]]:
    """(text, max duration, seed) of n requests."""
    return [(TEXTS[i % len(TEXTS)], settings.durations_s[i % len(settings.durations_s)], SEED + i) for i in range(n)]


@dataclass
class StreamResult:
    started: float
    first_audio: float | None = None
    ended: float | None = None
    audio: list[bytes] = field(default_factory=list)
    samples: int = 0
    error: str | None = None

    @property
    def audio_s(self) -> float:
        return self.samples / 24_000

    def pcm(self) -> np.ndarray:
        return np.frombuffer(b"".join(self.audio), dtype="<f4")


# ------------------------------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `barkstream serve ROLE` process on 127.0.0.1."""

    def __init__(self, role: str, checkpoint: Path, log_dir: Path, extra: list[str] = ()):
        self.role, self.port = role, free_port()
        self.target = f"127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "barkstream.client.cli", "serve", role, "--host", "127.0.0.1",
               "--port", str(self.port), "--checkpoint", str(checkpoint), "--max-batch", str(MAX_BATCH),
               "--log-level", "WARNING", *extra]
        self.log = open(log_dir / f"{role}-{self.port}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)

    def memory(self) -> dict[str, float]:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_serving(server: Server, timeout: float = 300.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(server.target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.role} server exited with {server.proc.returncode}; see {server.log.name}")
            with contextlib.suppress(grpc.RpcError):
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.2)
    raise TimeoutError(f"{server.role} not serving after {timeout} s")


@contextlib.contextmanager
def deployments(checkpoint: Path, log_dir: Path, extra: list[str] = ()) -> Iterator[dict[str, list[Server]]]:
    """{"embedded": [all], "split": [semantic, coarse, fine, codec, orchestrator]}, all serving."""
    servers: dict[str, list[Server]] = {"embedded": [Server("all", checkpoint, log_dir, extra)]}
    try:
        stages = [Server(s, checkpoint, log_dir, extra) for s in ("semantic", "coarse", "fine", "codec")]
        servers["split"] = stages
        targets = [f"--{s.role}-target={s.target}" for s in stages]
        servers["split"].append(Server("orchestrator", checkpoint, log_dir, [*extra, *targets]))
        for group in servers.values():
            for s in group:
                wait_serving(s)
        yield servers
    finally:
        for group in servers.values():
            for s in group:
                s.stop()


# ------------------------------------------------------------------------------------------ clients


def synth_request(text: str, duration: float, seed: int):
    from barkstream.v1 import tts_pb2

    req = tts_pb2.SynthesizeRequest(text=text, voice=VOICE, seed=seed, encoding=tts_pb2.AUDIO_ENCODING_FLOAT32_LE)
    req.params.semantic.sampling.greedy = True
    req.params.coarse.sampling.greedy = True
    req.params.fine.greedy = True
    req.params.semantic.max_gen_duration_s = duration
    return req


def run_streams(target: str, reqs: list[tuple[str, float, int]]) -> tuple[float, list[StreamResult]]:
    """All requests at once, one thread and channel each; returns (wall seconds, per-stream results)."""
    import grpc

    from barkstream.v1 import tts_pb2_grpc

    results: list[StreamResult | None] = [None] * len(reqs)
    go = threading.Barrier(len(reqs) + 1)

    def one(i: int) -> None:
        with grpc.insecure_channel(target) as ch:
            stub = tts_pb2_grpc.TextToSpeechStub(ch)
            grpc.channel_ready_future(ch).result(timeout=30)
            go.wait()
            r = results[i] = StreamResult(time.perf_counter())
            try:
                for msg in stub.Synthesize(synth_request(*reqs[i]), timeout=1800):
                    if msg.WhichOneof("payload") == "chunk":
                        if r.first_audio is None:
                            r.first_audio = time.perf_counter()
                        r.audio.append(msg.chunk.data)
                        r.samples += msg.chunk.num_samples
            except grpc.RpcError as e:
                r.error = f"{e.code().name}: {e.details()}"
            r.ended = time.perf_counter()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(reqs))]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, results


def same_audio(results: list[StreamResult], reference: list[np.ndarray]) -> bool:
    """Every stream delivered the in-process samples (float32 encoding; the streaming codec is exact)."""
    return all(r.error is None and len(r.pcm()) == len(a) and float(np.max(np.abs(r.pcm() - a), initial=0.0)) < 1e-4
               for r, a in zip(results, reference, strict=True))


class InProcess:
    """The offline Synthesizer on the same checkpoint: the same work without gRPC or streaming."""

    def __init__(self, checkpoint: Path, device: str = "cpu", dtype: str = "float32"):
        from barkstream.services.bark.tokenizer import BarkTokenizer
        from barkstream.services.bark.voices import VoiceLibrary
        from barkstream.services.checkpoint.load import load_checkpoint
        from barkstream.services.stages.models import ModelOptions, load_stage_models
        from barkstream.services.stages.pipeline import Synthesizer

        ck = load_checkpoint(checkpoint)
        self.voice = VoiceLibrary([ck.voices_dir]).load(VOICE)
        models = load_stage_models(ck, options=ModelOptions(device, dtype))
        self.synth = Synthesizer(models, BarkTokenizer.from_dir(ck.tokenizer_dir()), max_batch=MAX_BATCH)

    def run(self, reqs: list[tuple[str, float, int]]) -> tuple[float, list[np.ndarray]]:
        from barkstream.services.bark.params import GenerationParams
        from barkstream.services.stages.pipeline import SynthesisRequest

        batch = [SynthesisRequest(text, self.voice, GenerationParams.build(greedy=True, max_duration_s=d), seed)
                 for text, d, seed in reqs]
        t0 = time.perf_counter()
        out = self.synth.generate_batch(batch)
        return time.perf_counter() - t0, [s.audio for s in out]


# ------------------------------------------------------------------------------------------ main


def main(checkpoint: Path, quick: bool, threads: int | None = None, device: str = "cpu",
         dtype: str = "float32") -> dict:
    settings = QUICK if quick else FULL
    info = machine()
    print(f"service benchmark ({'quick' if quick else 'full'}): concurrency {settings.concurrency}", flush=True)
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the server processes' torch threads
    log_dir = Path(tempfile.mkdtemp(prefix="barkstream-bench-"))
    inproc = InProcess(checkpoint, device, dtype)
    table = Table(f"Concurrent Synthesize streams (greedy, {dtype}, {device}), gRPC against in-process "
                  "(wall: median of the repetitions; TTFA and RTF over every stream)",
                  ["N", "mode", "audio s", "wall s", "TTFA p50 s", "TTFA p95 s", "RTF p50", "RTF p95",
                   "audio s / wall s", "overhead vs in-process", "same audio", "errors"])
    memory = Table("Resident memory of the server processes (after the runs)",
                   ["deployment", "process", "RSS MiB", "private MiB", "peak RSS MiB"])
    data: dict = {"machine": info, "settings": settings.__dict__, "device": device, "dtype": dtype, "runs": {}}
    with deployments(checkpoint, log_dir, ["--device", device, "--dtype", dtype]) as servers:
        targets = {name: group[-1].target for name, group in servers.items()}
        for target in targets.values():  # warm-up: first allocations, first segment
            run_streams(target, requests(1, QUICK))
        inproc.run(requests(1, QUICK))
        for n, reps in zip(settings.concurrency, settings.reps, strict=True):
            reqs = requests(n, settings)
            walls: dict[str, list[float]] = {"in-process": [], **{name: [] for name in targets}}
            streams: dict[str, list[StreamResult]] = {name: [] for name in targets}
            same = {name: True for name in targets}
            for _ in range(reps):  # interleaved: in-process, embedded, split, in-process, ...
                t_in, ref_audio = inproc.run(reqs)
                walls["in-process"].append(t_in)
                for name, target in targets.items():
                    wall, results = run_streams(target, reqs)
                    walls[name].append(wall)
                    streams[name] += results
                    same[name] = same[name] and same_audio(results, ref_audio)
            audio_total = sum(len(a) for a in ref_audio) / 24_000
            t_in = median(walls["in-process"])
            table.add(n, "in-process", audio_total, t_in, float("nan"), float("nan"), float("nan"), float("nan"),
                      audio_total / t_in, "baseline", "", 0)
            data["runs"][f"{n}/in-process"] = {"wall_s": t_in, "walls_s": walls["in-process"], "audio_s": audio_total}
            for name in targets:
                ok = [r for r in streams[name] if r.error is None]
                ttfa = [r.first_audio - r.started for r in ok if r.first_audio is not None]
                rtf = [(r.ended - r.started) / r.audio_s for r in ok if r.audio_s > 0]
                wall = median(walls[name])
                table.add(n, name, audio_total, wall, percentile(ttfa, 50), percentile(ttfa, 95), percentile(rtf, 50),
                          percentile(rtf, 95), audio_total / wall, f"{(wall / t_in - 1) * 100:+.1f}%", same[name],
                          len(streams[name]) - len(ok))
                data["runs"][f"{n}/{name}"] = {"wall_s": wall, "walls_s": walls[name], "audio_s": audio_total,
                                               "ttfa_s": ttfa, "rtf": rtf, "same_audio": same[name],
                                               "errors": [r.error for r in streams[name] if r.error]}
                print(table.render().splitlines()[-1], flush=True)
        for name, group in servers.items():
            for s in group:
                m = s.memory()
                memory.add(name, s.role, m["rss_mb"], m["private_mb"], m["peak_rss_mb"])
    data["log_dir"] = str(log_dir)
    data["overhead_median"] = median(
        r["wall_s"] / data["runs"][f"{k.split('/')[0]}/in-process"]["wall_s"] - 1
        for k, r in data["runs"].items() if not k.endswith("in-process"))
    check = Table("Targets (this run)", ["target", "measured", "met"])
    worst = max(r["wall_s"] / data["runs"][f"{k.split('/')[0]}/in-process"]["wall_s"] - 1
                for k, r in data["runs"].items() if not k.endswith("in-process"))
    check.add("gRPC + streaming add <= 5% over in-process (worst N, mode)", f"{worst * 100:+.1f}%", worst <= 0.05)
    check.add("streamed audio equals in-process audio", "",
              all(r.get("same_audio", True) for r in data["runs"].values()))
    print("\n# service benchmark results", flush=True)
    write_report("service", [table, memory, check], data)
    return data


# ------------------------------------------------------------------------------------------ encoding

ENCODINGS = ("PCM_S16LE", "WAV", "MULAW", "ALAW", "FLAC", "OGG_OPUS", "OPUS", "MP3", "AAC")


def encoding_main(seconds: float = 10.0, reps: int = 5) -> dict:
    """What the orchestrator spends encoding one second of audio, per encoding (no model, no torch).

    The stream's path as the servicer runs it: Bark's 24 kHz float PCM pushed 100 ms at a time
    through AudioEncoder (soxr resampling to the encoding's default rate, chunking, the codec),
    then the end-of-stream flush; a speech-like signal (tones and band-limited noise). Variants
    interleaved, median of `reps`.
    """
    from barkstream.services.orchestrator.audio import AudioEncoder
    from barkstream.services.orchestrator.formats import Encoding, resolve_format

    rng = np.random.default_rng(0)
    n = int(seconds * 24_000)
    t = np.arange(n) / 24_000
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.15 * np.sin(2 * np.pi * 3100 * t)
           + np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same") * 0.1).astype(np.float32)
    sizes: dict[str, int] = {}

    def run(name: str) -> None:
        encoder = AudioEncoder(resolve_format(Encoding[name].value))
        chunks = [c for i in range(0, n, 2_400) for c in encoder.push(pcm[i:i + 2_400])]
        chunks += encoder.flush(end_of_stream=True)
        sizes[name] = len(encoder.header()) + sum(len(c.data) + sum(map(len, c.packets)) for c in chunks)

    walls = interleaved({name: (lambda name=name: run(name)) for name in ENCODINGS}, reps)
    table = Table(f"Encoding cost per audio second (orchestrator, one stream, {seconds:.0f} s of speech-like audio "
                  f"pushed 100 ms at a time; median of {reps} interleaved runs)",
                  ["encoding", "rate Hz", "bit rate kb/s", "ms per audio s", "share of real time", "kb/s out"])
    data: dict = {"machine": machine(), "seconds": seconds, "reps": reps, "encodings": {}}
    for name in ENCODINGS:
        fmt = resolve_format(Encoding[name].value)
        ms = median(walls[name]) / seconds * 1000
        table.add(name, fmt.sample_rate_hz, fmt.bit_rate_bps / 1000 or float("nan"), ms, f"{ms / 10:.2f}%",
                  sizes[name] * 8 / seconds / 1000)
        data["encodings"][name] = {"ms_per_audio_s": ms, "walls_s": walls[name], "bytes": sizes[name]}
    print("\n# encoding benchmark results", flush=True)
    write_report("encoding", [table], data)
    return data

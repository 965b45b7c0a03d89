"""Real-time session benchmark: simulated LLMs type a reply into StreamingSynthesize sessions.

Each simulated LLM sends a multi-sentence reply word by word at `WORDS_PER_S` into its own
session on one embedded server process (`barkstream serve`), 1 and N sessions at once, with
the latency-aware schedule and with fixed 48-token segments, interleaved in the same run.
Per session:
- first audio after the first sentence: from sending the first sentence's last word to the
  first audio chunk (negative: audio started before the sentence was complete);
- playback stalls for a listener who starts playing at the first chunk: every chunk that
  arrives after the moment it should play is a stall (the playback waits for it), counted,
  summed, and the longest one;
- the server's real-time factor (session wall time / audio seconds).
The checkpoint is a tiny random one whose semantic model stops after ~12 tokens per text
token (random_eos.py), so segments have lengths that grow with their text, as with real weights.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import Table, machine, median, write_report
from .service import Server, wait_serving

REPLY = ("The next train to the city leaves from the main platform in about twenty minutes, and the ride "
         "takes a little over half an hour. If you want to avoid the crowds, take the one after nine in the "
         "morning. Tickets are cheaper online, and you can show them on your phone. Let me know if you need "
         "directions to the station.")
WORDS_PER_S = 12.0
SCHEDULES = ("latency-aware", "fixed")
SAMPLE_RATE = 24_000


@dataclass
class SessionRun:
    schedule: str
    sent_first_sentence: float = 0.0
    input_done: float = 0.0
    started: float = 0.0
    arrivals: list[tuple[float, int, int]] = field(default_factory=list)  # (time, start sample, samples)
    segments: list[str] = field(default_factory=list)
    summary: object = None
    error: str | None = None

    def first_audio_after_sentence(self) -> float:
        return self.arrivals[0][0] - self.sent_first_sentence

    def stalls(self) -> list[float]:
        """Waits of a listener who starts at the first chunk and plays every sample in order."""
        t0 = self.arrivals[0][0]
        delay, out = 0.0, []
        for arrived, start, _ in self.arrivals:
            due = t0 + start / SAMPLE_RATE + delay
            if arrived > due + 1e-3:
                out.append(arrived - due)
                delay += arrived - due
        return out


def first_sentence_words(words: list[str]) -> int:
    for i, w in enumerate(words):
        if w.rstrip().endswith((".", "!", "?")):
            return i + 1
    return len(words)


def run_session(target: str, schedule: str, seed: int, out: SessionRun, go: threading.Barrier) -> None:
    import barkstream.client as bc

    words = [w + " " for w in REPLY.split(" ")]
    n_first = first_sentence_words(words)
    with bc.TTSClient(target, timeout=600) as client:
        client.list_voices()  # connected before the clock starts
        go.wait()
        try:
            with client.session(voice="v2/en_speaker_0", seed=seed, schedule=schedule, format="f32") as session:
                out.started = time.perf_counter()

                def typist() -> None:
                    for i, w in enumerate(words):
                        session.send(w)
                        if i + 1 == n_first:
                            out.sent_first_sentence = time.perf_counter()
                        time.sleep(1 / WORDS_PER_S)
                    out.input_done = time.perf_counter()
                    session.close()

                sender = threading.Thread(target=typist, daemon=True)
                sender.start()
                for chunk in session.audio():
                    out.arrivals.append((time.perf_counter(), chunk.start_sample, chunk.num_samples))
                sender.join()
            out.summary = session.summary
            out.segments = [s.text for s in session.segments.values()]
        except bc.BarkstreamError as e:
            out.error = str(e)


def run_round(target: str, schedule: str, sessions: int, seed: int) -> list[SessionRun]:
    runs = [SessionRun(schedule) for _ in range(sessions)]
    go = threading.Barrier(sessions)
    threads = [threading.Thread(target=run_session, args=(target, schedule, seed + i, runs[i], go), daemon=True)
               for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return runs


def eos_checkpoint() -> Path:
    from barkstream.services.checkpoint.random_writer import write_random_checkpoint

    path = Path.home() / ".cache" / "barkstream" / "random-tiny-eos"
    if not (path / "config.json").is_file():
        write_random_checkpoint(path, size="tiny", seed=0, text_length_eos=True)
    return path


def main(quick: bool = False, concurrency: tuple[int, ...] = (1, 2)) -> dict:
    checkpoint = eos_checkpoint()
    reps = 1 if quick else 2
    results: dict[tuple[str, int], list[SessionRun]] = {}
    with tempfile.TemporaryDirectory() as logs:
        server = Server("all", checkpoint, Path(logs))
        try:
            wait_serving(server)
            run_round(server.target, "latency-aware", 1, 0)  # warm-up
            for n in concurrency:
                for rep in range(reps):
                    for schedule in SCHEDULES:  # interleaved: both see the same machine state
                        results.setdefault((schedule, n), []).extend(run_round(server.target, schedule, n, rep))
        finally:
            server.stop()
    table = Table(f"real-time sessions: a {len(REPLY.split())}-word reply typed at {WORDS_PER_S:g} words/s "
                  "(tiny random checkpoint with text-length EOS, embedded server)",
                  ["schedule", "sessions", "first audio after 1st sentence s (median, max)",
                   "time to first audio s", "stalls per session", "stalled s (median, max)", "longest stall s",
                   "segments", "first segment", "server RTF", "errors"])
    data = {}
    for (schedule, n), runs in results.items():
        ok = [r for r in runs if r.error is None and r.arrivals]
        after = [r.first_audio_after_sentence() for r in ok]
        stalls = [r.stalls() for r in ok]
        table.add(schedule, n, f"{median(after):.2f}, {max(after):.2f}",
                  median([r.arrivals[0][0] - r.started for r in ok]), median([len(s) for s in stalls]),
                  f"{median([sum(s) for s in stalls]):.2f}, {max(sum(s) for s in stalls):.2f}",
                  max((max(s) for s in stalls if s), default=0.0), median([len(r.segments) for r in ok]),
                  ok[0].segments[0] if ok else "-", median([r.summary.real_time_factor for r in ok]),
                  len(runs) - len(ok))
        data[f"{schedule}/{n}"] = [{"first_audio_after_sentence_s": r.first_audio_after_sentence(),
                                    "stalls_s": r.stalls(), "segments": r.segments,
                                    "rtf": r.summary.real_time_factor, "audio_s": r.summary.audio_seconds}
                                   for r in ok]
    write_report("realtime", [table], {"machine": machine(), "runs": data})
    return data

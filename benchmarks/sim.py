"""Discrete-event simulation of the split pipeline, driven by measured engine step costs.

Each stage replica is one engine that runs one step at a time, as the real
engines do (services/stages/): semantic and coarse admit waiting work as a
batched prefill, otherwise advance every row by one decode step; fine runs
every ready 1024-frame window in one batch; codec decodes up to 32 frames per
stream per step. A step lasts what the measured curve says for its batch size
(`StageCosts`). Work moves between stages when a step ends (gRPC hops cost
nothing here: the service benchmark measured them at under 1%), with Bark's
streaming rules: a coarse window starts once the semantic tokens it reads
exist, a fine window once its 1024 frames do (or the input has ended), and
segment i+1 starts when segment i's semantic stream ends (the orchestrator's
rule with a voice preset). Replicas are picked round-robin per segment.

Replicas that share CPU cores (the service benchmark's processes on one
machine) share them fairly: with k steps running on `cores` cores beside
`background` busy threads of other programs, each gets min(1, cores / (k +
background)) of a core, against min(1, cores / (1 + background)) when its
cost was measured (alone, beside the same background). Kubernetes pods with
their own cores or GPU: `cores=inf`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from barkstream.services.bark import constants as C

STAGES = ("semantic", "coarse", "fine", "codec")
RATIO = C.SEMANTIC_TO_COARSE_RATIO
W, S = C.FINE_WINDOW, C.FINE_STRIDE


@dataclass(frozen=True)
class Curve:
    """Seconds of one engine step against its batch size: measured points, linear between them and beyond."""

    points: tuple[tuple[int, float], ...]

    def __call__(self, batch: int) -> float:
        pts = sorted(self.points)
        if len(pts) == 1:
            return pts[0][1] * batch / pts[0][0]
        for (b0, s0), (b1, s1) in zip(pts, pts[1:], strict=False):
            if batch <= b1 or (b1, s1) == pts[-1]:
                return max(0.0, s0 + (s1 - s0) * (batch - b0) / (b1 - b0))
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class StageCosts:
    semantic_prefill: Curve  # b rows' 257-position prefill (yields each row's first token)
    semantic_step: Curve  # one decode step of b rows
    coarse_prefill: Curve  # b windows' prefill of `coarse_prefill_len` positions each (yields their first token)
    coarse_step: Curve  # one decode step of b windows
    fine_window: Curve  # b 1024-frame windows (codebooks 2..7)
    codec_chunk: Curve  # b streams' `codec_frames` frames
    coarse_prefill_len: int = 887  # positions the coarse prefill curve was measured at (scaled linearly)
    codec_frames: int = 32


@dataclass(frozen=True)
class Voice:
    """Lengths of a voice preset's prompts, which set where the windows start."""

    semantic: int = 0  # semantic prompt tokens
    coarse: int = 0  # coarse prompt frames
    fine: int = 0  # fine prompt frames

    def coarse_history(self) -> tuple[int, int]:
        """(semantic history tokens, coarse history tokens) after Suno's trimming (stages.coarse.prepare_history)."""
        if not self.semantic or not self.coarse:
            return 0, 0
        n_sem = min(C.MAX_SEMANTIC_HISTORY, self.semantic - self.semantic % 2, int(2 * self.coarse / RATIO))
        return n_sem, max(0, int(round(n_sem * RATIO)) - 2)


@dataclass(frozen=True)
class Request:
    arrival: float
    segments: tuple[int, ...]  # semantic tokens of each segment


@dataclass(frozen=True)
class Deployment:
    replicas: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 1))
    max_batch: int | dict[str, int] = 8  # rows per engine: one for all stages, or per stage
    cores: float = math.inf  # CPU cores the replicas share (inf: each has its own)
    background: float = 0.0  # other programs' busy threads on those cores

    def speed(self, running: int) -> float:
        """Speed of each of `running` steps relative to the cost measurement (one step beside the background)."""
        def share(k: int) -> float:
            return min(1.0, self.cores / (k + self.background))
        return share(running) / share(1)


def coarse_steps(n_semantic: int) -> int:
    """Coarse tokens (2 per frame) for n semantic tokens (stages.coarse.count_steps)."""
    return int(math.floor(n_semantic * RATIO / 2) * 2)


def audio_seconds(n_semantic: int) -> float:
    return coarse_steps(n_semantic) // 2 * C.SAMPLES_PER_FRAME / C.SAMPLE_RATE


# ------------------------------------------------------------------------------------------ per-segment state


@dataclass(eq=False)
class Segment:
    request: Request
    index: int
    n: int  # semantic tokens
    voice: Voice
    semantic: int = 0  # tokens out of the semantic stage
    semantic_done: bool = False
    coarse_step: int = 0  # coarse tokens done
    coarse_history: int = 0  # coarse tokens in the window prompt's history
    coarse_done: bool = False
    frames: int = 0  # coarse frames that reached fine
    fine_windows: int = 0
    released: int = 0  # fine frames that reached the codec
    fine_done: bool = False
    decoded: int = 0  # frames the codec turned into audio
    first_audio: float | None = None
    ended: float | None = None
    replicas: list = field(default_factory=list)  # the replica serving it in each stage, once opened
    opened: float = 0.0  # when the orchestrator opened its four stage calls
    closed: dict = field(default_factory=dict)  # stage -> when its call ended

    def __post_init__(self) -> None:
        self.sem_hist, self.coarse_history = self.voice.coarse_history()
        self.fine_hist = min(C.FINE_MAX_HISTORY, self.voice.fine)

    # coarse: stages.coarse.CoarseStream.next_window, on counts
    def coarse_window(self, window_len: int = C.SLIDING_WINDOW_LEN) -> int | None:
        """Tokens of the next coarse window if every semantic token it reads has arrived."""
        total = coarse_steps(self.semantic)
        if self.semantic_done:
            return min(window_len, total - self.coarse_step) if self.coarse_step < total else None
        idx = self.sem_hist + int(round(self.coarse_step / RATIO))
        start = max(0, idx - C.MAX_SEMANTIC_HISTORY)
        if self.sem_hist + self.semantic < start + C.COARSE_SEMANTIC_WINDOW or total < self.coarse_step + window_len:
            return None
        return window_len

    def prefill_len(self) -> int:
        return C.COARSE_SEMANTIC_WINDOW + 1 + min(C.MAX_COARSE_HISTORY, self.coarse_history)

    # fine: stages.fine.FineStream, on counts
    def fine_loops(self) -> int:
        return max(0, math.ceil((self.frames - (W - self.fine_hist)) / S)) + 1

    def fine_ready(self) -> bool:
        if not self.coarse_done:
            return self.fine_hist + self.frames >= self.fine_windows * S + W
        return self.frames > 0 and self.fine_windows < self.fine_loops()

    def fine_complete(self) -> int:
        """Frames a finished window releases."""
        self.fine_windows += 1
        if self.coarse_done and self.fine_windows >= self.fine_loops():
            final, self.fine_done = self.frames, True
        else:
            final = min(self.fine_windows * S, self.frames - S)
        out, self.released = max(0, final - self.released), max(self.released, final)
        return out


# ------------------------------------------------------------------------------------------ engines


class Replica:
    """One engine: picks a step from its members' state, runs it for its cost, applies it."""

    def __init__(self, stage: str, costs: StageCosts, max_batch: int):
        self.stage, self.costs, self.max_batch = stage, costs, max_batch
        self.members: list[Segment] = []
        self.rows: list[list] = []  # semantic: [segment]; coarse: [segment, tokens left, window tokens]
        self.step: tuple | None = None  # (batch, apply) of the running step
        self.remaining = 0.0
        self.busy_s = 0.0
        self.batches: list[int] = []

    def try_start(self) -> bool:
        planned = getattr(self, f"_plan_{self.stage}")()
        if planned is None:
            return False
        seconds, batch, apply = planned
        self.step, self.remaining = (batch, apply), seconds
        self.busy_s += seconds
        self.batches.append(batch)
        return True

    def finish(self, now: float) -> list[Segment]:
        """End the running step; the segments it changed."""
        _, apply = self.step
        self.step = None
        return apply(now)

    def _plan_semantic(self):
        room = self.max_batch - len(self.rows)
        waiting = [s for s in self.members if s not in [r[0] for r in self.rows]]
        admitted = waiting[:room]
        if admitted:
            self.rows += [[s] for s in admitted]
            rows, cost = [[s] for s in admitted], self.costs.semantic_prefill(len(admitted))
        elif self.rows:
            rows, cost = list(self.rows), self.costs.semantic_step(len(self.rows))
        else:
            return None

        def apply(now: float) -> list[Segment]:
            for (seg,) in rows:
                seg.semantic += 1
                if seg.semantic >= seg.n:
                    seg.semantic_done = True
                    seg.closed["semantic"] = now
                    self.rows = [r for r in self.rows if r[0] is not seg]
                    self.members.remove(seg)
            return [seg for (seg,) in rows]
        return cost, len(rows), apply

    def _plan_coarse(self):
        self.members = [s for s in self.members if not s.coarse_done]
        running = {id(r[0]) for r in self.rows}
        starting = []
        for seg in self.members:
            if len(self.rows) + len(starting) >= self.max_batch:
                break
            n = None if id(seg) in running else seg.coarse_window()
            if n:
                starting.append([seg, n, n])  # segment, tokens left, window tokens
        if starting:
            length = sum(s.prefill_len() for s, _, _ in starting) / len(starting)
            cost = self.costs.coarse_prefill(len(starting)) * length / self.costs.coarse_prefill_len
            self.rows += starting
            rows = starting
        elif self.rows:
            rows, cost = list(self.rows), self.costs.coarse_step(len(self.rows))
        else:
            return None

        def apply(now: float) -> list[Segment]:
            changed = []
            for row in rows:
                row[1] -= 1
                seg = row[0]
                if row[1] == 0:  # the window ends: its frames go to fine
                    tokens = row[2]
                    seg.coarse_step += tokens
                    seg.coarse_history += tokens
                    seg.frames += tokens // 2
                    seg.coarse_done = seg.semantic_done and seg.coarse_step >= coarse_steps(seg.n)
                    if seg.coarse_done:
                        seg.closed["coarse"] = now
                    self.rows = [r for r in self.rows if r is not row]
                    changed.append(seg)
            return changed
        return cost, len(rows), apply

    def _plan_fine(self):
        self.members = [s for s in self.members if not s.fine_done]
        ready = [s for s in self.members if s.fine_ready()][: self.max_batch]
        if not ready:
            return None

        def apply(now: float) -> list[Segment]:
            for seg in ready:
                seg.fine_complete()
                if seg.fine_done:
                    seg.closed["fine"] = now
            return ready
        return self.costs.fine_window(len(ready)), len(ready), apply

    def _plan_codec(self):
        self.members = [s for s in self.members if s.ended is None]
        takes = [(s, min(self.costs.codec_frames, s.released - s.decoded)) for s in self.members]
        takes = [(s, t) for s, t in takes if t > 0 or s.fine_done]
        if not takes:
            return None
        groups: dict[int, list[Segment]] = {}
        for s, t in takes:
            if t:
                groups.setdefault(t, []).append(s)
        cost = sum(self.costs.codec_chunk(min(self.max_batch, len(g) - i)) * t / self.costs.codec_frames
                   for t, g in groups.items() for i in range(0, len(g), self.max_batch))
        batch = max((len(g) for g in groups.values()), default=0)

        def apply(now: float) -> list[Segment]:
            for s, t in takes:
                if t and s.first_audio is None:
                    s.first_audio = now
                s.decoded += t
                if s.fine_done and s.decoded >= s.released:
                    s.ended = s.closed["codec"] = now
            return [s for s, _ in takes]
        return cost, min(batch, self.max_batch), apply


# ------------------------------------------------------------------------------------------ the pipeline


@dataclass
class StreamResult:
    arrival: float
    audio_s: float
    first_audio: float
    ended: float
    stall_s: float = 0.0  # a player that starts at the first audio waits this long, in all, for later segments

    @property
    def ttfa(self) -> float:
        return self.first_audio - self.arrival

    @property
    def rtf(self) -> float:
        return (self.ended - self.arrival) / self.audio_s


@dataclass
class SimResult:
    streams: list[StreamResult]
    busy_s: dict[str, list[float]]  # per stage, per replica: seconds of steps (at full speed)
    mean_batch: dict[str, float]
    open_calls: dict[str, float]  # per stage: its calls a stream holds open on average (what the HPAs count)

    @property
    def wall_s(self) -> float:
        return max(s.ended for s in self.streams) - min(s.arrival for s in self.streams)

    @property
    def audio_s(self) -> float:
        return sum(s.audio_s for s in self.streams)


def simulate(requests: list[Request], costs: StageCosts, deployment: Deployment, voice: Voice = Voice()
             ) -> SimResult:
    """Run `requests` through the pipeline; per-stream time to first audio and end, per-replica busy time."""
    batch = deployment.max_batch
    if not isinstance(batch, dict):
        batch = dict.fromkeys(STAGES, batch)
    replicas = {st: [Replica(st, costs, batch[st]) for _ in range(deployment.replicas[st])]
                for st in STAGES}
    turn = dict.fromkeys(STAGES, 0)
    segments = {id(r): [Segment(r, i, n, voice) for i, n in enumerate(r.segments)] for r in requests}
    arrivals = sorted(requests, key=lambda r: r.arrival)
    now, next_request = 0.0, 0

    dirty: set[Replica] = set()

    def open_segment(seg: Segment) -> None:
        for st in STAGES:  # the orchestrator opens the segment's four calls at once
            group = replicas[st]
            replica = group[turn[st] % len(group)]
            turn[st] += 1
            replica.members.append(seg)
            seg.replicas.append(replica)
            dirty.add(replica)
        seg.opened = now

    running: list[Replica] = []
    while True:
        while next_request < len(arrivals) and arrivals[next_request].arrival <= now + 1e-12:
            open_segment(segments[id(arrivals[next_request])][0])
            next_request += 1
        running += [r for r in dirty if r.step is None and r.try_start()]
        dirty.clear()
        if not running and next_request >= len(arrivals):
            break
        rate = deployment.speed(len(running)) if running else 1.0
        dt = min((r.remaining / rate for r in running), default=math.inf)
        if next_request < len(arrivals):
            dt = min(dt, arrivals[next_request].arrival - now)
        now += dt
        for r in running:
            r.remaining -= dt * rate
        done, running = [r for r in running if r.remaining <= 1e-9], [r for r in running if r.remaining > 1e-9]
        for r in done:
            dirty.add(r)
            for seg in r.finish(now):
                dirty.update(seg.replicas)
                following = segments[id(seg.request)][seg.index + 1:seg.index + 2]
                if seg.semantic_done and following and not following[0].replicas:
                    open_segment(following[0])  # segment i+1 starts when segment i's semantic ends
    streams = []
    for req in requests:
        segs = segments[id(req)]
        if any(s.ended is None for s in segs):
            raise RuntimeError("the simulation stalled: a segment never finished")
        first, played, stall = segs[0].first_audio, 0.0, 0.0
        for s in segs:  # segment k plays once the segments before it have played (and the player waited)
            stall += max(0.0, s.first_audio - (first + played + stall))
            played += audio_seconds(s.n)
        streams.append(StreamResult(req.arrival, played, first, max(s.ended for s in segs), stall))
    busy = {st: [r.busy_s for r in group] for st, group in replicas.items()}
    mean_batch = {st: _mean([b for r in group for b in r.batches]) for st, group in replicas.items()}
    all_segments = [seg for segs in segments.values() for seg in segs]
    lifetime = sum(s.ended - s.arrival for s in streams)
    open_calls = {st: sum(seg.closed[st] - seg.opened for seg in all_segments) / lifetime for st in STAGES}
    return SimResult(streams, busy, mean_batch, open_calls)


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0

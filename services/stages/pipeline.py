"""Offline text -> audio: the four stages in one process, segment after segment.

This is the reference the services are tested against: the orchestrator runs
the same segments, seeds and parameters through the stage services and must
stream the same samples. Several requests run together through each stage's
engine, segment index by segment index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..bark import constants as C
from ..bark.params import GenerationParams, long_form_prompt, segment_seed
from ..bark.schedule import Schedule, SegmentPolicy, schedule_segments
from ..bark.segment import DEFAULT_MAX_SEGMENT_TOKENS
from ..bark.tokenizer import BarkTokenizer
from ..bark.voices import VoicePrompt
from .coarse import CoarseEngine, CoarseRequest
from .fine import FineEngine, FineRequest
from .jobs import Job
from .models import StageModels
from .semantic import SemanticEngine, SemanticRequest

Progress = Callable[[str, int, int], None]  # (stage, segment index, segment count)


@dataclass
class SegmentCodes:
    text: str
    semantic: np.ndarray  # (n,)
    coarse: np.ndarray  # (2, T)
    fine: np.ndarray  # (8, T)


@dataclass
class SynthesisRequest:
    text: str
    voice: VoicePrompt | None = None
    params: GenerationParams = field(default_factory=GenerationParams)
    seed: int | None = None
    segmentation: SegmentPolicy | None = None  # None: the synthesizer's (fixed unless it was built with another)


@dataclass
class Synthesis:
    audio: np.ndarray  # (N,) float32 at 24 kHz
    segments: list[SegmentCodes]
    sample_rate: int = C.SAMPLE_RATE


def _run(engine, jobs: list[Job]) -> None:
    while engine.busy():
        engine.step()
    for job in jobs:
        if job.error is not None:
            raise job.error


class Synthesizer:
    """Runs whole requests through all four stages in this process."""

    def __init__(self, models: StageModels, tokenizer: BarkTokenizer,
                 max_segment_tokens: int = DEFAULT_MAX_SEGMENT_TOKENS, max_batch: int = 8,
                 segmentation: SegmentPolicy | None = None):
        if None in (models.semantic, models.coarse, models.fine, models.codec):
            raise ValueError("the offline synthesizer needs all four models")
        self.models = models
        self.tokenizer = tokenizer
        # Fixed by default: in-process callers (the parity tests, benchmarks' baselines) get Suno's own
        # long-form cut; servers and `barkstream generate` pass the latency-aware policy explicitly.
        self.segmentation = segmentation or SegmentPolicy(Schedule.FIXED, max_tokens=max_segment_tokens)
        self.semantic = SemanticEngine(models.semantic, max_batch)
        self.coarse = CoarseEngine(models.coarse, max_batch)
        self.fine = FineEngine(models.fine, max_batch)

    def segments(self, text: str, segmentation: SegmentPolicy | None = None) -> list[str]:
        segments = schedule_segments(text, self.tokenizer.count, segmentation or self.segmentation)
        if not segments:
            raise ValueError("text is empty: give some words to speak")
        return segments

    def generate(self, request: SynthesisRequest, progress: Progress | None = None) -> Synthesis:
        return self.generate_batch([request], progress)[0]

    def generate_batch(self, requests: list[SynthesisRequest], progress: Progress | None = None) -> list[Synthesis]:
        for r in requests:
            r.params.validate()
        texts = [self.segments(r.text, r.segmentation) for r in requests]
        done: list[list[SegmentCodes]] = [[] for _ in requests]
        n_segments = max(len(t) for t in texts)
        for index in range(n_segments):
            live = [i for i, t in enumerate(texts) if index < len(t)]
            voices = [self._voice(requests[i], done[i]) for i in live]
            seeds = [segment_seed(requests[i].seed, index) for i in live]

            def report(stage: str, index: int = index) -> None:
                if progress is not None:
                    progress(stage, index, n_segments)

            codes = self._segment_batch(
                [texts[i][index] for i in live], voices, [requests[i].params for i in live], seeds, report
            )
            for i, c in zip(live, codes, strict=True):
                done[i].append(c)
        out = []
        for segs in done:
            audio = [self.decode(s.fine) for s in segs]
            out.append(Synthesis(np.concatenate(audio).astype(np.float32), segs))
        return out

    @staticmethod
    def _voice(request: SynthesisRequest, done: list[SegmentCodes]) -> VoicePrompt | None:
        if request.voice is not None or not done:
            return request.voice
        first = done[0]
        return long_form_prompt(first.semantic, first.coarse, first.fine)

    def _segment_batch(self, texts: list[str], voices: list[VoicePrompt | None], params: list[GenerationParams],
                       seeds: list[int | None], progress: Callable[[str], None]) -> list[SegmentCodes]:
        sem_jobs = [Job() for _ in texts]
        for job, text, voice, p, seed in zip(sem_jobs, texts, voices, params, seeds, strict=True):
            history = None if voice is None else voice.semantic_prompt
            self.semantic.add(job, SemanticRequest(self.tokenizer.encode(text), history, p.semantic, seed))
        _run(self.semantic, sem_jobs)
        progress("semantic")
        semantic = [np.concatenate(j.chunks) if j.chunks else np.zeros(0, np.int64) for j in sem_jobs]

        coarse_jobs = [Job() for _ in texts]
        for job, sem, voice, p, seed in zip(coarse_jobs, semantic, voices, params, seeds, strict=True):
            sem_hist = None if voice is None else voice.semantic_prompt
            coarse_hist = None if voice is None else voice.coarse_prompt
            stream = self.coarse.add(job, CoarseRequest(sem_hist, coarse_hist, p.coarse, seed))
            stream.feed(sem)
            stream.close()
        _run(self.coarse, coarse_jobs)
        progress("coarse")
        coarse = [np.concatenate(j.chunks, axis=1) if j.chunks else np.zeros((2, 0), np.int64) for j in coarse_jobs]

        fine_jobs = [Job() for _ in texts]
        for job, frames, voice, p, seed in zip(fine_jobs, coarse, voices, params, seeds, strict=True):
            stream = self.fine.add(job, FineRequest(None if voice is None else voice.fine_prompt, p.fine, seed))
            stream.feed(frames)
            stream.close()
        _run(self.fine, fine_jobs)
        progress("fine")
        fine = [np.concatenate(j.chunks, axis=1) if j.chunks else np.zeros((8, 0), np.int64) for j in fine_jobs]
        return [SegmentCodes(t, s, c, f) for t, s, c, f in zip(texts, semantic, coarse, fine, strict=True)]

    def decode(self, fine: np.ndarray) -> np.ndarray:
        """Fine codes (8, T) -> float32 PCM (T * 320,), Suno's codec_decode."""
        if fine.shape[1] == 0:
            return np.zeros(0, np.float32)
        codes = torch.from_numpy(fine.astype(np.int64))[None]  # (1, 8, T)
        return self.models.codec.decode(codes)[0].float().cpu().numpy()

"""Stage engines: a request gets the same output alone or batched with others, joining late or early."""

from __future__ import annotations

import numpy as np
import pytest

from barkstream.services.bark.params import CoarseParams, FineParams, SamplingParams, SemanticParams
from barkstream.services.stages.coarse import CoarseEngine, CoarseRequest
from barkstream.services.stages.fine import FineEngine, FineRequest
from barkstream.services.stages.jobs import Job
from barkstream.services.stages.semantic import SemanticEngine, SemanticRequest

GREEDY = SamplingParams(temperature=0.7, greedy=True)


def run(engine, feeds=()) -> None:
    while engine.busy():
        engine.step()


def semantic_alone(model, req: SemanticRequest) -> np.ndarray:
    engine, job = SemanticEngine(model, max_batch=1), Job()
    engine.add(job, req)
    run(engine)
    return np.concatenate(job.chunks)


@pytest.fixture(scope="module")
def voices(tiny_checkpoint):
    from barkstream.services.bark.voices import VoiceLibrary

    lib = VoiceLibrary([tiny_checkpoint.voices_dir])
    return [lib.load(n) for n in lib.list()[:2]]


def test_semantic_batch_with_late_joiners_matches_alone(tiny_models, voices):
    model = tiny_models.semantic
    reqs = [SemanticRequest(list(range(100, 100 + n)), v, SemanticParams(GREEDY, max_gen_duration_s=d), seed=0)
            for n, v, d in [(5, None, 1.0), (30, voices[0].semantic_prompt, 0.4), (12, voices[1].semantic_prompt, 0.7),
                            (8, None, 0.2)]]
    expected = [semantic_alone(model, r) for r in reqs]
    engine = SemanticEngine(model, max_batch=3)  # fewer rows than requests: one waits for a free row
    jobs = [Job() for _ in reqs]
    engine.add(jobs[0], reqs[0])
    for _ in range(5):
        engine.step()
    for j, r in zip(jobs[1:], reqs[1:], strict=True):
        engine.add(j, r)
    run(engine)
    for job, exp in zip(jobs, expected, strict=True):
        np.testing.assert_array_equal(np.concatenate(job.chunks), exp)
    assert engine.active == 0


def test_semantic_seeded_sampling_repeats(tiny_models):
    req = SemanticRequest(list(range(100, 120)), None, SemanticParams(SamplingParams(temperature=1.0),
                                                                      max_gen_duration_s=0.5), seed=123)
    a, b = semantic_alone(tiny_models.semantic, req), semantic_alone(tiny_models.semantic, req)
    other = SemanticRequest(req.text_ids, None, req.params, seed=124)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, semantic_alone(tiny_models.semantic, other))


def test_semantic_cancel_frees_the_row(tiny_models):
    engine = SemanticEngine(tiny_models.semantic, max_batch=2)
    job = Job()
    engine.add(job, SemanticRequest([100, 101], None, SemanticParams(GREEDY)))
    engine.step()
    engine.step()
    assert engine.active == 1
    job.cancel()
    engine.step()
    assert engine.active == 0 and job.done


def coarse_run(model, semantic, voice, max_batch=4):
    engine = CoarseEngine(model, max_batch=max_batch)
    jobs = []
    for sem, v in zip(semantic, voice, strict=True):
        job = Job()
        stream = engine.add(job, CoarseRequest(None if v is None else v.semantic_prompt,
                                               None if v is None else v.coarse_prompt, CoarseParams(GREEDY), 0))
        stream.feed(sem)
        stream.close()
        jobs.append(job)
    run(engine)
    return [np.concatenate(j.chunks, axis=1) for j in jobs]


def test_coarse_batch_matches_alone(tiny_models, voices):
    rng = np.random.default_rng(0)
    sems = [rng.integers(0, 10_000, n) for n in (70, 25, 110)]
    vs = [voices[0], None, voices[1]]
    batched = coarse_run(tiny_models.coarse, sems, vs)
    for sem, v, got in zip(sems, vs, batched, strict=True):
        np.testing.assert_array_equal(got, coarse_run(tiny_models.coarse, [sem], [v])[0])
        assert got.shape == (2, int(np.floor(len(sem) * 75 / 49.9)))


def test_fine_batch_matches_alone_and_streams_final_frames(tiny_models, voices):
    rng = np.random.default_rng(1)
    coarse = [rng.integers(0, 1024, (2, n)) for n in (1300, 200)]

    def fine_run(items):
        engine = FineEngine(tiny_models.fine, max_batch=4)
        jobs = []
        for c, v in items:
            job = Job()
            stream = engine.add(job, FineRequest(None if v is None else v.fine_prompt, FineParams(GREEDY), 0))
            for start in range(0, c.shape[1], 100):  # arrives in pieces, as from the coarse service
                stream.feed(c[:, start:start + 100])
                engine.step()
            stream.close()
            jobs.append(job)
        run(engine)
        return jobs

    jobs = fine_run([(coarse[0], None), (coarse[1], voices[0])])
    assert len(jobs[0].chunks) > 1  # the long one released frames before its input ended
    for (c, v), job in zip([(coarse[0], None), (coarse[1], voices[0])], jobs, strict=True):
        got = np.concatenate(job.chunks, axis=1)
        np.testing.assert_array_equal(got[:2], c)
        alone = np.concatenate(fine_run([(c, v)])[0].chunks, axis=1)
        np.testing.assert_array_equal(got, alone)

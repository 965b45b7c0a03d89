"""The random checkpoint option whose semantic model stops after a length that grows with the text."""

from __future__ import annotations

import numpy as np
import pytest

from barkstream.services.bark.params import GenerationParams
from barkstream.services.checkpoint.random_eos import OFFSET, PER_TOKEN
from barkstream.services.stages.jobs import Job
from barkstream.services.stages.semantic import SemanticEngine, SemanticRequest


@pytest.fixture(scope="module")
def eos_checkpoint_dir(tmp_path_factory):
    from barkstream.services.checkpoint.random_writer import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("eos") / "tiny", size="tiny", seed=0,
                                   text_length_eos=True)


@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "sampled"])
def test_semantic_length_grows_with_the_text(eos_checkpoint_dir, greedy):
    from barkstream.services.bark.tokenizer import BarkTokenizer
    from barkstream.services.checkpoint.load import load_checkpoint
    from barkstream.services.stages.models import load_stage_models

    ck = load_checkpoint(eos_checkpoint_dir)
    models = load_stage_models(ck, ("semantic",))
    tokenizer = BarkTokenizer.from_dir(ck.tokenizer_dir())
    engine = SemanticEngine(models.semantic, 8)
    params = GenerationParams.build(greedy=greedy)
    texts = ["Hello.", "Hello world, my dog likes pizza.", "Hello world, my dog likes pizza and music, and the cat "
             "sighs and laughs at the voice of the text today."]
    jobs = []
    for text in texts:
        ids = tokenizer.encode(text)
        job = Job()
        engine.add(job, SemanticRequest(ids, None, params.semantic, 1))
        jobs.append((len(ids), job))
    while engine.busy():
        engine.step()
    for n_text, job in jobs:
        tokens = np.concatenate(job.chunks)
        expected = PER_TOKEN * n_text + OFFSET
        assert abs(len(tokens) - expected) <= 8, (n_text, len(tokens), expected)  # stopped by EOS, not at 768
        assert len(set(tokens.tolist())) > len(tokens) // 2  # still varied speech tokens

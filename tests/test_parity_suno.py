"""Exactness: greedy fp32 barkstream == Suno's `bark` 0.1.5, token for token, on the same random weights.

The random checkpoint scales its output heads so greedy choices are not
near-ties; `test_margins_are_meaningful` records that, so a failure here means
a real difference in the algorithm, not float summation order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from barkstream.services.bark.params import GenerationParams
from barkstream.services.bark.voices import VoicePrompt
from barkstream.services.stages.pipeline import SynthesisRequest

from . import suno_ref

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    suno_ref.install(tiny_checkpoint)


def _ours(synth, text: str, voice: dict | None, max_duration: float | None):
    prompt = None if voice is None else VoicePrompt.from_mapping(voice)
    params = GenerationParams.build(greedy=True, max_duration_s=max_duration)
    result = synth.generate(SynthesisRequest(text, prompt, params, seed=0))
    assert len(result.segments) == 1, "parity texts must fit one segment"
    return result


def _compare(ours, ref) -> None:
    seg = ours.segments[0]
    np.testing.assert_array_equal(seg.semantic, ref["semantic"])
    np.testing.assert_array_equal(seg.coarse, ref["coarse"])
    np.testing.assert_array_equal(seg.fine, ref["fine"])
    assert ours.audio.shape == ref["audio"].shape
    np.testing.assert_allclose(ours.audio, ref["audio"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("voice_name", [None, "v2/en_speaker_6", "v2/zh_speaker_3", "de_speaker_1"])
def test_short_text_matches_suno(reference, synthesizer, voice_name):
    text = "Hello there, how are you today?"
    voice = None if voice_name is None else suno_ref.voice(voice_name)
    ref = suno_ref.generate(text, voice, max_gen_duration_s=2.5)
    ours = _ours(synthesizer, text, voice, 2.5)
    assert ours.segments[0].coarse.shape[1] > 90  # several 60-token coarse windows
    _compare(ours, ref)


@pytest.mark.slow
def test_several_fine_windows_match_suno(reference, synthesizer):
    # > 1024 coarse frames without a voice: two fine windows (the second one overlapping the first).
    text = "This one runs long enough for more than one fine window."
    ref = suno_ref.generate(text, None, max_gen_duration_s=14.0)
    assert ref["fine"].shape[1] > 1024
    _compare(_ours(synthesizer, text, None, 14.0), ref)


@pytest.mark.slow
def test_fine_windows_with_history_match_suno(reference, synthesizer):
    # A voice brings up to 512 frames of fine history, so 600 new frames already need two windows.
    voice = suno_ref.voice("v2/en_speaker_6")
    ref = suno_ref.generate("A voice and several fine windows.", voice, max_gen_duration_s=8.0)
    assert ref["fine"].shape[1] > 1024 - voice["fine_prompt"].shape[1]
    _compare(_ours(synthesizer, "A voice and several fine windows.", voice, 8.0), ref)


def test_margins_are_meaningful(reference, tiny_models, tiny_checkpoint):
    """The random heads give top-1 / top-2 logit gaps far above float noise."""
    from barkstream.services.model.gpt import KVCache
    from barkstream.services.stages.semantic import build_input

    model = tiny_models.semantic
    ids = torch.from_numpy(build_input(list(range(100, 130)), None))[None]
    emb = model.embed(ids)
    merged = torch.cat([emb[:, :256] + emb[:, 256:512], emb[:, 512:]], dim=1)
    cache = KVCache.allocate(model.config, 1, 300, "cpu", torch.float32)
    with torch.inference_mode():
        logits = model(merged, cache, start=0)[0, :10001]
    top2 = torch.topk(logits, 2).values
    margin = float(top2[0] - top2[1])
    print(f"semantic top-1 margin: {margin:.4f}")
    assert margin > 1e-2

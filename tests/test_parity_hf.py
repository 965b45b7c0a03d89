"""Parity with transformers' Bark port, on a checkpoint written by `BarkModel.save_pretrained`.

A tiny random `BarkModel` (real vocabularies and context, 2 layers x 64; output
heads scaled x200; every greedy gap checked against the measured float noise in
`test_greedy_margins_are_meaningful`) is saved with `save_pretrained`, loaded by
`load_checkpoint` + `load_stage_models`, and every stage is compared with
transformers' own generation code run on the same inputs, greedy, fp32:
semantic tokens, coarse codes (both fed OUR semantic tokens, so a difference
cannot cascade), fine codes (both fed our coarse codes) and codec audio,
without a voice and with the real preset v2/en_speaker_6.

transformers' port is not Suno's algorithm in every detail; what this test had
to configure or account for (transformers 5.x source, `models/bark/`):

1. Coarse codebook 1 (the known HF bug). On odd steps HF's
   `AlternatingCodebooksLogitsProcessor` masks only ids below 11024, so ids
   12048..12095 (the coarse model's pad / infer / unused ids) stay eligible;
   Suno samples from [11024, 12048) only. With these weights it happens at
   frame 8 (no voice) and frame 13 (en_speaker_6). HF's fine stage then hides
   it: `remainder(id - 10000, 1024)` turns 12048 into codebook-1 code 0.
   Accounted for twice:
   `test_coarse_differs_from_hf_only_at_its_codebook_1_bug` compares HF as is
   up to its first out-of-range id, where ours must be the argmax of HF's own
   logits over [11024, 12048); `test_coarse_matches_hf_with_codebook_1_masked`
   runs HF's unchanged window code with that one mask completed and expects
   every token equal.
2. The semantic stop rule. HF's min_eos_p is off by default
   (`BarkSemanticGenerationConfig.min_eos_p=None`; `BarkModel.generate` even
   passes None over the generation config unless given as a kwarg). When set,
   `BarkEosPrioritizerLogitsProcessor` computes p(EOS) as a softmax of the
   untempered logits (HF's temperature warper runs after it, and only when
   sampling) and fires on p > min_eos_p; Suno / ours use the stage temperature
   (0.7 by default) and p >= min_eos_p. So the rule is compared with ours at
   temperature 1.0 (greedy argmax does not depend on the temperature) and a
   threshold lying between recorded p(EOS) values (never equal to one, so > and
   >= agree). HF also emits the EOS id 10000 as its last token, ours (like
   Suno) does not: it is stripped from HF's output.
3. Semantic length. HF counts `max_new_tokens` (768 by default); Suno counts
   `max_gen_duration_s` (stop once n / 49.9 s > limit): 1.5 s is 75 tokens, so
   HF gets max_new_tokens=75.
4. Greedy. HF: `do_sample=False`, argmax of the processed logits (semantic:
   ids 10001.. suppressed, the same 10000 + EOS candidates as Suno); ours:
   argmax of Suno's tempered probabilities (temperature 0.7 / 0.5), no top-k (the hub's
   generation_config adds top_k 50; the configs here are transformers' class
   defaults, which have none). HF's fine stage takes argmax when its
   temperature is 1.0 or None (its default 1.0 is argmax, not sampling at 1.0).
5. Inputs and files. HF's semantic model takes BarkProcessor's output: text
   ids padded to 256 with an attention mask (masked ids become the text pad
   129595, as in Suno); it is given our ids that way. `save_pretrained` writes
   no tokenizer files, and the config-built `BarkModel` has no Bark generation
   config (so `BarkModel.generate` cannot run it): each sub-model's `generate` is
   called with transformers' default Bark generation configs. The save omits the tied
   fine heads `lm_heads.*` (our loader re-ties them to input_embeds_layers 1..7)
   and saves EnCodec codebooks, which transformers initialises to zeros:
   `hf_ref.build_model` randomises them so audio depends on every code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from barkstream.services.bark import constants as C
from barkstream.services.bark.params import CoarseParams, FineParams, SamplingParams, SemanticParams
from barkstream.services.stages.coarse import CoarseEngine, CoarseRequest
from barkstream.services.stages.fine import FineEngine, FineRequest
from barkstream.services.stages.jobs import Job
from barkstream.services.stages.semantic import SemanticEngine, SemanticRequest

from . import hf_ref

pytestmark = pytest.mark.parity

# Arbitrary multilingual-BERT ids (an HF save holds no tokenizer files); 30 ids, no padding id 0.
TEXT_IDS = [14961, 10140, 11849, 10855, 10301, 13028, 12888, 10271, 119, 11336, 10114, 10105, 26203, 10111, 10393,
            10105, 14500, 15011, 10108, 10531, 20517, 136, 10117, 10136, 16320, 10114, 13028, 10189, 117, 10105]
MAX_DURATION_S = 1.5  # 75 semantic tokens at 49.9 Hz: 112 coarse frames, 4 coarse windows
VOICES = [None, "v2/en_speaker_6"]
NOISE_FACTOR = 4  # see test_greedy_margins_are_meaningful


def _run(engine) -> None:
    while engine.busy():
        engine.step()


def _ours_semantic(models, history, params: SemanticParams) -> np.ndarray:
    engine, job = SemanticEngine(models.semantic, max_batch=1), Job()
    prompt = None if history is None else history["semantic_prompt"]
    engine.add(job, SemanticRequest(TEXT_IDS, prompt, params, seed=0))
    _run(engine)
    return np.concatenate(job.chunks) if job.chunks else np.zeros(0, np.int64)


def _ours_coarse(models, history, semantic: np.ndarray) -> np.ndarray:
    engine, job = CoarseEngine(models.coarse, max_batch=1), Job()
    sem_hist, coarse_hist = (None, None) if history is None else (history["semantic_prompt"], history["coarse_prompt"])
    stream = engine.add(job, CoarseRequest(sem_hist, coarse_hist, CoarseParams(SamplingParams(0.7, greedy=True)), 0))
    stream.feed(semantic)
    stream.close()
    _run(engine)
    return np.concatenate(job.chunks, axis=1)  # (2, T)


def _ours_fine(models, history, coarse: np.ndarray) -> np.ndarray:
    engine, job = FineEngine(models.fine, max_batch=1), Job()
    prompt = None if history is None else history["fine_prompt"]
    stream = engine.add(job, FineRequest(prompt, FineParams(SamplingParams(0.5, greedy=True)), 0))
    stream.feed(coarse)
    stream.close()
    _run(engine)
    return np.concatenate(job.chunks, axis=1)  # (8, T)


def _interleave(frames: np.ndarray) -> np.ndarray:
    """(2, T) codes -> (2T,) coarse vocabulary ids, codebook 0 then 1 per frame."""
    return np.stack([frames[0] + C.SEMANTIC_VOCAB_SIZE, frames[1] + C.SEMANTIC_VOCAB_SIZE + C.CODEBOOK_SIZE], 1).ravel()


def _save_and_load(model, path):
    from barkstream.services.checkpoint.load import load_checkpoint
    from barkstream.services.stages.models import load_stage_models

    model.save_pretrained(path)
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    ckpt = load_checkpoint(path)
    assert ckpt.layout == "hf" and ckpt.config.semantic.n_embd == hf_ref.SUB["hidden_size"]
    return load_stage_models(ckpt)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(transformers BarkModel, our StageModels loaded from its save_pretrained directory)."""
    model = hf_ref.build_model(seed=0)
    return model, _save_and_load(model, tmp_path_factory.mktemp("hf_bark"))


@pytest.fixture(scope="module", params=VOICES, ids=lambda v: v or "no-voice")
def run(request, pair) -> dict:
    """Every stage on both sides for one voice, each stage fed the same (our) input."""
    model, models = pair
    history = None if request.param is None else hf_ref.voice(request.param)
    greedy = SemanticParams(SamplingParams(0.7, greedy=True), min_eos_p=None, max_gen_duration_s=MAX_DURATION_S)
    semantic = _ours_semantic(models, history, greedy)
    coarse = _ours_coarse(models, history, semantic)
    fine = _ours_fine(models, history, coarse)
    with torch.inference_mode():
        audio = models.codec.decode(torch.from_numpy(fine)[None])[0].numpy()
    return {
        "history": history, "semantic": semantic, "coarse": coarse, "fine": fine, "audio": audio,
        "hf_semantic": hf_ref.semantic(model, TEXT_IDS, history, max_new_tokens=len(semantic)),
        "hf_coarse": hf_ref.coarse(model, semantic, history),
        "hf_coarse_masked": hf_ref.coarse(model, semantic, history, fix_codebook_1=True),
        "hf_fine": hf_ref.fine(model, coarse, history),
        "hf_audio": hf_ref.decode(model, fine),
    }


def test_semantic_matches_hf(run):
    n = int(np.floor(MAX_DURATION_S * C.SEMANTIC_RATE_HZ)) + 1  # Suno: stop once n / 49.9 > max duration
    assert len(run["semantic"]) == n
    assert not run["hf_semantic"].stopped_by_eos
    np.testing.assert_array_equal(run["semantic"], run["hf_semantic"].tokens)


def test_coarse_matches_hf_with_codebook_1_masked(run):
    """HF's window code with Suno's codebook-1 mask == ours, token for token, over several windows."""
    assert 2 * run["coarse"].shape[1] > 3 * C.SLIDING_WINDOW_LEN  # 4 windows of up to 60 tokens
    np.testing.assert_array_equal(run["coarse"], run["hf_coarse_masked"].frames())


def test_coarse_differs_from_hf_only_at_its_codebook_1_bug(run):
    """HF as shipped: equal until its first codebook-1 id >= 12048, where ours takes HF's best in-range id."""
    ours, hf = _interleave(run["coarse"]), run["hf_coarse"]
    assert hf.tokens.shape == ours.shape
    first_codebook = C.SEMANTIC_VOCAB_SIZE + C.CODEBOOK_SIZE
    bad = np.nonzero(hf.tokens >= first_codebook + C.CODEBOOK_SIZE)[0]
    if bad.size == 0:  # HF's mask never mattered on this input: plain equality
        np.testing.assert_array_equal(ours, hf.tokens)
        return
    k = int(bad[0])
    print(f"HF's first out-of-range codebook-1 id: {hf.tokens[k]} at coarse step {k} (frame {k // 2})")
    assert k % 2 == 1, "only odd (codebook-1) steps can leave the range"
    np.testing.assert_array_equal(ours[:k], hf.tokens[:k])
    logits = hf.logits[k]  # HF's own raw logits at that step, same prefix as ours
    assert ours[k] == first_codebook + int(torch.argmax(logits[first_codebook:first_codebook + C.CODEBOOK_SIZE]))
    assert hf.tokens[k] == first_codebook + int(torch.argmax(logits[first_codebook:]))


def test_fine_matches_hf(run):
    np.testing.assert_array_equal(run["fine"][:2], run["coarse"])
    np.testing.assert_array_equal(run["fine"], run["hf_fine"].codes)


def test_audio_matches_hf_codec_decode(run):
    assert run["audio"].shape == run["hf_audio"].shape == (run["fine"].shape[1] * 320,)
    assert np.abs(run["hf_audio"]).max() > 1e-3
    np.testing.assert_allclose(run["audio"], run["hf_audio"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("voice_name", VOICES, ids=lambda v: v or "no-voice")
def test_fine_several_windows_match_hf(pair, voice_name):
    """1300 coarse frames: 2 (no voice) or 3 (with 464 frames of fine history) overlapping 1024-frame windows."""
    model, models = pair
    history = None if voice_name is None else hf_ref.voice(voice_name)
    coarse = np.random.default_rng(3).integers(0, C.CODEBOOK_SIZE, size=(2, 1300))
    hf = hf_ref.fine(model, coarse, history)
    assert len(hf.logits) == 6 * (2 if history is None else 3)  # codebooks 2..7 per window
    np.testing.assert_array_equal(_ours_fine(models, history, coarse), hf.codes)
    margin = min(float(hf_ref.top2_gap(lg, 0, C.CODEBOOK_SIZE).min()) for lg in hf.logits)
    noise = _fine_noise(models, hf)
    print(f"fine, {len(hf.logits) // 6} windows: min gap {margin:.2e}, logit noise {noise:.1e}")
    assert margin > NOISE_FACTOR * noise


# ---------------------------------------------------------------------------------------------- stop rules


@pytest.fixture(scope="module")
def eos_pair(tmp_path_factory):
    """Like `pair`, but the EOS logit spreads wider, so EOS wins (here after 256 tokens without a voice, 44 with)."""
    model = hf_ref.build_model(seed=0, eos_scale=1.5)
    return model, _save_and_load(model, tmp_path_factory.mktemp("hf_bark_eos"))


@pytest.mark.parametrize("voice_name", VOICES, ids=lambda v: v or "no-voice")
def test_semantic_eos_token_stop_matches_hf(eos_pair, voice_name):
    model, models = eos_pair
    history = None if voice_name is None else hf_ref.voice(voice_name)
    ours = _ours_semantic(models, history, SemanticParams(SamplingParams(0.7, greedy=True), min_eos_p=None))
    hf = hf_ref.semantic(model, TEXT_IDS, history, max_new_tokens=C.MAX_SEMANTIC_TOKENS)
    assert hf.stopped_by_eos and 0 < len(hf.tokens) < C.MAX_SEMANTIC_TOKENS
    np.testing.assert_array_equal(ours, hf.tokens)


@pytest.mark.parametrize("voice_name", VOICES, ids=lambda v: v or "no-voice")
def test_semantic_min_eos_p_stop_matches_hf(eos_pair, voice_name):
    """min_eos_p at temperature 1.0, where HF's rule (untempered p, >) is Suno's (tempered p, >=).

    The threshold is the geometric mean of a new running maximum of p(EOS) and the maximum before it
    (chosen where that jump is largest, at least x10), so the probability rule fires at a known step,
    before EOS itself would win, with no recorded p(EOS) anywhere near the threshold.
    """
    model, models = eos_pair
    history = None if voice_name is None else hf_ref.voice(voice_name)
    free = hf_ref.semantic(model, TEXT_IDS, history, max_new_tokens=C.MAX_SEMANTIC_TOKENS)
    p = hf_ref.eos_probabilities(free)[: len(free.tokens)]  # the steps before EOS wins
    before = np.maximum.accumulate(np.concatenate([[0.0], p[:-1]]))
    ratio = np.where(before > 0, p / np.where(before > 0, before, 1.0), 0.0)
    step = int(np.argmax(ratio))
    assert ratio[step] >= 10, f"no usable jump in p(EOS): {p}"
    threshold = float(np.sqrt(before[step] * p[step]))
    print(f"min_eos_p {threshold:.3g}: fires at step {step} of {len(free.tokens)} (jump x{ratio[step]:.3g})")

    hf = hf_ref.semantic(model, TEXT_IDS, history, max_new_tokens=C.MAX_SEMANTIC_TOKENS, min_eos_p=threshold)
    ours = _ours_semantic(models, history, SemanticParams(SamplingParams(1.0, greedy=True), min_eos_p=threshold))
    assert hf.stopped_by_eos and len(hf.tokens) == step
    np.testing.assert_array_equal(ours, hf.tokens)
    np.testing.assert_array_equal(ours, free.tokens[:step])


# ---------------------------------------------------------------------------------------------- margins


def _teacher_forced(model, prefix: torch.Tensor, fed) -> torch.Tensor:
    """Our GPT's logits (1 + len(fed), V): after the prefix (1, P, C), then after each token of `fed`."""
    from barkstream.services.model.gpt import KVCache

    P = prefix.shape[1]
    cache = KVCache.allocate(model.config, 1, P + len(fed), "cpu", torch.float32)
    with torch.inference_mode():
        rows = [model(prefix, cache, start=0)[0]]
        for i, token in enumerate(fed):
            rows.append(model(model.embed(torch.tensor([[int(token)]])), cache, start=P + i)[0])
    return torch.stack(rows)


def _semantic_noise(models, history, hf: hf_ref.SemanticOut) -> float:
    from barkstream.services.stages.semantic import build_input

    ids = torch.from_numpy(build_input(TEXT_IDS, None if history is None else history["semantic_prompt"]))[None]
    with torch.inference_mode():
        emb = models.semantic.embed(ids)
    merged = torch.cat([emb[:, :256] + emb[:, 256:512], emb[:, 512:]], dim=1)  # Suno's summed text + history
    ours = _teacher_forced(models.semantic, merged, hf.tokens[:-1])
    return float((ours - torch.stack(hf.logits)).abs().max())


def _coarse_noise(models, hf: hf_ref.CoarseOut) -> float:
    starts = [i for i, (n, ids) in enumerate(hf.inputs) if len(ids) == n] + [len(hf.inputs)]
    worst = 0.0
    for a, b in zip(starts[:-1], starts[1:], strict=True):  # one sliding window: calls a..b-1
        n, last = hf.inputs[b - 1]
        with torch.inference_mode():
            prompt = models.coarse.embed(last[None, :n].long())
        ours = _teacher_forced(models.coarse, prompt, last[n:])
        worst = max(worst, float((ours - torch.stack(hf.logits[a:b])).abs().max()))
    return worst


def _fine_noise(models, hf: hf_ref.FineOut) -> float:
    with torch.inference_mode():
        return max(float((models.fine(idx, buf[None].long())[0, :, : C.CODEBOOK_SIZE] - lg).abs().max())
                   for (idx, buf), lg in zip(hf.inputs, hf.logits, strict=True))


def test_greedy_margins_are_meaningful(run, pair):
    """Every greedy decision compared above has a top-1 / top-2 logit gap well above the float noise.

    With random weights many decisions are near-ties; two correct implementations would then split on
    summation order alone. Gaps are HF's raw logits over the candidates both sides use; the noise is the
    largest |our logit - HF's logit| on the same prefixes (our models run teacher-forced on HF's inputs).
    A choice can only flip through noise if the gap is below 2x that noise; NOISE_FACTOR = 4 leaves
    headroom for our engines' batched kernels, which are not the teacher-forced calls measured here.
    """
    _, models = pair
    hf_sem, hf_coarse, hf_fine = run["hf_semantic"], run["hf_coarse_masked"], run["hf_fine"]
    assert len(hf_coarse.logits) == 2 * run["coarse"].shape[1]
    coarse_lo = [C.SEMANTIC_VOCAB_SIZE + (i % 2) * C.CODEBOOK_SIZE for i in range(len(hf_coarse.logits))]
    gaps = {
        "semantic": min(float(hf_ref.top2_gap(lg, 0, C.SEMANTIC_VOCAB_SIZE + 1)) for lg in hf_sem.logits),
        "coarse": min(float(hf_ref.top2_gap(lg, lo, lo + C.CODEBOOK_SIZE))
                      for lg, lo in zip(hf_coarse.logits, coarse_lo, strict=True)),
        "fine": min(float(hf_ref.top2_gap(lg, 0, C.CODEBOOK_SIZE).min()) for lg in hf_fine.logits),
    }
    noise = {
        "semantic": _semantic_noise(models, run["history"], hf_sem),
        "coarse": _coarse_noise(models, hf_coarse),
        "fine": _fine_noise(models, hf_fine),
    }
    scale = max(float(lg.abs().max()) for lg in hf_sem.logits)
    for stage in gaps:
        print(f"{stage}: min top-1/top-2 gap {gaps[stage]:.2e}, logit noise {noise[stage]:.1e}")
    print(f"(|semantic logit| <= {scale:.0f})")
    for stage in gaps:
        assert gaps[stage] > NOISE_FACTOR * noise[stage], stage

"""`barkstream generate` / `checkpoint random` as a user runs them: files out, one-line errors."""

from __future__ import annotations

import subprocess
import sys
import wave

import numpy as np
import pytest
import torch

from barkstream.services.bark.params import GenerationParams
from barkstream.services.stages.models import ModelOptions, load_stage_models
from barkstream.services.stages.pipeline import SynthesisRequest, Synthesizer

THREE_SEGMENTS = ("The first sentence is here and it is long enough to count. " * 2 +
                  "A second sentence follows it, with a few more words in it. " * 2 +
                  "The third and last one ends the text right here.")


def barkstream(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "barkstream.client.cli", *args], capture_output=True, text=True,
                          timeout=300, **kw)


def test_generate_writes_wav_and_codes(tiny_checkpoint_dir, tmp_path):
    out, codes = tmp_path / "a.wav", tmp_path / "a.npz"
    r = barkstream("generate", THREE_SEGMENTS, "--checkpoint", str(tiny_checkpoint_dir), "--greedy",
                   "--max-duration", "0.6", "--seed", "1", "-o", str(out), "--dump-codes", str(codes))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # quiet when not a terminal
    with wave.open(str(out)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24_000, 1, 2)
        frames = w.getnframes()
    z = np.load(codes)
    assert len(z["segment_lengths"]) >= 3  # several segments, one continuous file
    assert z["fine"].shape == (8, z["segment_lengths"].sum())
    np.testing.assert_array_equal(z["fine"][:2], z["coarse"])
    assert frames == z["fine"].shape[1] * 320


def test_checkpoint_random_then_generate_with_a_voice(tmp_path):
    ck = tmp_path / "ck"
    r = barkstream("checkpoint", "random", str(ck), "--size", "tiny", "--seed", "3")
    assert r.returncode == 0, r.stderr
    r = barkstream("generate", "Hello there.", "--checkpoint", str(ck), "--voice", "v2/en_speaker_1",
                   "--max-duration", "0.3", "-o", str(tmp_path / "b.wav"))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("case", ["missing", "corrupt", "shapes", "voice", "empty", "voice_path"])
def test_bad_input_gives_one_line(case, tiny_checkpoint_dir, tmp_path):
    import shutil

    ck = str(tiny_checkpoint_dir)
    text, extra = "Hello.", []
    if case == "missing":
        ck = str(tmp_path / "nowhere")
    elif case in ("corrupt", "shapes"):
        bad = tmp_path / "bad"
        shutil.copytree(tiny_checkpoint_dir, bad)
        if case == "corrupt":
            (bad / "pytorch_model.bin").write_bytes(b"not a checkpoint")
        else:
            sd = torch.load(bad / "pytorch_model.bin", weights_only=True)
            sd["coarse_acoustics.lm_head.weight"] = sd["coarse_acoustics.lm_head.weight"][:-1]
            torch.save(sd, bad / "pytorch_model.bin")
        ck = str(bad)
    elif case == "voice":
        extra = ["--voice", "v2/xx_speaker_99"]
    elif case == "voice_path":
        extra = ["--voice", "../../etc/passwd"]
    elif case == "empty":
        text = "   "
    r = barkstream("generate", text, "--checkpoint", ck, *extra, "-o", str(tmp_path / "x.wav"))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("barkstream generate: error:")


def test_reduced_precision_runs_and_reports_agreement(tiny_checkpoint, tokenizer):
    """bf16 is measured, not required to be exact: the agreement rate is printed for the record."""
    params = GenerationParams.build(greedy=True, max_duration_s=1.0)
    text = "Hello there, how are you today?"
    ref = Synthesizer(load_stage_models(tiny_checkpoint), tokenizer).generate(SynthesisRequest(text, None, params, 0))
    for dtype in ("bfloat16",):
        models = load_stage_models(tiny_checkpoint, options=ModelOptions(dtype=dtype))
        got = Synthesizer(models, tokenizer).generate(SynthesisRequest(text, None, params, 0))
        a, b = ref.segments[0].semantic, got.segments[0].semantic
        n = min(len(a), len(b))
        agreement = float((a[:n] == b[:n]).mean()) if n else 0.0
        print(f"{dtype}: semantic token agreement with float32 {agreement:.3f} over {n} tokens")
        assert got.audio.dtype == np.float32 and np.isfinite(got.audio).all() and len(got.audio) > 0

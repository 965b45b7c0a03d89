"""Random checkpoints (services/checkpoint/random_writer.py) are real Bark snapshots with decisive logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from barkstream.services.bark import constants as C
from barkstream.services.bark.tokenizer import BarkTokenizer
from barkstream.services.bark.voices import VoiceLibrary
from barkstream.services.checkpoint.gpt_names import to_suno_state
from barkstream.services.checkpoint.load import load_checkpoint
from barkstream.services.checkpoint.random_writer import (
    VOICES,
    ensure_random_checkpoint,
    random_codec_state,
    random_gpt_state,
    tokenizer_vocab,
    write_random_checkpoint,
)
from barkstream.services.cli.main import main as cli_main
from barkstream.services.model.config import bark_tiny

pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*is deprecated:FutureWarning")

SNAPSHOT_FILES = {
    "config.json",
    "generation_config.json",
    "pytorch_model.bin",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "speaker_embeddings_path.json",
    "speaker_embeddings",
}


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint_dir: Path) -> Path:
    """The session's tiny random checkpoint (tests/conftest.py: seed 0); read only."""
    return tiny_checkpoint_dir


def test_layout_and_loader(tiny: Path) -> None:
    assert {p.name for p in tiny.iterdir()} == SNAPSHOT_FILES
    ckpt = load_checkpoint(tiny)
    assert ckpt.config == bark_tiny() and ckpt.codec is not None
    raw = torch.load(tiny / "pytorch_model.bin", weights_only=True)
    assert {k.split(".")[0] for k in raw} == {"semantic", "coarse_acoustics", "fine_acoustics", "codec_model"}
    assert raw["semantic.layers.0.attn.bias"].dtype == torch.bool  # transformers' persisted causal mask
    assert "codec_model.decoder.layers.3.conv.weight_g" in raw  # hub files use the weight_g/weight_v style


def test_generation_config_holds_bark_constants(tiny: Path) -> None:
    gen = json.loads((tiny / "generation_config.json").read_text())
    sem, coarse, fine = gen["semantic_config"], gen["coarse_acoustics_config"], gen["fine_acoustics_config"]
    assert (sem["text_encoding_offset"], sem["text_pad_token"]) == (10_048, 129_595)
    assert (sem["semantic_infer_token"], sem["semantic_vocab_size"]) == (129_599, 10_000)
    assert (sem["max_input_semantic_length"], sem["semantic_rate_hz"]) == (256, 49.9)
    assert (coarse["coarse_semantic_pad_token"], coarse["coarse_infer_token"]) == (12_048, 12_050)
    assert (coarse["max_coarse_history"], coarse["sliding_window_len"]) == (630, 60)
    assert (fine["n_fine_codebooks"], fine["max_fine_history_length"], fine["max_fine_input_length"]) == (8, 512, 1024)
    assert (sem["temperature"], coarse["temperature"], fine["temperature"]) == (0.7, 0.7, 0.5)
    assert gen["codebook_size"] == 1024 and gen["sample_rate"] == 24_000


@pytest.mark.parity
def test_transformers_reads_the_snapshot(tiny: Path) -> None:
    from transformers import BarkModel, BarkProcessor

    model, info = BarkModel.from_pretrained(tiny, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ckpt = load_checkpoint(tiny)
    hf = model.state_dict()
    for kind, prefix in (("semantic", "semantic."), ("coarse", "coarse_acoustics."), ("fine", "fine_acoustics.")):
        for k, v in ckpt.model_state(kind).items():
            assert torch.equal(v, hf[prefix + k]), k
    assert model.generation_config.semantic_config["semantic_infer_token"] == C.SEMANTIC_INFER_TOKEN
    processor = BarkProcessor.from_pretrained(tiny)
    out = processor("Hello world", voice_preset="v2/en_speaker_1")
    ours = VoiceLibrary([tiny]).load("v2/en_speaker_1")
    assert np.array_equal(out["history_prompt"]["coarse_prompt"].numpy(), ours.coarse_prompt)
    assert out["input_ids"][0, :2].tolist() == BarkTokenizer.from_dir(tiny).encode("Hello world")


@pytest.mark.parity
def test_logits_are_decisive(tiny: Path) -> None:
    """Scaled heads: logit std ~5 and top-1/top-2 margins far above float noise (Suno's own modules)."""
    from bark.model import GPT, GPTConfig
    from bark.model_fine import FineGPT, FineGPTConfig

    ckpt = load_checkpoint(tiny)
    gen = torch.Generator().manual_seed(0)
    for kind in ("semantic", "coarse", "fine"):
        cfg = getattr(ckpt.config, kind)
        args = dict(block_size=cfg.block_size, input_vocab_size=cfg.input_vocab_size, n_layer=cfg.n_layer,
                    output_vocab_size=cfg.output_vocab_size, n_head=cfg.n_head, n_embd=cfg.n_embd, bias=cfg.bias)
        with torch.no_grad():
            if kind == "fine":
                model = FineGPT(FineGPTConfig(**args)).eval()
                model.load_state_dict(to_suno_state(ckpt.fine, "fine"), strict=False)
                logits = model(2, torch.randint(0, 1024, (1, 256, 8), generator=gen))
            else:
                model = GPT(GPTConfig(**args)).eval()
                model.load_state_dict(to_suno_state(ckpt.model_state(kind), kind), strict=False)
                tokens = torch.randint(0, 10_000, (8, 64), generator=gen)
                logits = torch.cat([model(tokens[i : i + 1, : 32 + i])[0] for i in range(8)])
        top2 = logits.topk(2, dim=-1).values
        margin = (top2[..., 0] - top2[..., 1]).min().item()
        assert 3.0 <= logits.std().item() <= 10.0, kind
        assert margin > 1e-3, (kind, margin)


def test_deterministic_per_seed() -> None:
    cfg = bark_tiny().coarse
    a = random_gpt_state(cfg, torch.Generator().manual_seed(5))
    b = random_gpt_state(cfg, torch.Generator().manual_seed(5))
    c = random_gpt_state(cfg, torch.Generator().manual_seed(6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["lm_head.weight"], c["lm_head.weight"])
    x, y = random_codec_state(3), random_codec_state(3)
    assert all(torch.equal(x[k], y[k]) for k in x)
    assert x["quantizer.vq.layers.0._codebook.inited"].item() == 1.0
    assert x["quantizer.vq.layers.0._codebook.embed"].std() > 0.5  # usable codebooks, not encodec's zeros


def test_fine_heads_share_storage_with_embeddings() -> None:
    sd = random_gpt_state(bark_tiny().fine, torch.Generator().manual_seed(0))
    for i in range(7):
        assert sd[f"lm_heads.{i}.weight"] is sd[f"input_embeds_layers.{i + 1}.weight"]
    assert sd["input_embeds_layers.1.weight"].std() > 10 * sd["input_embeds_layers.0.weight"].std()


def test_tokenizer_files(tiny: Path) -> None:
    vocab = (tiny / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab == tokenizer_vocab() and len(vocab) < 119_547
    assert [vocab.index(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 100, 101, 102, 103]
    assert {"é", "ß", "你", "##e"} <= set(vocab)
    config = json.loads((tiny / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is False and config["tokenizer_class"] == "BertTokenizer"


def test_voices_are_valid(tiny: Path) -> None:
    lib = VoiceLibrary([tiny])
    assert lib.list() == sorted(VOICES)
    for name in VOICES:
        v = lib.load(name)
        assert v.coarse_prompt.shape[1] == v.fine_prompt.shape[1]
        assert np.array_equal(v.fine_prompt[:2], v.coarse_prompt)


def test_voices_are_every_suno_v2_preset_with_real_shapes(tiny: Path) -> None:
    """An example written for suno/bark-small (voice="v2/en_speaker_6") finds its voice offline."""
    suno = Path(__import__("bark").__file__).parent / "assets" / "prompts" / "v2"
    real_names = {f"v2/{p.stem}" for p in suno.glob("*_speaker_*.npz")}
    assert len(real_names) == 130 and set(VOICES) == real_names
    real = np.load(suno / "en_speaker_6.npz")
    ours = VoiceLibrary([tiny]).load("v2/en_speaker_6")
    for key in ("semantic_prompt", "coarse_prompt", "fine_prompt"):
        assert getattr(ours, key).ndim == real[key].ndim and getattr(ours, key).shape[:-1] == real[key].shape[:-1]
        assert getattr(ours, key).dtype.kind == "i"
    assert ours.semantic_prompt.max() < C.SEMANTIC_VOCAB_SIZE and ours.coarse_prompt.max() < C.CODEBOOK_SIZE


def test_ensure_gives_an_older_random_checkpoint_every_voice(tmp_path: Path) -> None:
    """A random checkpoint cached by an older writer (3 voices) gets the rest, and keeps its weights."""
    out = write_random_checkpoint(tmp_path / "old")
    index = json.loads((out / "speaker_embeddings_path.json").read_text())
    old = {k: index[k] for k in ("repo_or_path", "v2/en_speaker_0", "v2/en_speaker_1", "v2/de_speaker_0")}
    (out / "speaker_embeddings_path.json").write_text(json.dumps(old))
    weights = (out / "pytorch_model.bin").stat().st_mtime_ns
    assert ensure_random_checkpoint(out) == out
    assert VoiceLibrary([out]).list() == sorted(VOICES)
    assert (out / "pytorch_model.bin").stat().st_mtime_ns == weights
    fresh = ensure_random_checkpoint(tmp_path / "new")
    assert VoiceLibrary([fresh]).list() == sorted(VOICES) and (fresh / "pytorch_model.bin").is_file()


def test_refuses_to_overwrite(tiny: Path) -> None:
    with pytest.raises(FileExistsError):
        write_random_checkpoint(tiny)
    with pytest.raises(ValueError, match="size"):
        write_random_checkpoint(tiny / "x", size="huge")  # type: ignore[arg-type]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["checkpoint", "random", str(tmp_path / "c"), "--seed", "2"]) == 0
    assert cli_main(["checkpoint", "random", str(tmp_path / "c")]) == 1
    assert cli_main(["checkpoint", "verify", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "semantic  2 layers x 64" in out and "layout hf" in out
    assert cli_main(["checkpoint", "verify", str(tmp_path / "missing")]) == 1

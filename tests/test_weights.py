"""Checkpoint loading, naming conversion and verification (services/checkpoint/)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from barkstream.services.checkpoint.codec_names import codec_encodec_to_hf, codec_expected_shapes, codec_hf_to_encodec
from barkstream.services.checkpoint.gpt_names import convert_suno_state, expected_shapes, to_suno_state
from barkstream.services.checkpoint.layout import CheckpointError
from barkstream.services.checkpoint.load import load_checkpoint, load_codec_weights
from barkstream.services.model.config import BarkConfig, bark_tiny

pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*is deprecated:FutureWarning")

PREFIX = {"semantic": "semantic.", "coarse": "coarse_acoustics.", "fine": "fine_acoustics."}


@pytest.fixture(scope="module")
def random_dir(tiny_checkpoint_dir: Path) -> Path:
    """The session's tiny random checkpoint (tests/conftest.py); read only."""
    return tiny_checkpoint_dir


@pytest.fixture(scope="module")
def raw_bin(random_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(random_dir / "pytorch_model.bin", weights_only=True)


def _hf_dir_without_codec(src: Path, dst: Path, sd: dict[str, torch.Tensor]) -> Path:
    """An HF snapshot holding `sd` (codec dropped to keep files small) and src's config."""
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    torch.save({k: v for k, v in sd.items() if not k.startswith("codec_model.")}, dst / "pytorch_model.bin")
    return dst


# ------------------------------------------------------------------------------------------- random round trip


def test_random_tiny_round_trip(random_dir: Path, raw_bin: dict[str, torch.Tensor]) -> None:
    ckpt = load_checkpoint(random_dir)
    assert ckpt.config == bark_tiny()
    assert ckpt.layout == "hf"
    for kind in ("semantic", "coarse", "fine"):
        sd = ckpt.model_state(kind)
        assert set(sd) == set(expected_shapes(getattr(ckpt.config, kind)))
        for k, v in sd.items():
            assert torch.equal(v, raw_bin[PREFIX[kind] + k]), k
    for i in range(7):
        assert ckpt.fine[f"lm_heads.{i}.weight"] is ckpt.fine[f"input_embeds_layers.{i + 1}.weight"]
    assert ckpt.codec is not None and all(k.split(".")[0] in ("encoder", "decoder", "quantizer") for k in ckpt.codec)
    assert ckpt.generation["semantic_config"]["text_encoding_offset"] == 10_048
    assert {p.name for p in ckpt.tokenizer_files} >= {"tokenizer.json", "vocab.txt"}
    assert ckpt.voices_dir == random_dir


def test_codec_loads_strictly_into_encodec(random_dir: Path) -> None:
    from encodec import EncodecModel

    model = EncodecModel.encodec_model_24khz(pretrained=False)
    model.load_state_dict(load_checkpoint(random_dir).require_codec(), strict=True)


# ------------------------------------------------------------------------------------------- transformers


def _hf_model(bias: bool):
    from transformers import BarkConfig as HFBarkConfig
    from transformers import BarkModel

    sub = dict(num_layers=2, num_heads=2, hidden_size=16, block_size=64, bias=bias)
    cfg = HFBarkConfig(
        semantic_config=dict(sub, input_vocab_size=129_600, output_vocab_size=10_048),
        coarse_acoustics_config=dict(sub, input_vocab_size=12_096, output_vocab_size=12_096),
        fine_acoustics_config=dict(sub, input_vocab_size=1056, output_vocab_size=1056),
    )
    torch.manual_seed(0)
    return BarkModel(cfg).eval()


def _assert_equals_hf(ckpt, hf_sd: dict[str, torch.Tensor]) -> None:
    for kind, prefix in PREFIX.items():
        ours = ckpt.model_state(kind)
        theirs = {k[len(prefix) :]: v for k, v in hf_sd.items() if k.startswith(prefix) and not k.endswith("attn.bias")}
        assert set(ours) == set(theirs), kind
        for k in theirs:
            assert torch.equal(ours[k], theirs[k]), k
    codec = codec_hf_to_encodec({k: v for k, v in hf_sd.items() if k.startswith("codec_model.")})
    assert set(codec) == set(ckpt.codec)
    for k in codec:
        assert torch.equal(codec[k], ckpt.codec[k]), k


@pytest.mark.parity
@pytest.mark.parametrize("bias,shard", [(False, None), (True, "3MB")])
def test_transformers_save_pretrained_safetensors(tmp_path: Path, bias: bool, shard: str | None) -> None:
    model = _hf_model(bias)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(tmp_path, **kwargs)
    assert (tmp_path / ("model.safetensors.index.json" if shard else "model.safetensors")).exists()
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.config.semantic.bias is bias and ckpt.config.fine.n_embd == 16
    _assert_equals_hf(ckpt, model.state_dict())


@pytest.mark.parity
def test_transformers_bin_with_tied_heads(tmp_path: Path) -> None:
    """transformers 5 writes safetensors only; a .bin is torch.save(state_dict()) as 4.x did (heads included)."""
    model = _hf_model(False)
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    sd = model.state_dict()
    assert "fine_acoustics.lm_heads.0.weight" in sd
    torch.save(sd, tmp_path / "pytorch_model.bin")
    _assert_equals_hf(load_checkpoint(tmp_path), sd)


def test_expected_shapes_match_transformers() -> None:
    from transformers import BarkConfig as HFBarkConfig
    from transformers import BarkModel

    with torch.device("meta"):
        hf = BarkModel(HFBarkConfig(**{
            name: dict(bias=False, input_vocab_size=iv, output_vocab_size=ov)
            for name, iv, ov in (("semantic_config", 129_600, 10_048), ("coarse_acoustics_config", 12_096, 12_096),
                                 ("fine_acoustics_config", 1056, 1056))
        }))
    sd = hf.state_dict()
    config = BarkConfig()  # bark-small
    for kind, prefix in PREFIX.items():
        theirs = {k[len(prefix) :]: tuple(v.shape) for k, v in sd.items()
                  if k.startswith(prefix) and not k.endswith("attn.bias")}
        assert theirs == expected_shapes(getattr(config, kind)), kind


def test_codec_names_match_both_models() -> None:
    from encodec import EncodecModel
    from transformers import BarkConfig as HFBarkConfig
    from transformers import EncodecModel as HFEncodec

    native = EncodecModel.encodec_model_24khz(pretrained=False).state_dict()
    table = {k: v for part in ("encoder", "decoder", "quantizer") for k, v in codec_expected_shapes(part).items()}
    assert {k: tuple(v.shape) for k, v in native.items()} == table
    with torch.device("meta"):
        hf = HFEncodec(HFBarkConfig().codec_config).state_dict()
    assert any("parametrizations.weight.original0" in k for k in hf)
    converted = codec_hf_to_encodec(hf)
    assert {k: tuple(v.shape) for k, v in converted.items()} == table
    assert set(codec_encodec_to_hf(native, "parametrizations")) == set(hf)


def _param_style(key: str) -> str:
    key = key.replace(".weight_g", ".parametrizations.weight.original0")
    return key.replace(".weight_v", ".parametrizations.weight.original1")


def test_codec_weight_norm_styles(tmp_path: Path, random_dir: Path) -> None:
    codec = load_checkpoint(random_dir).require_codec()
    for style in ("weight_g", "parametrizations"):
        hf = {"codec_model." + k: v for k, v in codec_encodec_to_hf(codec, style).items()}
        assert (style == "parametrizations") == any("original1" in k for k in hf)
        torch.save(hf, tmp_path / f"hf_{style}.pt")
        native = {_param_style(k) if style != "weight_g" else k: v for k, v in codec.items()}
        torch.save(native, tmp_path / f"encodec_{style}.th")
        for name in (f"hf_{style}.pt", f"encodec_{style}.th"):
            back = load_codec_weights(tmp_path / name)
            assert set(back) == set(codec)
            assert all(torch.equal(back[k], codec[k]) for k in codec), name


# ------------------------------------------------------------------------------------------- Suno layout


def _suno_args(config, vocab_size_only: bool = False) -> dict:
    args = dict(n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd, block_size=config.block_size,
                bias=config.bias, dropout=0.0)
    if vocab_size_only:
        args["vocab_size"] = config.input_vocab_size
    else:
        args.update(input_vocab_size=config.input_vocab_size, output_vocab_size=config.output_vocab_size)
    if hasattr(config, "n_codes_total"):
        args.update(n_codes_total=config.n_codes_total, n_codes_given=config.n_codes_given)
    return args


@pytest.fixture(scope="module")
def suno_dir(tmp_path_factory: pytest.TempPathFactory, random_dir: Path) -> Path:
    ckpt = load_checkpoint(random_dir)
    out = tmp_path_factory.mktemp("suno")
    for kind, fname in (("semantic", "text.pt"), ("coarse", "coarse.pt"), ("fine", "fine.pt")):
        sd = {"_orig_mod." + k: v for k, v in to_suno_state(ckpt.model_state(kind), kind).items()}
        # Suno stores best_val_loss as a numpy scalar in some files: exercise the weights-only fallback.
        loss = np.float64(2.5) if kind == "semantic" else torch.tensor(2.5)
        cfg = getattr(ckpt.config, kind)
        torch.save({"model": sd, "model_args": _suno_args(cfg, vocab_size_only=kind == "fine"),
                    "best_val_loss": loss, "iter_num": 10}, out / fname)
    return out


def test_suno_layout_loads_and_equals(suno_dir: Path, random_dir: Path) -> None:
    ours = load_checkpoint(random_dir)
    suno = load_checkpoint(suno_dir)
    assert suno.layout == "suno" and suno.config == ours.config
    for kind in ("semantic", "coarse", "fine"):
        a, b = ours.model_state(kind), suno.model_state(kind)
        assert set(a) == set(b)
        assert all(torch.equal(a[k], b[k]) for k in a), kind
    assert suno.codec is None
    with pytest.raises(CheckpointError, match="encodec_24khz-d7cc33bc.th"):
        suno.require_codec()
    with_codec = load_checkpoint(suno_dir, codec_path=random_dir)
    assert set(with_codec.require_codec()) == set(ours.codec)


@pytest.mark.parity
def test_suno_state_names_match_suno_modules(random_dir: Path) -> None:
    from bark.model import GPT, GPTConfig
    from bark.model_fine import FineGPT, FineGPTConfig

    ckpt = load_checkpoint(random_dir)
    for kind in ("semantic", "coarse", "fine"):
        cfg = getattr(ckpt.config, kind)
        args = _suno_args(cfg)
        module = FineGPT(FineGPTConfig(**args)) if kind == "fine" else GPT(GPTConfig(**args))
        theirs = {k for k in module.state_dict() if not k.endswith(".attn.bias")}
        ours = to_suno_state(ckpt.model_state(kind), kind)
        assert set(ours) == theirs, kind
        module.load_state_dict(ours, strict=False)
        assert convert_suno_state(module.state_dict()).keys() == ckpt.model_state(kind).keys()


@pytest.mark.parity
def test_suno_own_loader_reads_our_suno_files(suno_dir: Path) -> None:
    from bark.generation import _load_model

    for kind, fname in (("coarse", "coarse.pt"), ("fine", "fine.pt")):  # text needs the BERT hub download
        model = _load_model(str(suno_dir / fname), "cpu", model_type=kind)
        assert model.config.n_embd == 64


def test_suno_both_sizes_need_choice(tmp_path: Path, suno_dir: Path) -> None:
    for name in ("text", "coarse", "fine"):
        shutil.copy(suno_dir / f"{name}.pt", tmp_path / f"{name}.pt")
        shutil.copy(suno_dir / f"{name}.pt", tmp_path / f"{name}_2.pt")
    with pytest.raises(CheckpointError, match="suno_size"):
        load_checkpoint(tmp_path)
    assert load_checkpoint(tmp_path, suno_size="large").layout == "suno"
    (tmp_path / "fine_2.pt").unlink()
    with pytest.raises(CheckpointError, match="fine_2.pt"):
        load_checkpoint(tmp_path, suno_size="large")


# ------------------------------------------------------------------------------------------- errors


def test_missing_key_is_named(tmp_path: Path, random_dir: Path, raw_bin) -> None:
    sd = dict(raw_bin)
    del sd["semantic.layers.1.mlp.in_proj.weight"]
    root = _hf_dir_without_codec(random_dir, tmp_path / "bad", sd)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(root)
    msg = str(err.value)
    assert str(root / "pytorch_model.bin") in msg
    assert "semantic.layers.1.mlp.in_proj.weight" in msg and "missing" in msg


def test_wrong_shape_is_named(tmp_path: Path, random_dir: Path, raw_bin) -> None:
    sd = dict(raw_bin)
    sd["coarse_acoustics.lm_head.weight"] = torch.zeros(12_096, 32)
    root = _hf_dir_without_codec(random_dir, tmp_path / "bad", sd)
    with pytest.raises(CheckpointError, match=r"coarse_acoustics\.lm_head\.weight has shape \(12096, 32\), expected"):
        load_checkpoint(root)


def test_unexpected_keys_are_named(tmp_path: Path, random_dir: Path, raw_bin) -> None:
    sd = {**raw_bin, "fine_acoustics.extra.weight": torch.zeros(3), "stray.weight": torch.zeros(1)}
    root = _hf_dir_without_codec(random_dir, tmp_path / "bad", sd)
    with pytest.raises(CheckpointError, match="stray.weight"):
        load_checkpoint(root)
    del sd["stray.weight"]
    (root / "pytorch_model.bin").unlink()
    torch.save({k: v for k, v in sd.items() if not k.startswith("codec_model.")}, root / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"unexpected keys: fine_acoustics\.extra\.weight"):
        load_checkpoint(root)


def test_codec_problems_are_named(tmp_path: Path, random_dir: Path, raw_bin) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    shutil.copy(random_dir / "config.json", root / "config.json")
    sd = {k: v for k, v in raw_bin.items() if k != "codec_model.decoder.layers.15.conv.weight_v"}
    torch.save(sd, root / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"\[codec\].*codec_model\.decoder\.layers\.15\.conv\.weight_v"):
        load_checkpoint(root)


def test_tied_fine_weights_must_agree(tmp_path: Path, random_dir: Path, raw_bin) -> None:
    sd = dict(raw_bin)
    sd["fine_acoustics.lm_heads.2.weight"] = sd["fine_acoustics.lm_heads.2.weight"] + 1
    root = _hf_dir_without_codec(random_dir, tmp_path / "bad", sd)
    with pytest.raises(CheckpointError, match="tied weights differ"):
        load_checkpoint(root)


def test_heads_only_checkpoint_gets_tied_embeddings(tmp_path: Path, random_dir: Path, raw_bin) -> None:
    sd = {k: v for k, v in raw_bin.items() if not k.startswith("fine_acoustics.input_embeds_layers.3")}
    ckpt = load_checkpoint(_hf_dir_without_codec(random_dir, tmp_path / "heads", sd))
    assert ckpt.fine["input_embeds_layers.3.weight"] is ckpt.fine["lm_heads.2.weight"]
    assert ckpt.codec is None and "codec_path" in ckpt.codec_note


@pytest.mark.parametrize("content", [b"", b"not a zip or pickle at all" * 10])
def test_corrupt_file_names_path(tmp_path: Path, random_dir: Path, content: bytes) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    shutil.copy(random_dir / "config.json", root / "config.json")
    (root / "pytorch_model.bin").write_bytes(content)
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        load_checkpoint(root)
    (root / "pytorch_model.bin").unlink()
    (root / "model.safetensors").write_bytes(content)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(root)


def test_pickled_code_is_refused(tmp_path: Path, random_dir: Path) -> None:
    root = tmp_path / "evil"
    root.mkdir()
    shutil.copy(random_dir / "config.json", root / "config.json")
    torch.save({"x": Path("/etc/passwd")}, root / "pytorch_model.bin")  # an arbitrary object, not a tensor
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        load_checkpoint(root)


def test_bad_directories(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="text.pt"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        load_checkpoint(tmp_path)


def test_bad_config_and_shard_index(tmp_path: Path, random_dir: Path) -> None:
    cfg = json.loads((random_dir / "config.json").read_text())
    cfg["semantic_config"]["input_vocab_size"] = 1000
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="semantic input_vocab_size"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "encodec"}))
    with pytest.raises(CheckpointError, match="not 'bark'"):
        load_checkpoint(tmp_path)
    shutil.copy(random_dir / "config.json", tmp_path / "config.json")
    index = {"weight_map": {"semantic.lm_head.weight": "../outside.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="plain file names"):
        load_checkpoint(tmp_path)

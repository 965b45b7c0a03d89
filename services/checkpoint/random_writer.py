"""Write random Bark checkpoints in the exact Hugging Face snapshot layout.

No pretrained weights can be downloaded where barkstream is tested, so tests,
benchmarks and demos run on checkpoints this module writes: the same files a
suno/bark-small snapshot has (config.json, generation_config.json,
pytorch_model.bin with all four models, BERT tokenizer files, speaker
embeddings), with random weights. `tiny` keeps Bark's vocabularies and
context (so every real token id is valid) with 2 layers x 64; `small` has
bark-small's real sizes.

Greedy parity tests need decisions that are not near-ties: the output heads
are scaled so that logits have a standard deviation of about `TARGET_LOGIT_STD`
instead of GPT-2 init's ~0.2-0.6.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..bark import constants as C
from ..bark.tokenizer import BarkTokenizer
from ..model.config import BarkConfig, FineGPTConfig, GPTConfig, bark_small, bark_tiny
from .codec_names import codec_encodec_to_hf
from .gpt_names import expected_shapes

Size = Literal["tiny", "small"]
INIT_STD = 0.02
TARGET_LOGIT_STD = 5.0
# Every Suno v2 preset name, as suno/bark-small's speaker_embeddings has them, so that an example
# written for the real checkpoint (voice="v2/en_speaker_6") runs unchanged on a random one.
VOICE_LANGUAGES = ("en", "de", "es", "fr", "hi", "it", "ja", "ko", "pl", "pt", "ru", "tr", "zh")
VOICES = tuple(f"v2/{lang}_speaker_{i}" for lang in VOICE_LANGUAGES for i in range(10))


def default_head_scale(n_embd: int) -> float:
    """Head multiplier giving logits of std ~TARGET_LOGIT_STD (a unit-variance input times std-0.02 weights)."""
    return TARGET_LOGIT_STD / (INIT_STD * math.sqrt(n_embd))


def _is_head(name: str, config: GPTConfig) -> bool:
    if isinstance(config, FineGPTConfig):  # heads are tied to embeddings n_codes_given.., scale those
        return name.startswith("input_embeds_layers.") and int(name.split(".")[1]) >= config.n_codes_given
    return name == "lm_head.weight"


def random_gpt_state(
    config: GPTConfig, generator: torch.Generator, head_scale: float | None = None
) -> dict[str, torch.Tensor]:
    """GPT-2-style random weights in our naming; fine heads share storage with their embeddings."""
    scale = default_head_scale(config.n_embd) if head_scale is None else head_scale
    resid_std = INIT_STD / math.sqrt(2 * config.n_layer)  # GPT-2's scaled residual projections
    sd: dict[str, torch.Tensor] = {}
    for name, shape in expected_shapes(config).items():
        if name.startswith("lm_heads."):
            continue  # tied, filled below
        noise = torch.randn(shape, generator=generator)
        if "layernorm" in name:
            # Not exactly 1 / 0, so a swapped or dropped norm parameter changes the output.
            t = 1.0 + 0.05 * noise if name.endswith(".weight") else 0.02 * noise
        elif name.endswith(".bias"):
            t = 0.02 * noise
        elif name.endswith(("attn.out_proj.weight", "mlp.out_proj.weight")):
            t = resid_std * noise
        else:
            t = INIT_STD * noise
        sd[name] = t * scale if _is_head(name, config) else t
    if isinstance(config, FineGPTConfig):
        for i in range(config.n_codes_total - config.n_codes_given):
            sd[f"lm_heads.{i}.weight"] = sd[f"input_embeds_layers.{i + config.n_codes_given}.weight"]
    return sd


def random_codec_state(seed: int) -> dict[str, torch.Tensor]:
    """A randomly initialised EnCodec 24 kHz (encodec naming), with usable random codebooks.

    encodec initialises codebooks to zeros awaiting k-means; zeros would decode every code alike,
    so codebooks get random vectors and are marked initialised.
    """
    from encodec import EncodecModel  # heavy import (torchaudio); only the writer needs it

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sd = {k: v.clone() for k, v in EncodecModel.encodec_model_24khz(pretrained=False).state_dict().items()}
    gen = torch.Generator().manual_seed(seed + 1)
    for key in [k for k in sd if k.endswith("._codebook.embed")]:
        base = key[: -len("embed")]
        embed = torch.randn(sd[key].shape, generator=gen)
        sd[key] = embed
        sd[base + "embed_avg"] = embed.clone()
        sd[base + "cluster_size"] = torch.ones_like(sd[base + "cluster_size"])
        sd[base + "inited"] = torch.ones_like(sd[base + "inited"])
    return sd


# ---------------------------------------------------------------------------------------------- json files


def _hf_sub_config(config: GPTConfig, model_type: str) -> dict[str, Any]:
    d: dict[str, Any] = {
        "bias": config.bias,
        "block_size": config.block_size,
        "dropout": 0.0,
        "hidden_size": config.n_embd,
        "initializer_range": INIT_STD,
        "input_vocab_size": config.input_vocab_size,
        "model_type": model_type,
        "num_heads": config.n_head,
        "num_layers": config.n_layer,
        "output_vocab_size": config.output_vocab_size,
        "use_cache": True,
    }
    if isinstance(config, FineGPTConfig):
        d.update(n_codes_given=config.n_codes_given, n_codes_total=config.n_codes_total, tie_word_embeddings=True)
    return d


def _codec_config() -> dict[str, Any]:
    """transformers' EncodecConfig for EnCodec 24 kHz, as in Bark's config.json."""
    return {
        "audio_channels": 1,
        "chunk_length_s": None,
        "codebook_dim": 128,
        "codebook_size": C.CODEBOOK_SIZE,
        "compress": 2,
        "dilation_growth_rate": 2,
        "hidden_size": 128,
        "kernel_size": 7,
        "last_kernel_size": 7,
        "model_type": "encodec",
        "norm_type": "weight_norm",
        "normalize": False,
        "num_filters": 32,
        "num_lstm_layers": 2,
        "num_residual_layers": 1,
        "overlap": None,
        "pad_mode": "reflect",
        "residual_kernel_size": 3,
        "sampling_rate": C.SAMPLE_RATE,
        "target_bandwidths": [1.5, 3.0, 6.0, 12.0, 24.0],
        "trim_right_ratio": 1.0,
        "upsampling_ratios": [8, 5, 4, 2],
        "use_causal_conv": True,
        "use_conv_shortcut": True,
    }


def hf_config_dict(config: BarkConfig) -> dict[str, Any]:
    """config.json contents, as transformers' BarkConfig writes them."""
    return {
        "architectures": ["BarkModel"],
        "semantic_config": _hf_sub_config(config.semantic, "semantic"),
        "coarse_acoustics_config": _hf_sub_config(config.coarse, "coarse_acoustics"),
        "fine_acoustics_config": _hf_sub_config(config.fine, "fine_acoustics"),
        "codec_config": _codec_config(),
        "initializer_range": INIT_STD,
        "model_type": "bark",
        "torch_dtype": "float32",
    }


def generation_config_dict() -> dict[str, Any]:
    """generation_config.json as on the hub: Bark's constants and Suno's sampling defaults (+ top_k 50)."""
    sampling = {"do_sample": True, "top_k": 50, "renormalize_logits": True}
    return {
        "semantic_config": {
            **sampling,
            "temperature": C.DEFAULT_SEMANTIC_TEMP,
            "eos_token_id": C.SEMANTIC_EOS_TOKEN,
            "max_new_tokens": C.MAX_SEMANTIC_TOKENS,
            "text_encoding_offset": C.TEXT_ENCODING_OFFSET,
            "text_pad_token": C.TEXT_PAD_TOKEN,
            "semantic_pad_token": C.SEMANTIC_PAD_TOKEN,
            "semantic_infer_token": C.SEMANTIC_INFER_TOKEN,
            "semantic_vocab_size": C.SEMANTIC_VOCAB_SIZE,
            "max_input_semantic_length": C.MAX_TEXT_TOKENS,
            "semantic_rate_hz": C.SEMANTIC_RATE_HZ,
            "min_eos_p": None,
        },
        "coarse_acoustics_config": {
            **sampling,
            "temperature": C.DEFAULT_COARSE_TEMP,
            "coarse_semantic_pad_token": C.COARSE_SEMANTIC_PAD_TOKEN,
            "coarse_rate_hz": C.COARSE_RATE_HZ,
            "n_coarse_codebooks": C.N_COARSE_CODEBOOKS,
            "coarse_infer_token": C.COARSE_INFER_TOKEN,
            "max_coarse_input_length": C.COARSE_SEMANTIC_WINDOW,
            "max_coarse_history": C.MAX_COARSE_HISTORY,
            "sliding_window_len": C.SLIDING_WINDOW_LEN,
        },
        "fine_acoustics_config": {
            "temperature": C.DEFAULT_FINE_TEMP,
            "max_fine_history_length": C.FINE_MAX_HISTORY,
            "max_fine_input_length": C.FINE_WINDOW,
            "n_fine_codebooks": C.N_FINE_CODEBOOKS,
        },
        "sample_rate": C.SAMPLE_RATE,
        "codebook_size": C.CODEBOOK_SIZE,
        "model_type": "bark",
    }


# ---------------------------------------------------------------------------------------------- tokenizer


_WORDS = (
    "the of and to in is it you that he was for on are with as his they be at one have this from or had by "
    "not but what all were we when your can said there use an each which she do how their if will up other "
    "about out many then them these so some her would make like him into time has look two more write go see "
    "number no way could people my than first water been call who oil its now find long down day did get come "
    "made may part hello world name dog cat cute pizza music voice speech text Bark Suno laughs sighs clears "
    "throat Hello The It I This We You Hallo Welt und der die das ist nicht Hola mundo el la es Bonjour monde "
    "le les est"
).split()
_PIECES = ("s", "ed", "ing", "ly", "er", "est", "ion", "tion", "ment", "ness", "en", "es")
_EXTRA_CHARS = "éèêàâçëïîôöüäßñÉÜÖÄ¿¡€£°–—…“”‘’" + "你好世界日本語中文한국어" + "привет"


def tokenizer_vocab() -> list[str]:
    """A small mBERT-shaped vocabulary: special tokens at mBERT-cased's ids, then chars, pieces, words."""
    specials = ["[PAD]", *[f"[unused{i}]" for i in range(1, 100)], "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<S>", "<T>"]
    ascii_chars = [chr(c) for c in range(33, 127)]
    letters = [c for c in ascii_chars + list(_EXTRA_CHARS) if c.isalnum()]
    vocab = specials + ascii_chars + list(_EXTRA_CHARS)
    vocab += [f"##{c}" for c in letters] + [f"##{p}" for p in _PIECES] + list(_WORDS)
    return list(dict.fromkeys(vocab))  # drop repeats, keep first position


def _write_tokenizer(out: Path) -> None:
    vocab = tokenizer_vocab()
    (out / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    BarkTokenizer.from_vocab(vocab).backend.save(str(out / "tokenizer.json"))
    special = {
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "unk_token": "[UNK]",
    }
    _write_json(out / "special_tokens_map.json", special)
    _write_json(
        out / "tokenizer_config.json",
        {
            **special,
            "do_lower_case": False,
            "strip_accents": None,
            "tokenize_chinese_chars": True,
            "model_max_length": 512,
            "tokenizer_class": "BertTokenizer",
            "clean_up_tokenization_spaces": True,
        },
    )


# ---------------------------------------------------------------------------------------------- voices


def random_voice(rng: np.random.Generator, n_semantic: int) -> dict[str, np.ndarray]:
    """A valid random preset: coarse frames = semantic tokens x 75/49.9, fine rows 0-1 = coarse."""
    n_frames = int(round(n_semantic * C.COARSE_RATE_HZ / C.SEMANTIC_RATE_HZ))
    coarse = rng.integers(0, C.CODEBOOK_SIZE, (C.N_COARSE_CODEBOOKS, n_frames), dtype=np.int64)
    fine_rest = rng.integers(0, C.CODEBOOK_SIZE, (C.N_FINE_CODEBOOKS - C.N_COARSE_CODEBOOKS, n_frames))
    return {
        "semantic_prompt": rng.integers(0, C.SEMANTIC_VOCAB_SIZE, n_semantic, dtype=np.int64),
        "coarse_prompt": coarse,
        "fine_prompt": np.concatenate([coarse, fine_rest.astype(np.int64)]),
    }


def _write_voices(out: Path, seed: int) -> None:
    index: dict[str, Any] = {"repo_or_path": "."}
    for i, name in enumerate(VOICES):
        rng = np.random.default_rng([seed, i])
        arrays = random_voice(rng, int(rng.integers(60, 200)))
        entry = {}
        for key, arr in arrays.items():
            rel = f"speaker_embeddings/{name}_{key}.npy"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            np.save(out / rel, arr, allow_pickle=False)
            entry[key] = rel
        index[name] = entry
    _write_json(out / "speaker_embeddings_path.json", index)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- entry point


def _causal_mask_buffers(config: GPTConfig) -> dict[str, torch.Tensor]:
    """transformers' causal models persist a bool tril mask per layer (`attn.bias`); hub files hold them."""
    n = config.block_size
    mask = torch.tril(torch.ones((n, n), dtype=torch.bool)).view(1, 1, n, n)
    return {f"layers.{i}.attn.bias": mask for i in range(config.n_layer)}


def _model_states(config: BarkConfig, seed: int, head_scale: float | None,
                  text_length_eos: bool = False) -> Iterator[tuple[str, dict]]:
    gen = torch.Generator().manual_seed(seed)
    for prefix, cfg in (("semantic.", config.semantic), ("coarse_acoustics.", config.coarse)):
        sd = random_gpt_state(cfg, gen, head_scale)
        if text_length_eos and prefix == "semantic.":
            from .random_eos import add_text_length_eos

            add_text_length_eos(sd, cfg)
        yield prefix, {**sd, **_causal_mask_buffers(cfg)}
    yield "fine_acoustics.", random_gpt_state(config.fine, gen, head_scale)
    yield "codec_model.", codec_encodec_to_hf(random_codec_state(seed))


def write_random_checkpoint(
    out_dir: str | Path,
    size: Size = "tiny",
    seed: int = 0,
    head_scale: float | None = None,
    *,
    overwrite: bool = False,
    text_length_eos: bool = False,
) -> Path:
    """Write a random checkpoint in the suno/bark-small snapshot layout; returns its directory.

    `head_scale` multiplies the output heads (default: logits of std ~5, see `default_head_scale`).
    `text_length_eos`: the semantic model ends each segment after a length that grows with its
    text (random_eos.py), instead of always running to 768 tokens.
    The same seed always writes the same tensors.
    """
    configs = {"tiny": bark_tiny, "small": bark_small}
    if size not in configs:
        raise ValueError(f"size must be one of {sorted(configs)}, got {size!r}")
    config = configs[size]()
    out = Path(out_dir)
    if (out / "config.json").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a checkpoint (pass overwrite=True / --force)")
    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, torch.Tensor] = {}
    for prefix, sd in _model_states(config, seed, head_scale, text_length_eos):
        state.update({prefix + k: v for k, v in sd.items()})
    # Written beside and renamed over the old file, never rewritten in place: a process holding a loaded
    # checkpoint has its file memory-mapped (services/checkpoint/tensor_files.py), and would see the new bytes,
    # or die of SIGBUS on a truncated mapping.
    partial = out / "pytorch_model.bin.partial"
    torch.save(state, partial)  # tied fine heads share storage: stored once
    os.replace(partial, out / "pytorch_model.bin")
    _write_json(out / "config.json", hf_config_dict(config))
    _write_json(out / "generation_config.json", generation_config_dict())
    _write_tokenizer(out)
    _write_voices(out, seed)
    return out


def ensure_random_checkpoint(out_dir: str | Path, size: Size = "tiny", seed: int = 0,
                             text_length_eos: bool = False) -> Path:
    """The random checkpoint in `out_dir`: written when missing, given the missing voices when an older
    writer made it (it had 3 voices, not every Suno v2 name), else left as it is."""
    out = Path(out_dir)
    if not (out / "config.json").is_file():
        return write_random_checkpoint(out, size=size, seed=seed, text_length_eos=text_length_eos)
    index = out / "speaker_embeddings_path.json"
    voices = json.loads(index.read_text(encoding="utf-8")) if index.is_file() else {}
    if not set(VOICES) <= set(voices):
        _write_voices(out, seed)
    return out

"""Checkpoint file names, model prefixes and the checkpoint error, without torch.

The orchestrator-only process finds the checkpoint directory (hub.py) to read the
tokenizer and voices; it must not pay for importing torch, so what hub.py shares
with the weight readers lives here rather than in tensor_files.py or load.py.
"""

from __future__ import annotations

from typing import Literal

ModelKind = Literal["semantic", "coarse", "fine"]

# (shard index, single file) per weights format, safetensors first.
HF_WEIGHT_FILES = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)
# The prefix of each model's tensors in a Hugging Face snapshot's weights.
HF_PREFIXES: dict[str, str] = {
    "semantic": "semantic.",
    "coarse": "coarse_acoustics.",
    "fine": "fine_acoustics.",
    "codec": "codec_model.",
}
# Suno's original files, one per GPT, per model size.
SUNO_FILES: dict[str, dict[ModelKind, str]] = {
    "small": {"semantic": "text.pt", "coarse": "coarse.pt", "fine": "fine.pt"},
    "large": {"semantic": "text_2.pt", "coarse": "coarse_2.pt", "fine": "fine_2.pt"},
}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
VOICES_INDEX = "speaker_embeddings_path.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not match its config."""

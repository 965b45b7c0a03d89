"""Checkpoint file names and the checkpoint error, without torch.

The orchestrator-only process finds the checkpoint directory (hub.py) to read the
tokenizer and voices; it must not pay for importing torch, so what hub.py shares
with the weight readers lives here rather than in weights_io.py.
"""

from __future__ import annotations

# (shard index, single file) per weights format, safetensors first.
HF_WEIGHT_FILES = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not match its config."""

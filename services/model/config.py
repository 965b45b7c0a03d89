"""Model configurations as plain dataclasses, in Bark's own vocabulary.

Field names follow Suno's `model_args` (n_layer, n_head, n_embd); the loaders
translate Hugging Face `config.json` (num_layers, num_heads, hidden_size) into
these once, at the edge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class GPTConfig:
    """Causal GPT (semantic and coarse stages)."""

    block_size: int = 1024
    input_vocab_size: int = 10_048
    output_vocab_size: int = 10_048
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    bias: bool = False

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass(frozen=True)
class FineGPTConfig(GPTConfig):
    """Non-causal fine model: 8 summed codebook embeddings, 7 heads tied to embeddings 1..7."""

    n_codes_total: int = 8
    n_codes_given: int = 1


@dataclass(frozen=True)
class CodecConfig:
    """EnCodec 24 kHz; only the fields Bark relies on (the architecture is fixed by `encodec`)."""

    sampling_rate: int = 24_000
    bandwidth: float = 6.0  # 8 codebooks
    n_codebooks: int = 8
    codebook_size: int = 1024


def semantic_small() -> GPTConfig:
    return GPTConfig(input_vocab_size=129_600, output_vocab_size=10_048)


def coarse_small() -> GPTConfig:
    return GPTConfig(input_vocab_size=12_096, output_vocab_size=12_096)


def fine_small() -> FineGPTConfig:
    return FineGPTConfig(input_vocab_size=1056, output_vocab_size=1056)


@dataclass(frozen=True)
class BarkConfig:
    """All four models of one checkpoint."""

    semantic: GPTConfig = field(default_factory=semantic_small)
    coarse: GPTConfig = field(default_factory=coarse_small)
    fine: FineGPTConfig = field(default_factory=fine_small)
    codec: CodecConfig = field(default_factory=CodecConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def bark_small() -> BarkConfig:
    """suno/bark-small: 12 layers x 768, bias-free, the real vocabularies."""
    return BarkConfig()


def bark_tiny() -> BarkConfig:
    """2 layers x 64 with the real vocabularies and block size.

    Keeping Bark's vocabularies and context means every token id and window the
    stages use is valid, so tests run the real algorithm on a model that is cheap.
    """
    small = BarkConfig()
    shrink = dict(n_layer=2, n_head=2, n_embd=64)
    return BarkConfig(
        semantic=replace(small.semantic, **shrink),
        coarse=replace(small.coarse, **shrink),
        fine=replace(small.fine, **shrink),
        codec=small.codec,
    )

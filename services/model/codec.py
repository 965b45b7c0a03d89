"""EnCodec 24 kHz at 6 kbps: Bark's codec, decode side only.

The layers are the `encodec` package's own modules, so the arithmetic is the
one Suno's `bark.generation.codec_decode` runs: `quantizer.decode` of the codes
with the codebook axis first, then the SEANet decoder. Two things differ from
holding a raw `EncodecModel`:

- weights come from a state dict in the `encodec` package's naming (the
  checkpoint loader converts Hugging Face names); decoder and quantizer keys
  are checked strictly because a silently random layer still makes sound;
- weight norm is folded into plain weights once at load. The hook recomputes
  `g * v / ||v||` on every forward with the same formula, so folding it gives
  bit-identical weights (tests/test_codec.py checks against the hooked model).

The streaming decoder lives in `codec_stream.py` (`StreamingDecoder(codec)`), which
builds on this module; this one knows nothing of streaming, so the import points one way.
"""

from __future__ import annotations

import warnings

import torch
from encodec import EncodecModel
from torch import nn

from .config import CodecConfig


def _fold_weight_norm(module: nn.Module) -> None:
    """Replace every weight-norm hook by the plain weight it would compute."""
    for m in module.modules():
        if hasattr(m, "weight_g") and hasattr(m, "weight_v"):
            nn.utils.remove_weight_norm(m)


def _build_model(config: CodecConfig) -> EncodecModel:
    with warnings.catch_warnings():  # encodec builds its layers with torch's deprecated weight_norm
        warnings.filterwarnings("ignore", message=".*weight_norm.* is deprecated", category=FutureWarning)
        model = EncodecModel.encodec_model_24khz(pretrained=False)
    if model.sample_rate != config.sampling_rate:
        raise ValueError(
            f"encodec 24 kHz model has sample rate {model.sample_rate}, config says {config.sampling_rate}"
        )
    model.set_target_bandwidth(config.bandwidth)
    return model.eval()


def randomize_codebooks(model: EncodecModel, generator: torch.Generator) -> None:
    """Give every codebook N(0, 1) entries, marked initialised: distinct codes, distinct latents."""
    for layer in model.quantizer.vq.layers:
        book = layer._codebook
        embed = torch.randn(book.embed.shape, generator=generator)  # (1024, 128)
        book.embed.copy_(embed)
        book.embed_avg.copy_(embed)
        book.inited.fill_(1.0)


class Codec(nn.Module):
    """EnCodec 24 kHz decoder + residual quantizer, as Bark uses them."""

    def __init__(self, model: EncodecModel, config: CodecConfig | None = None):
        super().__init__()
        self.config = config or CodecConfig()
        self.model = model.eval()
        self.n_codebooks = self.config.n_codebooks
        self.hop_length = int(model.decoder.hop_length)  # 320 samples per frame
        self.sample_rate = int(model.sample_rate)
        n_q = model.quantizer.get_num_quantizers_for_bandwidth(model.frame_rate, self.config.bandwidth)
        if n_q != self.n_codebooks:
            raise ValueError(
                f"bandwidth {self.config.bandwidth} kbps uses {n_q} codebooks, expected {self.n_codebooks}"
            )
        self.requires_grad_(False)

    @classmethod
    def from_state_dict(
        cls,
        sd: dict[str, torch.Tensor],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        config: CodecConfig | None = None,
    ) -> Codec:
        """Build from an `encodec`-named state dict (`decoder.*`, `quantizer.*`, optional `encoder.*`).

        Decoder and quantizer keys must match exactly. Encoder keys are all-or-nothing: the encoder
        is never run when serving, so a checkpoint without it is fine and then no encoder is kept.
        """
        config = config or CodecConfig()
        model = _build_model(config)
        own = model.state_dict()
        expected = set(own)
        given = set(sd)
        unexpected = sorted(given - expected)
        if unexpected:
            raise ValueError(f"codec state dict has {len(unexpected)} unexpected keys, e.g. {unexpected[:5]}")
        has_encoder = any(k.startswith("encoder.") for k in given)
        required = {k for k in expected if has_encoder or not k.startswith("encoder.")}
        missing = sorted(required - given)
        if missing:
            raise ValueError(f"codec state dict misses {len(missing)} keys, e.g. {missing[:5]}")
        for k in sorted(given):
            want, got = own[k].shape, sd[k].shape
            if want != got:
                raise ValueError(f"codec state dict key {k!r} has shape {tuple(got)}, expected {tuple(want)}")
        if not has_encoder:
            model.encoder = None  # frees memory; `encode` now fails loudly instead of using random weights
        model.load_state_dict(sd, strict=False)  # strictness checked above, incl. the encoder rule
        _fold_weight_norm(model)
        return cls(model, config).to(device=device, dtype=dtype)

    @classmethod
    def random(cls, seed: int, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Codec:
        """Random codec for tests; the global RNG is left untouched.

        Layers get the `encodec` package's init. Its codebooks start at zero (they expect a
        k-means init on training data), which would make every code decode to the same
        silence-like latent, so they are drawn from N(0, 1) here.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _build_model(CodecConfig())
            randomize_codebooks(model, torch.Generator().manual_seed(seed))
        _fold_weight_norm(model)
        return cls(model).to(device=device, dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self.model.decoder.model[0].conv.conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.decoder.model[0].conv.conv.weight.dtype

    def check_codes(self, codes: torch.Tensor) -> None:
        """Shape and dtype only: a range check would cost a device sync; the servicer validates values."""
        if codes.dim() != 3 or codes.shape[1] != self.n_codebooks:
            raise ValueError(f"codes must be (B, {self.n_codebooks}, T), got {tuple(codes.shape)}")
        if codes.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the codebook vectors: the decoder's input latent."""
        self.check_codes(codes)
        codes = codes.to(device=self.device, dtype=torch.long)
        return self.model.quantizer.decode(codes.transpose(0, 1)).to(self.dtype)  # (B, 128, T)

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, 8, T) -> PCM (B, T * 320) at 24 kHz: Suno's `codec_decode`, batched."""
        emb = self.embed(codes)  # (B, 128, T)
        out = self.model.decoder(emb)  # (B, 1, T * 320)
        return out[:, 0]  # (B, T * 320)

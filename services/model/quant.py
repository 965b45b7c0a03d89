"""Inference formats for the transformers' linear layers: oneDNN-packed weights and int8 weight-only.

A batch-1 decode step reads every weight once and does two flops per weight,
so its speed is the speed at which the linears stream their weights. Two
formats make that stream faster; `prepare_linears` swaps them in after a model
is loaded (weights only: the module tree and the state-dict names stay those
of the checkpoint, so load first, then prepare).

- `PackedLinear` (CPU, float32/bfloat16): the weight reordered once into
  oneDNN's blocked layout and multiplied by oneDNN. MKL, which `F.linear` uses
  on CPU, runs its slow generic code on AMD processors (no AVX-512 there); on
  this project's AMD EPYC machine oneDNN is about 2.5x faster for a decode
  step and 3-10x for a prefill. Its result does not depend on how many rows
  the batch has (tests/test_perf_paths.py checks it bit for bit), so a request
  gets the same numbers alone or batched.
- `Int8Linear` (opt-in, `quantize="int8"`): symmetric per-output-channel int8
  weights (a quarter of float32's bytes), multiplied by
  `torch.ops.aten._weight_int8pack_mm` (CPU and CUDA kernels; gpt-fast's int8
  path). The kernel is fast with 16-bit activations, so a float32 model feeds
  it bfloat16 and gets float32 back. Not exact: the benchmarks report its
  token agreement with float32.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

QUANTIZE_MODES = ("none", "int8")
PACK_MIN_FEATURES = 256  # smaller matrices sit in cache anyway: packing would only change the rounding


def packing_available() -> bool:
    """oneDNN's packed linear ops exist in this torch build."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


class PackedLinear(nn.Module):
    """`nn.Linear` with its weight in oneDNN's packed layout (CPU; float32 or bfloat16).

    A request must get the same numbers alone as in a batch, so a row's result may not depend on how
    many rows share the call. oneDNN keeps to that for two rows and more, but for some shapes it runs a
    single row through another kernel that sums in another order (float32 3072 -> 768, bark's MLP down
    projection, on this project's machines). Such a linear is found once, here, by trying it, and then
    computes a single row as two (the same cost: the weights are read once either way).
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.dtype = linear.weight.dtype
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())  # opaque (N, K)
        self.bias = None if linear.bias is None else linear.bias.detach()
        probe = torch.randn(8, self.in_features, generator=torch.Generator().manual_seed(0)).to(self.dtype)  # (8, K)
        self.pad_single_row = not torch.equal(self._matmul(probe[:1]), self._matmul(probe)[:1])

    def _matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """x2: (M, K) contiguous -> (M, N)."""
        return torch.ops.mkldnn._linear_pointwise(x2, self.packed, self.bias, "none", [], "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape  # (..., K)
        x2 = x.reshape(-1, self.in_features).contiguous()  # (M, K)
        single = x2.shape[0] == 1 and self.pad_single_row
        y = self._matmul(x2.expand(2, -1).contiguous() if single else x2)  # (M, N), or (2, N) for a single row
        return (y[:1] if single else y).view(*shape[:-1], self.out_features)

    def weight_bytes(self) -> int:
        return self.in_features * self.out_features * self.dtype.itemsize


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float -> int8 (N, K) and float32 scales (N,), symmetric per output channel."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (N,)
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)  # (N, K)
    return q, scales


class Int8Linear(nn.Module):
    """Weight-only int8 linear: y = (x @ q.T) * scales (+ bias), computed in 16-bit floats.

    Up to `gemv_rows` rows (decode steps) run the int8 kernel, which reads a quarter of float32's
    bytes; bigger inputs (prefills, fine windows) are compute-bound and multiply a dequantized copy.
    """

    gemv_rows = 32  # the int8 kernel costs about M times its one-row time: past ~32 rows the GEMM wins

    def __init__(self, linear: nn.Linear, compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        dtype = linear.weight.dtype
        self.compute_dtype = compute_dtype or (torch.bfloat16 if dtype == torch.float32 else dtype)
        q, scales = quantize_int8(linear.weight)
        self.register_buffer("weight", q)  # (N, K) int8
        self.register_buffer("scales", scales.to(self.compute_dtype))  # (N,)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype  # (..., K)
        x2 = x.reshape(-1, self.in_features).to(self.compute_dtype).contiguous()  # (M, K)
        if x2.shape[0] <= self.gemv_rows:
            y = torch.ops.aten._weight_int8pack_mm(x2, self.weight, self.scales)  # (M, N)
        else:  # prefill / fine windows: compute-bound, where the 16-bit GEMM wins over the int8 kernel
            y = F.linear(x2, self.weight.to(self.compute_dtype) * self.scales[:, None])  # (M, N)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.to(dtype).view(*shape[:-1], self.out_features)

    def weight_bytes(self) -> int:
        return self.weight.numel() + self.scales.numel() * self.scales.element_size()


def prepare_linears(model: nn.Module, quantize: str = "none", pack: bool = True,
                    min_pack_features: int = PACK_MIN_FEATURES) -> nn.Module:
    """Swap every `nn.Linear` of `model` (in place) for its inference format; returns `model`.

    quantize="int8": `Int8Linear` everywhere (CPU or CUDA). Otherwise, on CPU
    with `pack` and oneDNN available, float32/bfloat16 linears with both sides
    at least `min_pack_features` become `PackedLinear` (bark-small's all are;
    the tiny test models' stay plain); anything else is left as it is. Tied
    weights (the fine model's heads share the input embeddings) are copied,
    not untied: the embedding keeps its plain weight.
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            big = min(child.in_features, child.out_features) >= min_pack_features
            new = _convert(child, quantize, pack and big)
            if new is not None:
                setattr(parent, name, new)
    return model


def _convert(linear: nn.Linear, quantize: str, pack: bool) -> nn.Module | None:
    w = linear.weight
    if quantize == "int8":
        return Int8Linear(linear)
    if pack and w.device.type == "cpu" and w.dtype in (torch.float32, torch.bfloat16) and packing_available():
        return PackedLinear(linear)
    return None


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of every linear weight as stored for inference (packed, int8 or plain)."""
    total = 0
    for m in model.modules():
        if isinstance(m, PackedLinear | Int8Linear):
            total += m.weight_bytes()
        elif isinstance(m, nn.Linear):
            total += m.weight.numel() * m.weight.element_size()
    return total

"""Exact streaming EnCodec 24 kHz decoder with explicit, per-row state.

Why it can be exact: the 24 kHz SEANet decoder is causal. Every stride-1 conv
pads only on the left, so output t needs inputs <= t plus the last
(kernel - 1) * dilation inputs (carried as state); the LSTM carries (h, c); a
transposed conv with kernel k and stride s writes k - s samples past the end of
its chunk, which the one-shot decoder trims and the next chunk overlaps, so that
tail is carried and added to the next chunk.

The one catch is the stream start: the left padding is *reflect*, not zeros, so
the first output of the first conv (kernel 7) reads latent frames 0..6. Hence:

    latency: nothing comes out until 7 frames are in; then all 7 * 320 samples
    at once, and from then on each frame's 320 samples as soon as that frame
    arrives (no lookahead). `flush` emits nothing for a stream of >= 7 frames
    (the transposed-conv tails are trimmed in one-shot too) and the whole audio
    of a shorter stream, which one-shot decodes with zero-extended reflection.

Every layer after the first conv sees >= 7 * 8 samples when its row starts,
more than any of their left contexts, so only the first conv decides the start.

Rows of a batch may sit at different points of that start (an engine merges a
new stream into a running batch with `StreamState.concat`), so `step` returns a
per-row sample count alongside the right-zero-padded PCM. When every row is
past its start, which is the steady state, the whole batch is one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from encodec.modules.conv import SConv1d, SConvTranspose1d
from encodec.modules.lstm import SLSTM
from encodec.modules.seanet import SEANetResnetBlock
from torch import nn

from .codec import Codec

States = list[torch.Tensor]  # one op's state tensors, each batch-first (B, ...)


@dataclass(frozen=True)
class StreamState:
    """Decoder state of B independent streams. Functional: `step` returns a new one.

    frames: codec frames fed so far per row (host ints: the start logic branches on them).
    tensors: every stateful layer's state, batch-first, in decoder order. tensors[0] holds the
    first conv's input context: the last 6 latent frames, right-aligned; before a row starts
    it is also that row's whole history.
    """

    frames: tuple[int, ...]
    tensors: tuple[torch.Tensor, ...]

    @property
    def batch_size(self) -> int:
        return len(self.frames)

    def select(self, indices: Sequence[int] | torch.Tensor) -> StreamState:
        """Rows `indices` in that order: drop finished streams, reorder, duplicate."""
        idx = [int(i) for i in indices]
        return StreamState(
            frames=tuple(self.frames[i] for i in idx),
            tensors=tuple(t[torch.as_tensor(idx, dtype=torch.long, device=t.device)] for t in self.tensors),
        )

    @staticmethod
    def concat(states: Sequence[StreamState]) -> StreamState:
        """Stack the rows of several states (e.g. a running batch and a fresh `init_state(1)`)."""
        if not states:
            raise ValueError("StreamState.concat needs at least one state")
        return StreamState(
            frames=tuple(f for s in states for f in s.frames),
            tensors=tuple(torch.cat(ts, dim=0) for ts in zip(*(s.tensors for s in states), strict=True)),
        )


# Streaming counterparts of the SEANet decoder layers. Each op maps (x, state) -> (y, state);
# state None means "this is the row's first chunk": run the layer's own one-shot code, which
# is exact on a stream prefix because every layer is causal.


class _Op:
    n_state = 0

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> States:
        return []

    def __call__(self, x: torch.Tensor, state: States | None) -> tuple[torch.Tensor, States]:
        raise NotImplementedError


class _Pointwise(_Op):
    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, x: torch.Tensor, state: States | None) -> tuple[torch.Tensor, States]:
        return self.module(x), []


class _Conv(_Op):
    """Causal stride-1 conv: carry the last (kernel - 1) * dilation inputs."""

    def __init__(self, layer: SConv1d):
        conv = layer.conv.conv
        if not layer.causal or conv.stride[0] != 1:
            raise ValueError("streaming needs causal stride-1 convs in the decoder")
        self.layer, self.conv = layer, conv
        self.context = (conv.kernel_size[0] - 1) * conv.dilation[0]
        self.n_state = 1 if self.context else 0

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> States:
        if not self.context:
            return []
        return [torch.zeros(batch_size, self.conv.in_channels, self.context, device=device, dtype=dtype)]

    def __call__(self, x: torch.Tensor, state: States | None) -> tuple[torch.Tensor, States]:
        if state is None:
            if x.shape[-1] <= self.context:
                raise ValueError(f"stream start needs > {self.context} samples, got {x.shape[-1]}")
            y = self.layer(x)  # reflect-padded on the left, as in one-shot
        else:
            if self.context:
                x = torch.cat([state[0], x], dim=-1)  # (B, C, context + T)
            y = self.conv(x)  # (B, C_out, T)
        return y, [x[..., -self.context :].clone()] if self.context else []


class _ConvTranspose(_Op):
    """Causal transposed conv: carry the (kernel - stride) overlap tail, bias excluded."""

    def __init__(self, layer: SConvTranspose1d):
        convtr = layer.convtr.convtr
        if not layer.causal or layer.trim_right_ratio != 1.0:
            raise ValueError("streaming needs causal transposed convs trimmed on the right")
        self.convtr = convtr
        self.stride = convtr.stride[0]
        self.overlap = convtr.kernel_size[0] - self.stride
        self.n_state = 1

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> States:
        return [torch.zeros(batch_size, self.convtr.out_channels, self.overlap, device=device, dtype=dtype)]

    def __call__(self, x: torch.Tensor, state: States | None) -> tuple[torch.Tensor, States]:
        y = F.conv_transpose1d(x, self.convtr.weight, None, self.convtr.stride)  # (B, C, T*s + overlap)
        if state is not None:
            y[..., : self.overlap] += state[0]
        n = x.shape[-1] * self.stride
        out = y[..., :n]  # (B, C, T*s): final, no later input reaches these samples
        if self.convtr.bias is not None:
            out = out + self.convtr.bias[:, None]
        return out, [y[..., n:].clone()]  # (B, C, overlap)


class _LSTM(_Op):
    """SLSTM with (h, c) carried; stored batch-first as (B, layers, H)."""

    def __init__(self, layer: SLSTM):
        self.lstm, self.skip = layer.lstm, layer.skip
        self.n_state = 2

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> States:
        shape = (batch_size, self.lstm.num_layers, self.lstm.hidden_size)
        return [torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)]

    def __call__(self, x: torch.Tensor, state: States | None) -> tuple[torch.Tensor, States]:
        x = x.permute(2, 0, 1)  # (T, B, C)
        hx = None if state is None else tuple(s.transpose(0, 1).contiguous() for s in state)
        y, (h, c) = self.lstm(x, hx)  # (T, B, C), (layers, B, H) x 2
        if self.skip:
            y = y + x
        return y.permute(1, 2, 0), [h.transpose(0, 1), c.transpose(0, 1)]  # (B, C, T)


class _Sequence(_Op):
    def __init__(self, ops: list[_Op]):
        self.ops = ops
        self.n_state = sum(op.n_state for op in ops)

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> States:
        return [s for op in self.ops for s in op.init_state(batch_size, device, dtype)]

    def __call__(self, x: torch.Tensor, state: States | None) -> tuple[torch.Tensor, States]:
        new: States = []
        i = 0
        for op in self.ops:
            x, s = op(x, None if state is None else state[i : i + op.n_state])
            new += s
            i += op.n_state
        return x, new


class _Residual(_Op):
    def __init__(self, shortcut: _Op, block: _Op):
        self.shortcut, self.block = shortcut, block
        self.n_state = shortcut.n_state + block.n_state

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> States:
        return self.shortcut.init_state(batch_size, device, dtype) + self.block.init_state(batch_size, device, dtype)

    def __call__(self, x: torch.Tensor, state: States | None) -> tuple[torch.Tensor, States]:
        k = self.shortcut.n_state
        a, sa = self.shortcut(x, None if state is None else state[:k])
        b, sb = self.block(x, None if state is None else state[k:])
        return a + b, sa + sb


def _streaming_op(module: nn.Module) -> _Op:
    if isinstance(module, nn.Sequential):
        return _Sequence([_streaming_op(m) for m in module])
    if isinstance(module, SConv1d):
        return _Conv(module)
    if isinstance(module, SConvTranspose1d):
        return _ConvTranspose(module)
    if isinstance(module, SLSTM):
        return _LSTM(module)
    if isinstance(module, SEANetResnetBlock):
        return _Residual(_streaming_op(module.shortcut), _streaming_op(module.block))
    if isinstance(module, nn.ELU | nn.Identity | nn.Tanh):
        return _Pointwise(module)
    raise TypeError(f"no streaming version of {type(module).__name__}")


class StreamingDecoder:
    """Stateful EnCodec decoder: concatenated outputs equal `Codec.decode` for any chunking."""

    def __init__(self, codec: Codec):
        self.codec = codec
        self.net = _streaming_op(codec.model.decoder.model)
        first = self.net.ops[0]
        if not isinstance(first, _Conv) or not first.context:
            raise TypeError("expected the SEANet decoder to start with a conv with left context")
        self.context = first.context  # latent frames of left context of the first conv: 6
        self.warmup = first.context + 1  # frames before the first sample can be final: 7
        self.hop_length = codec.hop_length

    def emitted_samples(self, frames: int) -> int:
        """Samples `step` has returned after `frames` frames in total (any chunking), before `flush`."""
        return frames * self.hop_length if frames >= self.warmup else 0

    @torch.inference_mode()
    def init_state(self, batch_size: int) -> StreamState:
        tensors = self.net.init_state(batch_size, self.codec.device, self.codec.dtype)
        return StreamState(frames=(0,) * batch_size, tensors=tuple(tensors))

    @torch.inference_mode()
    def step(self, codes: torch.Tensor, state: StreamState) -> tuple[torch.Tensor, list[int], StreamState]:
        """Feed t more frames to every row: codes (B, 8, t) -> (pcm (B, n), lengths, new state).

        Row i's new samples are pcm[i, :lengths[i]] (zero padding after). lengths[i] is
        t * 320 once the row has 7 frames, 0 before, and all its samples so far on the step
        that crosses 7 (see `emitted_samples`).
        """
        if codes.shape[0] != state.batch_size:
            raise ValueError(f"codes have {codes.shape[0]} rows, state has {state.batch_size}")
        emb = self.codec.embed(codes)  # (B, 128, t)
        B, t = emb.shape[0], emb.shape[-1]
        frames = tuple(f + t for f in state.frames)
        lengths = [self.emitted_samples(f + t) - self.emitted_samples(f) for f in state.frames]
        if t == 0:
            return emb.new_zeros(B, 0), lengths, state
        if all(f >= self.warmup for f in state.frames):  # steady state: one batched call
            y, tensors = self.net(emb, list(state.tensors))  # (B, 1, t * 320)
            return y[:, 0], lengths, StreamState(frames, tuple(tensors))

        # Some rows are still before or at their start: one call per group of rows in the same phase.
        groups: dict[int, list[int]] = {}  # frames before this step (-1: running) -> rows
        for i, f in enumerate(state.frames):
            if lengths[i]:
                groups.setdefault(-1 if f >= self.warmup else f, []).append(i)
        history = torch.cat([state.tensors[0], emb], dim=-1)  # (B, 128, 6 + t)
        tensors = [s.clone() for s in state.tensors]
        tensors[0] = history[..., -self.context :].clone()  # rows that only buffer
        pcm = emb.new_zeros(B, max(lengths))  # (B, n)
        for f, rows in groups.items():
            idx = torch.as_tensor(rows, dtype=torch.long, device=emb.device)
            if f < 0:
                y, new = self.net(emb[idx], [s[idx] for s in state.tensors])
            else:  # first chunk of these rows: their whole history, started with reflect padding
                y, new = self.net(history[idx, :, self.context - f :], None)
            pcm[idx, : y.shape[-1]] = y[:, 0]
            for s, n in zip(tensors, new, strict=True):
                s[idx] = n
        return pcm, lengths, StreamState(frames, tuple(tensors))

    @torch.inference_mode()
    def flush(self, state: StreamState) -> tuple[torch.Tensor, list[int]]:
        """End of stream for every row: (pcm (B, n), lengths); non-empty only for rows under 7 frames.

        Those rows never started; one-shot decoding of their buffered latents is, by
        definition, the reference output (the decoder zero-extends before reflecting).
        """
        lengths = [f * self.hop_length if f < self.warmup else 0 for f in state.frames]
        pcm = state.tensors[0].new_zeros(state.batch_size, max(lengths, default=0))  # (B, n)
        groups: dict[int, list[int]] = {}
        for i, f in enumerate(state.frames):
            if lengths[i]:
                groups.setdefault(f, []).append(i)
        for f, rows in groups.items():
            idx = torch.as_tensor(rows, dtype=torch.long, device=pcm.device)
            latents = state.tensors[0][idx, :, self.context - f :]  # (b, 128, f)
            pcm[idx, : f * self.hop_length] = self.codec.model.decoder(latents)[:, 0]
        return pcm, lengths

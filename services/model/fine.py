"""Bark's non-causal fine model: predicts codebooks 2..7 over 1024-frame windows.

Input embeddings of codebooks 0..pred_idx are summed; head `pred_idx - 1`
gives the logits of codebook `pred_idx`. Heads 0..6 share their weights with
input embeddings 1..7. Both LayerNorms are full `nn.LayerNorm` (with bias), as
in Suno's FineBlock, even though the linears have no bias.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import FineGPTConfig
from .gpt import MLP


class NonCausalSelfAttention(nn.Module):
    def __init__(self, config: FineGPTConfig):
        super().__init__()
        self.att_proj = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.out_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head = config.n_head
        self.n_embd = config.n_embd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape  # (B, T, C)
        q, k, v = self.att_proj(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.out_proj(y)


class FineBlock(nn.Module):
    def __init__(self, config: FineGPTConfig):
        super().__init__()
        self.layernorm_1 = nn.LayerNorm(config.n_embd)
        self.attn = NonCausalSelfAttention(config)
        self.layernorm_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.layernorm_1(x))
        x = x + self.mlp(self.layernorm_2(x))
        return x


class FineGPT(nn.Module):
    def __init__(self, config: FineGPTConfig):
        super().__init__()
        self.config = config
        self.input_embeds_layers = nn.ModuleList(
            [nn.Embedding(config.input_vocab_size, config.n_embd) for _ in range(config.n_codes_total)]
        )
        self.position_embeds_layer = nn.Embedding(config.block_size, config.n_embd)
        self.layers = nn.ModuleList([FineBlock(config) for _ in range(config.n_layer)])
        self.layernorm_final = nn.LayerNorm(config.n_embd)
        n_heads = config.n_codes_total - config.n_codes_given
        self.lm_heads = nn.ModuleList(
            [nn.Linear(config.n_embd, config.output_vocab_size, bias=False) for _ in range(n_heads)]
        )
        for i in range(n_heads):
            self.lm_heads[i].weight = self.input_embeds_layers[i + config.n_codes_given].weight

    def forward(self, pred_idx: int, codes: torch.Tensor) -> torch.Tensor:
        """codes: (B, T, 8) int -> logits (B, T, V) float32 for codebook `pred_idx`."""
        assert pred_idx >= self.config.n_codes_given, "codebooks below n_codes_given are inputs"
        B, T, _ = codes.shape
        pos = torch.arange(T, device=codes.device)[None]  # (1, T)
        embs = [self.input_embeds_layers[i](codes[:, :, i]) for i in range(pred_idx + 1)]
        x = torch.stack(embs, dim=-1).sum(dim=-1)  # (B, T, C)
        x = x + self.position_embeds_layer(pos)  # (B, T, C)
        for block in self.layers:
            x = block(x)
        x = self.layernorm_final(x)
        return self.lm_heads[pred_idx - self.config.n_codes_given](x).float()  # (B, T, V)

"""Runnable torch versions of the composite blocks, with the parameter names the planner gives them
(registered under their spec types in initium.service.model.modules.MODULES)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from initium.schemas import spec as s

_ACT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}


class Attention(nn.Module):
    def __init__(self, d: int, n_heads: int, n_kv: int, bias: bool) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = n_heads, n_kv, d // n_heads
        self.q_proj, self.k_proj = nn.Linear(d, d, bias=bias), nn.Linear(d, n_kv * self.head_dim, bias=bias)
        self.v_proj, self.o_proj = nn.Linear(d, n_kv * self.head_dim, bias=bias), nn.Linear(d, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        repeat = self.n_heads // self.n_kv
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out: torch.Tensor = self.o_proj(y.transpose(1, 2).reshape(b, t, -1))
        return out


class MLP(nn.Module):
    def __init__(self, d: int, h: int, bias: bool, gated: bool, act: str) -> None:
        super().__init__()
        self.gated, self.act = gated, _ACT[act]
        if gated:
            self.gate_proj, self.up_proj = nn.Linear(d, h, bias=bias), nn.Linear(d, h, bias=bias)
            self.down_proj = nn.Linear(h, d, bias=bias)
        else:
            self.fc1, self.fc2 = nn.Linear(d, h, bias=bias), nn.Linear(h, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            out: torch.Tensor = self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
            return out
        out = self.fc2(self.act(self.fc1(x)))
        return out


class TransformerBlock(nn.Module):
    """Pre-norm: x + attn(norm1(x)), then + mlp(norm2(.)); post-norm: norm1(x + attn(x)), norm2(. + mlp(.))."""

    def __init__(self, m: s.TransformerBlock) -> None:
        super().__init__()
        d = m.d_model

        def norm() -> nn.Module:
            return nn.RMSNorm(d) if m.norm == "rms_norm" else nn.LayerNorm(d, bias=m.bias)

        self.norm_first = m.norm_first
        self.norm1, self.attn = norm(), Attention(d, m.n_heads, m.n_kv_heads or m.n_heads, m.bias)
        self.norm2, self.mlp = norm(), MLP(d, m.hidden(), m.bias, m.gated_mlp, m.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.attn(self.norm1(x))
            out: torch.Tensor = x + self.mlp(self.norm2(x))
            return out
        x = self.norm1(x + self.attn(x))
        out = self.norm2(x + self.mlp(x))
        return out


class ResNetBlock(nn.Module):
    """torchvision's BasicBlock and Bottleneck."""

    def __init__(self, m: s.ResNetBasicBlock | s.ResNetBottleneck) -> None:
        super().__init__()
        self.bottleneck = isinstance(m, s.ResNetBottleneck)
        if not self.bottleneck:
            out = m.channels
            self.conv1 = nn.Conv2d(m.in_channels, out, 3, m.stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out)
            self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out)
        else:
            width, out = int(m.channels * (m.base_width / 64.0)) * m.groups, m.channels * 4
            self.conv1 = nn.Conv2d(m.in_channels, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, m.stride, 1, groups=m.groups, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
        self.downsample: nn.Module | None = None
        if m.stride != 1 or m.in_channels != out:
            self.downsample = nn.Sequential(nn.Conv2d(m.in_channels, out, 1, m.stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.bottleneck:
            y = self.bn3(self.conv3(F.relu(y)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(y + identity)

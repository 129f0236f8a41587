"""This project's earlier conv attention designs: ``qkv1D_dense``, ``qkv2D_dense``,
``qkvg1D_dense`` (full-rate or uniformly strided projections, plain attention output)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from longsep.errors import LongsepError
from longsep.models.attention.base import (
    Attention,
    DepthwiseSeparable,
    _conv_time,
    _odd,
    _same_length,
)


class QKV1DDense(Attention):
    """``qkv1D_dense``: q / k / v from 1-D convolutions over time; keys and values strided
    by ``kv_stride``; output ``out_proj(attn)``.

    Queries use ``kernel_size`` ('same' padding). Keys and values use
    ``kv_kernel_size`` (default: odd, >= ``kv_stride``) with stride ``kv_stride``,
    giving ``ceil(frames / kv_stride)`` keys; key ``j`` is centred on frame
    ``j * kv_stride``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        window: int | None = None,
        kernel_size: int = 3,
        kv_stride: int = 4,
        kv_kernel_size: int | None = None,
    ) -> None:
        super().__init__(dim, heads, dropout, window, kv_stride)
        kernel_size = _odd("kernel_size", kernel_size)
        if kv_kernel_size is None:
            kv_kernel_size = max(kernel_size, kv_stride + 1 - kv_stride % 2)
        kv_kernel_size = _odd("kv_kernel_size", kv_kernel_size)
        self.q_conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2)
        self.k_conv = nn.Conv1d(
            dim, dim, kv_kernel_size, stride=kv_stride, padding=kv_kernel_size // 2
        )
        self.v_conv = nn.Conv1d(
            dim, dim, kv_kernel_size, stride=kv_stride, padding=kv_kernel_size // 2
        )
        self.out_proj = nn.Linear(dim, dim)

    def project(self, x: Tensor, source: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return (
            _conv_time(self.q_conv, x),
            _conv_time(self.k_conv, source),
            _conv_time(self.v_conv, source),
        )


class HeadProjection(nn.Module):
    """Per-head linear map of conv channels: ``(batch, channels, frames, dim)`` to
    ``(batch, frames, dim)``, each head mixing its ``channels x head_dim`` inputs."""

    def __init__(self, heads: int, channels: int, head_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(channels * head_dim)
        self.weight = nn.Parameter(
            torch.empty(heads, channels, head_dim, head_dim).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.zeros(heads, head_dim))

    def forward(self, t: Tensor) -> Tensor:
        b, c, n, _ = t.shape
        h, _, e, _ = self.weight.shape
        out = torch.einsum("bcnhe,hcef->bnhf", t.reshape(b, c, n, h, e), self.weight)
        return (out + self.bias).reshape(b, n, h * e)


class QKV2DDense(Attention):
    """``qkv2D_dense``: q / k / v from 2-D convolutions over the (time x feature) plane.

    The sequence is treated as a one-channel image ``(batch, 1, frames, dim)``;
    a ``(kernel_time, kernel_freq)`` conv with ``channels`` outputs ('same'
    padding) is followed by a per-head linear projection back to ``head_dim``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        window: int | None = None,
        channels: int = 4,
        kernel_time: int = 3,
        kernel_freq: int = 3,
    ) -> None:
        super().__init__(dim, heads, dropout, window)
        kernel = (_odd("kernel_time", kernel_time), _odd("kernel_freq", kernel_freq))
        padding = (kernel[0] // 2, kernel[1] // 2)
        self.convs = nn.ModuleDict(
            {n: nn.Conv2d(1, channels, kernel, padding=padding) for n in ("q", "k", "v")}
        )
        self.heads_proj = nn.ModuleDict(
            {n: HeadProjection(heads, channels, self.head_dim) for n in ("q", "k", "v")}
        )
        self.out_proj = nn.Linear(dim, dim)

    def _one(self, name: str, t: Tensor) -> Tensor:
        return self.heads_proj[name](self.convs[name](t.unsqueeze(1)))

    def project(self, x: Tensor, source: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self._one("q", x), self._one("k", source), self._one("v", source)


GATES: dict[str, Callable[[Tensor], Tensor]] = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}


class QKVG1DDense(Attention):
    """``qkvg1D_dense``: gated attention with full-rate depthwise-separable conv
    projections for q, k, v and g.

    Output: ``out_proj(gate(g) * attention + v)``; ``v`` is passed through as a
    skip, so a cross-attention context must have as many frames as ``x``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        window: int | None = None,
        kernel_size: int = 3,
        gate: str = "sigmoid",
    ) -> None:
        super().__init__(dim, heads, dropout, window)
        if gate not in GATES:
            raise LongsepError(f"attention.gate={gate!r} is not one of {sorted(GATES)}")
        kernel_size = _odd("kernel_size", kernel_size)
        self.gate = gate
        self.projs = nn.ModuleDict(
            {n: DepthwiseSeparable(dim, kernel_size) for n in ("q", "k", "v", "g")}
        )
        self.out_proj = nn.Linear(dim, dim)

    def project(self, x: Tensor, source: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        _same_length("qkvg1D_dense", x, source)
        return self.projs["q"](x), self.projs["k"](source), self.projs["v"](source)

    def output(self, attn: Tensor, x: Tensor, source: Tensor, v: Tensor) -> Tensor:
        return self.out_proj(GATES[self.gate](self.projs["g"](x)) * attn + v)


# --- the original study's designs ---------------------------------------------------

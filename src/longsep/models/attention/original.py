"""The original study's attention designs (legoodmanner/sequence_length_ss):
``qkv1D``, ``qkv2D``, ``qkvg1D``, with strided keys and a full-rate local path."""

from __future__ import annotations

from collections.abc import Sequence

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


class ConvProjection(nn.Module):
    """Conv over time (``dim`` to ``expand * dim`` channels, odd ``kernel_size``, 'same'
    padding, ``stride``) then a linear map back to ``dim``: ``(batch, frames, dim)`` to
    ``(batch, ceil(frames / stride), dim)``, output ``j`` centred on frame ``j * stride``."""

    def __init__(self, dim: int, kernel_size: int, stride: int = 1, expand: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            dim, expand * dim, kernel_size, stride=stride, padding=kernel_size // 2
        )
        self.linear = nn.Linear(expand * dim, dim)

    def forward(self, t: Tensor) -> Tensor:
        return self.linear(_conv_time(self.conv, t))


class QKV1D(Attention):
    """``qkv1D``, the original study's conv1D attention.

    Queries, keys and local values are :class:`ConvProjection` s (``kernel_size``,
    the original's 7); keys are strided by ``kv_stride`` (4), so attention runs over
    ``ceil(frames / kv_stride)`` locally summarised frames, and the keys are also
    the attended values (the original attends with queries and keys only). The
    heads' outputs ``a`` are mixed across heads, ``m = a + a W`` (``W``: heads x
    heads), and gate full-rate local values: output ``tanh(m) * v``, head by head,
    without an output projection. ``v`` comes from the source at full rate, so a
    cross-attention context must be as long as ``x``. The original's convs are
    ``heads`` times wider than ``dim`` (``expand=heads``); ``expand=1`` keeps the
    parameter count near the other variants'.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        window: int | None = None,
        kernel_size: int = 7,
        kv_stride: int = 4,
        expand: int = 1,
    ) -> None:
        super().__init__(dim, heads, dropout, window, kv_stride)
        kernel_size = _odd("kernel_size", kernel_size)
        if expand < 1:
            raise LongsepError(f"attention.expand={expand} must be >= 1")
        self.q_proj = ConvProjection(dim, kernel_size, 1, expand)
        self.k_proj = ConvProjection(dim, kernel_size, kv_stride, expand)
        self.v_proj = ConvProjection(dim, kernel_size, 1, expand)
        self.head_mix = nn.Linear(heads, heads, bias=False)

    def project(self, x: Tensor, source: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        _same_length("qkv1D", x, source)
        keys = self.k_proj(source)
        return self.q_proj(x), keys, keys

    def output(self, attn: Tensor, x: Tensor, source: Tensor, v: Tensor) -> Tensor:
        b, n, _ = attn.shape
        heads = attn.reshape(b, n, self.heads, self.head_dim)
        mixed = heads + self.head_mix(heads.transpose(2, 3)).transpose(2, 3)
        local = self.v_proj(source).reshape(b, n, self.heads, self.head_dim)
        return (torch.tanh(mixed) * local).reshape(b, n, self.dim)


class QKVG1D(Attention):
    """``qkvg1D``, the original study's gated conv1D attention.

    Four :class:`DepthwiseSeparable` projections (``kernel_size``, the original's
    3): queries and local values ``v`` at full rate; keys and the attended values
    (the original's "gates" ``g``) strided by ``kv_stride`` (4), so attention runs
    over ``ceil(frames / kv_stride)`` frames. Output ``out_proj([attn, v])``, a
    linear map of the concatenated attention output and local values. ``v`` comes
    from the source at full rate, so a cross-attention context must be as long as ``x``.
    ``temperature``: the original's learned softmax temperature (one parameter of the
    separator, initialised to 1, shared by the layers); off for model files that predate it.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        window: int | None = None,
        kernel_size: int = 3,
        kv_stride: int = 4,
        temperature: bool = False,
    ) -> None:
        super().__init__(dim, heads, dropout, window, kv_stride)
        self.learned_temperature = bool(temperature)
        kernel_size = _odd("kernel_size", kernel_size)
        strides = {"q": 1, "k": kv_stride, "g": kv_stride, "v": 1}
        self.projs = nn.ModuleDict(
            {n: DepthwiseSeparable(dim, kernel_size, s) for n, s in strides.items()}
        )
        self.out_proj = nn.Linear(2 * dim, dim)

    def project(self, x: Tensor, source: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        _same_length("qkvg1D", x, source)
        return self.projs["q"](x), self.projs["k"](source), self.projs["g"](source)

    def output(self, attn: Tensor, x: Tensor, source: Tensor, v: Tensor) -> Tensor:
        return self.out_proj(torch.cat([attn, self.projs["v"](source)], dim=-1))


class ImageProjection(nn.Module):
    """``(batch, frames, dim)`` as a one-channel image through a square ``Conv2d``
    (``channels`` maps, 'same' padding, stride ``(stride, 1)``, no bias) and
    ``BatchNorm2d``, then a linear map of the channels to ``heads`` maps (no bias):
    ``(batch, ceil(frames / stride), heads * dim)``, each head ``dim`` features."""

    def __init__(self, heads: int, channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            1, channels, kernel_size, stride=(stride, 1), padding=kernel_size // 2, bias=False
        )
        self.norm = nn.BatchNorm2d(channels)
        self.to_heads = nn.Linear(channels, heads, bias=False)

    def forward(self, t: Tensor) -> Tensor:
        maps = self.norm(self.conv(t.unsqueeze(1)))  # (batch, channels, frames, dim)
        out = torch.einsum("bcnd,hc->bnhd", maps, self.to_heads.weight)
        return out.reshape(out.shape[0], out.shape[1], -1)


def _time_stride(kv_stride: int | Sequence[int]) -> int:
    """``4`` or ``[4, 1]`` (time, features) to the time stride; features are not strided."""
    if isinstance(kv_stride, int):
        return kv_stride
    stride = tuple(kv_stride)
    if len(stride) != 2 or stride[1] != 1:
        raise LongsepError(
            f"attention.kv_stride={list(stride)} must be a time stride or [time, 1] "
            "(features are not strided)"
        )
    return int(stride[0])


class QKV2D(Attention):
    """``qkv2D``, the original study's conv2D attention.

    Queries, keys and values are :class:`ImageProjection` s (``channels`` 16,
    ``kernel_size`` 5); keys and values strided ``kv_stride`` = (2, 1) over (time,
    features), so attention runs over ``ceil(frames / 2)`` frames. Each of the
    ``n_heads`` heads (default: the separator's ``heads``) keeps all ``dim``
    features (``head_dim = dim``); ``out_proj`` maps ``heads * dim`` to ``dim``
    (no bias).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        window: int | None = None,
        channels: int = 16,
        kernel_size: int = 5,
        kv_stride: int | Sequence[int] = 2,
        n_heads: int | None = None,
    ) -> None:
        heads = n_heads or heads
        super().__init__(dim, heads, dropout, window, _time_stride(kv_stride), head_dim=dim)
        kernel_size = _odd("kernel_size", kernel_size)
        self.q_proj = ImageProjection(heads, channels, kernel_size)
        self.k_proj = ImageProjection(heads, channels, kernel_size, self.kv_stride)
        self.v_proj = ImageProjection(heads, channels, kernel_size, self.kv_stride)
        self.out_proj = nn.Linear(heads * dim, dim, bias=False)

    def project(self, x: Tensor, source: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.q_proj(x), self.k_proj(source), self.v_proj(source)

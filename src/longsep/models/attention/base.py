"""Shared attention machinery: blockwise SDPA, the Attention base class, MHA, helpers."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longsep.errors import LongsepError
from longsep.models.layers import RotaryEmbedding

AttentionFactory = Callable[..., nn.Module]


def _sdpa(q: Tensor, k: Tensor, v: Tensor, dropout_p: float) -> Tensor:
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


def _blocks(t: Tensor, count: int, size: int) -> Tensor:
    """``(batch, heads, count * size, d)`` to ``(batch, heads * count, size, d)``."""
    b, h, _, d = t.shape
    return t[:, :, : count * size].reshape(b, h * count, size, d)


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    dropout_p: float = 0.0,
    window: int | None = None,
    kv_window: int | None = None,
) -> Tensor:
    """Scaled dot-product attention, global or within blocks.

    ``q``: ``(batch, heads, frames, head_dim)``; ``k``, ``v``:
    ``(batch, heads, kv_frames, head_dim)``; returns the shape of ``q``. With
    ``window``, query block ``i`` (``window`` frames) attends to key block ``i``
    (``kv_window`` keys, default ``window``); the last blocks may be shorter.
    """
    if window is None:
        return _sdpa(q, k, v, dropout_p)
    kv_window = kv_window or window
    tq, tk = q.shape[2], k.shape[2]
    count = math.ceil(tq / window)
    if math.ceil(tk / kv_window) != count:
        raise LongsepError(
            f"local attention: {tq} queries in windows of {window} do not match {tk} keys "
            f"in windows of {kv_window}; use window=null for this input"
        )
    full = count if (tq % window == 0 and tk % kv_window == 0) else count - 1
    b, h, _, d = q.shape
    parts = []
    if full:
        out = _sdpa(
            _blocks(q, full, window),
            _blocks(k, full, kv_window),
            _blocks(v, full, kv_window),
            dropout_p,
        )
        parts.append(out.reshape(b, h, full * window, d))
    if full < count:
        qs, ks = full * window, full * kv_window
        parts.append(_sdpa(q[:, :, qs:], k[:, :, ks:], v[:, :, ks:], dropout_p))
    return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]


class Attention(nn.Module):
    """Shared multi-head machinery; subclasses define the projections.

    Subclasses implement :meth:`project` (q from ``x``; k, v from the source
    sequence, all ``(batch, frames, heads * head_dim)``; k, v may be strided by
    :attr:`kv_stride` over time) and may override :meth:`output`. ``head_dim``
    defaults to ``dim // heads``. A module with :attr:`learned_temperature` asks its
    separator for one learned softmax temperature shared by every layer, passed to
    :meth:`forward` as ``temperature`` (the logits are multiplied by it).
    """

    learned_temperature: bool = False

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        window: int | None = None,
        kv_stride: int = 1,
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        if kv_stride < 1:
            raise LongsepError(f"attention.kv_stride={kv_stride} must be >= 1")
        self.kv_stride = kv_stride
        if head_dim is None and dim % heads:
            raise LongsepError(f"attention: dim={dim} is not divisible by heads={heads}")
        if window is not None and (window < 1 or window % self.kv_stride):
            raise LongsepError(
                f"attention.window={window} must be a positive multiple of "
                f"kv_stride={self.kv_stride} (or null)"
            )
        self.dim, self.heads = dim, heads
        self.head_dim = head_dim or dim // heads
        self.dropout = dropout
        self.window = window

    def key_frames(self, frames: int) -> int:
        """How many keys attention sees for a source of ``frames`` frames."""
        return math.ceil(frames / self.kv_stride)

    def project(self, x: Tensor, source: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries from ``x``, keys and values from ``source`` (``(batch, frames, dim)``)."""
        raise NotImplementedError

    def output(self, attn: Tensor, x: Tensor, source: Tensor, v: Tensor) -> Tensor:
        """Map the merged heads ``(batch, frames, heads * head_dim)`` to the layer output."""
        return self.out_proj(attn)

    def _rotary(self, rotary: RotaryEmbedding) -> RotaryEmbedding:
        """``rotary`` if it fits :attr:`head_dim`, else one of the same kind that does."""
        if 2 * rotary.inv_freq.numel() == self.head_dim:
            return rotary
        return RotaryEmbedding(self.head_dim).to(rotary.inv_freq.device)

    def _split(self, t: Tensor) -> Tensor:
        """``(batch, frames, heads * head_dim)`` to ``(batch, heads, frames, head_dim)``, unit
        last stride (which the fused kernels need)."""
        b, n, _ = t.shape
        return t.contiguous().reshape(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        rotary: RotaryEmbedding | None = None,
        temperature: Tensor | None = None,
    ) -> Tensor:
        """``x``: ``(batch, frames, dim)``; ``context``: ``(batch, context_frames, dim)``;
        ``temperature``: a one-element tensor scaling the attention logits."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise LongsepError(
                f"{type(self).__name__} expects (batch, frames, {self.dim}), got {tuple(x.shape)}"
            )
        source = x if context is None else context
        q, k, v = self.project(x, source)
        qh, kh, vh = self._split(q), self._split(k), self._split(v)
        if rotary is not None:
            rotary = self._rotary(rotary)
            qh = rotary(qh, torch.arange(qh.shape[2], device=x.device))
            kh = rotary(kh, torch.arange(kh.shape[2], device=x.device) * self.kv_stride)
        if temperature is not None:
            qh = qh * temperature  # softmax(t q k^T / sqrt(d)): the logits scaled by t
        kv_window = self.window // self.kv_stride if self.window else None
        dropout_p = self.dropout if self.training else 0.0
        out = attend(qh, kh, vh, dropout_p, self.window, kv_window)
        merged = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.output(merged, x, source, v)


class MHA(Attention):
    """Standard multi-head attention with linear q / k / v / out projections."""

    def __init__(
        self, dim: int, heads: int, dropout: float = 0.0, window: int | None = None
    ) -> None:
        super().__init__(dim, heads, dropout, window)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def project(self, x: Tensor, source: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.q_proj(x), self.k_proj(source), self.v_proj(source)


def _odd(name: str, value: int) -> int:
    if value < 1 or value % 2 == 0:
        raise LongsepError(f"attention.{name}={value} must be a positive odd number")
    return value


def _conv_time(conv: nn.Module, t: Tensor) -> Tensor:
    """Apply a ``Conv1d`` over time to ``(batch, frames, dim)``."""
    return conv(t.transpose(1, 2)).transpose(1, 2)


def _same_length(name: str, x: Tensor, source: Tensor) -> None:
    """Variants with a full-rate local path from the source need a context as long as x."""
    if source.shape[1] != x.shape[1]:
        raise LongsepError(
            f"{name} cross-attention needs a context as long as x ({x.shape[1]} frames), "
            f"got {source.shape[1]}"
        )


class DepthwiseSeparable(nn.Module):
    """Depthwise conv over time then a pointwise linear: ``(batch, frames, dim)`` to
    ``(batch, ceil(frames / stride), dim)``."""

    def __init__(self, dim: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(
            dim, dim, kernel_size, stride=stride, padding=kernel_size // 2, groups=dim
        )
        self.pointwise = nn.Linear(dim, dim)

    def forward(self, t: Tensor) -> Tensor:
        return self.pointwise(_conv_time(self.depthwise, t))

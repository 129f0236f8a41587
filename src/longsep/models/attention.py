"""Multi-head attention variants for long spectrogram sequences.

Every variant maps ``x`` of shape ``(batch, frames, dim)`` to the same shape;
``forward(x, context=None, rotary=None)`` with a ``context`` of shape
``(batch, context_frames, dim)`` is cross-attention (keys and values from the
context). Attention weights are computed by
:func:`torch.nn.functional.scaled_dot_product_attention` only, so no frames x
frames tensor is built here and long inputs run on the fused / memory-efficient
kernels. With ``window`` set, queries attend only within blocks of ``window``
frames (local attention, done by splitting the sequence into blocks).

Variants (registry :data:`ATTENTIONS`):

- ``mha``: linear q / k / v / out projections (the control);
- ``qkv1D``: q / k / v from 1-D convolutions over time, keys and values strided
  by ``kv_stride`` (each query sees a shorter, locally summarised sequence);
- ``qkv2D``: q / k / v from 2-D convolutions over the (time x feature) plane, then
  a per-head linear projection to the head size;
- ``qkvg1D``: depthwise-separable 1-D conv projections for q / k / v and a gate
  ``g``; output ``out_proj(gate(g) * attention + v)``.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longsep.errors import LongsepError
from longsep.models.layers import RotaryEmbedding

log = logging.getLogger(__name__)

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
    sequence, all ``(batch, frames, dim)``; k, v may be strided by
    :attr:`kv_stride`) and may override :meth:`output`.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        window: int | None = None,
        kv_stride: int = 1,
    ) -> None:
        super().__init__()
        if kv_stride < 1:
            raise LongsepError(f"attention.kv_stride={kv_stride} must be >= 1")
        self.kv_stride = kv_stride
        if dim % heads:
            raise LongsepError(f"attention: dim={dim} is not divisible by heads={heads}")
        if window is not None and (window < 1 or window % self.kv_stride):
            raise LongsepError(
                f"attention.window={window} must be a positive multiple of "
                f"kv_stride={self.kv_stride} (or null)"
            )
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.dropout = dropout
        self.window = window

    def project(self, x: Tensor, source: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries from ``x``, keys and values from ``source`` (all ``(batch, frames, dim)``)."""
        raise NotImplementedError

    def output(self, attn: Tensor, x: Tensor, v: Tensor) -> Tensor:
        """Map the merged heads ``(batch, frames, dim)`` to the layer output."""
        return self.out_proj(attn)

    def _split(self, t: Tensor) -> Tensor:
        """``(batch, frames, dim)`` to ``(batch, heads, frames, head_dim)``, unit last stride
        (which the fused kernels need)."""
        b, n, _ = t.shape
        return t.contiguous().reshape(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(
        self, x: Tensor, context: Tensor | None = None, rotary: RotaryEmbedding | None = None
    ) -> Tensor:
        """``x``: ``(batch, frames, dim)``; ``context``: ``(batch, context_frames, dim)``."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise LongsepError(
                f"{type(self).__name__} expects (batch, frames, {self.dim}), got {tuple(x.shape)}"
            )
        q, k, v = self.project(x, x if context is None else context)
        qh, kh, vh = self._split(q), self._split(k), self._split(v)
        if rotary is not None:
            qh = rotary(qh, torch.arange(qh.shape[2], device=x.device))
            kh = rotary(kh, torch.arange(kh.shape[2], device=x.device) * self.kv_stride)
        kv_window = self.window // self.kv_stride if self.window else None
        dropout_p = self.dropout if self.training else 0.0
        out = attend(qh, kh, vh, dropout_p, self.window, kv_window)
        return self.output(out.transpose(1, 2).reshape(x.shape), x, v)


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


class QKV1D(Attention):
    """q / k / v from 1-D convolutions over time; keys and values strided by ``kv_stride``.

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


class QKV2D(Attention):
    """q / k / v from 2-D convolutions over the (time x feature) plane.

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


class DepthwiseSeparable(nn.Module):
    """Depthwise conv over time then a pointwise linear: ``(batch, frames, dim)`` kept."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.pointwise = nn.Linear(dim, dim)

    def forward(self, t: Tensor) -> Tensor:
        return self.pointwise(_conv_time(self.depthwise, t))


GATES: dict[str, Callable[[Tensor], Tensor]] = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}


class QKVG1D(Attention):
    """Gated attention with depthwise-separable conv projections for q, k, v and g.

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
        if source.shape[1] != x.shape[1]:
            raise LongsepError(
                f"qkvg1D cross-attention needs a context as long as x ({x.shape[1]} frames), "
                f"got {source.shape[1]}"
            )
        return self.projs["q"](x), self.projs["k"](source), self.projs["v"](source)

    def output(self, attn: Tensor, x: Tensor, v: Tensor) -> Tensor:
        return self.out_proj(GATES[self.gate](self.projs["g"](x)) * attn + v)


ATTENTIONS: dict[str, type[Attention]] = {
    "mha": MHA,
    "qkv1D": QKV1D,
    "qkv2D": QKV2D,
    "qkvg1D": QKVG1D,
}


def build_attention(name: str, dim: int, heads: int, dropout: float = 0.0, **kwargs) -> Attention:
    """Build the attention variant ``name`` (a key of :data:`ATTENTIONS`)."""
    if name not in ATTENTIONS:
        raise LongsepError(f"attention={name!r} is not one of {list(ATTENTIONS)}")
    return ATTENTIONS[name](dim, heads, dropout, **kwargs)


def attention_factory(attention: str | AttentionFactory | None) -> AttentionFactory:
    """A callable ``(dim=, heads=, dropout=) -> module`` from a name, a factory or None (mha)."""
    if attention is None:
        log.info("no attention given: using mha")
        attention = "mha"
    if isinstance(attention, str):
        if attention not in ATTENTIONS:
            raise LongsepError(f"attention={attention!r} is not one of {list(ATTENTIONS)}")
        return functools.partial(build_attention, attention)
    if not callable(attention):
        raise LongsepError(f"attention must be a name or a factory, got {attention!r}")
    return attention

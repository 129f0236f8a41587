"""Multi-head attention variants for long spectrogram sequences.

Every variant maps ``x`` of shape ``(batch, frames, dim)`` to the same shape;
``forward(x, context=None, rotary=None)`` with a ``context`` of shape
``(batch, context_frames, dim)`` is cross-attention (keys and values from the
context). Attention weights are computed by
:func:`torch.nn.functional.scaled_dot_product_attention` only, so no frames x
frames tensor is built here and long inputs run on the fused / memory-efficient
kernels. With ``window`` set, queries attend only within blocks of ``window``
frames (local attention, done by splitting the sequence into blocks).

Variants (registry :data:`ATTENTIONS`). The original study's designs
(legoodmanner/sequence_length_ss, ``utils/attention.py``), under its names:

- ``qkv1D``: conv + linear projections; keys from a stride-4 conv over time, so
  attention runs over ``ceil(frames / 4)`` locally summarised frames (the keys
  are also the attended values); heads mixed by a linear map over heads, and
  ``tanh`` of the result gates full-rate local values: ``tanh(mix(attn)) * v``;
- ``qkv2D``: the sequence as a one-channel image through 5 x 5 ``Conv2d`` (16
  channels) + ``BatchNorm2d`` + a linear map of channels to heads, each head
  keeping all ``dim`` features; keys and values strided (2, 1), so
  ``ceil(frames / 2)`` of them; ``out_proj`` maps ``heads * dim`` back to ``dim``;
- ``qkvg1D``: depthwise-separable conv projections; keys and the attended values
  (the original's "gates") strided by 4; output ``out_proj([attn, v])`` with
  full-rate local values ``v``.

The control and the earlier designs of this project, kept under ``_dense`` names:

- ``mha``: linear q / k / v / out projections (the control);
- ``qkv1D_dense``: q / k / v from 1-D convolutions over time, keys and values
  strided by ``kv_stride``, plain ``out_proj(attn)``;
- ``qkv2D_dense``: q / k / v from 2-D convolutions over the (time x feature)
  plane, then a per-head linear projection to the head size; no stride;
- ``qkvg1D_dense``: depthwise-separable 1-D conv projections for q / k / v and a
  gate ``g``, all at full rate; output ``out_proj(gate(g) * attention + v)``.
"""

from __future__ import annotations

import functools
import logging

from longsep.errors import LongsepError
from longsep.models.attention.base import MHA, Attention, AttentionFactory, attend
from longsep.models.attention.dense import QKV1DDense, QKV2DDense, QKVG1DDense
from longsep.models.attention.original import QKV1D, QKV2D, QKVG1D

log = logging.getLogger(__name__)

__all__ = [
    "ATTENTIONS",
    "MHA",
    "QKV1D",
    "QKV2D",
    "QKVG1D",
    "Attention",
    "AttentionFactory",
    "QKV1DDense",
    "QKV2DDense",
    "QKVG1DDense",
    "attend",
    "attention_factory",
    "build_attention",
]

ATTENTIONS: dict[str, type[Attention]] = {
    "mha": MHA,
    "qkv1D": QKV1D,
    "qkv2D": QKV2D,
    "qkvg1D": QKVG1D,
    "qkv1D_dense": QKV1DDense,
    "qkv2D_dense": QKV2DDense,
    "qkvg1D_dense": QKVG1DDense,
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

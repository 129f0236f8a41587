"""A transformer U-Net over time: encoder layers kept as skips, decoder layers
cross-attending to the matching encoder output, Open-Unmix's front end and head."""

from __future__ import annotations

import math

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from longsep.errors import LongsepError
from longsep.models.attention import AttentionFactory, attention_factory
from longsep.models.layers import TransformerCore, TransformerLayer


class AutoTransformer(TransformerCore):
    """Magnitude ``(batch, channels, bins, frames)`` to the target's, same shape.

    ``nb_layers`` encoder layers, then ``nb_layers`` decoder layers; decoder ``j``
    (self-attention, cross-attention, feed-forward) attends to the output of
    encoder ``nb_layers - 1 - j``. With ``downsample`` r > 1 each encoder level
    but the last is followed by a strided conv (time / r) and each decoder level
    but the first is preceded by a transposed conv (time x r), cropped back to
    the frame count of its encoder level. Other options as
    :class:`~longsep.models.umx_transformer.UMXTransformer`.
    """

    def __init__(
        self,
        nb_bins: int = 4096,
        nb_channels: int = 2,
        hidden_size: int = 512,
        nb_layers: int = 3,
        heads: int = 8,
        ff_mult: int = 4,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        attention: str | AttentionFactory | None = None,
        positional: str = "sinusoidal",
        max_frames: int | None = None,
        downsample: int = 1,
        input_mean: np.ndarray | None = None,
        input_scale: np.ndarray | None = None,
        max_bin: int | None = None,
        reach: int | None = None,
    ) -> None:
        super().__init__(
            nb_bins,
            nb_channels,
            hidden_size,
            heads,
            dropout,
            positional,
            max_frames,
            input_mean,
            input_scale,
            max_bin,
            reach,
        )
        if downsample < 1:
            raise LongsepError(f"separator.downsample={downsample} must be >= 1")
        if nb_layers < 1:
            raise LongsepError(f"separator.nb_layers={nb_layers} must be >= 1")
        factory = attention_factory(attention)

        def layer(cross: bool) -> TransformerLayer:
            return TransformerLayer(
                hidden_size, heads, factory, ff_mult, dropout, attention_dropout, cross=cross
            )

        self.encoder = nn.ModuleList(layer(False) for _ in range(nb_layers))
        self.decoder = nn.ModuleList(layer(True) for _ in range(nb_layers))
        self.share_temperature()
        self.downsample = downsample
        levels = nb_layers - 1 if downsample > 1 else 0
        self.down = nn.ModuleList(
            nn.Conv1d(hidden_size, hidden_size, downsample, stride=downsample)
            for _ in range(levels)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose1d(hidden_size, hidden_size, downsample, stride=downsample)
            for _ in range(levels)
        )

    def _down(self, level: int, h: Tensor) -> Tensor:
        """``(batch, frames, dim)`` to ``(batch, ceil(frames / r), dim)``."""
        r = self.downsample
        pad = math.ceil(h.shape[1] / r) * r - h.shape[1]
        return self.down[level](F.pad(h.transpose(1, 2), (0, pad))).transpose(1, 2)

    def _up(self, level: int, h: Tensor, frames: int) -> Tensor:
        """``(batch, n, dim)`` to ``(batch, frames, dim)`` (``frames <= n * r``)."""
        return self.up[level](h.transpose(1, 2))[..., :frames].transpose(1, 2)

    def core(self, x: Tensor) -> Tensor:
        """``(batch, frames, hidden)`` through the encoder / decoder U-Net, same shape."""
        h = self.input_drop(self.position(x))
        skips = []
        for i, layer in enumerate(self.encoder):
            h = self.run_layer(layer, h)
            skips.append(h)
            if i < len(self.down):
                h = self._down(i, h)
        for j, layer in enumerate(self.decoder):
            skip = skips[-1 - j]
            if 0 < j <= len(self.up):
                h = self._up(len(self.up) - j, h, skip.shape[1])
            h = self.run_layer(layer, h, skip)
        return self.norm(h)

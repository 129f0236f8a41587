"""UMX with its BiLSTM replaced by a stack of pre-norm transformer encoder layers."""

from __future__ import annotations

import numpy as np
from torch import Tensor, nn

from longsep.models.attention import AttentionFactory, attention_factory
from longsep.models.layers import TransformerCore, TransformerLayer


class UMXTransformer(TransformerCore):
    """Magnitude ``(batch, channels, bins, frames)`` to the target's, same shape.

    Open-Unmix's front end and mask head (:class:`~longsep.models.layers.MaskEstimator`)
    around ``nb_layers`` pre-norm encoder layers of width ``hidden_size``.
    ``attention`` is a factory ``(dim=, heads=, dropout=) -> module`` (e.g. a
    ``_partial_`` Hydra config), a name from :data:`~longsep.models.attention.ATTENTIONS`,
    or None for ``mha``. ``positional``: ``sinusoidal`` | ``learned`` (up to
    ``max_frames``) | ``rotary`` | ``none``. ``dropout`` applies to residual
    branches and the feed-forward; ``attention_dropout`` to the attention weights
    (keep it 0 on CPU: dropout there rules out the fused kernels).
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
        factory = attention_factory(attention)
        self.layers = nn.ModuleList(
            TransformerLayer(hidden_size, heads, factory, ff_mult, dropout, attention_dropout)
            for _ in range(nb_layers)
        )
        self.share_temperature()

    def core(self, x: Tensor) -> Tensor:
        """``(batch, frames, hidden)`` through the encoder stack, same shape."""
        h = self.input_drop(self.position(x))
        for layer in self.layers:
            h = self.run_layer(layer, h)
        return self.norm(h)

"""Open-Unmix (Stöter et al., 2019): a 3-layer BiLSTM mask estimator.

Parameter names, shapes and forward math match ``openunmix.model.OpenUnmix``, so
its state dicts load with ``strict=True`` and give the same output.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor, nn

from longsep.models.layers import MaskEstimator


class UMX(MaskEstimator):
    """Open-Unmix: magnitude ``(batch, channels, bins, frames)`` to the target's, same shape.

    The core is an LSTM over frames (bidirectional unless ``unidirectional``,
    each direction ``hidden_size // 2`` wide, dropout 0.4 between layers). UMX
    has no attention; it takes no ``attention`` argument. ``reach`` (frames) runs the
    LSTM on pieces of the input (:class:`~longsep.models.layers.MaskEstimator`).
    """

    def __init__(
        self,
        nb_bins: int = 4096,
        nb_channels: int = 2,
        hidden_size: int = 512,
        nb_layers: int = 3,
        unidirectional: bool = False,
        input_mean: np.ndarray | None = None,
        input_scale: np.ndarray | None = None,
        max_bin: int | None = None,
        reach: int | None = None,
    ) -> None:
        super().__init__(nb_bins, nb_channels, hidden_size, input_mean, input_scale, max_bin, reach)
        self.lstm = nn.LSTM(
            input_size=hidden_size,
            hidden_size=hidden_size if unidirectional else hidden_size // 2,
            num_layers=nb_layers,
            bidirectional=not unidirectional,
            batch_first=True,
            dropout=0.4 if nb_layers > 1 else 0.0,
        )

    def core(self, x: Tensor) -> Tensor:
        """``(batch, frames, hidden)`` through the LSTM stack, same shape."""
        return self.lstm(x)[0]

"""The inference settings as one typed object; their defaults are declared once, in
``conf/inference/default.yaml``, which ``separate.yaml``, ``evaluate.yaml`` and training's
``evaluate_after`` compose too."""

from __future__ import annotations

import dataclasses
from typing import Any

from longsep.config import GroupOptions


@dataclasses.dataclass(frozen=True)
class InferenceOptions(GroupOptions):
    """How a song is separated (see :class:`~longsep.inference.separator.Separator`);
    ``InferenceOptions.of(cfg, niter=0)`` takes the defaults, then a config, then changes.

    Attributes:
        niter: EM iterations of the Wiener filter (0: mixture phase / soft mask only).
        softmask: initial estimates by ratio masks instead of the mixture phase.
        alpha: exponent applied to the magnitude estimates in the filter.
        residual: add a ``residual`` target, the mixture minus all others.
        wiener_win_len: frames filtered together (None: the whole song at once).
        segment: model window in seconds; ``"auto"`` the models' training length, None
            one pass over the whole song.
        overlap: fraction of a window shared with the next one, in ``[0, 0.5]``.
        device: where the models run (``auto``: the GPU if any; ``cpu``, ``cuda:N``, N).
    """

    GROUP = "inference"

    niter: int
    softmask: bool
    alpha: float
    residual: bool
    wiener_win_len: int | None
    segment: float | str | None
    overlap: float
    device: Any

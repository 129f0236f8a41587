"""Building blocks shared by the separators.

- :class:`MaskEstimator`: Open-Unmix's front end and mask head around a sequence
  core (one implementation of standardisation, bottleneck and output layers);
- :class:`RotaryEmbedding`, :class:`PositionalEncoding`: positional information;
- :class:`TransformerLayer`: a pre-norm encoder (or decoder, with cross-attention)
  layer built around any attention factory.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from longsep.errors import LongsepError


class MaskEstimator(nn.Module):
    """Open-Unmix's spectrogram front end and mask head around a sequence core.

    ``forward`` maps a mixture magnitude ``(batch, channels, bins, frames)`` to a
    target magnitude of the same shape: crop to ``max_bin``, standardise with the
    learnable ``input_mean`` / ``input_scale``, ``fc1`` + ``bn1`` + tanh to
    ``(batch, frames, hidden_size)``, then :meth:`core` (same shape), skip
    concatenation, ``fc2`` + ``bn2`` + ReLU, ``fc3`` + ``bn3`` back to
    ``bins * channels``, ``output_scale`` / ``output_mean``, and a ReLU mask
    applied to the mixture. Parameter names follow ``openunmix.model.OpenUnmix``.

    ``input_mean`` / ``input_scale`` (numpy, ``(bins,)``) are the data mean and
    standard deviation; like Open-Unmix the module stores ``-mean`` and ``1/std``.
    As in Open-Unmix, ``self.nb_bins`` is the number of bins fed to the network
    (``max_bin``) and ``self.nb_output_bins`` the number of input / output bins.
    Training mode needs more than one ``batch x frames`` row (BatchNorm).

    ``reach`` (frames, None: unlimited) limits how far the core can look: the frames are
    cut into pieces of ``reach`` frames laid out from the input's centre
    (:func:`reach_pieces`) and the core runs on each piece alone, so no output frame
    depends on the mixture more than one piece away (the study's arm C).
    """

    def __init__(
        self,
        nb_bins: int = 4096,
        nb_channels: int = 2,
        hidden_size: int = 512,
        input_mean: np.ndarray | None = None,
        input_scale: np.ndarray | None = None,
        max_bin: int | None = None,
        reach: int | None = None,
    ) -> None:
        super().__init__()
        if reach is not None and int(reach) < 1:
            raise LongsepError(f"separator.reach={reach} must be a positive number of frames")
        self.reach = None if reach is None else int(reach)
        self.nb_output_bins = nb_bins
        self.nb_bins = max_bin or nb_bins
        self.nb_channels = nb_channels
        self.hidden_size = hidden_size
        self.fc1 = nn.Linear(self.nb_bins * nb_channels, hidden_size, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden_size)
        self.fc2 = nn.Linear(2 * hidden_size, hidden_size, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden_size)
        self.fc3 = nn.Linear(hidden_size, nb_bins * nb_channels, bias=False)
        self.bn3 = nn.BatchNorm1d(nb_bins * nb_channels)
        mean = torch.zeros(self.nb_bins)
        if input_mean is not None:
            mean = -torch.as_tensor(np.asarray(input_mean)[: self.nb_bins], dtype=torch.float32)
        scale = torch.ones(self.nb_bins)
        if input_scale is not None:
            scale = 1.0 / torch.as_tensor(np.asarray(input_scale)[: self.nb_bins]).float()
        self.input_mean = nn.Parameter(mean)
        self.input_scale = nn.Parameter(scale)
        self.output_scale = nn.Parameter(torch.ones(nb_bins))
        self.output_mean = nn.Parameter(torch.ones(nb_bins))

    def core(self, x: Tensor) -> Tensor:
        """The sequence model: ``(batch, frames, hidden_size)`` to the same shape."""
        raise NotImplementedError

    def core_within_reach(self, x: Tensor) -> Tensor:
        """:meth:`core` on ``(batch, frames, hidden)``, each piece of :func:`reach_pieces`
        on its own (the full pieces as one batch); the whole input without ``reach``."""
        frames = x.shape[1]
        if self.reach is None or frames <= self.reach:
            return self.core(x)
        pieces = reach_pieces(frames, self.reach)
        full = [(a, b) for a, b in pieces if b - a == self.reach]
        start, stop = full[0][0], full[-1][1]
        middle = x[:, start:stop].reshape(-1, self.reach, x.shape[2])
        out = [self.core(middle).reshape(x.shape[0], stop - start, -1)]
        if start:
            out.insert(0, self.core(x[:, :start]))
        if stop < frames:
            out.append(self.core(x[:, stop:]))
        return torch.cat(out, dim=1)

    def _check(self, mag: Tensor) -> None:
        if mag.dim() != 4 or mag.shape[1:3] != (self.nb_channels, self.nb_output_bins):
            raise LongsepError(
                f"{type(self).__name__} expects a magnitude (batch, {self.nb_channels}, "
                f"{self.nb_output_bins}, frames), got {tuple(mag.shape)}"
            )
        if mag.shape[0] < 1 or mag.shape[3] < 1:
            raise LongsepError(f"{type(self).__name__} got an empty input {tuple(mag.shape)}")

    @staticmethod
    def _batchnorm(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
        """BatchNorm over the last axis of ``(batch, frames, features)``."""
        return bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)

    def encode(self, mag: Tensor) -> Tensor:
        """Mixture magnitude ``(batch, channels, bins, frames)`` to ``(batch, frames, hidden)``."""
        b, c, _, t = mag.shape
        x = mag[:, :, : self.nb_bins].permute(0, 3, 1, 2)  # (batch, frames, channels, max_bin)
        x = (x + self.input_mean) * self.input_scale
        x = self.fc1(x.reshape(b, t, c * self.nb_bins))
        return torch.tanh(self._batchnorm(self.bn1, x))

    def decode(self, x: Tensor, y: Tensor, mag: Tensor) -> Tensor:
        """Front-end output ``x`` and core output ``y`` (``(batch, frames, hidden)``) to the
        masked magnitude ``(batch, channels, bins, frames)``."""
        b, c, f, t = mag.shape
        h = F.relu(self._batchnorm(self.bn2, self.fc2(torch.cat([x, y], -1))))
        if not self.training:
            return self._masked_eval(h, mag)
        h = self._batchnorm(self.bn3, self.fc3(h)).reshape(b, t, c, f)
        mask = F.relu(h * self.output_scale + self.output_mean)
        return mask.permute(0, 2, 3, 1) * mag

    def _masked_eval(self, h: Tensor, mag: Tensor) -> Tensor:
        """The output layers in eval mode: ``fc3``, ``bn3`` (running statistics) and the
        output affine folded into one matrix product computed in ``mag``'s layout, so no
        frames-first mask is permuted back (a third of the decoder's time at 30 s)."""
        b, c, f, t = mag.shape
        bn, scale = self.bn3, self.output_scale.repeat(c)
        norm = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        gain = norm * scale
        shift = (bn.bias - bn.running_mean * norm) * scale + self.output_mean.repeat(c)
        mask = torch.matmul(self.fc3.weight * gain[:, None], h.transpose(1, 2))
        mask += shift[:, None]
        mask = mask.relu_().view(b, c, f, t)
        return mask * mag if torch.is_grad_enabled() else mask.mul_(mag)

    def forward(self, mag: Tensor) -> Tensor:
        """Mixture magnitude ``(batch, channels, bins, frames)`` to the target's, same shape."""
        self._check(mag)
        x = self.encode(mag)
        return self.decode(x, self.core_within_reach(x), mag)


def reach_pieces(frames: int, reach: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` frame ranges covering ``frames``, laid out so that one
    piece of ``reach`` frames is centred on the input (frames ``[c - reach // 2, c - reach
    // 2 + reach)``, ``c = frames // 2``) and its neighbours tile outwards; the two edge
    pieces may be shorter. With ``frames <= reach``: one piece, the whole input.

    Centring makes a window's central ``reach`` frames exactly one piece, which is what
    the far-context intervention scores (:mod:`longsep.study.intervention`).
    """
    if frames <= reach:
        return [(0, frames)]
    first = (frames // 2 - reach // 2) % reach
    bounds = [0, *range(first or reach, frames, reach), frames]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding applied to queries / keys ``(batch, heads, frames, head_dim)``.

    Angles are computed on the fly for the given positions, so any length works.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise LongsepError(f"positional=rotary needs an even head size, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, t: Tensor, positions: Tensor) -> Tensor:
        angles = positions.to(self.inv_freq.dtype)[:, None] * self.inv_freq  # (frames, d/2)
        cos, sin = angles.cos().to(t.dtype), angles.sin().to(t.dtype)
        even, odd = t[..., 0::2], t[..., 1::2]
        rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
        return rotated.flatten(-2)


def sinusoidal(frames: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Sinusoidal position table ``(frames, dim)`` (Vaswani et al.)."""
    position = torch.arange(frames, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    table = torch.zeros(frames, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


POSITIONAL = ("sinusoidal", "learned", "rotary", "none")


class PositionalEncoding(nn.Module):
    """Positional information for ``(batch, frames, dim)`` sequences.

    ``sinusoidal`` and ``learned`` add a table to the input (``learned`` needs
    ``max_frames``); ``rotary`` leaves the input alone and exposes :attr:`rotary`
    for the attention layers; ``none`` does nothing.
    """

    def __init__(self, kind: str, dim: int, heads: int, max_frames: int | None = None) -> None:
        super().__init__()
        if kind not in POSITIONAL:
            raise LongsepError(f"separator.positional={kind!r} is not one of {list(POSITIONAL)}")
        self.kind = kind
        self.max_frames = max_frames
        self.rotary = RotaryEmbedding(dim // heads) if kind == "rotary" else None
        self.table = None
        if kind == "learned":
            if not max_frames:
                raise LongsepError("separator.positional=learned needs separator.max_frames")
            self.table = nn.Parameter(torch.randn(max_frames, dim) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        frames = x.shape[1]
        if self.kind == "sinusoidal":
            return x + sinusoidal(frames, x.shape[-1], x.device).to(x.dtype)
        if self.kind == "learned":
            if frames > self.max_frames:
                raise LongsepError(
                    f"positional=learned was built for at most {self.max_frames} frames, got "
                    f"{frames}: use a shorter segment or positional=sinusoidal"
                )
            return x + self.table[:frames]
        return x


class FeedForward(nn.Module):
    """Position-wise MLP ``dim -> hidden -> dim`` with GELU and dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer on ``(batch, frames, dim)``.

    ``x + attn(norm(x))``, then (decoder, ``cross=True``) ``x + cross(norm(x),
    norm(context))``, then ``x + ff(norm(x))``; dropout on every residual branch.
    ``attention`` is a factory called as ``attention(dim=, heads=, dropout=)``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        attention: Callable[..., nn.Module],
        ff_mult: int = 4,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        cross: bool = False,
    ) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = attention(dim=dim, heads=heads, dropout=attention_dropout)
        self.cross = None
        if cross:
            self.norm_cross = nn.LayerNorm(dim)
            self.norm_context = nn.LayerNorm(dim)
            self.cross = attention(dim=dim, heads=heads, dropout=attention_dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult * dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        rotary: RotaryEmbedding | None = None,
        temperature: Tensor | None = None,
    ) -> Tensor:
        x = x + self.drop(self.attn(self.norm_attn(x), rotary=rotary, temperature=temperature))
        if self.cross is not None:
            if context is None:
                raise LongsepError("a decoder layer needs the encoder output as context")
            ctx = self.norm_context(context)
            cross = self.cross(
                self.norm_cross(x), context=ctx, rotary=rotary, temperature=temperature
            )
            x = x + self.drop(cross)
        return x + self.drop(self.ff(self.norm_ff(x)))


class TransformerCore(MaskEstimator):
    """A :class:`MaskEstimator` whose core is built from transformer layers.

    Holds the options shared by the transformer separators (positional
    encoding, final LayerNorm, optional gradient checkpointing of each layer).
    """

    def __init__(
        self,
        nb_bins: int,
        nb_channels: int,
        hidden_size: int,
        heads: int,
        dropout: float,
        positional: str,
        max_frames: int | None,
        input_mean: np.ndarray | None,
        input_scale: np.ndarray | None,
        max_bin: int | None,
        reach: int | None = None,
    ) -> None:
        super().__init__(nb_bins, nb_channels, hidden_size, input_mean, input_scale, max_bin, reach)
        if hidden_size % heads:
            raise LongsepError(
                f"separator.hidden_size={hidden_size} is not divisible by heads={heads}"
            )
        self.position = PositionalEncoding(positional, hidden_size, heads, max_frames)
        self.input_drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden_size)
        self.gradient_checkpointing = False
        self.softmax_temperature: nn.Parameter | None = None

    def share_temperature(self) -> None:
        """Give the separator one learned softmax temperature (initialised to 1) if any of
        its attention modules asks for it; subclasses call this once their layers exist."""
        if any(getattr(m, "learned_temperature", False) for m in self.modules()):
            self.softmax_temperature = nn.Parameter(torch.ones(1))

    def run_layer(self, layer: nn.Module, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Apply ``layer`` (checkpointed when training with gradient checkpointing on)."""
        rotary, temperature = self.position.rotary, self.softmax_temperature
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, x, context, rotary, temperature, use_reentrant=False)
        return layer(x, context, rotary, temperature)

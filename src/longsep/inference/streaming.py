"""Streaming STFT pieces: model windows, on-demand mixture frames, overlap-add ISTFT.

The song's centred STFT frame grid is cut into model windows that overlap
(:func:`crossfade_windows`); :class:`MixtureFrames` computes any window's frames from the
audio slice aligned to the global grid, so they equal those of the full-length STFT;
:class:`OverlapAdd` turns blocks of frames back into finished samples, equal to
``torch.istft`` over the whole song. Only ``O(window)`` frames are held at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from longsep.errors import LongsepError
from longsep.spectral import STFTConfig

_PUSH_ROWS = 2  # signals inverse-transformed together by OverlapAdd.push


def _ramp(length: int) -> Tensor:
    """Raised-cosine fade-in of ``length`` points; ``ramp + ramp.flip(0) == 1``."""
    steps = (torch.arange(length, dtype=torch.float64) + 0.5) / length
    return 0.5 - 0.5 * torch.cos(torch.pi * steps)


def crossfade_windows(
    frames: int, length: int | None, overlap: int
) -> list[tuple[int, int, Tensor]]:
    """Model windows ``(start, end, weight)`` covering ``frames`` STFT frames.

    Windows are ``length`` frames long (one window of all frames if ``length`` is None or
    not shorter than the song) and start every ``length - overlap`` frames; the last one is
    moved back to end on the last frame. Each weight ``(end - start,)`` fades in and out with
    a raised cosine over the overlap with its neighbours and is normalised so that the
    weights of all windows sum to one at every frame.
    """
    if length is None or frames <= length:
        return [(0, frames, torch.ones(frames))]
    if not 0 <= overlap < length:
        raise ValueError(f"overlap {overlap} must be in [0, {length}) frames")
    starts = [*range(0, frames - length, length - overlap), frames - length]
    weights = []
    for k, start in enumerate(starts):
        weight = torch.ones(length, dtype=torch.float64)
        if k > 0:
            shared = starts[k - 1] + length - start
            weight[:shared] *= _ramp(shared)
        if k + 1 < len(starts):
            shared = start + length - starts[k + 1]
            weight[length - shared :] *= _ramp(shared).flip(0)
        weights.append(weight)
    total = torch.zeros(frames, dtype=torch.float64)
    for start, weight in zip(starts, weights, strict=True):
        total[start : start + length] += weight
    return [
        (start, start + length, (weight / total[start : start + length]).float())
        for start, weight in zip(starts, weights, strict=True)
    ]


class Source(Protocol):
    """Audio read by sample range: ``read(lo, hi)`` is ``(batch, channels, hi - lo)`` for
    ``0 <= lo <= hi <= samples``."""

    samples: int

    def read(self, lo: int, hi: int) -> Tensor: ...


class TensorSource:
    """A :class:`Source` over ``(batch, channels, samples)`` audio in memory."""

    def __init__(self, audio_: Tensor) -> None:
        self.audio, self.samples = audio_, audio_.shape[-1]

    def read(self, lo: int, hi: int) -> Tensor:
        return self.audio[..., lo:hi]


class MappedSource:
    """A :class:`Source` whose blocks pass through ``fn`` (batch / channel layouts)."""

    def __init__(self, source: Source, fn: Callable[[Tensor], Tensor]) -> None:
        self.source, self.fn, self.samples = source, fn, source.samples

    def read(self, lo: int, hi: int) -> Tensor:
        return self.fn(self.source.read(lo, hi))


def reflect_read(source: Source, lo: int, hi: int) -> Tensor:
    """Samples ``lo .. hi - 1`` of ``source``, reflected at both ends (``torch.stft``'s
    centre padding), reading only the samples they map to."""
    samples = source.samples
    if lo >= 0 and hi <= samples:
        return source.read(lo, hi)
    index = torch.arange(lo, hi).abs()
    index = torch.where(index >= samples, 2 * (samples - 1) - index, index)
    first, last = int(index.min()), int(index.max()) + 1
    block = source.read(first, last)
    return block.index_select(-1, (index - first).to(block.device))


MAGNITUDE_BLOCK = 256  # frames per transform of MixtureFrames.magnitude


class MixtureFrames:
    """Frames of the centred STFT of a :class:`Source`, computed on demand.

    ``frames(start, end)`` is complex ``(batch, channels, bins, end - start)`` and equals
    ``STFT(audio)[..., start:end]`` while reading only the samples those frames cover.
    """

    def __init__(self, source: Source, config: STFTConfig, device: torch.device) -> None:
        self.source, self.config, self.device = source, config, device
        self.window = torch.hann_window(config.n_fft, device=device)

    def __call__(self, start: int, end: int) -> Tensor:
        cfg, pad = self.config, self.config.n_fft // 2
        lo, hi = start * cfg.hop_length, (end - 1) * cfg.hop_length + cfg.n_fft
        chunk = reflect_read(self.source, lo - pad, hi - pad).to(self.device, torch.float32)
        batch, channels, length = chunk.shape
        spec = torch.stft(
            chunk.reshape(-1, length),
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            window=self.window,
            center=False,
            onesided=True,
            return_complex=True,
        )
        return spec.reshape(batch, channels, cfg.nb_bins, end - start)

    def magnitude(self, start: int, end: int) -> Tensor:
        """``self(start, end).abs()``, transformed :data:`MAGNITUDE_BLOCK` frames at a time:
        a 30-s window's complex spectrogram and framed audio (each 40+ MB) are never held,
        which makes it 2-3x faster on CPU."""
        out: Tensor | None = None
        for lo in range(start, end, MAGNITUDE_BLOCK):
            hi = min(lo + MAGNITUDE_BLOCK, end)
            spec = self(lo, hi)
            if out is None:
                out = spec.real.new_empty(*spec.shape[:-1], end - start)
            torch.abs(spec, out=out[..., lo - start : hi - start])
        return out


class OverlapAdd:
    """Streaming inverse of the centred STFT: blocks of frames in, finished samples out.

    Each pushed block ``(..., bins, n)`` is inverse-transformed, windowed and overlap-added;
    samples that no later frame touches are divided by the window-square envelope and
    returned. Over a whole song this equals ``torch.istft(spec, center=True)``.
    """

    def __init__(self, config: STFTConfig, frames: int, device: torch.device) -> None:
        self.config, self.frames = config, frames
        self.window = torch.hann_window(config.n_fft, device=device)
        self.tail: Tensor | None = None
        self.envelope_tail: Tensor | None = None

    def _fold(self, frames: Tensor) -> Tensor:
        """Overlap-add ``(rows, n_fft, n)`` windowed frames to ``(rows, (n - 1) * hop + n_fft)``."""
        n_fft, hop = self.config.n_fft, self.config.hop_length
        rows, _, count = frames.shape
        length = (count - 1) * hop + n_fft
        if n_fft % hop:
            out = F.fold(frames, output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop))
            return out.reshape(rows, length)
        # hop divides n_fft: frame k's piece i lands on output block k + i (a few strided
        # adds, several times faster than fold's col2im on CPU)
        ratio = n_fft // hop
        pieces = frames.reshape(rows, ratio, hop, count).transpose(-1, -2)
        out = frames.new_zeros(rows, count + ratio - 1, hop)
        for i in range(ratio):
            out[:, i : i + count] += pieces[:, i]
        return out.reshape(rows, length)

    def push(self, spec: Tensor, start: int) -> tuple[int, Tensor]:
        """Add frames ``start .. start + n`` of ``spec``; return (first sample, finished audio).

        The first sample is in the song's (unpadded) sample coordinates and may be negative.
        """
        cfg, count = self.config, spec.shape[-1]
        lead, rows = spec.shape[:-2], spec[..., 0, 0].numel()
        flat = spec.reshape(rows, -1, count)
        signal = self.window.new_empty(rows, (count - 1) * cfg.hop_length + cfg.n_fft)
        for lo in range(0, rows, _PUSH_ROWS):  # a few rows at a time: small frame buffers
            frames = torch.fft.irfft(flat[lo : lo + _PUSH_ROWS], n=cfg.n_fft, dim=-2)
            signal[lo : lo + _PUSH_ROWS] = self._fold(frames.mul_(self.window[:, None]))
        signal = signal.reshape(*lead, -1)
        square = self.window.square()[None, :, None].expand(1, cfg.n_fft, count)
        envelope = self._fold(square)[0]
        if self.tail is not None:
            signal[..., : self.tail.shape[-1]] += self.tail
            envelope[: self.envelope_tail.shape[-1]] += self.envelope_tail
        done = signal.shape[-1] if start + count == self.frames else count * cfg.hop_length
        self.tail, self.envelope_tail = signal[..., done:], envelope[done:]
        finished = signal[..., :done] / envelope[:done].clamp_min(1e-11)
        return start * cfg.hop_length - cfg.n_fft // 2, finished


def _take(pending: list[Tensor], size: int) -> Tensor:
    """The first ``size`` frames of the ``pending`` chunks, removed from them: a view when
    one chunk holds them all."""
    parts = []
    while size:
        head = pending[0]
        take = min(size, head.shape[-1])
        parts.append(head[..., :take])
        if take < head.shape[-1]:
            pending[0] = head[..., take:]
        else:
            pending.pop(0)
        size -= take
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def rechunk(chunks: Iterator[tuple[int, Tensor]], size: int | None) -> Iterator[tuple[int, Tensor]]:
    """Regroup consecutive ``(start, (..., frames))`` chunks into blocks of ``size`` frames.

    A block inside one chunk is a view of it (no copy); the frames of a chunk left for the
    next block are copied before the next chunk is read, so that a chunk is freed as soon
    as its blocks are consumed (one model window's estimates at a time).
    """
    pending: list[Tensor] = []
    have, start = 0, 0
    for _, chunk in chunks:
        pending.append(chunk)
        have += chunk.shape[-1]
        del chunk  # only `pending` keeps it
        if not size or have < size:
            continue
        while have >= size:
            yield start, _take(pending, size)
            have, start = have - size, start + size
        pending = [part.clone() for part in pending]
    if have:
        yield start, torch.cat(pending, dim=-1)


def all_finite(audio_: Tensor, block: int = 1 << 20) -> bool:
    """``torch.isfinite(audio_).all()`` in blocks of samples: isfinite allocates a float
    copy and several masks of its input, 2 GB of transients for an hour of stereo audio."""
    return all(
        bool(torch.isfinite(audio_[..., lo : lo + block]).all())
        for lo in range(0, audio_.shape[-1], block)
    )


def channels_first(waveform: Tensor | np.ndarray) -> Tensor:
    """``(channels, samples)`` float32 tensor from 1-D or 2-D audio in either orientation."""
    audio_ = torch.as_tensor(np.asarray(waveform) if not torch.is_tensor(waveform) else waveform)
    if audio_.dim() == 1:
        audio_ = audio_[None]
    if audio_.dim() != 2:
        raise LongsepError(f"waveform of shape {tuple(audio_.shape)}: expected 1-D or 2-D audio")
    if audio_.shape[0] > audio_.shape[1]:
        audio_ = audio_.T
    if audio_.shape[0] > 2:
        raise LongsepError(
            f"waveform of shape {tuple(audio_.shape)} has {audio_.shape[0]} channels: "
            "longsep separates mono or stereo"
        )
    return audio_.float()


def fit_length(audio_: Tensor, length: int) -> Tensor:
    """Crop or zero-pad the last axis to ``length`` samples."""
    if audio_.shape[-1] >= length:
        return audio_[..., :length]
    return F.pad(audio_, (0, length - audio_.shape[-1]))

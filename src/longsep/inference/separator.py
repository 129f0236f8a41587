"""Separator: per-target models + Wiener filter over songs of any length in bounded memory.

For audio ``(batch, channels, samples)`` at the model rate the pipeline streams:

1. The song's centred STFT frame grid is cut into model windows of ``segment`` seconds that
   overlap by the fraction ``overlap``. A window's mixture STFT is computed from the audio
   slice aligned to the global frame grid (reflect padding only at the song's edges), so its
   frames equal those of the full-length STFT.
2. Every target model maps the window's magnitude ``(batch, channels, bins, frames)`` to the
   target's magnitude. Windows are cross-faded in the magnitude domain with raised-cosine
   ramps whose overlapped weights sum to one.
3. Finished frames go to the Wiener filter (:func:`longsep.inference.wiener.apply_wiener`)
   in blocks of ``wiener_win_len`` frames on the global grid, the blocks Open-Unmix filters.
4. A streaming overlap-add ISTFT adds the filtered frames into the output audio and divides
   by the analytic window-square envelope, which gives ``torch.istft``'s result.

Besides the input and output audio, only ``O(segment + wiener_win_len)`` frames are held,
so a 60-minute song separates in a few GB. ``segment=None`` runs one window over the whole
song (Open-Unmix's behaviour; memory then grows with the song).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from longsep import audio
from longsep.errors import LongsepError
from longsep.inference.device import resolve_device
from longsep.inference.files import FileSeparation
from longsep.inference.options import InferenceOptions
from longsep.inference.streaming import (
    MappedSource,
    MixtureFrames,
    OverlapAdd,
    Source,
    TensorSource,
    all_finite,
    channels_first,
    crossfade_windows,
    fit_length,
    rechunk,
)
from longsep.inference.wiener import apply_wiener
from longsep.spectral import STFTConfig
from longsep.store import load_models

log = logging.getLogger(__name__)

DEFAULT_SEGMENT = 30.0  # seconds, for models that do not record their training length
PathLike = str | Path


class Separator(nn.Module):
    """Per-target magnitude models + multichannel Wiener filter, for songs of any length.

    Args:
        target_models: one separator per target name, each mapping a magnitude
            ``(batch, channels, bins, frames)`` to the same shape.
        stft: the transform the models were trained with.
        options: the inference settings (:class:`~longsep.inference.options.InferenceOptions`
            or a mapping of some of them); defaults from ``conf/inference/default.yaml``.
        seq_len: the models' training length in seconds, used by ``segment="auto"``.
        nb_channels: channels the models take (1 or 2).
        batch_windows: windows sent through a model together.
        **changes: single options by name (``niter=0``, ``device="cpu"``), over ``options``.

    Audio buffers stay where the input is; the models run on ``options.device``.
    """

    def __init__(
        self,
        target_models: Mapping[str, nn.Module],
        stft: STFTConfig | None = None,
        options: InferenceOptions | Mapping[str, Any] | None = None,
        *,
        seq_len: float | None = None,
        nb_channels: int = 2,
        batch_windows: int = 1,
        **changes: Any,
    ) -> None:
        super().__init__()
        if not target_models:
            raise LongsepError("targets: the separator needs at least one target model")
        self.stft_config = stft or STFTConfig()
        if not self.stft_config.center:
            raise LongsepError("stft.center=false: separation needs a centred STFT")
        self.target_models = nn.ModuleDict(dict(target_models))
        self.options = InferenceOptions.of(options, **changes)
        opts = self.options
        self.niter, self.softmask, self.alpha = (
            int(opts.niter),
            bool(opts.softmask),
            float(opts.alpha),
        )
        self.residual = bool(opts.residual)
        self.wiener_win_len = int(opts.wiener_win_len) if opts.wiener_win_len else None
        self.segment = self._resolve_segment(opts.segment, seq_len)
        self.overlap = float(opts.overlap)
        self.nb_channels = int(nb_channels)
        self.batch_windows = max(1, int(batch_windows))
        self._check_options()
        self.device = resolve_device(opts.device)
        self.to(self.device).eval().requires_grad_(False)
        self._files: FileSeparation | None = None  # separate_to_file's, made on first use
        self._groups: dict[str, list[int]] = {}

    @staticmethod
    def _resolve_segment(segment: float | str | None, seq_len: float | None) -> float | None:
        if segment in (None, "none", "null", "None"):
            return None
        if segment == "auto":
            return float(seq_len) if seq_len else DEFAULT_SEGMENT
        try:
            value = float(segment)
        except (TypeError, ValueError) as exc:
            raise LongsepError(f"segment={segment!r}: use seconds, 'auto' or null") from exc
        if value <= 0:
            raise LongsepError(f"segment={segment}: must be positive seconds, 'auto' or null")
        return value

    def _check_options(self) -> None:
        if self.niter < 0:
            raise LongsepError(f"niter={self.niter}: must be 0 or more")
        if self.alpha <= 0:
            raise LongsepError(f"alpha={self.alpha}: must be positive")
        if not 0.0 <= self.overlap <= 0.5:
            raise LongsepError(f"overlap={self.overlap}: must be within [0, 0.5]")
        if self.wiener_win_len is not None and self.wiener_win_len < 1:
            raise LongsepError(f"wiener_win_len={self.wiener_win_len}: must be 1 or more or null")
        if self.nb_channels not in (1, 2):
            raise LongsepError(f"nb_channels={self.nb_channels}: models take 1 or 2 channels")
        if self.niter > 0 and len(self.target_models) == 1 and not self.residual:
            name = next(iter(self.target_models))
            raise LongsepError(
                f"targets=[{name}] with niter={self.niter}: the Wiener EM needs two or more "
                "targets; add residual=true or set niter=0"
            )

    @property
    def sample_rate(self) -> int:
        return self.stft_config.sample_rate

    @property
    def sources(self) -> list[str]:
        """What is separated and Wiener-filtered: the target models (and ``residual``)."""
        return [*self.target_models, *(["residual"] if self.residual else [])]

    @property
    def targets(self) -> list[str]:
        """Names of the outputs, in the order of ``forward``'s target axis: the sources, or
        the groups of :meth:`regroup`."""
        return list(self._groups) if self._groups else self.sources

    def regroup(self, groups: Mapping[str, Sequence[str]] | None) -> None:
        """Output sums of sources instead of the sources, e.g. Spleeter's 2 stems
        ``{"vocals": ["vocals"], "accompaniment": ["drums", "bass", "other"]}``; None: the
        sources themselves."""
        if not groups:
            self._groups = {}
            return
        unknown = sorted({n for members in groups.values() for n in members} - set(self.sources))
        if unknown or not all(groups.values()):
            raise LongsepError(
                f"groups {dict(groups)}: each needs sources among {', '.join(self.sources)}"
            )
        self._groups = {name: [self.sources.index(n) for n in m] for name, m in groups.items()}

    @property
    def band_target(self) -> str | None:
        """The output that also receives what the outputs leave of an input at another
        rate than the model's (above the model's band, and what resampling to its rate and
        back loses): the one holding ``residual``, else ``other``. None when the outputs do
        not add up to the input (``niter=0`` without ``residual``) or there is no such
        target."""
        if not (self.residual or self.niter > 0):
            return None
        source = "residual" if self.residual else "other"
        if source not in self.sources:
            return None
        index = self.sources.index(source)
        if not self._groups:
            return source
        return next((g for g, members in self._groups.items() if index in members), None)

    def complete(self, estimates: Tensor, mixture: Tensor) -> Tensor:
        """Add to :attr:`band_target` what ``estimates`` ``(targets, channels, n)`` leave
        of ``mixture`` ``(channels, n)``, at the file's rate: the outputs then sum to the
        input, the band above the model's included. Unchanged without a band target."""
        target = self.band_target
        if target is not None:
            index = self.targets.index(target)
            estimates[index] += mixture.to(estimates) - estimates.sum(dim=0)
        return estimates

    @classmethod
    def from_pretrained(
        cls,
        path: PathLike | Sequence[PathLike],
        targets: Sequence[str] | None = None,
        options: InferenceOptions | Mapping[str, Any] | None = None,
        **changes: Any,
    ) -> Separator:
        """Load a model store dir, checkpoint file(s) or an Open-Unmix model directory.

        ``options`` and ``changes`` as for the constructor (``batch_windows`` too).
        Targets must share the STFT and channel count; ``segment="auto"`` uses the shortest
        training length. With one target and ``niter > 0`` the ``residual`` target is added,
        since the Wiener EM needs two or more.
        """
        batch_windows = changes.pop("batch_windows", 1)
        opts = InferenceOptions.of(options, **changes)
        models, entries = load_models(path, targets)
        first = entries[0]
        for entry in entries[1:]:
            if entry.stft != first.stft or entry.nb_channels != first.nb_channels:
                raise LongsepError(
                    f"model={path}: targets {first.target} and {entry.target} use different "
                    "STFT settings or channel counts and cannot be filtered together"
                )
        lengths = [e.seq_len for e in entries if e.seq_len]
        if len(set(lengths)) > 1:
            log.warning("targets were trained on %s s: segment=auto uses the shortest", lengths)
        if len(models) == 1 and int(opts.niter) > 0 and not opts.residual:
            log.info("one target (%s): adding the residual target for the Wiener EM", *models)
            opts = dataclasses.replace(opts, residual=True)
        return cls(
            models,
            first.stft,
            opts,
            seq_len=min(lengths) if lengths else None,
            nb_channels=first.nb_channels,
            batch_windows=batch_windows,
        )

    def _windows(self, frames: int) -> list[tuple[int, int, Tensor]]:
        if self.segment is None:
            return crossfade_windows(frames, None, 0)
        length = max(2, self.stft_config.seconds_to_frames(self.segment))
        return crossfade_windows(frames, length, round(self.overlap * length))

    def _estimate(self, mags: list[Tensor]) -> list[Tensor]:
        """Target magnitudes ``(batch, targets, channels, bins, n)`` of equal-length windows."""
        count = len(mags)
        stacked = torch.cat(mags, dim=0) if count > 1 else mags[0]
        shape = (stacked.shape[0], len(self.target_models), *stacked.shape[1:])
        out = stacked.new_empty(shape)
        for index, model in enumerate(self.target_models.values()):
            out[:, index] = model(stacked)  # model by model: no list of estimates to stack
        return list(out.chunk(count, dim=0))

    def _magnitudes(self, mixture: MixtureFrames, frames: int) -> Iterator[tuple[int, Tensor]]:
        """Cross-faded target magnitudes ``(batch, targets, channels, bins, n)``, in order."""
        windows = self._windows(frames)
        carry: Tensor | None = None
        for first in range(0, len(windows), self.batch_windows):
            group = windows[first : first + self.batch_windows]
            estimates = self._estimate([mixture.magnitude(start, end) for start, end, _ in group])
            for k, ((start, _, weight), mag) in enumerate(zip(group, estimates, strict=True)):
                mag = mag.mul_(weight.to(mag.device))
                if carry is not None:
                    mag[..., : carry.shape[-1]] += carry
                index = first + k + 1
                done = windows[index][0] - start if index < len(windows) else mag.shape[-1]
                carry = mag[..., done:].clone()  # not a view: frees the window's estimates
                yield start, mag[..., :done]
            del estimates, mag  # before the next window's estimates exist, not after

    def _stream(self, source: Source) -> Iterator[tuple[int, Tensor]]:
        """Separated audio ``(batch, targets, channels, n)`` chunks with their first sample."""
        samples = source.samples
        frames = self.stft_config.frames(samples)
        mixture = MixtureFrames(source, self.stft_config, self.device)
        istft = OverlapAdd(self.stft_config, frames, self.device)
        blocks = rechunk(self._magnitudes(mixture, frames), self.wiener_win_len)
        for start, mags in blocks:
            end = start + mags.shape[-1]
            spec = apply_wiener(
                mags,
                mixture(start, end),
                niter=self.niter,
                softmask=self.softmask,
                alpha=self.alpha,
                residual=self.residual,
                wiener_win_len=mags.shape[-1],
            )
            first, chunk = istft.push(spec, start)
            del mags, spec  # views of the window's estimates: free them before the next
            lo, hi = max(first, 0), min(first + chunk.shape[-1], samples)
            if hi > lo:
                yield lo, chunk[..., lo - first : hi - first]

    def check_length(self, channels: int, samples: int) -> None:
        """A one-line error for audio this separator cannot take (channels, too short)."""
        if channels not in (1, 2):
            raise LongsepError(f"audio has {channels} channels: longsep separates mono or stereo")
        if samples < self.stft_config.n_fft:
            raise LongsepError(
                f"audio is {samples} samples long, shorter than one STFT frame "
                f"({self.stft_config.n_fft} samples): nothing to separate"
            )

    def _check_audio(self, audio_: Tensor) -> Tensor:
        if audio_.dim() != 3:
            raise LongsepError(f"audio of shape {tuple(audio_.shape)}: expected 3-D input")
        self.check_length(audio_.shape[1], audio_.shape[-1])
        if not audio_.is_floating_point():
            audio_ = audio_.float()
        if not all_finite(audio_):
            raise LongsepError("audio contains NaN or infinite samples")
        return audio_

    def chunks(self, source: Source, batch: int, channels: int) -> Iterator[tuple[int, Tensor]]:
        """Separated ``(batch, targets, channels, n)`` chunks of checked audio read from
        ``source`` (``(batch, channels, n)`` blocks), consecutive from sample 0 to the end,
        with their first sample.

        Mono input to a stereo model is duplicated and the estimates are averaged back to
        mono; stereo input to a mono model is separated per channel.
        """
        folded = channels == 2 and self.nb_channels == 1
        upmixed = channels == 1 and self.nb_channels == 2
        model_in = source
        if folded:
            model_in = MappedSource(source, lambda x: x.reshape(batch * 2, 1, x.shape[-1]))
        elif upmixed:
            model_in = MappedSource(source, lambda x: x.expand(batch, 2, x.shape[-1]))
        for start, chunk in self._stream(model_in):
            if folded:
                chunk = chunk.reshape(batch, 2, *chunk.shape[1:]).squeeze(3).transpose(1, 2)
            elif upmixed:
                chunk = chunk.mean(dim=2, keepdim=True)
            if self._groups:
                chunk = torch.stack([chunk[:, i].sum(1) for i in self._groups.values()], 1)
            yield start, chunk

    @torch.inference_mode()
    def forward(self, audio: Tensor) -> Tensor:
        """Separate ``(batch, channels, samples)`` audio at :attr:`sample_rate`.

        Returns ``(batch, targets, channels, samples)`` on the input's device, in the order
        of :attr:`targets`.
        """
        audio = self._check_audio(audio)
        batch, channels, samples = audio.shape
        out = torch.zeros(
            batch, len(self.targets), channels, samples, dtype=audio.dtype, device=audio.device
        )
        for start, chunk in self.chunks(TensorSource(audio), batch, channels):
            out[..., start : start + chunk.shape[-1]] = chunk.to(out.device, out.dtype)
        return out

    def separate(
        self, waveform: Tensor | np.ndarray, sample_rate: int | None = None
    ) -> dict[str, Tensor]:
        """Separate one song given as numpy or torch, 1-D or 2-D in either orientation.

        ``(samples,)`` is mono; for 2-D input the short axis is the channel axis. Audio is
        resampled to the model rate and back. Returns ``{target: (channels, samples)}``
        float32 tensors at ``sample_rate`` with the input's length and channel count.
        """
        audio_ = channels_first(waveform)
        rate = int(sample_rate or self.sample_rate)
        length = audio_.shape[-1]
        if rate != self.sample_rate:
            audio_ = audio.resample(audio_, rate, self.sample_rate)
        estimates = self(audio_[None])[0]
        if rate != self.sample_rate:
            estimates = audio.resample(estimates, self.sample_rate, rate)
            estimates = self.complete(fit_length(estimates, length), channels_first(waveform))
        return dict(zip(self.targets, estimates.unbind(0), strict=True))

    def separate_to_file(
        self,
        input_path: PathLike,
        out_dir: PathLike,
        codec: str = "wav",
        bitrate: str | int | None = None,
        filename_format: str = "{track}/{target}.{codec}",
        start: float = 0.0,
        duration: float | None = None,
        synchronous: bool = True,
    ) -> dict[str, Path]:
        """Separate an audio file and write one file per target; return their paths
        (:meth:`longsep.inference.files.FileSeparation.separate`: bounded memory, files
        complete or absent). With ``synchronous=False`` the files are finished in the
        background; call :meth:`join` to wait for them and to raise export errors."""
        if self._files is None:
            self._files = FileSeparation()
        return self._files.separate(
            self, input_path, out_dir, codec, bitrate, filename_format, start, duration, synchronous
        )

    def join(self) -> None:
        """Wait for the files of :meth:`separate_to_file` still being written; raise one
        :class:`~longsep.inference.export.ExportError` naming every song that failed."""
        if self._files is not None:
            self._files.join()

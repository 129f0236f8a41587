"""Separator: per-target models + Wiener filter over songs of any length in bounded memory.

For audio ``(batch, channels, samples)`` at the model rate the pipeline streams:

1. The song's centred STFT frame grid is cut into model windows of ``segment`` seconds that
   overlap by the fraction ``overlap``. A window's mixture STFT is computed from the audio
   slice aligned to the global frame grid (reflect padding only at the song's edges), so its
   frames equal those of the full-length STFT.
2. Every target model maps the window's magnitude ``(batch, channels, bins, frames)`` to the
   target's magnitude. Windows are cross-faded in the magnitude domain with raised-cosine
   ramps whose overlapped weights sum to one.
3. Finished frames go to the Wiener filter (:func:`longsep.wiener.apply_wiener`) in blocks of
   ``wiener_win_len`` frames on the global grid, the blocks Open-Unmix filters.
4. A streaming overlap-add ISTFT adds the filtered frames into the output audio and divides
   by the analytic window-square envelope, which gives ``torch.istft``'s result.

Besides the input and output audio, only ``O(segment + wiener_win_len)`` frames are held,
so a 60-minute song separates in a few GB. ``segment=None`` runs one window over the whole
song (Open-Unmix's behaviour; memory then grows with the song).
"""

from __future__ import annotations

import json
import logging
import queue
import re
import string
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longsep import TARGETS, audio
from longsep.checkpoints import StoreEntry, load_checkpoint, load_store, store_targets
from longsep.errors import LongsepError
from longsep.spectral import STFTConfig
from longsep.wiener import apply_wiener

log = logging.getLogger(__name__)

DEFAULT_SEGMENT = 30.0  # seconds, for models that do not record their training length
FORMAT_KEYS = ("track", "target", "codec")
PathLike = str | Path


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


def _reflect_slice(audio_: Tensor, lo: int, hi: int) -> Tensor:
    """Samples ``lo .. hi - 1`` of ``audio_ (..., samples)`` reflected at both ends."""
    samples = audio_.shape[-1]
    if lo >= 0 and hi <= samples:
        return audio_[..., lo:hi]
    index = torch.arange(lo, hi, device=audio_.device).abs()
    index = torch.where(index >= samples, 2 * (samples - 1) - index, index)
    return audio_.index_select(-1, index)


class _MixtureFrames:
    """Frames of the centred STFT of ``audio (batch, channels, samples)``, computed on demand.

    ``frames(start, end)`` is complex ``(batch, channels, bins, end - start)`` and equals
    ``STFT(audio)[..., start:end]`` while reading only the samples those frames cover.
    """

    def __init__(self, audio_: Tensor, config: STFTConfig, device: torch.device) -> None:
        self.audio, self.config, self.device = audio_, config, device
        self.window = torch.hann_window(config.n_fft, device=device)

    def __call__(self, start: int, end: int) -> Tensor:
        cfg, pad = self.config, self.config.n_fft // 2
        lo, hi = start * cfg.hop_length, (end - 1) * cfg.hop_length + cfg.n_fft
        chunk = _reflect_slice(self.audio, lo - pad, hi - pad).to(self.device, torch.float32)
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


class _OverlapAdd:
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
        lead = spec.shape[:-2]
        frames = torch.fft.irfft(spec, n=cfg.n_fft, dim=-2) * self.window[:, None]
        signal = self._fold(frames.reshape(-1, cfg.n_fft, count)).reshape(*lead, -1)
        square = self.window.square()[None, :, None].expand(1, cfg.n_fft, count)
        envelope = self._fold(square)[0]
        if self.tail is not None:
            signal[..., : self.tail.shape[-1]] += self.tail
            envelope[: self.envelope_tail.shape[-1]] += self.envelope_tail
        done = signal.shape[-1] if start + count == self.frames else count * cfg.hop_length
        self.tail, self.envelope_tail = signal[..., done:], envelope[done:]
        finished = signal[..., :done] / envelope[:done].clamp_min(1e-11)
        return start * cfg.hop_length - cfg.n_fft // 2, finished


def _rechunk(
    chunks: Iterator[tuple[int, Tensor]], size: int | None
) -> Iterator[tuple[int, Tensor]]:
    """Regroup consecutive ``(start, (..., frames))`` chunks into blocks of ``size`` frames."""
    pending: list[Tensor] = []
    have, start = 0, 0
    for _, chunk in chunks:
        pending.append(chunk)
        have += chunk.shape[-1]
        while size and have >= size:
            block = torch.cat(pending, dim=-1)
            yield start, block[..., :size]
            pending, have, start = [block[..., size:]], have - size, start + size
    if have:
        yield start, torch.cat(pending, dim=-1)


def track_name(path: PathLike) -> str:
    """The ``{track}`` of an input: its stem, or its folder for ``<track>/mixture.<ext>``."""
    path = Path(path)
    return path.parent.name if path.stem == "mixture" and path.parent.name else path.stem


def check_filename_format(filename_format: str) -> None:
    """Refuse a ``filename_format`` that uses keys other than track, target and codec."""
    try:
        keys = {field for _, field, _, _ in string.Formatter().parse(filename_format) if field}
    except ValueError as exc:
        raise LongsepError(f"filename_format={filename_format!r} is malformed: {exc}") from exc
    unknown = keys - set(FORMAT_KEYS)
    if unknown:
        raise LongsepError(
            f"filename_format={filename_format!r} uses unknown key(s) {sorted(unknown)}: "
            f"use {{track}}, {{target}} and {{codec}}"
        )


class Separator(nn.Module):
    """Per-target magnitude models + multichannel Wiener filter, for songs of any length.

    Args:
        target_models: one separator per target name, each mapping a magnitude
            ``(batch, channels, bins, frames)`` to the same shape.
        stft: the transform the models were trained with.
        niter: EM iterations of the Wiener filter (0: mixture phase / soft mask only).
        softmask: initial estimates by ratio masks instead of the mixture phase.
        alpha: exponent applied to the magnitude estimates in the filter.
        residual: add a ``residual`` target, the mixture minus all others.
        wiener_win_len: frames filtered together (None: the whole song at once).
        segment: model window in seconds; ``"auto"`` the models' training length
            (``seq_len``, else 30 s), None one pass over the whole song.
        overlap: fraction of a window shared with the next one, in ``[0, 0.5]``.
        seq_len: the models' training length in seconds, used by ``segment="auto"``.
        nb_channels: channels the models take (1 or 2).
        device: where the models run (audio buffers stay where the input is).
        batch_windows: windows sent through a model together.
    """

    def __init__(
        self,
        target_models: Mapping[str, nn.Module],
        stft: STFTConfig | None = None,
        *,
        niter: int = 1,
        softmask: bool = False,
        alpha: float = 1.0,
        residual: bool = False,
        wiener_win_len: int | None = 300,
        segment: float | str | None = "auto",
        overlap: float = 0.25,
        seq_len: float | None = None,
        nb_channels: int = 2,
        device: str | torch.device | None = None,
        batch_windows: int = 1,
    ) -> None:
        super().__init__()
        if not target_models:
            raise LongsepError("targets: the separator needs at least one target model")
        self.stft_config = stft or STFTConfig()
        if not self.stft_config.center:
            raise LongsepError("stft.center=false: separation needs a centred STFT")
        self.target_models = nn.ModuleDict(dict(target_models))
        self.niter, self.softmask, self.alpha = int(niter), bool(softmask), float(alpha)
        self.residual = bool(residual)
        self.wiener_win_len = int(wiener_win_len) if wiener_win_len else None
        self.segment = self._resolve_segment(segment, seq_len)
        self.overlap = float(overlap)
        self.nb_channels = int(nb_channels)
        self.batch_windows = max(1, int(batch_windows))
        self._check_options()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.to(self.device).eval().requires_grad_(False)
        self._executor: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[Path, dict[str, Future]]] = deque()
        self._failures: list[str] = []

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
    def targets(self) -> list[str]:
        """Names of the outputs, in the order of ``forward``'s target axis."""
        return [*self.target_models, *(["residual"] if self.residual else [])]

    @classmethod
    def from_pretrained(
        cls,
        path: PathLike | Sequence[PathLike],
        targets: Sequence[str] | None = None,
        **options: Any,
    ) -> Separator:
        """Load a model store dir, checkpoint file(s) or an Open-Unmix model directory.

        ``options`` are the constructor's keyword arguments (niter, segment, device, ...).
        """
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
        options.setdefault("seq_len", min(lengths) if lengths else None)
        return cls(models, first.stft, nb_channels=first.nb_channels, **options)

    def _windows(self, frames: int) -> list[tuple[int, int, Tensor]]:
        if self.segment is None:
            return crossfade_windows(frames, None, 0)
        length = max(2, self.stft_config.seconds_to_frames(self.segment))
        return crossfade_windows(frames, length, round(self.overlap * length))

    def _estimate(self, mags: list[Tensor]) -> list[Tensor]:
        """Target magnitudes ``(batch, targets, channels, bins, n)`` of equal-length windows."""
        stacked = torch.cat(mags, dim=0)
        out = torch.stack([model(stacked) for model in self.target_models.values()], dim=1)
        return list(out.chunk(len(mags), dim=0))

    def _magnitudes(self, mixture: _MixtureFrames, frames: int) -> Iterator[tuple[int, Tensor]]:
        """Cross-faded target magnitudes ``(batch, targets, channels, bins, n)``, in order."""
        windows = self._windows(frames)
        carry: Tensor | None = None
        for first in range(0, len(windows), self.batch_windows):
            group = windows[first : first + self.batch_windows]
            estimates = self._estimate([mixture(start, end).abs() for start, end, _ in group])
            for k, ((start, _, weight), mag) in enumerate(zip(group, estimates, strict=True)):
                mag = mag * weight.to(mag.device)
                if carry is not None:
                    mag[..., : carry.shape[-1]] += carry
                index = first + k + 1
                done = windows[index][0] - start if index < len(windows) else mag.shape[-1]
                carry = mag[..., done:]
                yield start, mag[..., :done]

    def _stream(self, audio_: Tensor) -> Iterator[tuple[int, Tensor]]:
        """Separated audio ``(batch, targets, channels, n)`` chunks with their first sample."""
        samples = audio_.shape[-1]
        frames = self.stft_config.frames(samples)
        mixture = _MixtureFrames(audio_, self.stft_config, self.device)
        istft = _OverlapAdd(self.stft_config, frames, self.device)
        blocks = _rechunk(self._magnitudes(mixture, frames), self.wiener_win_len)
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
            lo, hi = max(first, 0), min(first + chunk.shape[-1], samples)
            if hi > lo:
                yield lo, chunk[..., lo - first : hi - first]

    def _check_audio(self, audio_: Tensor) -> Tensor:
        if audio_.dim() != 3:
            raise LongsepError(f"audio of shape {tuple(audio_.shape)}: expected 3-D input")
        if audio_.shape[1] not in (1, 2):
            raise LongsepError(
                f"audio has {audio_.shape[1]} channels: longsep separates mono or stereo"
            )
        if audio_.shape[-1] < self.stft_config.n_fft:
            raise LongsepError(
                f"audio is {audio_.shape[-1]} samples long, shorter than one STFT frame "
                f"({self.stft_config.n_fft} samples): nothing to separate"
            )
        if not audio_.is_floating_point():
            audio_ = audio_.float()
        if not _all_finite(audio_):
            raise LongsepError("audio contains NaN or infinite samples")
        return audio_

    def _chunks(self, audio_: Tensor) -> Iterator[tuple[int, Tensor]]:
        """Separated ``(batch, targets, channels, n)`` chunks of checked ``(batch, channels,
        samples)`` audio (:meth:`_check_audio`), consecutive from sample 0 to the end, with
        their first sample.

        Mono input to a stereo model is duplicated and the estimates are averaged back to
        mono; stereo input to a mono model is separated per channel.
        """
        batch, channels, samples = audio_.shape
        folded = channels == 2 and self.nb_channels == 1
        upmixed = channels == 1 and self.nb_channels == 2
        model_in = audio_.reshape(batch * 2, 1, samples) if folded else audio_
        if upmixed:
            model_in = audio_.expand(batch, 2, samples)
        for start, chunk in self._stream(model_in):
            if folded:
                chunk = chunk.reshape(batch, 2, *chunk.shape[1:]).squeeze(3).transpose(1, 2)
            elif upmixed:
                chunk = chunk.mean(dim=2, keepdim=True)
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
        for start, chunk in self._chunks(audio):
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
        audio_ = _channels_first(waveform)
        rate = int(sample_rate or self.sample_rate)
        length = audio_.shape[-1]
        if rate != self.sample_rate:
            audio_ = audio.resample(audio_, rate, self.sample_rate)
        estimates = self(audio_[None])[0]
        if rate != self.sample_rate:
            estimates = audio.resample(estimates, self.sample_rate, rate)
            estimates = _fit_length(estimates, length)
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
        """Separate an audio file and write one file per target; return their paths.

        The targets are written while the song is separated, chunk by chunk, by a
        background thread (resampled back to the file's rate on the fly), so memory holds
        the input but not the outputs. Files appear complete or not at all. With
        ``synchronous=False`` the call returns once the song is separated while its files
        are finished in the background (at most one earlier song stays in flight); call
        :meth:`join` to wait for them and to raise export errors.
        """
        check_filename_format(filename_format)
        path = Path(input_path)
        meta = audio.info(path)
        if meta.channels > 2:
            raise LongsepError(
                f"{path} has {meta.channels} channels: longsep separates mono or stereo"
            )
        waveform = audio.load(
            path,
            start=start,
            duration=duration,
            sample_rate=meta.sample_rate,
            channels=meta.channels,
        )
        length = waveform.shape[-1]
        try:
            model_in = self._check_audio(
                audio.resample(waveform, meta.sample_rate, self.sample_rate)[None]
            )
        except LongsepError as exc:
            raise LongsepError(f"{path}: {exc}") from exc
        del waveform
        track = track_name(path)
        outputs = {
            target: Path(out_dir) / filename_format.format(track=track, target=target, codec=codec)
            for target in self.targets
        }
        export = _Export(outputs, meta.sample_rate, meta.channels, codec, bitrate, length=length)
        while len(self._pending) > 1:
            self._settle(self._pending.popleft())
        executor = self._executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="export")
        self._executor = executor
        future = executor.submit(export.run, self.sample_rate, model_in.shape[-1])
        try:
            with torch.inference_mode():
                for _, chunk in self._chunks(model_in):
                    export.put(chunk[0])
        except BaseException:
            export.put(None)
            wait([future])
            raise
        export.put(_Export.END)
        if synchronous:
            future.result()
        else:
            self._pending.append((path, future))
        return outputs

    def _settle(self, song: tuple[Path, Future]) -> None:
        path, future = song
        wait([future])
        if future.exception() is not None:
            self._failures.append(f"{path}: {future.exception()}")

    def join(self) -> None:
        """Wait for all background exports; raise one error naming every failed file."""
        while self._pending:
            self._settle(self._pending.popleft())
        failures, self._failures = self._failures, []
        if failures:
            raise LongsepError(f"export failed for {len(failures)} file(s): {'; '.join(failures)}")


class _Export:
    """Writes one song's target files from separated chunks, in a worker thread.

    The producer passes ``(targets, channels, n)`` chunks at the model rate to :meth:`put`,
    then :attr:`END` (commit every file) or ``None`` (abort: delete the partial files). The
    worker resamples each target to the file's rate, writes it, and raises the first
    write error once the producer has finished (it keeps draining the queue so the
    producer never blocks on a dead consumer).
    """

    END = "end"

    def __init__(
        self,
        outputs: Mapping[str, Path],
        sample_rate: int,
        channels: int,
        codec: str,
        bitrate: str | int | None,
        length: int,
    ) -> None:
        self.outputs, self.sample_rate, self.channels = dict(outputs), sample_rate, channels
        self.codec, self.length = codec, length
        self.bitrate = int(bitrate) if bitrate is not None else None
        self.queue: queue.Queue = queue.Queue(maxsize=4)

    def put(self, item: Tensor | str | None) -> None:
        """Queue a chunk, :attr:`END` or ``None`` (blocks while the worker is behind)."""
        self.queue.put(item)

    def run(self, model_rate: int, model_samples: int) -> dict[str, Path]:
        """Consume the queue until END or abort; return the files written."""
        writers: dict[str, audio.AudioWriter] = {}
        error: BaseException | None = None
        try:
            for target, out in self.outputs.items():
                writers[target] = audio.AudioWriter(
                    out, self.sample_rate, self.channels, self.codec, self.bitrate
                )
            resamplers = {
                target: audio.StreamResampler(
                    model_rate, self.sample_rate, model_samples, out_length=self.length
                )
                for target in self.outputs
            }
        except Exception as exc:  # re-raised once the queue is drained
            error = exc
        while (item := self.queue.get()) is not None and item is not self.END:
            if error is not None:
                continue
            try:
                for chunk, (target, writer) in zip(item, writers.items(), strict=True):
                    writer.write(resamplers[target].push(chunk))
            except Exception as exc:  # re-raised once the queue is drained
                error = exc
        if item is None or error is not None:
            for writer in writers.values():
                writer.abort()
        if error is not None:
            raise error
        written = {}
        try:
            for target, writer in writers.items():
                written[target] = writer.commit()
        except LongsepError:
            for target, writer in writers.items():
                if target not in written:
                    writer.abort()
            raise
        return written


def _all_finite(audio_: Tensor, block: int = 1 << 20) -> bool:
    """``torch.isfinite(audio_).all()`` in blocks of samples: isfinite allocates a float
    copy and several masks of its input, 2 GB of transients for an hour of stereo audio."""
    return all(
        bool(torch.isfinite(audio_[..., lo : lo + block]).all())
        for lo in range(0, audio_.shape[-1], block)
    )


def _channels_first(waveform: Tensor | np.ndarray) -> Tensor:
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


def _fit_length(audio_: Tensor, length: int) -> Tensor:
    """Crop or zero-pad the last axis to ``length`` samples."""
    if audio_.shape[-1] >= length:
        return audio_[..., :length]
    return F.pad(audio_, (0, length - audio_.shape[-1]))


# --- model loading ---------------------------------------------------------------------


def _ordered(names: Sequence[str]) -> list[str]:
    """MUSDB's order first (vocals, drums, bass, other), then the rest alphabetically."""
    rank = {name: i for i, name in enumerate(TARGETS)}
    return sorted(dict.fromkeys(names), key=lambda n: (rank.get(n, len(rank)), n))


def load_models(
    path: PathLike | Sequence[PathLike], targets: Sequence[str] | None = None
) -> tuple[dict[str, nn.Module], list[StoreEntry]]:
    """Per-target models and their entries from a store, checkpoint(s) or Open-Unmix dir."""
    paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    if not paths:
        raise LongsepError("model: no model path given")
    for p in paths:
        if not p.exists():
            raise LongsepError(f"model={p} does not exist")
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        if store_targets(folder):
            names = list(dict.fromkeys(targets)) if targets else _ordered(store_targets(folder))
            return _as_dicts([load_store(folder, t) for t in names])
        if (folder / "separator.json").is_file():
            names = list(dict.fromkeys(targets)) if targets else openunmix_targets(folder)
            return _as_dicts([load_openunmix(folder, t) for t in names])
        raise LongsepError(
            f"model={folder} is neither a model store (<target>.safetensors + <target>.yaml) "
            "nor an Open-Unmix model directory (separator.json + <target>.pth)"
        )
    return _from_checkpoints(paths, targets)


def _as_dicts(loaded: list[tuple[nn.Module, StoreEntry]]) -> tuple[dict[str, nn.Module], list]:
    return {entry.target: model for model, entry in loaded}, [entry for _, entry in loaded]


def _from_checkpoints(
    paths: list[Path], targets: Sequence[str] | None
) -> tuple[dict[str, nn.Module], list[StoreEntry]]:
    loaded: dict[str, tuple[nn.Module, StoreEntry]] = {}
    for p in paths:
        if p.is_dir():
            raise LongsepError(f"model={p}: pass one directory, or checkpoint files only")
        model, entry = load_checkpoint(p)
        if entry.target in loaded:
            raise LongsepError(f"model={p}: a second checkpoint for target {entry.target!r}")
        loaded[entry.target] = (model, entry)
    wanted = list(dict.fromkeys(targets)) if targets else _ordered(loaded)
    for name in wanted:
        if name not in loaded:
            raise LongsepError(
                f"targets: no checkpoint for {name!r} (have: {', '.join(sorted(loaded))})"
            )
    return _as_dicts([loaded[name] for name in wanted])


_OPENUNMIX_WEIGHTS = re.compile(r"^(?P<target>[A-Za-z0-9_]+?)(-[0-9a-f]+)?\.pth$")


def openunmix_targets(folder: PathLike) -> list[str]:
    """Targets of an Open-Unmix model directory (``<target>.pth`` or ``<target>-<hash>.pth``)."""
    found = [_OPENUNMIX_WEIGHTS.match(p.name) for p in Path(folder).glob("*.pth")]
    return _ordered([m["target"] for m in found if m])


def _openunmix_weights(folder: Path, target: str) -> Path:
    for p in sorted(folder.glob(f"{target}*.pth")):
        match = _OPENUNMIX_WEIGHTS.match(p.name)
        if match and match["target"] == target:
            return p
    have = ", ".join(openunmix_targets(folder)) or "none"
    raise LongsepError(f"Open-Unmix model {folder} has no target {target!r} (has: {have})")


def load_openunmix(folder: PathLike, target: str) -> tuple[nn.Module, StoreEntry]:
    """Rebuild an Open-Unmix target model (``<target>.pth`` + ``separator.json``) as UMX.

    The architecture (hidden size, layers, direction, bins, channels, max_bin) is read from
    the weights' shapes; the STFT and rate from ``separator.json``. Weights are loaded with
    ``torch.load(weights_only=True)``; keys that UMX does not have are ignored.
    """
    from longsep.models.umx import UMX

    folder = Path(folder)
    weights = _openunmix_weights(folder, target)
    try:
        conf = json.loads((folder / "separator.json").read_text())
        state = torch.load(weights, map_location="cpu", weights_only=True)
        stft = STFTConfig(
            n_fft=int(conf["nfft"]),
            hop_length=int(conf["nhop"]),
            sample_rate=int(conf["sample_rate"]),
        )
        max_bin = state["input_mean"].shape[0]
        hidden_size, inputs = state["fc1.weight"].shape
        nb_channels = inputs // max_bin
        layers = sum(1 for k in state if re.fullmatch(r"lstm\.weight_ih_l\d+", k))
        args = {
            "nb_bins": state["fc3.weight"].shape[0] // nb_channels,
            "nb_channels": nb_channels,
            "hidden_size": hidden_size,
            "nb_layers": layers,
            "unidirectional": "lstm.weight_ih_l0_reverse" not in state,
            "max_bin": max_bin,
        }
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise LongsepError(f"cannot read Open-Unmix model {weights}: {exc}") from exc
    if args["nb_bins"] != stft.nb_bins or nb_channels != int(conf.get("nb_channels", nb_channels)):
        raise LongsepError(f"{weights} does not match {folder / 'separator.json'} (nfft, channels)")
    model = UMX(**args)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise LongsepError(f"{weights} is not an Open-Unmix model: missing {missing[0]!r}")
    model.load_state_dict({k: state[k] for k in own})
    entry = StoreEntry(
        target=target,
        separator={"_target_": "longsep.models.umx.UMX", **args},
        stft=stft,
        seq_len=None,
        nb_channels=nb_channels,
        info={"openunmix": str(weights)},
    )
    return model.eval(), entry

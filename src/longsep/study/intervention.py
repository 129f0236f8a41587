"""The far-context intervention: does a trained model use audio far from what it estimates?

For every test song, :data:`WINDOWS_PER_TRACK` windows of the model's training length
(30 s in arms B and C) are separated in one pass without the Wiener EM (the estimated
magnitude with the mixture's phase: the EM pools its spatial covariance over the whole
window and would let the surroundings in), in two conditions:

- ``true``: the window as it is;
- ``replaced``: everything farther than half an STFT window outside the window's central
  :data:`CENTRE_SECONDS` (the piece arm C's centre sees,
  :func:`longsep.models.layers.reach_pieces`) replaced by the same samples of another test
  song (the next one in name order, its window start wrapped into its length), the same
  replacement for every model.

The score is the SDR of the target over the central piece less half an STFT window at
each end (7.44 s of 7.5 s at the CPU recipe's STFT): those samples are synthesised from
the piece's frames only, and those frames analyse true audio only, so the score of a model
whose reach is the piece cannot change. The effect of a run on
a track is the mean over windows of SDR(true) − SDR(replaced); same weights in both
conditions, so training noise cancels. Windows whose central target lies more than
:data:`SILENT_DB` below the mixture are left out (for every model alike). A model whose
reach is the central piece (arm C) must show no effect: any there is leakage or an edge
artefact of the test itself. Per run, ``<run>/intervention.csv`` holds one row per window
(resumable: a complete file is not recomputed).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from longsep import audio
from longsep.errors import LongsepError
from longsep.evaluation.evaluate import Song, load_tracks
from longsep.inference.separator import Separator
from longsep.io import write_text
from longsep.spectral import STFTConfig
from longsep.study.context import TrainedRun

log = logging.getLogger(__name__)

INTERVENTION_FILE = "intervention.csv"
WINDOWS_PER_TRACK = 20
CENTRE_SECONDS = 7.5
SILENT_DB = -30.0
COLUMNS = ("track", "donor", "start_seconds", "sdr_true", "sdr_replaced")


@dataclass
class ScoredSong:
    """A test song at the model's rate: ``(channels, samples)`` float32 tensors."""

    name: str
    mixture: torch.Tensor
    target: torch.Tensor

    @property
    def samples(self) -> int:
        return int(self.mixture.shape[-1])


def load_songs(data: dict, target: str, sample_rate: int, split: str = "test") -> list[ScoredSong]:
    """The songs of ``split`` of a run's data config: mixture and ``target``, resampled to
    ``sample_rate``, sorted by name."""
    songs = []
    for track in load_tracks(data, split):
        song = Song.from_track(track)
        reference = song.reference(target, [target])
        if reference is None:
            raise LongsepError(f"{song.name}: no reference for target {target!r}")
        pair = [torch.from_numpy(np.ascontiguousarray(a.T)) for a in (song.mixture, reference)]
        if song.rate != sample_rate:
            pair = [audio.resample(a, song.rate, sample_rate) for a in pair]
        songs.append(ScoredSong(song.name, pair[0].float(), pair[1].float()))
    return sorted(songs, key=lambda s: s.name)


def centre_range(window: int, stft: STFTConfig, seconds: float = CENTRE_SECONDS) -> tuple[int, int]:
    """Samples ``[start, stop)`` of a ``window``-sample input's central piece of ``seconds``
    (the frames :func:`~longsep.models.layers.reach_pieces` centres, times the hop)."""
    frames = stft.frames(window)
    reach = max(1, round(seconds * stft.sample_rate / stft.hop_length))
    first = frames // 2 - reach // 2
    return first * stft.hop_length, min(window, (first + reach) * stft.hop_length)


def window_starts(samples: int, window: int, count: int = WINDOWS_PER_TRACK) -> list[int]:
    """``count`` window starts evenly spaced from 0 to ``samples - window`` (distinct)."""
    if samples < window:
        return []
    last = samples - window
    return sorted({round(i * last / max(1, count - 1)) for i in range(count)})


def sdr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """``10 log10(|s|^2 / |s - s_hat|^2)`` over all channels and samples."""
    error = (reference.double() - estimate.double()).pow(2).sum().item()
    power = reference.double().pow(2).sum().item()
    return 10 * math.log10(power / error) if error > 0 else math.inf


def audible(mixture: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether ``target`` lies within :data:`SILENT_DB` of ``mixture`` (its energy)."""
    power = target.double().pow(2).sum().item()
    total = mixture.double().pow(2).sum().item()
    return power > 0 and total > 0 and 10 * math.log10(power / total) > SILENT_DB


def one_pass_separator(run: TrainedRun) -> Separator:
    """The run's exported model, one pass per input, no Wiener EM, with a residual."""
    return Separator.from_pretrained(
        str(run.run_dir / "model"), [run.src], niter=0, residual=True, segment=None
    )


def intervene(
    separator: Separator,
    songs: Sequence[ScoredSong],
    window_seconds: float,
    centre_seconds: float = CENTRE_SECONDS,
) -> list:
    """The rows of :data:`COLUMNS` for every scored window of every song."""
    stft, target = separator.stft_config, 0  # the trained target comes first
    window = round(window_seconds * stft.sample_rate)
    a, b = centre_range(window, stft, centre_seconds)
    guard = stft.n_fft // 2  # half an STFT window: the frames of [a, b) see only [a - g, b + g)
    keep, scored = slice(a - guard, b + guard), slice(a + guard, b - guard)
    rows = []
    for index, song in enumerate(songs):
        donor = songs[(index + 1) % len(songs)]
        if donor.samples < window:
            raise LongsepError(f"{donor.name} is shorter than the {window_seconds:g}-s window")
        for start in window_starts(song.samples, window):
            true = song.mixture[:, start : start + window]
            reference = song.target[:, start : start + window][:, scored]
            if not audible(true[:, scored], reference):
                continue
            other = start % (donor.samples - window + 1)
            replaced = donor.mixture[:, other : other + window].clone()
            replaced[:, keep] = true[:, keep]
            with torch.inference_mode():
                estimates = separator(torch.stack([true, replaced]))[:, target, :, scored]
            rows.append(
                (
                    song.name,
                    donor.name,
                    round(start / stft.sample_rate, 4),
                    sdr(reference, estimates[0]),
                    sdr(reference, estimates[1]),
                )
            )
    return rows


def _complete(path: Path, songs: Sequence[ScoredSong]) -> bool:
    if not path.is_file():
        return False
    with path.open(newline="") as handle:
        tracks = {row["track"] for row in csv.DictReader(handle)}
    return tracks >= {s.name for s in songs if s.samples}


def write_rows(path: Path, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    """A CSV of ``rows`` under ``columns``, written atomically, floats to 4 decimals."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([f"{v:.4f}" if isinstance(v, float) else v for v in row] for row in rows)
    write_text(path, buffer.getvalue())


def run_intervention(run: TrainedRun, songs: Sequence[ScoredSong]) -> Path:
    """``<run>/intervention.csv`` of one run (kept if it already covers every song)."""
    path = run.run_dir / INTERVENTION_FILE
    if _complete(path, songs):
        return path
    log.info("intervention: %s", run.run_dir.name)
    write_rows(path, COLUMNS, intervene(one_pass_separator(run), songs, run.seq_len))
    return path


def track_effects(path: Path) -> dict[str, float]:
    """``{track: mean over windows of SDR(true) − SDR(replaced)}`` of an intervention file;
    a window without a finite difference (an exact estimate) is left out and named."""
    per_track: dict[str, list[float]] = {}
    with Path(path).open(newline="") as handle:
        for row in csv.DictReader(handle):
            diff = float(row["sdr_true"]) - float(row["sdr_replaced"])
            if math.isfinite(diff):
                per_track.setdefault(row["track"], []).append(diff)
            else:
                log.warning("%s: %s at %s s left out (SDR difference %s)", path,
                            row["track"], row["start_seconds"], diff)  # fmt: skip
    return {track: float(np.mean(values)) for track, values in per_track.items()}

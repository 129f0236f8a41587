"""Separation metrics of a track: SI-SDR (also as a loss) and BSSEval v4 scores.

:func:`evaluate_track` scores the estimates of a track with BSSEval v4
(:mod:`longsep.evaluation.bsseval`, museval or the exact fast backend) and SI-SDR, and
:func:`to_museval_json` writes museval's per-track JSON. ``si_sdr`` works over the last
axis of ``(..., samples)``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from longsep.errors import LongsepError
from longsep.evaluation.bsseval import BSS_METRICS, bss_eval

log = logging.getLogger(__name__)


ArrayLike = np.ndarray | Tensor
_SUM_BLOCK = 1 << 18


# ---------------------------------------------------------------------------- SI-SDR


def si_sdr(
    estimate: Tensor, reference: Tensor, eps: float = 1e-8, zero_mean: bool = True
) -> Tensor:
    """Scale-invariant SDR in dB over the last axis (Le Roux et al., 2019).

    ``estimate`` and ``reference`` are ``(..., samples)`` and broadcast; the result has
    the leading shape ``(...)``. Differentiable, so it can serve as a training objective.
    """
    if zero_mean:
        estimate = estimate - estimate.mean(dim=-1, keepdim=True)
        reference = reference - reference.mean(dim=-1, keepdim=True)
    scale = ((estimate * reference).sum(-1, keepdim=True) + eps) / (
        reference.pow(2).sum(-1, keepdim=True) + eps
    )
    target = scale * reference
    noise = estimate - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def neg_si_sdr_loss(
    estimate: Tensor, reference: Tensor, eps: float = 1e-8, zero_mean: bool = True
) -> Tensor:
    """Training loss: minus the SI-SDR (dB) averaged over all leading dims."""
    return -si_sdr(estimate, reference, eps=eps, zero_mean=zero_mean).mean()


def _blocks(*signals: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
    """Float64 copies of successive blocks of the flattened ``signals`` (same size)."""
    flat = [x.reshape(-1) for x in signals]
    for lo in range(0, flat[0].size, _SUM_BLOCK):
        yield tuple(x[lo : lo + _SUM_BLOCK].astype(np.float64) for x in flat)


def track_si_sdr(
    estimate: np.ndarray, reference: np.ndarray, eps: float = 1e-8, zero_mean: bool = True
) -> float:
    """:func:`si_sdr` of a whole track, all channels as one signal (sums do not depend on
    the sample order), in float64 over blocks: no float64 copy of the track is made."""
    n = reference.size
    mean_e = mean_r = 0.0
    if zero_mean:
        for e, r in _blocks(estimate, reference):
            mean_e, mean_r = mean_e + e.sum(), mean_r + r.sum()
        mean_e, mean_r = mean_e / n, mean_r / n
    dot = power = 0.0
    for e, r in _blocks(estimate, reference):
        r -= mean_r
        dot, power = dot + np.dot(e - mean_e, r), power + np.dot(r, r)
    scale = (dot + eps) / (power + eps)
    noise = 0.0
    for e, r in _blocks(estimate, reference):
        e -= mean_e
        e -= scale * (r - mean_r)
        noise += np.dot(e, e)
    return float(10 * math.log10((scale * scale * power + eps) / (noise + eps)))


def _pad_or_truncate(estimate: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad or cut ``(samples, channels)`` to ``length`` samples (museval.evaluate)."""
    if estimate.shape[0] >= length:
        return estimate[:length]
    return np.pad(estimate, [(0, length - estimate.shape[0]), (0, 0)])


def _bss_groups(targets: list[str]) -> list[tuple[list[str], list[str]]]:
    """``(evaluated together, reported)`` target groups, as ``museval.eval_mus_track``.

    With both ``vocals`` and ``accompaniment``, the pair is scored on its own and
    ``vocals`` is reported from that pair only.
    """
    has_acc = "vocals" in targets and "accompaniment" in targets
    rest = [t for t in targets if not (has_acc and t == "accompaniment")]
    groups = []
    if len(rest) >= 2:
        groups.append((rest, [t for t in rest if not (has_acc and t == "vocals")]))
    elif not has_acc:
        log.warning("BSSEval needs at least two targets, got %s: framewise scores skipped", rest)
    if has_acc:
        pair = ["vocals", "accompaniment"]
        groups.append((pair, pair))
    return groups


def _as_track_audio(x: ArrayLike, name: str) -> np.ndarray:
    """``(samples, channels)`` float32 or float64 (other dtypes) from numpy or torch.

    Float32 audio is not widened here: BSSEval computes in float64 from it by itself.
    """
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise LongsepError(f"{name}: expected (samples, channels) audio, got shape {x.shape}")
    return x


def evaluate_track(
    references: Mapping[str, ArrayLike],
    estimates: Mapping[str, ArrayLike],
    backend: str = "fast",
    window: int = 44100,
    hop: int = 44100,
    rate: int = 44100,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Score one track: BSSEval v4 framewise metrics and SI-SDR per target.

    ``references`` / ``estimates`` map target names to ``(samples, channels)`` audio
    (museval / musdb layout). Targets present in both are scored, in the order of
    ``references``, grouped as ``museval.eval_mus_track`` does; estimates are padded or
    cut to the reference length. SI-SDR treats all channels of a track as one signal.

    Returns ``{"rate", "window", "hop", "targets": {name: {"SDR", "ISR", "SIR", "SAR":
    (nwin,) arrays, "SI-SDR": float}}}``; targets are listed in museval's output order.
    """
    names = [t for t in references if t in estimates]
    if not names:
        raise LongsepError(
            f"estimates {list(estimates)} share no target with references {list(references)}: "
            "name estimates after the reference targets"
        )
    refs = {t: _as_track_audio(references[t], f"references[{t!r}]") for t in names}
    ests = {
        t: _pad_or_truncate(_as_track_audio(estimates[t], f"estimates[{t!r}]"), len(refs[t]))
        for t in names
    }
    targets: dict[str, dict[str, Any]] = {}
    for group, reported in _bss_groups(names):
        scores = bss_eval(
            [refs[t] for t in group],
            [ests[t] for t in group],
            backend=backend,
            window=window,
            hop=hop,
            device=device,
        )
        for i, t in enumerate(group):
            if t in reported:
                targets[t] = {m: scores[m][i] for m in BSS_METRICS}
    for t in names:
        targets.setdefault(t, {})["SI-SDR"] = track_si_sdr(ests[t], refs[t])
    return {"rate": rate, "window": window, "hop": hop, "targets": targets}


def _museval_value(value: float) -> float:
    """museval's JSON quantisation: 5 decimals, ``inf`` stored as ``nan``."""
    return math.nan if not math.isfinite(value) else round(float(value), 5)


def to_museval_json(track_name: str, scores: Mapping[str, Any]) -> dict[str, Any]:
    """The document museval writes for a track (``musdb.schema.json``).

    ``scores`` is what :func:`evaluate_track` returns. Frame ``time`` and ``duration``
    are in seconds. ``track_name`` is not part of the document (museval uses the file
    name); write it to ``<dir>/test/<track_name>.json`` with :func:`save_museval_json`.
    """
    from museval.version import _version

    if not track_name or Path(track_name).name != track_name:
        raise LongsepError(f"track_name={track_name!r}: use a plain file name (no folders)")
    rate = scores["rate"]
    duration, hop = scores["window"] / rate, scores["hop"] / rate
    targets = []
    for name, values in scores["targets"].items():
        if "SDR" not in values:
            continue
        frames = [
            {
                "time": i * hop,
                "duration": duration,
                "metrics": {m: _museval_value(values[m][i]) for m in ("SDR", "SIR", "SAR", "ISR")},
            }
            for i in range(len(values["SDR"]))
        ]
        targets.append({"name": name, "frames": frames})
    return {"targets": targets, "museval_version": _version}


def save_museval_json(document: Mapping[str, Any], path: str | Path) -> Path:
    """Write a :func:`to_museval_json` document (``NaN`` literals, as museval writes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, allow_nan=True))
    return path

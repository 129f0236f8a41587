"""Does a trained model use long context? Two analyses of finished training runs.

- :func:`window_sweep`: the model separates the test songs with windows of several lengths
  (3.5 s to 60 s and the whole song); a train-length x test-window table of median SDR shows
  whether a model trained on 30 s gains from 30-s windows over 7-s ones.
- :func:`attention_reach`: for attention models, per attention layer, the attention-weighted
  mean distance between query and key frames (seconds), and where the attention mass lands:
  on the query's own section occurrence, on *other occurrences of the same section kind*
  (the repetitions a long input could exploit), or elsewhere. Sections come from the
  built-in set's manifest (``synth.json``); for other data only the distance is reported.
  The weights are recomputed from the queries and keys each layer hands to attention
  (softmax of the scaled dot products, averaged over heads) on one window of the model's
  training length; layers with local windows are skipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from longsep import audio
from longsep.errors import LongsepError
from longsep.evaluation.evaluate import ScoringOptions, evaluate_model, load_tracks
from longsep.inference.options import InferenceOptions
from longsep.io import atomic_write, write_json, write_text
from longsep.models.attention import base as attention_base
from longsep.spectral import STFTConfig, magnitude, make_transforms
from longsep.store import load_models, resolve_model
from longsep.study.records import RESULT_FILE, read_result

log = logging.getLogger(__name__)

WINDOWS: tuple[float | None, ...] = (3.5, 7.0, 15.0, 30.0, 60.0, None)  # None: whole song
SYNTH_MANIFEST = "synth.json"


@dataclass
class TrainedRun:
    """A finished training run: its exported model and the data it was trained on."""

    run_dir: Path
    model: str
    src: str
    seq_len: float
    data: dict[str, Any] = field(repr=False)


def trained_runs(path: str | Path) -> list[TrainedRun]:
    """The finished runs (``result.json`` status ok, ``model/`` exported) of a run or a
    sweep directory."""
    root = Path(path).expanduser()
    found = (
        [root]
        if (root / RESULT_FILE).is_file()
        else sorted(p.parent for p in root.rglob(RESULT_FILE))
    )
    runs = []
    for run in found:
        record = read_result(run)
        if record["status"] != "ok" or not (run / "model").is_dir():
            continue
        config = yaml.safe_load((run / "config.yaml").read_text())
        runs.append(
            TrainedRun(
                run,
                str(record["model"]),
                str(record["src"]),
                float(record["seq_len"]),
                config["data"],
            )  # fmt: skip
        )
    if not runs:
        raise LongsepError(f"{path} holds no finished run (result.json ok with model/)")
    return runs


def _window_name(window: float | None) -> str:
    return "song" if window is None else f"{window:g}s"


def window_sweep(
    run: TrainedRun,
    windows: Sequence[float | None] = WINDOWS,
    split: str = "test",
    niter: int | None = None,
    backend: str = "fast",
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Median test SDR of the run's source for each test-time window; evaluations go to
    ``<run>/context/window-<w>/`` (resumable like any evaluation). ``niter``: None for the
    inference default (conf/inference)."""
    source = resolve_model(run.run_dir / "model")
    scoring = ScoringOptions.of(split=split, backend=backend, workers=workers, overwrite=False)
    rows = []
    for window in windows:
        changes = {"segment": window, "residual": True}  # BSSEval: 2 sources
        if niter is not None:
            changes["niter"] = niter
        out = run.run_dir / "context" / f"window-{_window_name(window)}" / split
        summary = evaluate_model(
            source,
            run.data,
            out,
            inference=InferenceOptions.of(**changes),
            scoring=scoring,
            name=f"{run.model}@{_window_name(window)}",
            data_name="context",
            progress=False,
        )
        sdr = summary["median"].get(run.src, {}).get("SDR")
        rows.append(
            {
                "model": run.model,
                "src": run.src,
                "seq_len": run.seq_len,
                "window": _window_name(window),
                "sdr": sdr,
            }  # fmt: skip
        )
    return rows


@contextlib.contextmanager
def recorded_attention() -> Iterator[list[Tensor]]:
    """Record, for every attention call without local windows, the head-averaged weights
    ``(queries, keys)`` of batch item 0 (computed from the queries and keys attention gets)."""
    weights: list[Tensor] = []
    original = attention_base.attend

    def attend(q: Tensor, k: Tensor, v: Tensor, dropout_p: float, window=None, kv_window=None):
        if window is None:
            scores = q[0].float() @ k[0].float().transpose(-1, -2) / math.sqrt(q.shape[-1])
            weights.append(scores.softmax(-1).mean(0).cpu())
        return original(q, k, v, dropout_p, window, kv_window)

    attention_base.attend = attend
    try:
        yield weights
    finally:
        attention_base.attend = original


def section_labels(manifest: Path, track: str, frames: int, stft: STFTConfig) -> np.ndarray:
    """Per STFT frame: ``(occurrence index, kind index)`` of the section it lies in, from the
    built-in set's manifest (``-1`` outside any section)."""
    data = json.loads(manifest.read_text())
    entry = next(
        (t for split in data["tracks"].values() for t in split if t["name"] == track), None
    )
    if entry is None:
        raise LongsepError(f"{manifest} has no track {track!r}")
    rate = float(data.get("params", {}).get("sample_rate", stft.sample_rate))
    centres = np.arange(frames) * stft.hop_length * rate / stft.sample_rate  # song samples
    labels = np.full((frames, 2), -1)
    kinds: dict[str, int] = {}
    for occurrence, (kind, start, length, _) in enumerate(entry["sections"]):
        inside = (centres >= start) & (centres < start + length)
        labels[inside] = (occurrence, kinds.setdefault(kind, len(kinds)))
    return labels


def _reach(weights: Tensor, frames: int, stft: STFTConfig, labels: np.ndarray | None) -> dict:
    """Mean distance and mass shares of one layer's ``(queries, keys)`` weights."""
    w = weights.double().numpy()
    nq, nk = w.shape
    q_frames = np.minimum(np.arange(nq) * frames / nq, frames - 1).astype(int)
    k_frames = np.minimum(np.arange(nk) * frames / nk, frames - 1).astype(int)
    seconds = stft.hop_length / stft.sample_rate
    distance = np.abs(q_frames[:, None] - k_frames[None, :]) * seconds
    row = {"queries": nq, "keys": nk, "mean_distance_s": float((w * distance).sum() / nq)}
    if labels is not None:
        q_lab, k_lab = labels[q_frames], labels[k_frames]
        placed = (q_lab[:, None, 0] >= 0) & (k_lab[None, :, 0] >= 0)
        same = placed & (q_lab[:, None, 0] == k_lab[None, :, 0])
        repeat = placed & ~same & (q_lab[:, None, 1] == k_lab[None, :, 1])
        row["same_occurrence"] = float((w * same).sum() / nq)
        row["other_occurrence_same_kind"] = float((w * repeat).sum() / nq)
    return row


def attention_reach(run: TrainedRun, split: str = "test", track_index: int = 0) -> dict:
    """Per attention layer of the run's model: reach statistics on one test song (a window of
    the training length from its start), plus the last layer's map and the song's
    self-similarity for a figure."""
    models, entries = load_models(str(run.run_dir / "model"), [run.src])
    model, entry = models[run.src], entries[0]
    track = load_tracks(run.data, split)[track_index]
    song = audio.resample(
        torch.from_numpy(track.audio.T).float(), track.rate, entry.stft.sample_rate
    )
    mixture = song[None, :, : round(run.seq_len * entry.stft.sample_rate)]
    stft, _ = make_transforms(entry.stft)
    mag = magnitude(stft(mixture))
    frames = mag.shape[-1]
    with recorded_attention() as weights, torch.inference_mode():
        model(mag)
    manifest = Path(str(run.data.get("root"))) / SYNTH_MANIFEST
    labels = (
        section_labels(manifest, track.name, frames, entry.stft) if manifest.is_file() else None
    )
    layers = [{"layer": i, **_reach(w, frames, entry.stft, labels)} for i, w in enumerate(weights)]
    features = torch.log1p(mag[0].mean(0)).T  # (frames, bins)
    features = torch.nn.functional.normalize(features - features.mean(0), dim=1)
    return {
        "model": run.model,
        "src": run.src,
        "seq_len": run.seq_len,
        "track": track.name,
        "layers": layers,
        "attention_map": weights[-1].numpy() if weights else None,
        "self_similarity": (features @ features.T).numpy(),
    }


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def context_markdown(sweep: Sequence[dict[str, Any]], reaches: Sequence[dict[str, Any]]) -> str:
    """The two analyses as markdown tables."""
    lines = ["# Does the model use long context?", ""]
    windows = list(dict.fromkeys(r["window"] for r in sweep))
    lines += [
        "## Test-time window sweep",
        "",
        "Median test SDR (dB) of the trained source, the model run on windows of each length "
        "(`song`: one pass over the whole song).",
        "",
    ]
    cells: dict[tuple[str, str, float], dict[str, float | None]] = {}
    for r in sweep:
        cells.setdefault((r["src"], r["model"], r["seq_len"]), {})[r["window"]] = r["sdr"]
    rows = [
        [src, model, f"{seq_len:g} s", *(_fmt(c.get(w)) for w in windows)]
        for (src, model, seq_len), c in sorted(cells.items())
    ]
    lines += _md_table(["source", "model", "trained on", *windows], rows)
    lines += [
        "",
        "## Attention reach",
        "",
        "Per attention layer on one test song (a window of the training length): the "
        "attention-weighted mean distance between query and key frames, and the share of "
        "attention mass on the query's own section occurrence and on other occurrences of "
        "the same section kind (built-in set only).",
        "",
    ]
    rows = []
    for reach in reaches:
        for layer in reach["layers"]:
            rows.append(
                [
                    reach["model"],
                    reach["src"],
                    f"{reach['seq_len']:g} s",
                    str(layer["layer"]),
                    _fmt(layer["mean_distance_s"]),
                    _fmt(layer.get("same_occurrence"), ".3f"),
                    _fmt(layer.get("other_occurrence_same_kind"), ".3f"),
                ]  # fmt: skip
            )
    header = ["model", "source", "trained on", "layer", "mean distance (s)", "same occurrence",
              "other occurrences"]  # fmt: skip
    lines += _md_table(header, rows) if rows else ["no attention models"]
    return "\n".join(lines) + "\n"


def reach_figure(reach: dict[str, Any]) -> Any:
    """The song's self-similarity beside the last attention layer's map (same frames)."""
    from longsep.viz import plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    axes[0].imshow(reach["self_similarity"], origin="lower", cmap="magma", aspect="auto")
    axes[0].set_title("self-similarity of the mixture")
    axes[1].imshow(reach["attention_map"], origin="lower", cmap="viridis", aspect="auto")
    axes[1].set_title(f"attention, last layer ({reach['model']}, {reach['seq_len']:g} s)")
    for ax in axes:
        ax.set_xlabel("key frame" if ax is axes[1] else "frame")
        ax.set_ylabel("query frame" if ax is axes[1] else "frame")
    fig.suptitle(reach["track"])
    fig.tight_layout()
    return fig


def write_context_report(
    sweep: Sequence[dict[str, Any]], reaches: Sequence[dict[str, Any]], out_dir: str | Path
) -> list[Path]:
    """``context.md``, ``context.json`` and one ``attention_<model>.png`` per attention
    model into ``out_dir``."""
    from longsep.viz import plt

    out = Path(out_dir)
    written = [write_text(out / "context.md", context_markdown(sweep, reaches))]
    summary = [{k: v for k, v in r.items() if k not in ("attention_map", "self_similarity")}
               for r in reaches]  # fmt: skip
    written.append(write_json(out / "context.json", {"windows": list(sweep), "reach": summary}))
    for reach in reaches:
        if reach["attention_map"] is None:
            continue
        name = f"attention_{reach['model'].replace(':', '-')}_{reach['src']}_{reach['seq_len']:g}s"
        fig = reach_figure(reach)
        path = out / f"{name}.png"
        written.append(atomic_write(path, lambda p, f=fig: f.savefig(p, format="png", dpi=110)))
        plt.close(fig)
    return written


def analyse(
    path: str | Path,
    out_dir: str | Path,
    windows: Sequence[float | None] = WINDOWS,
    niter: int | None = None,
) -> list[Path]:
    """Both analyses for every finished run under ``path``; the report goes to ``out_dir``."""
    runs = trained_runs(path)
    sweep = [row for run in runs for row in window_sweep(run, windows, niter=niter)]
    reaches = []
    for run in runs:
        reach = attention_reach(run)
        if reach["layers"]:
            reaches.append(reach)
    return write_context_report(sweep, reaches, out_dir)

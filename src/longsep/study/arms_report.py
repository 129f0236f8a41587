"""The context study's report: the pre-registered contrasts of a sweep with arms A / B / C.

:func:`write_arms_report` (``python -m longsep.study <sweep> --arms``) reads the run records,
runs the far-context intervention on every B and C run that has a model and no
``intervention.csv`` yet (:mod:`longsep.study.intervention`), and writes into ``out``:

- ``arms.md``: the pre-registered decisions per model and source
  (:mod:`longsep.study.decisions`: the control's verdict, the spread rule, the under-trained
  flag), then per model the runs and between-run spread of each arm, the contrasts
  B − A, B − C and C − A (family 1: Holm over its registered size, 3 per model of the sweep,
  however many have runs yet) and the intervention effects (family 2: arm B per model; arm
  C, the test's own negative, each tested alone with its equivalence test),
  each with its 95 % interval, Holm-adjusted p-value, Holm-step and TOST intervals and the
  pre-registered verdict;
- ``contrasts.csv``: the same numbers, one row per contrast;
- ``context_effects.png``: every contrast per model with its 95 % interval and the ±0.3-dB
  equivalence band;

and ends ``arms.md`` with the sweep's commands and wall time
(:func:`~longsep.study.provenance.compute_markdown`). While the registered spread rule
withholds every contrast (:func:`~longsep.study.decisions.spread_rule`), only ``arms.md``
is written, with the rule's lines and the command that adds its seed.

A committed copy of the sweep (``python -m longsep.study.collect``: no models) gives the
same report from its ``result.json``, ``scores.csv`` and ``intervention.csv`` files.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from longsep.errors import LongsepError
from longsep.io import atomic_write, write_text
from longsep.study.arms import (
    ALPHA,
    EQUIVALENCE_BOUND,
    RESAMPLES,
    Contrast,
    Group,
    common_tracks,
    contrast,
    evaluate_family,
    group_matrix,
)
from longsep.study.context import trained_runs
from longsep.study.decisions import ControlResult, decisions_markdown, spread_rule
from longsep.study.intervention import (
    INTERVENTION_FILE,
    ScoredSong,
    load_songs,
    run_intervention,
    track_effects,
)
from longsep.study.provenance import compute_markdown, sweep_command
from longsep.study.records import arm_of, read_result

log = logging.getLogger(__name__)

ARM_CONTRASTS = (
    ("B - A", {"B": 1, "A": -1}),
    ("B - C", {"B": 1, "C": -1}),
    ("C - A", {"C": 1, "A": -1}),
)
Scores = dict[str, dict[str, dict[str, dict[str, float]]]]  # model -> arm -> run -> track


def model_key(record: Mapping[str, Any]) -> str:
    """How the report names a model: ``umx_small:none / vocals`` (runs of one source only
    are compared)."""
    return f"{record.get('model')} / {record.get('src')}"


def arm_scores(records: Sequence[Mapping[str, Any]]) -> Scores:
    """``{model: {arm: {job: {track: SDR}}}}`` of the finished runs with per-track scores."""
    out: Scores = {}
    for record in records:
        if record.get("status") != "ok" or not record.get("track_sdr"):
            continue
        arm = arm_of(record)
        out.setdefault(model_key(record), {}).setdefault(arm, {})[record["job"]] = dict(
            record["track_sdr"]
        )
    return out


def sweep_models(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every model of the sweep, finished or not, the registered families' size; a job the
    sweep skips (an invalid or excluded separator / attention pair) is not one of them."""
    return sorted(
        {
            model_key(r)
            for r in records
            if r.get("model") and r.get("src") and r.get("status") != "skipped"
        }
    )


def _bc_seeds(records: Sequence[Mapping[str, Any]]) -> dict[str, set]:
    """``{model: seeds with a finished run in both arm B and arm C}``."""
    seeds: dict[str, dict[str, set]] = {}
    for r in records:
        if r.get("status") == "ok" and arm_of(r) in ("B", "C"):
            seeds.setdefault(model_key(r), {}).setdefault(arm_of(r), set()).add(r.get("seed"))
    return {m: arms.get("B", set()) & arms.get("C", set()) for m, arms in seeds.items()}


def run_interventions(sweep_dir: str | Path) -> None:
    """``intervention.csv`` for every B / C run with a model (test songs loaded once)."""
    try:
        runs = trained_runs(sweep_dir)
    except LongsepError:  # a committed copy holds no models: nothing to run
        return
    songs: dict[tuple[str, str, int], list[ScoredSong]] = {}
    for run in runs:
        arm = arm_of(read_result(run.run_dir))
        if arm not in ("B", "C") or (run.run_dir / INTERVENTION_FILE).is_file():
            continue
        key = (str(run.data.get("root")), run.src, int(run.data["sample_rate"]))
        if key not in songs:
            songs[key] = load_songs(run.data, run.src, key[2])
        run_intervention(run, songs[key])


def intervention_scores(sweep_dir: str | Path, records: Sequence[Mapping[str, Any]]) -> Scores:
    """``{model: {arm: {job: {track: effect}}}}`` of the runs with an ``intervention.csv``."""
    out: Scores = {}
    for record in records:
        path = Path(sweep_dir) / str(record.get("job")) / INTERVENTION_FILE
        if record.get("status") == "ok" and path.is_file():
            arm = arm_of(record)
            out.setdefault(model_key(record), {}).setdefault(arm, {})[record["job"]] = (
                track_effects(path)
            )
    return out


def left_out(records: Sequence[Mapping[str, Any]], effects: Scores) -> list[str]:
    """The finished runs a contrast cannot read (the registration drops no run, so the
    report names them): ``job (no per-track scores)`` and, in arms B and C, ``job (no
    intervention)``."""
    with_effect = {job for arms in effects.values() for runs in arms.values() for job in runs}
    out = []
    for record in records:
        if record.get("status") != "ok":
            continue
        if not record.get("track_sdr"):
            out.append(f"{record['job']} (no per-track scores)")
        if arm_of(record) in ("B", "C") and record["job"] not in with_effect:
            out.append(f"{record['job']} (no intervention)")
    return out


def _groups(
    arms: Mapping[str, Mapping[str, Mapping[str, float]]], weights: Mapping[str, float]
) -> list[Group] | None:
    """The groups of a contrast over the tracks every run scored; None if an arm has no run."""
    present = {a: arms[a] for a in weights if arms.get(a)}
    if len(present) < len(weights):
        return None
    tracks = common_tracks(*present.values())
    return [Group(a, w, group_matrix(present[a], tracks)) for a, w in weights.items()]


def arm_contrasts(
    scores: Scores, resamples: int = RESAMPLES, models: int = 0
) -> list[tuple[str, Contrast]]:
    """Family 1: B − A, B − C, C − A per model, Holm over all of them (a family of
    3 x ``models`` contrasts, the registered size, however many have runs yet)."""
    found = []
    for model in sorted(scores):
        for name, weights in ARM_CONTRASTS:
            groups = _groups(scores[model], weights)
            if groups:
                found.append((model, contrast(name, groups, resamples)))
    done = evaluate_family([c for _, c in found], m=len(ARM_CONTRASTS) * models)
    return list(zip([m for m, _ in found], done, strict=True))


def intervention_contrasts(
    effects: Scores, resamples: int = RESAMPLES, models: int = 0
) -> tuple[list[tuple[str, Contrast]], list[tuple[str, Contrast]]]:
    """Family 2 (arm B's effect per model, a family of ``models``) and the negatives (arm
    C's, not in a family: each tested alone, m = 1)."""
    families: dict[str, list[tuple[str, Contrast]]] = {"B": [], "C": []}
    for model in sorted(effects):
        for arm in families:
            groups = _groups(effects[model], {arm: 1})
            if groups:
                families[arm].append((model, contrast(f"intervention ({arm})", groups, resamples)))
    done = evaluate_family([c for _, c in families["B"]], m=models) if families["B"] else []
    family2 = list(zip([m for m, _ in families["B"]], done, strict=True))
    negatives = [(m, evaluate_family([c])[0]) for m, c in families["C"]]
    return family2, negatives


def _row(model: str, c: Contrast) -> list[str]:
    spread = ", ".join(
        f"{g} {c.runs[g]} runs" + (f" (SD {c.run_sd[g]:.2f})" if math.isfinite(c.run_sd[g]) else "")
        for g in c.runs
    )
    return [
        model,
        c.name,
        f"{c.estimate:+.2f}",
        f"[{c.low:+.2f}, {c.high:+.2f}]",
        f"{c.p_holm:.3f}",
        f"[{c.holm_low:+.2f}, {c.holm_high:+.2f}]",
        f"[{c.eq_low:+.2f}, {c.eq_high:+.2f}]",
        c.verdict(),
        f"{spread}; {c.tracks} tracks",
    ]


HEADER = (
    "model",
    "contrast (dB)",
    "estimate",
    "95 % interval",
    "p (Holm)",
    "Holm-step interval",
    "TOST interval",
    "verdict",
    "runs",
)


def arms_markdown(
    title: str,
    family1: Sequence[tuple[str, Contrast]],
    family2: Sequence[tuple[str, Contrast]],
    negatives: Sequence[tuple[str, Contrast]],
    decisions: str = "",
) -> str:
    """The report's tables, after the ``decisions`` section (see the module docstring)."""
    lines = [
        f"# {title}: the context study's contrasts",
        "",
        "Pre-registered in `experiments/README.md`. One score per (run, track); two-level "
        f"bootstrap ({RESAMPLES} resamples): runs within arms, tracks shared. Verdicts: "
        f"`higher` / `lower` (Holm-adjusted p < {ALPHA}), `equivalent` (TOST interval inside "
        f"±{EQUIVALENCE_BOUND} dB), else `inconclusive`.",
        "",
        *([decisions] if decisions else []),
        "## Family 1: test SDR of the trained source, B − A, B − C, C − A",
        "",
    ]
    sections = [
        ("", family1),
        (
            "## Family 2: far-context intervention, arm B (SDR true − replaced surroundings)",
            family2,
        ),
        ("## Arm C: the intervention's negative control (must be equivalent to 0)", negatives),
    ]
    for heading, rows in sections:
        if heading:
            lines += [heading, ""]
        if not rows:
            lines += ["No finished runs for these contrasts yet.", ""]
            continue
        lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(_row(m, c)) + " |" for m, c in rows]
        lines.append("")
    return "\n".join(lines)


def contrasts_csv(rows: Sequence[tuple[str, str, Contrast]]) -> str:
    """One row per contrast: family, model, name and every number of the tables."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["family", "model", "contrast", "estimate", "low", "high", "p", "p_holm", "holm_low",
         "holm_high", "eq_low", "eq_high", "verdict", "runs", "tracks"]
    )  # fmt: skip
    for family, model, c in rows:
        numbers = [c.estimate, c.low, c.high, c.p, c.p_holm, c.holm_low, c.holm_high]
        numbers += [c.eq_low, c.eq_high]
        runs = " ".join(f"{g}:{n}" for g, n in c.runs.items())
        writer.writerow(
            [family, model, c.name, *(f"{v:.4f}" for v in numbers), c.verdict(), runs, c.tracks]
        )
    return buffer.getvalue()


def effects_figure(rows: Sequence[tuple[str, str, Contrast]]) -> Any:
    """Every contrast per model with its 95 % interval and the ±0.3-dB equivalence band."""
    from longsep.viz import plt

    models = sorted({m for _, m, _ in rows})
    fig, axes = plt.subplots(
        1, max(1, len(models)), figsize=(5.0 * max(1, len(models)), 3.2), squeeze=False
    )
    for ax, model in zip(axes.flat, models or ["no finished runs"], strict=False):
        mine = [c for _, m, c in rows if m == model]
        ys = list(range(len(mine)))[::-1]
        for y, c in zip(ys, mine, strict=True):
            color = "tab:red" if c.verdict() in ("higher", "lower") else "tab:blue"
            ax.errorbar(
                c.estimate, y, xerr=[[c.estimate - c.low], [c.high - c.estimate]], fmt="o",
                color=color, capsize=3,
            )  # fmt: skip
        ax.axvspan(-EQUIVALENCE_BOUND, EQUIVALENCE_BOUND, color="0.9", zorder=0)
        ax.axvline(0, color="0.4", lw=0.8)
        ax.set_yticks(ys, [c.name for c in mine])
        ax.set_xlabel("dB (95 % interval; grey: ±0.3 dB)")
        ax.set_title(model, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def write_arms_report(
    sweep_dir: str | Path,
    records: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    title: str = "",
    resamples: int = RESAMPLES,
    control: ControlResult | None = None,
    oracle: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Run the missing interventions, then write arms.md, contrasts.csv and the figure; only
    arms.md, with the spread rule's lines, while that rule withholds every contrast.

    ``control``: the long-context control's result the decisions read; ``oracle``: an
    oracle evaluation's summary (``{"median": {target: {"SDR": ...}}}``) for the
    under-trained flag."""
    from longsep.study.report import _save_figure

    out, title = Path(out_dir), title or Path(sweep_dir).name
    scores = arm_scores(records)
    spread, withheld = spread_rule(scores, _bc_seeds(records), sweep_command(sweep_dir))
    if withheld:
        heading = f"# {title}: the context study's contrasts"
        text = "\n".join([heading, "", "## Decisions (pre-registered rules)", "", *spread])
        return [write_text(out / "arms.md", text)]
    run_interventions(sweep_dir)
    models = sweep_models(records)
    family1 = arm_contrasts(scores, resamples, len(models))
    effects = intervention_scores(sweep_dir, records)
    family2, negatives = intervention_contrasts(effects, resamples, len(models))
    medians = (oracle or {}).get("median") or {}
    by_model = {model_key(r): medians.get(str(r.get("src")), {}).get("SDR") for r in records}
    decisions = decisions_markdown(
        scores,
        family1,
        family2,
        negatives,
        control,
        by_model,
        spread,
        left_out(records, effects),
    )
    text = arms_markdown(title, family1, family2, negatives, decisions)
    text += "\n" + compute_markdown(sweep_dir, records)
    rows = [("1", m, c) for m, c in family1] + [("2", m, c) for m, c in family2]
    rows += [("negative", m, c) for m, c in negatives]
    written = [write_text(out / "arms.md", text)]
    atomic_write(out / "contrasts.csv", lambda p: p.write_text(contrasts_csv(rows)))
    written.append(out / "contrasts.csv")
    written.append(_save_figure(effects_figure(rows), out / "context_effects.png"))
    return written

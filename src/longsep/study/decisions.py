"""The context study's pre-registered decisions (``experiments/README.md``, "Decisions").

Per model (and source), from the evaluated contrasts of :mod:`longsep.study.arms_report`,
the long-context control's result (``control.json`` of ``python -m longsep.study.control``)
and the oracle:

- *longer input helps / hurts / equivalent / inconclusive*: B − A;
- *models use far context*: arm B's intervention effect higher **and** arm C's equivalent to
  0; C's not equivalent makes the intervention unreliable; read beside the control's
  same-weights criterion where its design registers one (the third design: does the same
  kind of test detect the solo's use there?);
- *far context improves separation*: B − C higher;
- *no usable far-context benefit above 0.3 dB*: the upper end of B − C's TOST interval
  below +0.3 dB **and** a control that responded; without one it reads "no benefit detected
  by a control that could not respond";
- *chunk count matters*: C − A significant;
- *under-trained*: an arm whose median SDR is below half of the oracle's.

The registered spread rule comes first: if the between-run SD of any arm exceeds 0.3 dB,
seed 46 joins arms B and C of both models before any contrast is computed; until it has,
the report computes none and withholds the decisions (:func:`spread_rule`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longsep.errors import LongsepError
from longsep.study.arms import EQUIVALENCE_BOUND, Contrast, common_tracks, group_matrix

CONTROL_JSON = "control.json"
SPREAD_LIMIT = 0.3  # dB: between-run SD of run means above which seed 46 is added
EXTRA_SEED = 46
ORACLE_SHARE = 0.5

Scores = Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]  # model, arm, run, track


@dataclass(frozen=True)
class ControlResult:
    """The long-context control's verdict and where it was read from; ``solo_use_detected``:
    its registered within-model criterion (None where the design registers none)."""

    responded: bool
    source: str
    solo_use_detected: bool | None = None
    runs: Mapping[str, int] | None = None  # runs per group ("positive:B": 3, ...)


def read_control(path: str | Path) -> ControlResult:
    """The control's ``control.json`` (a file, or the folder holding it)."""
    file = Path(path)
    file = file / CONTROL_JSON if file.is_dir() else file
    try:
        data = json.loads(file.read_text())
        within = data.get("within_model") or {}
        detected = bool(within["detected"]) if within.get("registered") else None
        runs = {str(k): int(v) for k, v in (data.get("runs") or {}).items()}
        return ControlResult(bool(data["responded"]), str(file), detected, runs)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LongsepError(f"{file}: not a control result ({exc})") from None


def spread_breaches(scores: Scores) -> list[tuple[str, str, float]]:
    """``(model, arm, SD)`` of every arm whose between-run SD exceeds :data:`SPREAD_LIMIT`:
    the SD of its runs' means over the tracks every run of the arm scored."""
    out = []
    for model, arms in sorted(scores.items()):
        for arm, runs in sorted(arms.items()):
            means = group_matrix(runs, common_tracks(runs)).mean(axis=1)
            sd = float(np.std(means, ddof=1)) if len(means) > 1 else math.nan
            if sd > SPREAD_LIMIT:
                out.append((model, arm, sd))
    return out


def spread_rule(
    scores: Scores,
    seeds: Mapping[str, Sequence[Any]] | None = None,
    command: str | None = None,
) -> tuple[list[str], bool]:
    """The registered spread rule's lines and whether it withholds every contrast: an arm's
    between-run SD above :data:`SPREAD_LIMIT` while seed :data:`EXTRA_SEED` has not run in
    arms B and C of every model. ``seeds``: ``{model: seeds of its B and C runs}``;
    ``command``: the sweep's command, to which the extra seed is added."""
    breaches = spread_breaches(scores)
    if not breaches:
        return [], False
    where = ", ".join(f"{m} arm {a} {sd:.2f} dB" for m, a, sd in breaches)
    lines = [f"Between-run SD above {SPREAD_LIMIT} dB: {where}."]
    missing = [m for m in scores if EXTRA_SEED not in (seeds or {}).get(m, ())]
    if not missing:
        return [*lines, f"Seed {EXTRA_SEED} has run in arms B and C, as the rule asks.", ""], False
    lines += [
        f"By the registered rule seed {EXTRA_SEED} joins arms B and C of every model "
        "before any contrast is computed: the contrasts and the decisions are withheld until "
        f"it has run (missing for {', '.join(missing)}).",
        "",
    ]
    if command:
        extra = f"hydra.sweeper.params.seed={EXTRA_SEED} \"hydra.sweeper.params.arm='B,C'\""
        lines += ["```text", f"{command} {extra}", "```", ""]
    return lines, True


def _answer(c: Contrast | None, yes: str, no: str) -> str:
    if c is None:
        return "no runs yet"
    return yes if c.significant and c.estimate > 0 else no


def model_decisions(
    family1: Mapping[str, Contrast],
    b_effect: Contrast | None,
    c_effect: Contrast | None,
    control: ControlResult | None,
) -> list[tuple[str, str]]:
    """``(question, answer)`` for one model by the registered rules (module docstring)."""
    ba, bc, ca = (family1.get(n) for n in ("B - A", "B - C", "C - A"))
    longer = {"higher": "helps", "lower": "hurts"}
    rows = [
        (
            "Longer input (B − A)",
            "no runs yet" if ba is None else longer.get(ba.verdict(), ba.verdict()),
        )
    ]
    if b_effect is None or c_effect is None:
        use = "no intervention yet"
    elif not c_effect.equivalent:
        use = "unreliable: arm C's effect is not equivalent to 0, no claim is made"
    else:
        use = _answer(b_effect, "yes", "not shown")
        if control is not None and control.solo_use_detected is not None:
            use += (
                " (the same kind of test detected the solo's use in the control)"
                if control.solo_use_detected
                else " (a test the control did not validate: its same-weights check did not "
                "detect the solo's use)"
            )
    rows.append(("Models use far context (intervention)", use))
    rows.append(("Far context improves separation (B − C)", _answer(bc, "yes", "not shown")))
    if bc is None:
        bound = "no runs yet"
    elif bc.eq_high >= EQUIVALENCE_BOUND:
        bound = f"not shown (upper end {bc.eq_high:+.2f} dB)"
    elif control is None:
        bound = "no benefit detected; no control result was given"
    elif control.responded:
        bound = f"holds (upper end {bc.eq_high:+.2f} dB; the control responded)"
    else:
        bound = "no benefit detected by a control that could not respond"
    rows.append((f"No usable far-context benefit above {EQUIVALENCE_BOUND} dB", bound))
    if ca is None:
        chunks = "no runs yet"
    else:
        chunks = f"yes, C − A {ca.verdict()}" if ca.significant else "not shown"
    rows.append(("Chunk count matters (C − A)", chunks))
    return rows


def under_trained(
    arms: Mapping[str, Mapping[str, Mapping[str, float]]], oracle_sdr: float | None
) -> list[str]:
    """``A 6.10 dB`` for each arm whose median over runs and tracks is below half the oracle."""
    if oracle_sdr is None or not math.isfinite(oracle_sdr):
        return []
    out = []
    for arm, runs in sorted(arms.items()):
        median = float(np.median([s for tracks in runs.values() for s in tracks.values()]))
        if median < ORACLE_SHARE * oracle_sdr:
            out.append(f"{arm} {median:.2f} dB")
    return out


def decisions_markdown(
    scores: Scores,
    family1: Sequence[tuple[str, Contrast]],
    family2: Sequence[tuple[str, Contrast]],
    negatives: Sequence[tuple[str, Contrast]],
    control: ControlResult | None,
    oracle: Mapping[str, float] | None = None,
    spread: Sequence[str] = (),
    left_out: Sequence[str] = (),
) -> str:
    """The report's "Decisions" section. ``oracle``: ``{model: oracle SDR of its source}``;
    ``spread``: the lines of a :func:`spread_rule` that withholds nothing; ``left_out``: the
    finished runs no contrast could read, named before the decisions."""
    lines = ["## Decisions (pre-registered rules)", ""]
    if control is None:
        lines += ["Control: none given (`--control`).", ""]
    else:
        said = "responded" if control.responded else "did not respond"
        if control.solo_use_detected is not None:
            said += "; its registered same-weights criterion " + (
                "detected the solo's use"
                if control.solo_use_detected
                else "did not detect the solo's use"
            )
        if control.runs:
            said += "; runs " + ", ".join(f"{g} {n}" for g, n in sorted(control.runs.items()))
        lines += [f"Control: {said} (`{control.source}`).", ""]
    if left_out:
        lines += [f"Finished runs missing from the contrasts: {', '.join(left_out)}.", ""]
    lines += spread
    per_model: dict[str, dict[str, Contrast]] = {}
    for model, c in family1:
        per_model.setdefault(model, {})[c.name] = c
    b_effects, c_effects = dict(family2), dict(negatives)
    for model in sorted(scores):
        lines += [f"**{model}**", "", "| question | answer |", "|---|---|"]
        rows = model_decisions(
            per_model.get(model, {}), b_effects.get(model), c_effects.get(model), control
        )
        lines += [f"| {q} | {a} |" for q, a in rows]
        weak = under_trained(scores[model], (oracle or {}).get(model))
        if weak:
            lines += [
                "",
                f"Under-trained (below half the oracle's {oracle[model]:.2f} dB): "
                f"{', '.join(weak)}.",
            ]
        lines.append("")
    return "\n".join(lines)

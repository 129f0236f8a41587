"""The long-context control of the context study: does the design see context use where
it is known to exist? (pre-registered in ``experiments/README.md``)

On ``data=synth_positive`` a same-timbre distractor sings with the target everywhere but in
a solo at the song's start or end, separated from the shared singing by a break longer than
arm C's reach (>= 10 s; >= 8 s in the second design, ``data=synth_positive_near``);
``data=synth_negative`` is the same songs with the solo cut out (in the third design,
``data=synth_negative_whole``, the solo's voice is taken out in place). Per run and song,
the 30-s window that begins or ends with the solo (in the negative song: the same place
without the solo) is separated in one pass without the Wiener EM, and the target's SDR is measured
over the shared singing in that window (the same music in both songs of a pair,
:func:`scored_ranges`). A model that uses the
solo (arm B can, arm C's 7.5-s pieces cannot) gains there on the positive set only: the
interaction (B − C on positive) − (B − C on negative) is the control's response.
``control.md`` ends with the sweep's commands and wall time (:mod:`longsep.study.provenance`);
``control.json`` holds the verdict the study's decisions read (:mod:`longsep.study.decisions`).

    python -m longsep.study.control runs/multirun/context_control_arms_cpu --out DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from longsep.errors import LongsepError
from longsep.inference.separator import Separator
from longsep.io import write_json, write_text
from longsep.study.arms import Contrast, Group, common_tracks, contrast, group_matrix
from longsep.study.context import SYNTH_MANIFEST, TrainedRun, trained_runs
from longsep.study.decisions import CONTROL_JSON
from longsep.study.intervention import ScoredSong, load_songs, one_pass_separator, sdr, write_rows
from longsep.study.provenance import compute_markdown
from longsep.study.records import arm_of, load_study, read_result

log = logging.getLogger(__name__)

CONTROL_FILE = "control.csv"
WITHIN_FILE = "control_within.csv"
WITHIN_COLUMNS = ("song", "sdr_with_solo", "sdr_solo_removed")
COLUMNS = ("track", "song", "window_start_seconds", "scored_seconds", "sdr")
WINDOW_SECONDS = 30.0
# Positive sets whose control registers the within-model check as a second, named criterion,
# "the same-weights test detects use of the solo" (experiments/README.md, change log,
# 2026-12-07 03:00 UTC, item 3: the third design only; for the first two it had been seen).
WITHIN_REGISTERED = ("synth_positive_whole",)
_SUFFIX = re.compile(r" \((positive|negative)\)$")


def song_key(track: str) -> str:
    """The song a control track belongs to: its name without `` (positive)``."""
    return _SUFFIX.sub("", track)


def _both(entry: dict[str, Any]) -> list[tuple[int, int]]:
    """The sample ranges of a manifest entry where the target and the distractor sing."""
    samples = int(entry["samples"])
    return [
        (int(s[1]), min(samples, int(s[1]) + int(s[2])))
        for s in entry["sections"]
        if "vocals" in s[3] and "distractor" in s[3]
    ]


def _window(entry: dict[str, Any], window: int) -> tuple[int, int, int]:
    """(window start, scored from, scored to) in the entry's samples: the window holds the
    solo (or, in the negative song, the place it was cut from) and the shared singing next
    to it; the scored span is the same music in both songs of a pair. A negative song whose
    solo was muted in place keeps the solo's section (without the voice) and its window."""
    solo = next((s for s in entry["sections"] if s[0] == "solo"), None)
    if entry.get("control") in ("positive", "negative") and solo is not None:
        solo_start, solo_end = int(solo[1]), int(solo[1]) + int(solo[2])
        if solo_start == 0:  # the window opens with the solo
            return 0, 0, window
        return solo_end - window, solo_end - window, solo_start  # it ends with the solo
    if entry.get("control") == "negative" and entry.get("removed"):
        cut, length = int(entry["removed"][1]), int(entry["removed"][2])
        if cut == 0:  # the positive's window less the solo
            return 0, 0, window - length
        return cut - window, cut - window + length, cut
    raise LongsepError(f"{entry.get('name')}: not a song of a long-context control set")


def scored_ranges(
    entry: dict[str, Any], manifest_rate: int, rate: int, window_seconds: float = WINDOW_SECONDS
) -> tuple[int, list[tuple[int, int]]]:
    """The window start and the both-singing ranges scored inside it (relative to its
    start), in samples at ``rate``, of one control song's manifest entry.

    Positive song: the 30-s window that begins with the solo (solo first) or ends with it
    (solo last); scored: where both voices sing inside it. Negative song: the window at the
    same place without the solo (cut out, or its voice muted in place); scored: the same
    shared singing as in the positive song, so a pair differs only in whether the solo is
    in the window. A song whose solo ends less than 30 s in (the third design's songs of
    30–33 s, solo last) gets the window at its start, [0, 30 s): it holds the solo, all the
    shared singing and the outro after the solo, the same in both songs of a pair."""
    window = round(window_seconds * manifest_rate)
    start, low, high = _window(entry, window)
    start = max(0, start)
    scale = rate / manifest_rate
    ranges = []
    for a, b in _both(entry):
        a, b = max(a, low, start), min(b, high, start + window)
        if b > a:
            ranges.append((round((a - start) * scale), round((b - start) * scale)))
    return round(start * scale), ranges


def solo_range(entry: dict[str, Any], manifest_rate: int, rate: int) -> tuple[int, int]:
    """Samples ``[start, stop)`` at ``rate`` of a positive control song's solo."""
    solo = next((s for s in entry["sections"] if s[0] == "solo"), None)
    if solo is None:
        raise LongsepError(f"{entry.get('name')}: no solo (not a positive control song)")
    scale = rate / manifest_rate
    return round(int(solo[1]) * scale), round((int(solo[1]) + int(solo[2])) * scale)


def score_song(
    separator: Separator,
    song: ScoredSong,
    entry: dict[str, Any],
    manifest_rate: int,
    remove_solo: bool = False,
) -> tuple | None:
    """The row of :data:`COLUMNS` of one song (None when nothing in its window is scored).

    ``remove_solo``: the target's stem is taken out of the mixture over the solo (the
    mixture is the exact sum of the stems), everything else in place."""
    rate = separator.stft_config.sample_rate
    window = round(WINDOW_SECONDS * rate)
    start, ranges = scored_ranges(entry, manifest_rate, rate)
    if not ranges:
        return None
    mixture = song.mixture[:, start : start + window]
    if remove_solo:
        a, b = solo_range(entry, manifest_rate, rate)
        a, b = max(a - start, 0), min(b - start, mixture.shape[-1])
        mixture = mixture.clone()
        mixture[:, a:b] -= song.target[:, start + a : start + b]
    with torch.inference_mode():
        estimate = separator(mixture[None])[0, 0]
    keep = torch.cat([torch.arange(a, b) for a, b in ranges])
    reference = song.target[:, start : start + window][:, keep]
    return (
        song.name,
        song_key(song.name),
        round(start / rate, 4),
        round(len(keep) / rate, 4),
        sdr(reference, estimate[:, keep]),
    )


def score_run(
    run: TrainedRun, songs: Sequence[ScoredSong], manifest: dict[str, Any], remove_solo=False
) -> list:
    """The rows of :data:`COLUMNS` of one run (see :func:`score_song`)."""
    separator = one_pass_separator(run)
    manifest_rate = int(manifest["params"]["sample_rate"])
    entries = {e["name"]: e for e in manifest["tracks"]["test"]}
    rows = [
        score_song(separator, song, entries[song.name], manifest_rate, remove_solo)
        for song in songs
    ]
    return [row for row in rows if row is not None]


def read_scores(path: Path) -> dict[str, float]:
    """``{song: SDR}`` of a ``control.csv``."""
    with path.open(newline="") as handle:
        return {row["song"]: float(row["sdr"]) for row in csv.DictReader(handle)}


def _songs_and_manifest(
    data: dict[str, Any], src: str, cache: dict[str, tuple]
) -> tuple[list[ScoredSong], dict[str, Any]]:
    """The test songs and the manifest of a control set (loaded once per set)."""
    root = Path(str(data["root"]))
    if str(root) not in cache:
        manifest_path = root / SYNTH_MANIFEST
        if not manifest_path.is_file():
            raise LongsepError(f"{manifest_path} is missing: not a control data set")
        songs = load_songs(data, src, int(data["sample_rate"]))
        cache[str(root)] = (songs, json.loads(manifest_path.read_text()))
    return cache[str(root)]


def _score_within(run: TrainedRun, cache: dict[str, tuple]) -> None:
    """Write ``<run>/control_within.csv``: per song, the SDR with the solo and without it."""
    log.info("control, within the model: %s", run.run_dir.name)
    songs, manifest = _songs_and_manifest(run.data, run.src, cache)
    pair = [
        {r[0]: r[4] for r in score_run(run, songs, manifest, remove_solo=removed)}
        for removed in (False, True)
    ]
    rows = [(k, pair[0][k], pair[1][k]) for k in sorted(pair[0])]
    write_rows(run.run_dir / WITHIN_FILE, WITHIN_COLUMNS, rows)


def score_runs(sweep_dir: str | Path) -> None:
    """Score every finished run of a control sweep that has a model: ``control.csv`` where
    it is missing, and ``control_within.csv`` for a run on a positive set (each set's test
    songs loaded once). A committed copy of the sweep (no models) is left as it is."""
    cache: dict[str, tuple] = {}
    for run in _runs_with_models(Path(sweep_dir)):
        if not (run.run_dir / CONTROL_FILE).is_file():
            songs, manifest = _songs_and_manifest(run.data, run.src, cache)
            log.info("control: %s", run.run_dir.name)
            write_rows(run.run_dir / CONTROL_FILE, COLUMNS, score_run(run, songs, manifest))
        positive = "positive" in str(read_result(run.run_dir).get("data", ""))
        if positive and not (run.run_dir / WITHIN_FILE).is_file():
            _score_within(run, cache)


def analyse(sweep_dir: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{"<set>:<arm>": {job: {song: SDR}}}`` of every finished run of a control sweep,
    scoring first what is not scored yet (:func:`score_runs`; a committed copy of the
    sweep, without models, is read as it is)."""
    sweep = Path(sweep_dir)
    score_runs(sweep)
    groups: dict[str, dict[str, dict[str, float]]] = {}
    for record in load_study(sweep):
        path = sweep / record["job"] / CONTROL_FILE
        if record["status"] != "ok" or not path.is_file():
            continue
        kind = "positive" if "positive" in str(record.get("data")) else "negative"
        groups.setdefault(f"{kind}:{arm_of(record)}", {})[record["job"]] = read_scores(path)
    return groups


def analyse_within(sweep_dir: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{arm: {job: {song: effect}}}``, the solo's effect
    inside each model trained on the positive set: its SDR on the shared singing of the
    control's window as it is, less the same with the solo's voice taken out of the mixture
    in place (everything else, positions included, unchanged). Same weights in both, so
    training noise cancels; arm C's pieces never hold the solo and the shared singing
    together, so its effect is 0 by construction: the comparison's own negative. Runs with
    a model and no ``control_within.csv`` are scored (:func:`score_runs`); a committed copy
    is read as it is."""
    sweep = Path(sweep_dir)
    score_runs(sweep)
    groups: dict[str, dict[str, dict[str, float]]] = {}
    for record in load_study(sweep):
        path = sweep / record["job"] / WITHIN_FILE
        if record["status"] == "ok" and path.is_file():
            with path.open(newline="") as handle:
                effects = {
                    row["song"]: float(row["sdr_with_solo"]) - float(row["sdr_solo_removed"])
                    for row in csv.DictReader(handle)
                }
            groups.setdefault(arm_of(record), {})[record["job"]] = effects
    return groups


def within_registered(records: Sequence[dict[str, Any]]) -> bool:
    """Whether the sweep's control design registers the within-model check as a criterion
    (a finished run, of the sweep's ``records``, on one of :data:`WITHIN_REGISTERED`)."""
    return any(
        record["status"] == "ok" and str(record.get("data")) in WITHIN_REGISTERED
        for record in records
    )


@dataclass(frozen=True)
class WithinCheck:
    """The solo's effect inside the models (:func:`analyse_within`): in B, in C and B − C,
    the largest |effect| of any (run, song) in C, and whether the design registers it."""

    results: list[Contrast]
    c_max_abs: float
    registered: bool

    @property
    def detected(self) -> bool:
        """The named criterion: the solo's effect in B above 0 (95 % interval) with arm
        C's exactly 0 for every (run, song)."""
        return self.results[0].low > 0 and self.c_max_abs == 0.0


def within_check(
    groups: dict[str, dict[str, dict[str, float]]], registered: bool = False
) -> WithinCheck | None:
    """The solo's effect in B, in C, and B − C, over the songs every run scored (None until
    both arms have a run)."""
    if not groups.get("B") or not groups.get("C"):
        return None
    tracks = common_tracks(groups["B"], groups["C"])
    b, c = (group_matrix(groups[a], tracks) for a in ("B", "C"))
    results = [
        contrast("solo effect in B", [Group("B", 1, b)]),
        contrast("solo effect in C", [Group("C", 1, c)]),
        contrast("B - C", [Group("B", 1, b), Group("C", -1, c)]),
    ]
    c_max = max(abs(v) for run in groups["C"].values() for v in run.values())
    return WithinCheck(results, float(c_max), registered)


def _row(c: Contrast, last: str) -> str:
    """A table row: name, estimate, 95 % interval, p, then ``last``."""
    return f"| {c.name} | {c.estimate:+.2f} | [{c.low:+.2f}, {c.high:+.2f}] | {c.p:.3f} | {last} |"


def within_markdown(check: WithinCheck | None) -> str:
    """The section of ``control.md`` on the solo's effect inside each model (see
    :func:`analyse_within`): a named criterion where the design registers it, else
    exploratory."""
    if check is None:
        return ""
    heading = (
        "## Registered criterion: the solo's effect inside each model"
        if check.registered
        else "## Exploratory, not registered: the solo's effect inside each model"
    )
    lines = [
        heading,
        "",
        "Each model trained on the positive set, scored on the shared singing of the "
        "control's window as it is and with the solo's voice taken out of the mixture in "
        "place (all else unchanged), one pass, no Wiener EM; effect = SDR as it is − SDR "
        f"without the solo, per (run, song) in `{WITHIN_FILE}`. Same weights in both, so "
        "training noise cancels; arm C never holds the solo and the shared singing in one "
        "piece, so its effect is 0 by construction.",
        "",
        "| contrast | estimate (dB) | 95 % interval | p | runs | songs |",
        "|---|---|---|---|---|---|",
    ]
    for c in check.results:
        runs = " ".join(f"{g}:{n}" for g, n in c.runs.items())
        lines.append(_row(c, f"{runs} | {c.tracks}"))
    lines += ["", f"Largest |effect| of any (run, song) in arm C: {check.c_max_abs:.3g} dB."]
    if check.registered:
        lines += [
            "",
            "**The same-weights test detects use of the solo**"
            if check.detected
            else "**The same-weights test does not detect use of the solo**",
            "(criterion registered for this design, experiments/README.md, change log "
            "2026-12-07 03:00 UTC: the solo's effect in B above 0 by its 95 % interval, arm "
            "C's exactly 0; it validates the study's intervention, not B − C).",
        ]
    return "\n".join([*lines, ""])


def _runs_with_models(sweep: Path) -> list[TrainedRun]:
    try:
        return trained_runs(sweep)
    except LongsepError:  # no run with a model: a committed copy, or nothing finished yet
        return []


def contrasts(groups: dict[str, dict[str, dict[str, float]]]) -> list[Contrast]:
    """B − C on each set and the interaction, over the songs every run scored."""
    names = ("positive:B", "positive:C", "negative:B", "negative:C")
    missing = [n for n in names if not groups.get(n)]
    if missing:
        raise LongsepError(f"the control has no finished runs for {', '.join(missing)} yet")
    tracks = common_tracks(*(groups[n] for n in names))
    matrices = {n: group_matrix(groups[n], tracks) for n in names}

    def groups_of(weights: dict[str, float]) -> list[Group]:
        return [Group(n, w, matrices[n]) for n, w in weights.items()]

    return [
        contrast("B - C (positive)", groups_of({"positive:B": 1, "positive:C": -1})),
        contrast("B - C (negative)", groups_of({"negative:B": 1, "negative:C": -1})),
        contrast(
            "interaction",
            groups_of({"positive:B": 1, "positive:C": -1, "negative:B": -1, "negative:C": 1}),
        ),
    ]


def has_responded(results: Sequence[Contrast]) -> bool:
    """The registered rule: the interaction's 95 % interval above 0 and B − C on the
    positive set above 0 (``results`` as :func:`contrasts` orders them)."""
    positive, _, interaction = results
    return interaction.low > 0 and positive.estimate > 0


def _numbers(results: Sequence[Contrast]) -> list[dict[str, Any]]:
    return [
        {"name": c.name, "estimate": c.estimate, "low": c.low, "high": c.high, "p": c.p}
        for c in results
    ]


def summary(
    results: Sequence[Contrast], groups: dict[str, dict], within: WithinCheck | None = None
) -> dict[str, Any]:
    """``control.json``: the verdict the study's decisions read, and its numbers; with
    ``within``, the within-model check (its ``detected`` is a verdict only where
    ``registered``)."""
    data: dict[str, Any] = {
        "responded": has_responded(results),
        "runs": {name: len(groups[name]) for name in sorted(groups)},
        "songs": results[0].tracks,
        "contrasts": _numbers(results),
    }
    if within is not None:
        data["within_model"] = {
            "registered": within.registered,
            "detected": within.detected,
            "c_max_abs": within.c_max_abs,
            "contrasts": _numbers(within.results),
        }
    return data


def markdown(results: Sequence[Contrast], groups: dict[str, dict]) -> str:
    """The control's table: each contrast with its 95 % interval, p-value and runs."""
    runs = ", ".join(f"{name} {len(groups[name])}" for name in sorted(groups))
    lines = [
        "# The long-context control",
        "",
        f"Runs: {runs}; songs scored: {results[0].tracks} (paired across the two sets).",
        "Score: SDR of the vocals over the both-singing samples of the 30-s window that "
        "begins or ends with the solo (in the negative song: the same place without the solo), "
        "one pass, no Wiener EM.",
        "",
        "| contrast | estimate (dB) | 95 % interval | p | between-run SD per group (dB) |",
        "|---|---|---|---|---|",
    ]
    for c in results:
        lines.append(_row(c, ", ".join(f"{k} {v:.2f}" for k, v in c.run_sd.items())))
    responded = has_responded(results)
    lines += [
        "",
        "**The control has responded**"
        if responded
        else "**The control has not responded** (pre-registered rule: the interaction's 95 % "
        "interval above 0 and B − C on the positive set above 0)",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m longsep.study.control SWEEP --out DIR``: score, then write the table."""
    parser = argparse.ArgumentParser(
        prog="python -m longsep.study.control",
        description="Score the long-context control's runs and report its interaction.",
    )
    parser.add_argument("sweep_dir", help="the control's multirun dir")
    parser.add_argument("--out", help="output folder (default: <sweep_dir>/report)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        groups = analyse(args.sweep_dir)
        results = contrasts(groups)
    except LongsepError as exc:
        parser.exit(2, f"error: {exc}\n")
    out = Path(args.out or Path(args.sweep_dir) / "report")
    records = load_study(args.sweep_dir)
    within = within_check(analyse_within(args.sweep_dir), within_registered(records))
    provenance = compute_markdown(args.sweep_dir, records)
    parts = (markdown(results, groups), within_markdown(within), provenance)
    text = "\n".join(part for part in parts if part)
    write_text(out / "control.md", text)
    write_json(out / CONTROL_JSON, summary(results, groups, within))
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

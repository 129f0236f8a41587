"""``evaluate.py`` end to end: ``backend=fast`` versus ``backend=museval``, as users type it.

Runs ``python evaluate.py oracle=<method> backend=<backend>`` twice on the same split (the
built-in synthetic test split by default: 6 songs, 400 s), each a fresh process timed
from start to exit (imports, data, oracle separation, scoring and result files), then
compares the per-frame scores the two wrote. Prints one JSON object: both wall times,
their ratio and the largest per-frame difference in dB (nan positions must match).
Target (issue #16): ratio >= 10, difference <= 0.01 dB.

    python benchmarks/evaluate_speed.py
    python benchmarks/evaluate_speed.py --oracle mwf -- data=musdb data.root=$HOME/musdb18
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("fast", "museval")
SUBSETS = ("test", "train")  # where evaluate.py writes museval's per-track files


def run_evaluate(backend: str, oracle: str, out_dir: Path, overrides: list[str]) -> float:
    """Wall seconds of one ``evaluate.py`` command; its output goes to stderr."""
    command = [
        sys.executable,
        "evaluate.py",
        f"oracle={oracle}",
        f"backend={backend}",
        f"out_dir={out_dir}",
        "overwrite=true",
        "progress=false",
        *overrides,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=sys.stderr, stderr=sys.stderr)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"evaluate.py backend={backend} failed (exit {done.returncode})")
    return seconds


def frames(out_dir: Path) -> dict[tuple[str, str, int, str], float]:
    """``{(track, target, frame, metric): value}`` from museval's per-track JSON files."""
    values = {}
    for path in sorted(p for subset in SUBSETS for p in (out_dir / subset).glob("*.json")):
        for target in json.loads(path.read_text())["targets"]:
            for i, frame in enumerate(target["frames"]):
                for metric, value in frame["metrics"].items():
                    values[path.stem, target["name"], i, metric] = value
    return values


def compare(fast: dict, museval: dict) -> dict:
    """Largest difference over frames finite in both; where nan positions differ."""
    if fast.keys() != museval.keys():
        raise SystemExit("the two evaluations scored different tracks, targets or frames")
    nan_mismatch = [k for k in fast if math.isnan(fast[k]) != math.isnan(museval[k])]
    finite = [abs(fast[k] - museval[k]) for k in fast if not math.isnan(fast[k] + museval[k])]
    return {
        "frames": len(fast),
        "max_frame_diff_db": max(finite, default=0.0),
        "nan_mismatches": len(nan_mismatch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--oracle", default="irm2", help="irm1 | irm2 | ibm | mwf")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both runs (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evaluate_speed-") as tmp:
        seconds = {b: run_evaluate(b, args.oracle, Path(tmp) / b, args.overrides) for b in BACKENDS}
        summary = json.loads((Path(tmp) / "fast" / "summary.json").read_text())
        agreement = compare(frames(Path(tmp) / "fast"), frames(Path(tmp) / "museval"))
    ratio = seconds["museval"] / seconds["fast"]
    result = {
        "benchmark": "evaluate_speed",
        "command": f"evaluate.py oracle={args.oracle} {' '.join(args.overrides)}".strip(),
        "tracks": summary["n_tracks"],
        "audio_s": round(summary["audio_seconds"], 1),
        "fast_s": round(seconds["fast"], 2),
        "museval_s": round(seconds["museval"], 2),
        "ratio": round(ratio, 2),
        **agreement,
        "target": "ratio >= 10, max_frame_diff_db <= 0.01",
        "met": ratio >= 10 and agreement["max_frame_diff_db"] <= 0.01,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

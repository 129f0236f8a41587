"""``python -m longsep.data.synth``: write the set from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from longsep.data.synth.dataset import (
    DEFAULT_N_TEST,
    DEFAULT_N_TRAIN,
    DEFAULT_N_VALID,
    DEFAULT_SUBTYPE,
    MANIFEST,
    SUBTYPES,
    generate_dataset,
)
from longsep.data.synth.plan import (
    CONTROLS,
    DEFAULT_MAX_SECONDS,
    DEFAULT_MIN_SECONDS,
    GAP_SECONDS,
    NEGATIVES,
    REGISTERS,
    SAMPLE_RATE,
    SOLO_SECONDS,
)
from longsep.errors import LongsepError

log = logging.getLogger(__name__)


def _folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.wav"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m longsep.data.synth --out DIR [--tracks N] ...``: write the set."""
    parser = argparse.ArgumentParser(
        prog="python -m longsep.data.synth",
        description="Write the built-in synthetic multitrack set (MUSDB18-HQ layout).",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--tracks", type=int, default=DEFAULT_N_TRAIN, help="training songs")
    parser.add_argument(
        "--valid-tracks", type=int, default=DEFAULT_N_VALID, help="validation songs"
    )
    parser.add_argument("--test-tracks", type=int, default=DEFAULT_N_TEST, help="test songs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-seconds", type=float, default=DEFAULT_MIN_SECONDS)
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS)
    parser.add_argument("--sample-rate", type=int, default=SAMPLE_RATE)
    parser.add_argument("--subtype", choices=SUBTYPES, default=DEFAULT_SUBTYPE)
    parser.add_argument("--control", choices=CONTROLS, default="none", help="long-context control")
    parser.add_argument(
        "--solo-seconds", type=float, default=SOLO_SECONDS, help="a control's least solo length"
    )
    parser.add_argument(
        "--gap-seconds", type=float, default=GAP_SECONDS, help="a control's least break length"
    )
    parser.add_argument(
        "--distractor-register", choices=REGISTERS, default="random",
        help="a control's distractor register: drawn anew, or the vocals' other one",
    )  # fmt: skip
    parser.add_argument(
        "--no-accompaniment", action="store_true",
        help="a control's songs hold only the two singers (no drums, bass or chords)",
    )  # fmt: skip
    parser.add_argument(
        "--negative", choices=NEGATIVES, default="cut",
        help="a negative control's solo: cut out, or its voice muted in place",
    )  # fmt: skip
    parser.add_argument(
        "--compact",
        action="store_true",
        help="a control's songs barely longer than solo, break and one body section",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes rendering songs")
    parser.add_argument("--overwrite", action="store_true", help="render every song again")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    began = time.perf_counter()
    try:
        root = generate_dataset(
            args.out, args.tracks, args.valid_tracks, args.test_tracks, args.seed,
            args.min_seconds, args.max_seconds, args.sample_rate, args.subtype, args.control,
            args.solo_seconds, args.gap_seconds, args.distractor_register,
            not args.no_accompaniment, args.negative, args.compact,
            workers=args.workers, overwrite=args.overwrite,
        )  # fmt: skip
    except LongsepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    manifest = json.loads((root / MANIFEST).read_text())
    counts = {split: len(tracks) for split, tracks in manifest["tracks"].items()}
    print(
        f"wrote {counts['train']} train + {counts['valid']} valid + {counts['test']} test songs "
        f"({manifest['seconds']:.0f} s, {_folder_bytes(root) / 1e9:.2f} GB) to {root} "
        f"in {time.perf_counter() - began:.1f} s"
    )
    return 0

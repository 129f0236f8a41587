"""How much a control set's 30-s training chunks show a model: the share of chunks that
hold >= 3 s of the solo and >= 3 s of shared singing, and the seconds of shared singing in
view of the solo per chunk (planning only, no audio). Cited by the change log of
experiments/README.md (the control's second and third designs).

    python experiments/control_layout.py > experiments/results/context_control_whole/layout.json
"""

from __future__ import annotations

import json

import numpy as np

from longsep.data.synth import make_params, plan_dataset
from longsep.study.control import WINDOW_SECONDS

DESIGNS = {  # the training songs of the two sets, as their data configs make them
    "synth_positive": {"n_train": 16, "min_seconds": 60, "max_seconds": 72},
    "synth_positive_near": {
        "n_train": 48, "min_seconds": 41, "max_seconds": 47, "solo_seconds": 6,
        "gap_seconds": 8, "distractor_register": "opposite",
    },
    "synth_positive_whole": {
        "n_train": 96, "min_seconds": 30, "max_seconds": 33, "solo_seconds": 6,
        "gap_seconds": 8, "distractor_register": "opposite", "accompaniment": False,
        "negative": "muted", "compact": True,
    },
}  # fmt: skip
LEAST = 3.0  # seconds of solo and of shared singing that make a chunk informative


def overlap(start: float, end: float, ranges: list[tuple[float, float]]) -> float:
    """Seconds of ``ranges`` inside ``[start, end)``."""
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in ranges)


def layout(params: dict) -> dict:
    """The chunk statistics of one set's training songs (starts uniform, as in training)."""
    spec = make_params(control="positive", n_valid=0, n_test=0, **params)
    informative, in_view, same_register = [], [], []
    for job in plan_dataset(spec):
        song, rate = job.spec, job.spec.sample_rate
        seconds = song.samples / rate

        def ranges(keep, song=song, rate=rate, seconds=seconds):
            return [
                (s.start / rate, min(seconds, (s.start + s.length) / rate))
                for s in song.sections
                if keep(s)
            ]

        solo = ranges(lambda s: s.kind == "solo")
        shared = ranges(lambda s: "distractor" in s.stems)
        starts = np.linspace(0.0, max(0.0, seconds - WINDOW_SECONDS), 400)
        seen = [overlap(a, a + WINDOW_SECONDS, solo) >= LEAST for a in starts]
        both = [overlap(a, a + WINDOW_SECONDS, shared) for a in starts]
        informative.append(np.mean([s and b >= LEAST for s, b in zip(seen, both, strict=True)]))
        in_view.append(np.mean([b if s else 0.0 for s, b in zip(seen, both, strict=True)]))
        same_register.append(song.voice == song.distractor_voice)
    return {
        "songs": len(informative),
        "informative_chunks": round(float(np.mean(informative)), 3),
        "shared_seconds_in_view_of_solo": round(float(np.mean(in_view)), 2),
        "same_register_songs": round(float(np.mean(same_register)), 3),
    }


if __name__ == "__main__":
    print(json.dumps({name: layout(p) for name, p in DESIGNS.items()}, indent=1))

"""Long-context controls of the synthetic set: a distractor voice, an exposed solo, its cut."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_train
from scipy import stats

from longsep import TARGETS
from longsep.data import synth
from longsep.data.synth import instruments
from longsep.data.synth.cli import main
from longsep.errors import LongsepError

RATE = 44100
SECONDS = 50.0
FRAME = 2205  # 50-ms frames for activity
TIMBRE = (
    "low", "formant_scale", "tilt", "vibrato_rate", "vibrato_depth", "vibrato_delay", "glide",
    "breath", "consonants", "position",
)  # fmt: skip


NEAR = {"solo_seconds": 6.0, "gap_seconds": 8.0, "distractor_register": "opposite"}


WHOLE = NEAR | {"accompaniment": False, "negative": "muted", "compact": True}


def first_seed(solo_first: bool) -> int:
    """The first seed whose positive control has its solo at the start (or the end)."""
    for seed in range(100):
        spec = synth.plan_song(seed, SECONDS, control="positive")
        if (spec.sections[0].kind == "solo") == solo_first:
            return seed
    raise AssertionError("no such seed")


@pytest.fixture(scope="module", params=[True, False], ids=["solo-first", "solo-last"])
def pair(request) -> tuple[synth.SongSpec, dict, synth.SongSpec, dict]:
    """A positive control and its negative: plans and rendered songs."""
    seed = first_seed(request.param)
    positive = synth.plan_song(seed, SECONDS, control="positive")
    negative = synth.plan_song(seed, SECONDS, control="negative")
    return positive, synth.render_song(positive), negative, synth.render_song(negative)


def active(audio: np.ndarray) -> np.ndarray:
    """Per 50-ms frame: whether its RMS is above -60 dB of the loudest frame."""
    mono = audio.mean(axis=1)[: len(audio) // FRAME * FRAME].reshape(-1, FRAME)
    rms = np.sqrt(np.mean(mono.astype(np.float64) ** 2, axis=1))
    return rms > 1e-3 * rms.max()


def solo_of(spec: synth.SongSpec) -> synth.Section:
    return next(s for s in spec.sections if s.kind == "solo")


def test_positive_exposes_the_vocals_alone_far_from_the_duet(pair):
    spec, song, _, _ = pair
    # the same song without the distractor, so other - plain other (rescaled) is the distractor
    plain = synth.render_song(replace(spec, control="none"))
    scale = np.max(np.abs(song["vocals"])) / np.max(np.abs(plain["vocals"]))
    np.testing.assert_allclose(song["vocals"], plain["vocals"] * scale, atol=1e-6)
    distractor = song["other"] - plain["other"] * scale
    vocals, second = active(song["vocals"]), active(distractor)

    solo = solo_of(spec)
    starts = np.arange(len(vocals)) * FRAME
    in_solo = (starts >= solo.start) & (starts + FRAME <= solo.start + solo.length)
    sung = np.flatnonzero(vocals & in_solo)
    assert (sung[-1] - sung[0] + 1) * FRAME >= 8 * RATE  # >= 8 s of exposed singing
    assert np.mean(vocals[sung[0] : sung[-1]]) > 0.6  # phrases, not a few notes
    assert not np.any(second[in_solo])
    duet = np.flatnonzero(vocals & second)
    assert duet.size * FRAME > 10 * RATE
    # every frame where the distractor sings is >= 10 s from every exposed frame
    gap_frames = np.min(np.abs(np.flatnonzero(second)[:, None] - sung[None, :])) - 1
    assert gap_frames * FRAME >= 10 * RATE

    # the distractor is levelled as the vocals are (levels drawn in [-1, 1] dB each)
    def level(audio: np.ndarray, on: np.ndarray) -> float:
        frames = audio.mean(axis=1)[: len(on) * FRAME].reshape(-1, FRAME)[on]
        return 10 * np.log10(np.mean(frames.astype(np.float64) ** 2))

    assert abs(level(song["vocals"], vocals) - level(distractor, second)) < 4.0
    assert set(solo.stems) == set(TARGETS) and "distractor" not in solo.stems


def test_distractor_timbre_and_melodies_are_drawn_like_the_vocals():
    specs = [synth.plan_song(seed, 48.0, control="positive") for seed in range(400)]
    singers = {"vocals": [instruments.Vocals(s) for s in specs]}
    singers["distractor"] = [instruments.Distractor(s) for s in specs]
    for name in TIMBRE:
        a, b = (np.array([getattr(v, name) for v in singers[k]]) for k in singers)
        assert stats.ks_2samp(a, b, method="asymp").pvalue > 0.01, name  # same distribution
        if name != "low":
            assert not np.any(a == b), name  # drawn independently per song
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.2, name
    voices = np.array([(s.voice, s.distractor_voice) for s in specs])
    assert 0.4 < np.mean(voices[:, 0] == voices[:, 1]) < 0.6
    for kind in ("verse", "chorus"):
        pitch, count = {}, {}
        for key, voices_ in singers.items():
            melodies = [v.melody(kind) for v in voices_[:200]]
            pairs = list(zip(voices_, melodies, strict=False))
            pitch[key] = [np.mean([n.midi - v.low for n in m]) for v, m in pairs]
            count[key] = [len(m) / v.spec.bars[kind] for v, m in pairs]
        assert stats.ks_2samp(pitch["vocals"], pitch["distractor"]).pvalue > 0.01
        assert stats.ks_2samp(count["vocals"], count["distractor"]).pvalue > 0.01


def test_negative_is_the_positive_without_its_solo(pair):
    positive, song, negative, cut = pair
    solo = solo_of(positive)
    assert negative.removed == solo and negative.samples == positive.samples - solo.length
    for name in synth.FILES:
        expected = np.concatenate(
            [song[name][: solo.start], song[name][solo.start + solo.length :]]
        )
        np.testing.assert_array_equal(cut[name], expected)
    kept = [s for s in positive.sections if s is not solo]
    assert [(s.kind, s.length, s.stems) for s in negative.sections] == [
        (s.kind, s.length, s.stems) for s in kept
    ]
    assert all("distractor" in s.stems for s in negative.sections if "vocals" in s.stems)
    assert positive.name.endswith(" (positive)") and negative.name.endswith(" (negative)")
    assert negative.distractor_voice == positive.distractor_voice
    for cls in (instruments.Vocals, instruments.Distractor):
        a, b = cls(positive), cls(negative)
        assert [getattr(a, t) for t in TIMBRE] == [getattr(b, t) for t in TIMBRE]
    assert negative.to_dict()["removed"] == [solo.kind, solo.start, solo.length]


@pytest.mark.parametrize(
    "seed, seconds, digest",
    [
        (3, 6.0, "aaa90d413a5b7a642b661d773156ed92038b1ce06a4b0bbe40ff8f7b25f3d694"),
        (4, 32.0, "912e878fe443dbf959f56e22075795f8d00ca185a320657ef20daef2dddbe628"),
    ],
)
def test_default_songs_are_unchanged(seed, seconds, digest):
    # digests computed with the code before the controls were added: sha256 over
    # generate_song(seed, seconds)[name].tobytes() for name in synth.FILES, in that order
    song = synth.generate_song(seed, seconds)
    sha = hashlib.sha256()
    for name in synth.FILES:
        sha.update(song[name].tobytes())
    assert sha.hexdigest() == digest
    params = synth.make_params()
    assert "control" not in params.record()  # sets made before the controls stay valid
    assert params.content() == {
        "version": 1, "seed": 0, "min_seconds": 60.0, "max_seconds": 72.0,
        "sample_rate": 44100, "subtype": "PCM_16",
    }  # fmt: skip
    assert "control" not in synth.plan_song(seed, seconds).to_dict()


def test_cli_writes_a_control_set(tmp_path, capsys):
    args = ["--tracks", "0", "--valid-tracks", "0", "--test-tracks", "1", "--seed", "1"]
    args += ["--min-seconds", "48", "--max-seconds", "48", "--out", str(tmp_path)]
    assert main([*args, "--control", "negative"]) == 0
    assert capsys.readouterr().out.startswith("wrote 0 train + 0 valid + 1 test songs")
    manifest = json.loads((tmp_path / synth.MANIFEST).read_text())
    assert manifest["params"]["control"] == "negative"
    (track,) = manifest["tracks"]["test"]
    assert track["name"].endswith(" (negative)") and track["control"] == "negative"
    assert track["removed"][0] == "solo" and track["samples"] < 48 * RATE
    assert (tmp_path / "test" / track["name"] / "mixture.wav").is_file()
    params = dict(n_train=0, n_valid=0, n_test=1, seed=1, min_seconds=48.0, max_seconds=48.0)
    assert synth.is_complete(tmp_path, synth.make_params(**params, control="negative"))
    assert not synth.is_complete(tmp_path, synth.make_params(**params, control="positive"))
    assert not synth.is_complete(tmp_path, synth.make_params(**params))
    near = ["--solo-seconds", "6", "--gap-seconds", "8", "--distractor-register", "opposite"]
    near += ["--min-seconds", "41", "--max-seconds", "41", "--control", "positive"]
    assert main([*args[:-6], *near, "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / synth.MANIFEST).read_text())
    assert {k: manifest["params"][k] for k in NEAR} == NEAR
    assert manifest["tracks"]["test"][0]["design"] == NEAR
    whole = [*near[:6], "--no-accompaniment", "--negative", "muted", "--compact"]
    whole += ["--min-seconds", "30", "--max-seconds", "30", "--control", "negative"]
    assert main([*args[:-6], *whole, "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / synth.MANIFEST).read_text())
    (track,) = manifest["tracks"]["test"]
    assert track["design"] == WHOLE and track["samples"] >= 30 * RATE  # nothing cut


@pytest.mark.parametrize(
    "params, message",
    [
        ({"control": "maybe"}, "control"),
        ({"control": "positive", "min_seconds": 10, "max_seconds": 12}, "min_seconds >= 48"),
        (NEAR | {"control": "positive", "min_seconds": 40, "max_seconds": 47}, "min_seconds >= 41"),
        ({"distractor_register": "same"}, "distractor_register"),
        ({"gap_seconds": 0}, "gap_seconds=0"),
        ({"negative": "sliced"}, "negative='sliced'"),
        ({"accompaniment": "maybe"}, "accompaniment='maybe' must be of type bool"),
        (WHOLE | {"control": "positive", "min_seconds": 23, "max_seconds": 33}, ">= 24"),
    ],
)
def test_bad_control_parameters_are_one_line_errors(params, message):
    with pytest.raises(LongsepError, match=message) as info:
        synth.make_params(**params)
    assert "\n" not in str(info.value)
    with pytest.raises(LongsepError, match="control=negative"):
        synth.plan_song(0, 30.0, control="negative")


@pytest.mark.parametrize(
    "design, layout", [("", {}), ("_near", NEAR), ("_whole", WHOLE)], ids=["first", "near", "whole"]
)
@pytest.mark.parametrize("control", ["positive", "negative"])
def test_data_config_composes(tmp_path, control, design, layout):
    name = f"synth_{control}{design}"
    cfg = compose_train([f"data={name}"], tmp_path / "run", tmp_path)
    assert cfg.data.root == str(tmp_path / "data" / name)
    assert cfg.data.generate.control == control and cfg.data.random_mix is False
    params = synth.make_params(**cfg.data.generate)
    assert params.control == control
    assert params.design == synth.ControlDesign(**layout)
    assert cfg.data._target_ == "longsep.data.datamodules.MUSDBDataModule"


def test_near_design_keeps_solo_and_break_whole_and_registers_apart():
    design = synth.ControlDesign(**NEAR)
    assert design.min_seconds == 41.0
    reach = 7.5 + 1024 / 16000  # arm C's pieces and one STFT window at the model's rate
    for seed in range(300):
        seconds = 41.0 + 6.0 * (seed % 7) / 6
        spec = synth.plan_song(seed, seconds, control="positive", design=design)
        kinds = [s.kind for s in spec.sections]
        solo, gap = (spec.sections[kinds.index(k)] for k in ("solo", "break"))
        assert solo.length >= 6.0 * RATE and solo.start + solo.length <= spec.samples
        assert gap.length >= 8.0 * RATE > reach * RATE
        assert abs(kinds.index("solo") - kinds.index("break")) == 1  # the break is next to it
        shared = [s for s in spec.sections if "distractor" in s.stems]
        assert shared and all(s.start + s.length <= spec.samples for s in shared[:1])
        assert {spec.voice, spec.distractor_voice} == {"low", "high"}
        assert instruments.Vocals(spec).low != instruments.Distractor(spec).low
        negative = synth.plan_song(seed, seconds, control="negative", design=design)
        assert negative.removed == solo and negative.design == design
    # the layout is recorded only where it differs from the first design's
    near = synth.make_params(control="positive", min_seconds=41, max_seconds=47, **NEAR)
    assert {k: near.record()[k] for k in NEAR} == NEAR
    assert spec.to_dict()["design"] == NEAR
    assert not set(NEAR) & set(synth.make_params(control="positive").record())
    assert "design" not in synth.plan_song(0, 48.0, control="positive").to_dict()


def rendered_pair(layout: dict, seconds: float) -> tuple[synth.SongSpec, dict, dict]:
    """Song 5 of a design at 22.05 kHz: the positive plan, its audio and its negative's."""
    design = synth.ControlDesign(**layout)
    positive = synth.plan_song(5, seconds, 22050, control="positive", design=design)
    negative = synth.plan_song(5, seconds, 22050, control="negative", design=design)
    return positive, synth.render_song(positive), synth.render_song(negative)


def test_near_negative_renders_as_its_positive_without_the_solo():
    positive, song, cut = rendered_pair(NEAR, 42.0)
    solo = solo_of(positive)
    expected = np.concatenate(
        [song["vocals"][: solo.start], song["vocals"][solo.start + solo.length :]]
    )
    np.testing.assert_array_equal(cut["vocals"], expected)
    gap = next(s for s in positive.sections if s.kind == "break")
    assert not np.any(song["vocals"][gap.start : gap.start + gap.length])  # no sung tail in it


def test_layout_count_shows_the_near_design_gives_more_to_learn_from():
    path = Path(__file__).parents[1] / "experiments" / "control_layout.py"
    spec = importlib.util.spec_from_file_location("control_layout", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first = module.layout(module.DESIGNS["synth_positive"] | {"n_train": 6})
    near = module.layout(module.DESIGNS["synth_positive_near"] | {"n_train": 6})
    assert near["songs"] == first["songs"] == 6
    assert 0 < first["informative_chunks"] < near["informative_chunks"] <= 1
    assert near["shared_seconds_in_view_of_solo"] > first["shared_seconds_in_view_of_solo"]
    assert near["same_register_songs"] == 0
    whole = module.layout(module.DESIGNS["synth_positive_whole"] | {"n_train": 6})
    assert whole["informative_chunks"] == 1.0  # every chunk holds the solo and the duet
    assert whole["shared_seconds_in_view_of_solo"] > near["shared_seconds_in_view_of_solo"]


def chunk_overlap(spec: synth.SongSpec, kind: str, start: float) -> float:
    """Seconds of the ``kind`` section inside the 30-s chunk that starts at ``start``."""
    rate = spec.sample_rate
    section = next(s for s in spec.sections if s.kind == kind)
    a, b = section.start / rate, (section.start + section.length) / rate
    return max(0.0, min(start + 30.0, b) - max(start, a))


def test_whole_design_fits_a_chunk_with_two_singers_only():
    design = synth.ControlDesign(**WHOLE)
    reach = 7.5 + 1024 / 16000
    for seed in range(200):
        seconds = 30.0 + 3.0 * (seed % 7) / 6
        spec = synth.plan_song(seed, seconds, control="positive", design=design)
        kinds = [s.kind for s in spec.sections]
        solo, gap = (spec.sections[kinds.index(k)] for k in ("solo", "break"))
        assert 30.0 * RATE <= spec.samples <= 33.0 * RATE  # stretched only inside the range
        assert solo.length >= 6.0 * RATE and solo.start + solo.length <= spec.samples
        assert gap.length >= 8.0 * RATE > reach * RATE and gap.stems == ()
        assert abs(kinds.index("solo") - kinds.index("break")) == 1
        assert solo.stems == ("vocals",)
        assert all(set(s.stems) <= {"vocals", "distractor"} for s in spec.sections)
        assert any(s.stems == ("vocals", "distractor") for s in spec.sections)
        last = spec.samples / RATE - 30.0
        assert min(chunk_overlap(spec, "solo", a) for a in np.linspace(0, last, 31)) >= 3.0
        negative = synth.plan_song(seed, seconds, control="negative", design=design)
        assert negative.samples == spec.samples and negative.removed == solo
        assert [s.stems for s in negative.sections] == [
            () if s is solo else s.stems for s in spec.sections
        ]
    assert spec.to_dict()["design"] == WHOLE


def test_whole_negative_renders_as_its_positive_with_the_solo_voice_muted():
    positive, song, muted = rendered_pair(WHOLE, 31.0)
    solo, gap = (next(s for s in positive.sections if s.kind == k) for k in ("solo", "break"))
    expected = song["vocals"].copy()
    expected[solo.start : solo.start + solo.length] = 0.0
    np.testing.assert_array_equal(muted["vocals"], expected)
    for name in ("drums", "bass", "other"):
        np.testing.assert_array_equal(muted[name], song[name])
    assert not np.any(song["drums"]) and not np.any(song["bass"])  # two singers only
    assert not np.any(song["other"][solo.start : solo.start + solo.length])  # the solo: alone
    assert not np.any(song["mixture"][gap.start : gap.start + gap.length])  # a silent break
    assert np.any(song["vocals"][solo.start : solo.start + solo.length])
    np.testing.assert_array_equal(
        muted["mixture"], muted["vocals"] + muted["drums"] + muted["bass"] + muted["other"]
    )

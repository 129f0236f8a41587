"""The built-in synthetic multitrack set: musdb reads it, sums are exact, songs are musical."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import musdb
import numpy as np
import pytest
import soundfile as sf

from longsep import TARGETS
from longsep.data import synth
from longsep.errors import LongsepError

RATE = 44100
PARAMS = dict(n_train=2, n_valid=1, n_test=1, seed=5, min_seconds=6.0, max_seconds=9.0)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return synth.generate_dataset(tmp_path_factory.mktemp("synth"), **PARAMS)


def manifest(root: Path) -> dict:
    return json.loads((root / "synth.json").read_text())


def read(folder: Path) -> dict[str, np.ndarray]:
    return {name: sf.read(folder / f"{name}.wav", dtype="float32")[0] for name in synth.FILES}


def wav_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*.wav")
    }


def mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*.wav")}


def band_fraction(x: np.ndarray, lo: float, hi: float) -> float:
    power = np.abs(np.fft.rfft(x.mean(axis=1))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    return float(power[(freqs >= lo) & (freqs < hi)].sum() / power.sum())


def centroid(x: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(x.mean(axis=1))) ** 2
    return float((power * np.fft.rfftfreq(len(x), 1 / RATE)).sum() / power.sum())


@pytest.mark.slow
def test_musdb_reads_every_track_with_exact_sums(small_set):
    info = manifest(small_set)
    samples = {t["name"]: t["samples"] for split in info["tracks"].values() for t in split}
    train = musdb.DB(root=str(small_set), is_wav=True, subsets="train")
    test = musdb.DB(root=str(small_set), is_wav=True, subsets="test")
    assert len(train) == PARAMS["n_train"] + PARAMS["n_valid"]
    assert len(test) == PARAMS["n_test"]
    for track in [*train, *test]:
        assert track.rate == RATE
        mixture = track.audio
        assert mixture.shape == (samples[track.name], 2)
        assert PARAMS["min_seconds"] <= mixture.shape[0] / RATE <= PARAMS["max_seconds"]
        stems = {name: track.targets[name].audio for name in TARGETS}
        # 16-bit files decode exactly through musdb's ffmpeg path, so the sum is exact
        np.testing.assert_array_equal(mixture, sum(stems.values()))
        accompaniment = stems["drums"] + stems["bass"] + stems["other"]
        np.testing.assert_array_equal(track.targets["accompaniment"].audio, accompaniment)


def test_musdb_validation_split_comes_from_our_setup_file(small_set):
    tracks = manifest(small_set)["tracks"]
    names = {split: [t["name"] for t in songs] for split, songs in tracks.items()}
    kwargs = dict(root=str(small_set), is_wav=True, subsets="train", setup_file=synth.SETUP_FILE)
    valid = musdb.DB(split="valid", **kwargs)
    train = musdb.DB(split="train", **kwargs)
    assert [t.name for t in valid] == names["valid"]
    assert [t.name for t in train] == names["train"]
    # without it musdb uses the MUSDB18 validation names: none of ours
    assert len(musdb.DB(root=str(small_set), is_wav=True, subsets="train", split="valid")) == 0


def test_files_hold_the_rendered_song_on_the_16_bit_grid(small_set):
    track = manifest(small_set)["tracks"]["test"][0]
    files = read(small_set / "test" / track["name"])
    song = synth.generate_song(track["seed"], track["seconds"])
    for name in TARGETS:
        np.testing.assert_array_equal(files[name], np.round(song[name] * 32768) / 32768)
    stem_sum = files["vocals"] + files["drums"] + files["bass"] + files["other"]
    np.testing.assert_array_equal(files["mixture"], stem_sum)
    assert np.max(np.abs(files["mixture"] - song["mixture"])) < 4 / 32768


def test_float_files_are_the_float32_song(tmp_path):
    root = synth.generate_dataset(
        tmp_path, n_train=1, n_valid=0, n_test=0, seed=1, min_seconds=4, max_seconds=4,
        subtype="FLOAT",
    )  # fmt: skip
    track = manifest(root)["tracks"]["train"][0]
    files = read(root / "train" / track["name"])
    song = synth.generate_song(track["seed"], 4.0)
    for name in synth.FILES:
        assert files[name].dtype == np.float32
        np.testing.assert_array_equal(files[name], song[name])
    np.testing.assert_array_equal(
        song["mixture"], ((song["vocals"] + song["drums"]) + song["bass"]) + song["other"]
    )


def test_same_seed_same_audio_other_seed_other_audio():
    first, again, other = (synth.generate_song(s, 8.0) for s in (11, 11, 12))
    for name in synth.FILES:
        assert first[name].shape == (8 * RATE, 2) and first[name].dtype == np.float32
        np.testing.assert_array_equal(first[name], again[name])
        assert not np.array_equal(first[name], other[name])
    low_rate = synth.generate_song(11, 2.0, sample_rate=22050)
    assert low_rate["mixture"].shape == (44100, 2) and np.all(np.isfinite(low_rate["mixture"]))


def test_parallel_regeneration_is_bit_identical(small_set, tmp_path):
    again = synth.generate_dataset(tmp_path, **PARAMS, workers=2)
    assert wav_hashes(again) == wav_hashes(small_set)
    assert (again / synth.SETUP_FILE).read_text() == (small_set / synth.SETUP_FILE).read_text()
    assert manifest(again) == manifest(small_set)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stems_are_plausible_distinct_and_unclipped(seed):
    song = synth.generate_song(seed, 24.0)
    peaks = {name: float(np.max(np.abs(a))) for name, a in song.items()}
    assert max(peaks.values()) == pytest.approx(synth.PEAK, abs=1e-6)
    assert all(0.01 < p <= synth.PEAK + 1e-6 for p in peaks.values())
    stems = [song[name].mean(axis=1) for name in TARGETS]
    corr = np.corrcoef(np.stack(stems)) - np.eye(len(TARGETS))
    assert np.max(np.abs(corr)) < 0.2
    assert band_fraction(song["bass"], 0, 300) > 0.9
    assert 250 < centroid(song["vocals"]) < 3000
    assert band_fraction(song["vocals"], 0, 100) < 0.05
    high = {name: band_fraction(song[name], 5000, RATE) for name in TARGETS}
    assert high["drums"] > 3 * max(v for k, v in high.items() if k != "drums")
    frames = song["drums"].mean(axis=1)[: 24 * RATE].reshape(-1, 441)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    assert np.percentile(rms, 99) > 2 * np.median(rms)  # hits stand out of the decays


def test_sections_recur_identically_and_stems_enter_and_leave():
    spec = synth.plan_song(4, 60.0)
    song = synth.render_song(spec)
    tail = round(synth.TAIL_SECONDS * RATE)
    fade = 2 * RATE  # the song fades out over its last two seconds
    inside = [s for s in spec.sections if s.start + s.length <= spec.samples - fade]
    kinds = [s.kind for s in inside]
    repeated = [k for k in dict.fromkeys(kinds) if kinds.count(k) >= 2]
    assert repeated, kinds
    for kind in repeated:
        first, *later = [s for s in inside if s.kind == kind]
        for other in later:
            for stem in first.stems:
                a = song[stem][first.start + tail : first.start + first.length]
                b = song[stem][other.start + tail : other.start + other.length]
                assert np.any(a != 0)
                np.testing.assert_array_equal(a, b)
    verse = next(s for s in inside if s.kind == "verse")
    chorus = next(s for s in inside if s.kind == "chorus")
    length = min(verse.length, chorus.length) - tail
    assert not np.array_equal(
        song["vocals"][verse.start + tail :][:length],
        song["vocals"][chorus.start + tail :][:length],
    )
    silent = {stem: 0 for stem in TARGETS}
    for section in inside:
        for stem in set(TARGETS) - set(section.stems):
            assert not np.any(song[stem][section.start + tail : section.start + section.length])
            silent[stem] += 1
    assert silent["vocals"] >= 1  # the intro is instrumental


def test_plan_is_a_song_form():
    spec = synth.plan_song(7, 90.0)
    assert 80 <= spec.tempo <= 140 and spec.mode in ("major", "minor")
    assert [s.kind for s in spec.sections][:3] == ["intro", "verse", "chorus"]
    assert spec.sections[-1].kind == "outro"
    ends = [s.start + s.length for s in spec.sections]
    assert [s.start for s in spec.sections[1:]] == ends[:-1]
    assert spec.sections[0].start == 0 and ends[-1] >= spec.samples == 90 * RATE
    for s in spec.sections:
        assert s.length == round(s.bars * 240 / spec.tempo * RATE)
        assert s.kind not in ("bridge",) or "drums" not in s.stems
    for bar in range(4):
        chord = spec.chord("verse", bar)
        scale = {(spec.root + d) % 12 for d in synth.SCALES[spec.mode]}
        assert len(chord) == 3 and set(chord) <= scale


def test_ensure_dataset_reuses_extends_and_regenerates(tmp_path):
    params = dict(n_train=1, n_valid=0, n_test=1, seed=2, min_seconds=4.0, max_seconds=5.0)
    root = synth.ensure_dataset(tmp_path / "set", **params)
    before = mtimes(root)
    manifest_time = (root / synth.MANIFEST).stat().st_mtime_ns
    assert synth.ensure_dataset(root, **params) == root
    assert mtimes(root) == before
    assert (root / synth.MANIFEST).stat().st_mtime_ns == manifest_time

    grown = synth.ensure_dataset(root, **{**params, "n_test": 2})
    after = mtimes(grown)
    assert {p: after[p] for p in before} == before  # kept, not rendered again
    assert len(after) == len(before) + len(synth.FILES)
    assert len(manifest(root)["tracks"]["test"]) == 2

    reseeded = synth.ensure_dataset(root, **{**params, "n_test": 2, "seed": 3})
    assert not any(p.exists() for p in before)
    assert manifest(reseeded)["params"]["seed"] == 3
    assert len(list(reseeded.rglob("mixture.wav"))) == 3


@pytest.mark.integration
def test_a_set_another_process_reads_is_not_regenerated_under_it(tmp_path):
    """Two runs on one data.root with different generate values: while the first reads the
    set, the second gets one line and deletes nothing; once the first ends, it may."""
    params = dict(n_train=1, n_valid=0, n_test=1, seed=2, min_seconds=4.0, max_seconds=5.0)
    reader = (
        "import sys, time\n"
        "from longsep.data.musdb import MUSDBTracks\n"
        f"MUSDBTracks(root={str(tmp_path / 'set')!r}, generate={params!r}).prepare()\n"
        "print('reading', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", reader], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    from longsep.data.musdb import MUSDBTracks

    try:
        assert proc.stdout.readline().strip() == "reading"
        before = mtimes(tmp_path / "set")
        other = MUSDBTracks(root=str(tmp_path / "set"), generate={**params, "seed": 3})
        with pytest.raises(LongsepError, match=r"set is in use by another process.*2 tracks"):
            other.prepare()
        assert mtimes(tmp_path / "set") == before
    finally:
        proc.communicate("")
    other.prepare()
    assert manifest(tmp_path / "set")["params"]["seed"] == 3


def test_interrupted_generation_resumes(tmp_path):
    params = dict(n_train=2, n_valid=0, n_test=0, seed=9, min_seconds=4.0, max_seconds=4.0)
    root = synth.generate_dataset(tmp_path, **params)
    hashes = wav_hashes(root)
    first, second = sorted((root / "train").iterdir())
    (root / synth.MANIFEST).unlink()
    for wav in second.iterdir():
        wav.unlink()
    kept = mtimes(first)
    assert not synth.is_complete(root, synth.make_params(**params))
    synth.generate_dataset(root, **params)
    assert mtimes(first) == kept
    assert wav_hashes(root) == hashes
    assert synth.is_complete(root, synth.make_params(**params))


def test_refuses_a_folder_with_other_tracks(tmp_path):
    (tmp_path / "train" / "Some Artist - Some Song").mkdir(parents=True)
    with pytest.raises(LongsepError, match="not a synthetic track"):
        synth.ensure_dataset(tmp_path, n_train=1, n_valid=0, n_test=0)
    assert (tmp_path / "train" / "Some Artist - Some Song").is_dir()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"n_trian": 2}, "n_trian"),
        ({"min_seconds": 10, "max_seconds": 5}, "min_seconds"),
        ({"n_train": "many"}, "n_train"),
        ({"n_train": 1.5}, "n_train"),
        ({"subtype": "MP3"}, "subtype"),
        ({"n_train": 0, "n_valid": 0, "n_test": 0}, "at least one"),
    ],
)
def test_bad_parameters_are_one_line_errors(tmp_path, params, message):
    with pytest.raises(LongsepError, match=message) as info:
        synth.ensure_dataset(tmp_path, **params)
    assert "\n" not in str(info.value)


@pytest.mark.integration
def test_cli_writes_a_set_and_prints_one_line(tmp_path):
    args = ["--tracks", "1", "--valid-tracks", "0", "--test-tracks", "1", "--seed", "3"]
    args += ["--min-seconds", "3", "--max-seconds", "4", "--out", str(tmp_path / "cli")]
    run = subprocess.run(
        [sys.executable, "-m", "longsep.data.synth", *args], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote 1 train + 0 valid + 1 test songs")
    params = dict(n_train=1, n_valid=0, n_test=1, seed=3, min_seconds=3.0, max_seconds=4.0)
    assert synth.is_complete(tmp_path / "cli", synth.make_params(**params))
    bad = subprocess.run(
        [sys.executable, "-m", "longsep.data.synth", "--out", str(tmp_path / "x"),
         "--min-seconds", "5", "--max-seconds", "4"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "min_seconds" in bad.stderr


def test_datamodule_generates_on_first_use(tmp_path):
    from longsep.data.datamodules import MUSDBDataModule

    generate = dict(n_train=2, n_valid=1, n_test=0, seed=1, min_seconds=4.0, max_seconds=5.0)
    dm = MUSDBDataModule(
        root=str(tmp_path / "synth"), target="bass", seq_len=2.0, setup_file=synth.SETUP_FILE,
        generate=generate, batch_size=2, samples_per_track=1, cache_dir=str(tmp_path / "cache"),
        cache_dtype="float32", return_sources=True,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set.tracks) == 2 and len(dm.valid_set.tracks) == 1
    batch = next(iter(dm.val_dataloader()))
    assert batch["mixture"].shape == (1, 2, 2 * RATE)
    assert float(batch["target"].abs().max()) > 0


def test_a_rate_the_instruments_do_not_fit_in_is_one_line():
    with pytest.raises(LongsepError, match="sample_rate=16000: the instruments reach 8 kHz"):
        synth.plan_song(1, 50.0, 16000)

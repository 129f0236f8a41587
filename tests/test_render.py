"""The rendered General-MIDI set: stem split, exact mixture, musdb layout, clear errors."""

from __future__ import annotations

import subprocess
import sys

import mido
import numpy as np
import pytest
import soundfile as sf

from longsep.data import midi, render
from longsep.errors import LongsepError

TPB = 480


def _note(track: mido.MidiTrack, channel: int, pitch: int, ticks: int, gap: int = 0) -> None:
    track.append(mido.Message("note_on", channel=channel, note=pitch, velocity=90, time=gap))
    track.append(mido.Message("note_off", channel=channel, note=pitch, velocity=0, time=ticks))


def write_song(path, bars: int = 6, lead_from_bar: int = 2) -> None:
    """A GM song at 120 bpm (one bar = 2 s): drums, a bass line, piano chords and a flute
    melody that enters at bar ``lead_from_bar``."""
    song = mido.MidiFile(type=1, ticks_per_beat=TPB)
    meta = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000, time=0)])
    song.tracks.append(meta)
    drums, bass, chords, lead = (mido.MidiTrack() for _ in range(4))
    bass.append(mido.Message("program_change", channel=1, program=33))
    chords.append(mido.Message("program_change", channel=2, program=0))
    lead.append(mido.Message("program_change", channel=3, program=73))
    for _ in range(bars * 4):
        _note(drums, 9, 36 if len(drums) % 4 == 0 else 42, TPB)
        _note(bass, 1, 36, TPB)
    for _ in range(bars):
        for pitch in (60, 64, 67):
            chords.append(mido.Message("note_on", channel=2, note=pitch, velocity=70, time=0))
        chords.append(mido.Message("note_off", channel=2, note=60, velocity=0, time=4 * TPB))
        chords.append(mido.Message("note_off", channel=2, note=64, velocity=0, time=0))
        chords.append(mido.Message("note_off", channel=2, note=67, velocity=0, time=0))
    gap = lead_from_bar * 4 * TPB
    for i in range((bars - lead_from_bar) * 4):
        _note(lead, 3, (72, 74, 76, 79)[i % 4], TPB, gap)
        gap = 0
    song.tracks.extend([drums, bass, chords, lead])
    song.save(str(path))


def test_stem_assignment_and_timing(tmp_path):
    write_song(tmp_path / "a.mid")
    song = midi.read_midi(tmp_path / "a.mid")
    channels, seconds = midi.analyse(song)
    assert seconds == pytest.approx(12.0, abs=0.01)
    assert midi.assign_stems(channels, seconds) == {
        "vocals": [3], "drums": [9], "bass": [1], "other": [2],
    }  # fmt: skip
    part = midi.stem_midi(song, [3], voice=53)
    part.save(str(tmp_path / "lead.mid"))
    lead = midi.read_midi(tmp_path / "lead.mid")
    lead_channels, lead_seconds = midi.analyse(lead)
    assert [c.number for c in lead_channels] == [3]
    assert lead_seconds == pytest.approx(seconds)
    assert lead_channels[0].notes == next(c for c in channels if c.number == 3).notes
    programs = [m.program for m in lead if m.type == "program_change"]
    assert programs and set(programs) == {53}


def test_render_one_song(tmp_path, monkeypatch):
    """Render a short song into the MUSDB18-HQ layout: exact sum, stems where they play;
    resume, and refusal of other parameters."""
    midi_dir = tmp_path / "midi"
    midi_dir.mkdir()
    for name in ("one", "two", "three"):
        write_song(midi_dir / f"{name}.mid")
    out = render.render_dataset(
        tmp_path / "set", midi_dir, sample_rate=16000, n_valid=1, n_test=1, min_seconds=10
    )
    manifest = render.read_json(out / render.MANIFEST)
    assert sorted(t["split"] for t in manifest["tracks"]) == ["test", "train", "valid"]
    assert manifest["fluidsynth"].lower().startswith("fluidsynth")
    test = next(t for t in manifest["tracks"] if t["split"] == "test")
    folder = out / "test" / test["name"]
    audio = {n: sf.read(folder / f"{n}.wav", dtype="int16")[0] for n in render.FILES}
    assert sf.info(folder / "mixture.wav").samplerate == 16000
    total = sum(audio[s].astype(np.int32) for s in ("vocals", "drums", "bass", "other"))
    np.testing.assert_array_equal(audio["mixture"], total)
    for stem in ("vocals", "drums", "bass", "other"):
        assert np.abs(audio[stem]).max() > 300, stem
    vocals = audio["vocals"].astype(np.float64)
    second = 16000
    assert np.sqrt(np.mean(vocals[: 3 * second] ** 2)) < 1.0  # the melody enters at 4 s
    assert np.sqrt(np.mean(vocals[5 * second : 9 * second] ** 2)) > 300

    import musdb

    db = musdb.DB(root=str(out), is_wav=True, subsets="test", setup_file="setup.yaml")
    assert [t.name for t in db.tracks] == [test["name"]]
    valid = musdb.DB(
        root=str(out), is_wav=True, subsets="train", split="valid", setup_file="setup.yaml"
    )
    assert len(valid.tracks) == 1

    # the parameters file of a one-SoundFont set keeps the form it had before sets could
    # have several (sets rendered then are recognised as complete, and older code reads it)
    legacy = {
        "version": render.RENDER_VERSION, "midi_dir": str(midi_dir),
        "soundfont": str(render.find_soundfont()), "sample_rate": 16000, "n_valid": 1,
        "n_test": 1, "seed": 0, "min_seconds": 10, "limit": None,
    }  # fmt: skip
    assert render.read_json(out / render.PARAMS_FILE) == legacy
    assert {t["soundfont"] for t in manifest["tracks"]} == {legacy["soundfont"]}
    assert [t["name"] for t in manifest["tracks"]] == [t["song"] for t in manifest["tracks"]]
    calls = _spy(monkeypatch)
    kwargs = {"sample_rate": 16000, "n_valid": 1, "n_test": 1, "min_seconds": 10}
    again = render.render_dataset(tmp_path / "set", midi_dir, **kwargs)
    assert again == out
    render.render_dataset(tmp_path / "set", midi_dir, [legacy["soundfont"]], **kwargs)
    render.render_dataset(tmp_path / "set", midi_dir, splits=render.SPLITS, **kwargs)
    assert calls == [] and render.read_json(out / render.PARAMS_FILE) == legacy
    with pytest.raises(LongsepError, match="other parameters"):
        render.render_dataset(tmp_path / "set", midi_dir, sample_rate=22050, min_seconds=10)


def test_clear_errors(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LongsepError, match=r"no MIDI files \(\*\.mid\) in .*empty"):
        render.midi_files(empty)
    (tmp_path / "broken.mid").write_bytes(b"MThd not really")
    with pytest.raises(LongsepError, match="broken.mid: not a readable MIDI file"):
        midi.read_midi(tmp_path / "broken.mid")
    with pytest.raises(LongsepError, match="soundfont=.*nope.sf2 does not exist"):
        render.find_soundfont(str(tmp_path / "nope.sf2"))
    monkeypatch.setattr(render.shutil, "which", lambda _: None)
    with pytest.raises(LongsepError, match="fluidsynth is not installed: run `make render-deps`"):
        render.fluidsynth_version()


@pytest.mark.integration
def test_cli_error_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "longsep.data.render", "--out", str(tmp_path / "o"),
         "--midi", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "no MIDI files" in result.stderr
    missing = str(tmp_path / "missing.sf2")
    result = subprocess.run(
        [sys.executable, "-m", "longsep.data.render", "--out", str(tmp_path / "o"),
         "--soundfont", str(render.find_soundfont()), missing, "--splits", "test"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: soundfont={missing} does not exist"


def _fonts(tmp_path, *names):
    """Copies of the installed General-MIDI SoundFont under other file names (links: no
    second SoundFont package needed), so each has a tag of its own."""
    real = render.find_soundfont()
    fonts = []
    for name in names:
        (tmp_path / name).symlink_to(real)
        fonts.append(str(tmp_path / name))
    return fonts


def _spy(monkeypatch) -> list[tuple[str, str]]:
    """Record (part file, SoundFont) of every fluidsynth render, in process."""
    calls = []
    real = render.render_midi

    def spy(midi_path, soundfont, sample_rate):
        calls.append((midi_path.parent.name, soundfont.name))
        return real(midi_path, soundfont, sample_rate)

    monkeypatch.setattr(render, "render_midi", spy)
    return calls


def test_render_several_soundfonts(tmp_path, monkeypatch):
    """One track per (song, SoundFont), each rendered with its own SoundFont, every song in
    one split for all SoundFonts; resume, refusal of other SoundFonts, a test split alone."""
    midi_dir = tmp_path / "midi"
    midi_dir.mkdir()
    for name in ("one", "two", "three"):
        write_song(midi_dir / f"{name}.mid", bars=5)
    fonts = _fonts(tmp_path, "Alpha_GM.sf2", "beta-2.sf2")
    calls = _spy(monkeypatch)
    kwargs = {"sample_rate": 8000, "n_valid": 1, "n_test": 1, "min_seconds": 8}
    out = render.render_dataset(tmp_path / "set", midi_dir, fonts, **kwargs)

    manifest = render.read_json(out / render.MANIFEST)
    assert manifest["soundfonts"] == {"alphagm": fonts[0], "beta2": fonts[1]}
    tracks = {t["name"]: t for t in manifest["tracks"]}
    assert len(tracks) == 6
    split_of = {}
    for song in ("one", "two", "three"):
        pair = [tracks[f"{song}__alphagm"], tracks[f"{song}__beta2"]]
        assert [t["soundfont"] for t in pair] == fonts
        assert {t["song"] for t in pair} == {song}
        (split,) = {t["split"] for t in pair}  # the same split under both SoundFonts
        split_of[song] = split
        subset = "test" if split == "test" else "train"
        for name in (f"{song}__alphagm", f"{song}__beta2"):
            assert all((out / subset / name / f"{f}.wav").is_file() for f in render.FILES)
    assert sorted(split_of.values()) == ["test", "train", "valid"]
    assert sorted(p.name for p in (out / "test").iterdir()) == sorted(
        f"{s}__{t}" for s, v in split_of.items() if v == "test" for t in ("alphagm", "beta2")
    )
    # each track's four stems were rendered with that track's SoundFont, once
    assert sorted(calls) == sorted(
        (name, "Alpha_GM.sf2" if name.endswith("alphagm") else "beta-2.sf2")
        for name in tracks
        for _ in range(4)
    )
    import yaml

    setup = yaml.safe_load((out / "setup.yaml").read_text())
    (valid,) = (s for s, v in split_of.items() if v == "valid")
    assert sorted(setup["validation_tracks"]) == [f"{valid}__alphagm", f"{valid}__beta2"]

    # resume: complete tracks are kept, a missing one is rendered again, alone
    calls.clear()
    (lost,) = (s for s, v in split_of.items() if v == "test")
    import shutil

    shutil.rmtree(out / "test" / f"{lost}__beta2")
    assert render.render_dataset(tmp_path / "set", midi_dir, fonts[::-1], **kwargs) == out
    assert {c[0] for c in calls} == {f"{lost}__beta2"} and len(calls) == 4
    calls.clear()
    render.render_dataset(tmp_path / "set", midi_dir, fonts, **kwargs)
    assert calls == []
    # other SoundFonts (one of them, or one more) are another set
    for other in ([fonts[0]], [*fonts, *_fonts(tmp_path, "gamma.sf2")]):
        with pytest.raises(LongsepError, match="other parameters"):
            render.render_dataset(tmp_path / "set", midi_dir, other, **kwargs)

    # a held-out SoundFont's test split: the same test song, named as a one-SoundFont set
    held = render.render_dataset(
        tmp_path / "heldout", midi_dir, _fonts(tmp_path, "held.sf2"), splits=["test"], **kwargs
    )
    assert [p.name for p in (held / "test").iterdir()] == [lost]
    assert not (held / "train").exists()
    held_manifest = render.read_json(held / render.MANIFEST)
    assert [t["split"] for t in held_manifest["tracks"]] == ["test"]
    assert held_manifest["splits"] == ["test"]
    with pytest.raises(LongsepError, match="other parameters"):
        render.render_dataset(tmp_path / "heldout", midi_dir, str(tmp_path / "held.sf2"), **kwargs)


def test_soundfont_errors(tmp_path):
    (tmp_path / "notes.sf2").write_bytes(b"RIFF\0\0\0\0WAVEfmt ")
    with pytest.raises(LongsepError, match=r"soundfont=.*notes.sf2 is not a SoundFont file"):
        render.find_soundfonts([str(tmp_path / "notes.sf2")])
    with pytest.raises(LongsepError, match=r"soundfont=.*nope.sf2 does not exist"):
        render.find_soundfonts([*_fonts(tmp_path, "a.sf2"), str(tmp_path / "nope.sf2")])
    fonts = _fonts(tmp_path, "Fluid-R3.sf2", "fluid_r3.sf2")
    with pytest.raises(LongsepError, match="same tag 'fluidr3'"):
        render.find_soundfonts(fonts)
    with pytest.raises(LongsepError, match="same tag"):
        render.find_soundfonts([fonts[0], fonts[0]])
    assert render.soundfont_tag("/usr/share/sounds/sf2/OPL-3_FM_128M.sf2") == "opl3fm128m"
    with pytest.raises(LongsepError, match=r"splits=\['dev'\]"):
        render.render_dataset(tmp_path / "o", tmp_path, fonts[:1], splits=["dev"])

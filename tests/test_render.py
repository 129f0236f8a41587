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


def test_render_one_song(tmp_path):
    """Render a short song into the MUSDB18-HQ layout: exact sum, stems where they play."""
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

    again = render.render_dataset(
        tmp_path / "set", midi_dir, sample_rate=16000, n_valid=1, n_test=1, min_seconds=10
    )
    assert again == out
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

"""longsep.audio: formats, rates, windows, errors and atomic writes on generated files."""

from __future__ import annotations

import logging
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from longsep import audio
from longsep.audio import decode, encode
from longsep.errors import LongsepError

RATE = 44100


def tone(seconds: float, rate: int = RATE, freq: float = 440.0, channels: int = 2) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    sig = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([sig * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    n = min(reference.shape[-1], estimate.shape[-1])
    ref, est = reference[..., :n], estimate[..., :n]
    return 10 * np.log10((ref**2).sum() / max(((ref - est) ** 2).sum(), 1e-12))


@pytest.mark.parametrize(
    "ext, subtype", [("wav", "FLOAT"), ("flac", "PCM_16"), ("ogg", None), ("mp3", None)]
)
def test_load_formats_shape_rate_duration(tmp_path, ext, subtype):
    path = tmp_path / f"t.{ext}"
    sf.write(path, tone(2.0), RATE, subtype=subtype)
    out = audio.load(path)
    assert out.dtype == torch.float32 and out.shape[0] == 2
    slack = 4096 if ext in ("ogg", "mp3") else 0  # encoder delay / padding of lossy codecs
    assert abs(out.shape[1] - 2 * RATE) <= slack
    meta = audio.info(path)
    assert meta.sample_rate == RATE and meta.channels == 2
    assert abs(meta.duration - 2.0) < 0.1


@pytest.mark.parametrize("rate", [22050, 96000])
def test_resampling_keeps_frequency_and_duration(tmp_path, rate):
    path = tmp_path / "r.wav"
    sf.write(path, tone(1.0, rate=rate, freq=1000.0), rate, subtype="FLOAT")
    out = audio.load(path).numpy()
    assert out.shape == (2, RATE)
    spectrum = np.abs(np.fft.rfft(out[0]))
    assert abs(np.argmax(spectrum) * RATE / out.shape[1] - 1000.0) < 2.0
    assert audio.load(path, sample_rate=None).shape == (2, rate)


def test_mono_duplicated_and_channels(tmp_path):
    path = tmp_path / "m.wav"
    sf.write(path, tone(0.5, channels=1)[:, 0], RATE)
    out = audio.load(path)
    assert out.shape == (2, RATE // 2) and torch.equal(out[0], out[1])
    assert audio.load(path, channels=1).shape == (1, RATE // 2)
    multi = tmp_path / "three.wav"
    sf.write(multi, tone(0.5, channels=3), RATE)
    with pytest.raises(LongsepError, match=r"three.wav: has 3 channels"):
        audio.load(multi)
    assert audio.load(multi, channels=None).shape == (3, RATE // 2)


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_start_duration_window_is_exact(tmp_path, ext):
    path = tmp_path / f"w.{ext}"
    data = np.random.default_rng(0).uniform(-0.5, 0.5, (3 * RATE, 2)).astype(np.float32)
    sf.write(path, data, RATE, subtype="FLOAT" if ext == "wav" else "PCM_24")
    full = audio.load(path)
    part = audio.load(path, start=1.25, duration=0.5)
    first = round(1.25 * RATE)
    torch.testing.assert_close(part, full[:, first : first + RATE // 2])
    assert audio.load(path, start=2.5, duration=10).shape[1] == RATE // 2
    with pytest.raises(LongsepError, match="past the end"):
        audio.load(path, start=5.0)


@pytest.mark.parametrize(
    "codec, min_snr", [("wav", 150.0), ("flac", 60.0), ("ogg", 15.0), ("mp3", 15.0)]
)
def test_save_load_round_trip(tmp_path, codec, min_snr):
    data = tone(1.0).T
    path = audio.save(tmp_path / f"out.{codec}", torch.from_numpy(data), RATE)
    back = audio.load(path).numpy()
    if codec == "mp3":  # decoder delay: align on the best lag
        lags = range(0, 3000)
        back = back[
            :, min(lags, key=lambda k: np.abs(back[0, k : k + 4000] - data[0, :4000]).sum()) :
        ]
    assert snr_db(data, back) > min_snr
    assert [p.name for p in tmp_path.iterdir()] == [f"out.{codec}"]


def test_float_wav_keeps_values_and_pcm_clips_with_warning(tmp_path, caplog):
    loud = np.full((2, 100), 1.5, dtype=np.float32)
    assert audio.load(audio.save(tmp_path / "f.wav", loud, RATE)).max() == pytest.approx(1.5)
    with caplog.at_level(logging.WARNING):
        path = audio.save(tmp_path / "i.wav", loud, RATE, subtype="PCM_16")
    assert "clipped" in caplog.text and "i.wav" in caplog.text
    assert audio.load(path).max() <= 1.0


def test_bad_files_raise_one_line_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.touch()
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"not audio at all" * 100)
    for path, pattern in [
        (tmp_path / "missing.wav", "missing.wav: no such file"),
        (empty, "empty.wav: empty file"),
        (corrupt, "corrupt.flac: not a readable audio file"),
    ]:
        with pytest.raises(LongsepError, match=pattern) as err:
            audio.load(path)
        assert "\n" not in str(err.value)
    with pytest.raises(LongsepError, match="cannot write codec"):
        audio.save(tmp_path / "x.xyz", np.zeros((2, 10)), RATE)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "out.wav"

    class Boom(sf.SoundFile):
        def write(self, data):
            super().write(data[:10])
            raise RuntimeError("disk full")

    monkeypatch.setattr(sf, "SoundFile", Boom)
    with pytest.raises(LongsepError, match="out.wav: cannot write audio"):
        audio.save(target, np.zeros((2, 1000)), RATE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is optional and not installed")
def test_m4a_through_ffmpeg(tmp_path):
    wav = audio.save(tmp_path / "src.wav", tone(2.0).T, RATE)
    m4a = tmp_path / "song.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    assert audio.info(m4a).channels == 2
    out = audio.load(m4a)
    assert out.shape[0] == 2 and abs(out.shape[1] - 2 * RATE) < 4096
    part = audio.load(m4a, start=0.5, duration=1.0)
    assert abs(part.shape[1] - RATE) < 1100
    assert audio.is_audio_file(m4a) and audio.is_audio_file("x.stem.mp4")
    assert not audio.is_audio_file("notes.txt")


@pytest.mark.parametrize(
    ("orig", "new"), [(48000, 44100), (44100, 48000), (22050, 44100), (44100, 8000), (8000, 8000)]
)
@pytest.mark.parametrize("out_length", [None, "input"])
def test_stream_resampler_equals_whole_signal_resample(orig, new, out_length):
    total = 2 * orig + 3
    signal = torch.randn(2, total, generator=torch.Generator().manual_seed(0))
    whole = audio.resample(signal, orig, new)
    length = total if out_length == "input" else None
    if length is not None:  # resample of the whole, then cropped or zero-padded
        whole = torch.nn.functional.pad(whole, (0, max(0, length - whole.shape[-1])))[..., :length]
    stream = audio.StreamResampler(orig, new, total, out_length=length)
    pieces, pos = [], 0
    for size in [1, 700, 5000, 77, 30000] * 10:
        if pos >= total:
            break
        pieces.append(stream.push(signal[:, pos : pos + size]))
        pos += size
    got = torch.cat(pieces, -1)
    assert got.shape == whole.shape
    assert torch.equal(got, whole)


def test_audio_writer_commits_or_leaves_nothing(tmp_path):
    target = tmp_path / "sub" / "out.flac"
    with audio.AudioWriter(target, 8000, 2) as writer:
        writer.write(torch.zeros(2, 100))
        assert not target.exists()
        writer.write(torch.full((2, 50), 0.5))
    data, rate = sf.read(target, always_2d=True)
    assert rate == 8000 and data.shape == (150, 2)
    with pytest.raises(ValueError), audio.AudioWriter(tmp_path / "gone.wav", 8000, 1) as writer:
        writer.write(torch.zeros(1, 10))
        raise ValueError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


class _UndercountingFile:
    """A SoundFile stand-in whose header claims fewer frames than it decodes (some mp3s)."""

    channels, frames = 2, 5

    def __init__(self, data: np.ndarray) -> None:
        self.data = data  # (frames, channels)

    def tell(self) -> int:
        return 0

    def blocks(self, blocksize, frames=-1, dtype=None, always_2d=True):
        stop = len(self.data) if frames < 0 else min(frames, len(self.data))
        for lo in range(0, stop, blocksize):
            yield self.data[lo : min(stop, lo + blocksize)]


@pytest.mark.parametrize("count", [-1, 700, 5])
def test_read_blocks_is_channels_first_and_grows_past_the_header(monkeypatch, count):
    monkeypatch.setattr(decode, "READ_BLOCK", 64)
    data = np.random.default_rng(0).standard_normal((1000, 2)).astype(np.float32)
    got = decode._read_blocks(_UndercountingFile(data), count)
    expected = data.T if count < 0 else data[:count].T
    assert got.shape == expected.shape and np.array_equal(got, expected)


def test_load_long_file_in_blocks_equals_soundfile(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "READ_BLOCK", 1000)
    data = np.random.default_rng(1).uniform(-1, 1, (44100, 2)).astype(np.float32)
    sf.write(tmp_path / "x.wav", data, 44100, subtype="FLOAT")
    got = audio.load(tmp_path / "x.wav", start=0.25, duration=0.5)
    assert got.is_contiguous() and torch.equal(got, torch.from_numpy(data[11025:33075].T))


def test_a_full_disk_is_named_as_such(tmp_path, monkeypatch):
    """libsndfile reports ENOSPC as "System error."; the writer looks at the free space."""
    writer = encode.AudioWriter(tmp_path / "x.wav", 22050, 2)
    full = SimpleNamespace(total=1 << 30, used=1 << 30, free=0)
    monkeypatch.setattr(encode.shutil, "disk_usage", lambda folder: full)

    def fail(data):
        raise RuntimeError("System error.")

    monkeypatch.setattr(writer.file, "write", fail)
    with pytest.raises(LongsepError, match=r"x\.wav: cannot write audio \(no space left on dev"):
        writer.write(np.zeros((2, 100), np.float32))
    assert list(tmp_path.iterdir()) == []

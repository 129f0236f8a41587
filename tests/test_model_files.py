"""Model files are data: stores and checkpoints that name anything but longsep's separator
and attention classes are refused in one line, and nothing in them is executed."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import ROOT

from longsep.errors import LongsepError
from longsep.inference.separator import Separator
from longsep.models.umx import UMX
from longsep.spectral import STFTConfig
from longsep.store import StoreEntry, load_checkpoint, load_store, save_store

STFT = STFTConfig(n_fft=512, hop_length=128)


class _Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (__import__("os").system, (f"touch {self.marker}",))


def _tiny() -> UMX:
    return UMX(nb_bins=STFT.nb_bins, nb_channels=2, hidden_size=8, nb_layers=1, max_bin=32)


def _store(tmp_path, separator_node):
    store = tmp_path / "store"
    model = _tiny()
    node = {"_target_": "longsep.models.umx.UMX", "nb_bins": STFT.nb_bins, "nb_channels": 2,
            "hidden_size": 8, "nb_layers": 1, "max_bin": 32}  # fmt: skip
    save_store(store, model, StoreEntry("vocals", node, STFT))
    meta = store / "vocals.yaml"
    data = yaml.safe_load(meta.read_text())
    data["separator"] = separator_node
    meta.write_text(yaml.safe_dump(data))
    return store


def _payloads(marker):
    pickled = pickle.dumps(_Payload(str(marker)))
    return {
        "torch.load via the module": {
            "_target_": "longsep.store.torch.load",
            "f": {"_target_": "io.BytesIO", "_args_": [pickled]},
            "weights_only": False,
        },
        "os.system via a longsep module": {
            "_target_": "longsep.store.os.system",
            "_args_": [f"touch {marker}"],
        },
        "builtins.eval": {"_target_": "builtins.eval", "_args_": [f"open('{marker}','w')"]},
        "a nested target": {
            "_target_": "longsep.models.umx.UMX",
            "nb_bins": STFT.nb_bins,
            "hidden_size": {"_target_": "os.system", "_args_": [f"touch {marker}"]},
        },
        "a nested attention target": {
            "_target_": "longsep.models.umx_transformer.UMXTransformer",
            "nb_bins": STFT.nb_bins,
            "attention": {"_target_": "os.system", "_partial_": True},
        },
        "a _partial_ separator": {"_target_": "longsep.models.umx.UMX", "_partial_": True},
        "a prefix match": {"_target_": "longsep.models.umx.UMXEvil"},
    }


@pytest.mark.parametrize("name", list(_payloads("x")))
def test_store_payloads_are_refused(tmp_path, name):
    marker = tmp_path / "pwned"
    store = _store(tmp_path, _payloads(marker)[name])
    with pytest.raises(LongsepError, match="refusing") as info:
        load_store(store, "vocals")
    assert "\n" not in str(info.value) and str(store / "vocals.yaml") in str(info.value)
    with pytest.raises(LongsepError, match="refusing"):
        Separator.from_pretrained(store)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["torch.load via the module", "builtins.eval", "a nested target"])
def test_checkpoint_payloads_are_refused(tmp_path, name):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save(
        {
            "state_dict": {},
            "longsep": {
                "config": {"separator": _payloads(marker)[name], "seq_len": 6},
                "target": "vocals",
                "stft": STFT.to_dict(),
            },
        },
        ckpt,
    )
    with pytest.raises(LongsepError, match="refusing"):
        load_checkpoint(ckpt)
    assert not marker.exists()


def test_pickled_checkpoint_is_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": _Payload(str(marker))}, ckpt)
    with pytest.raises(LongsepError, match="cannot read checkpoint"):
        load_checkpoint(ckpt)
    assert not marker.exists()


@pytest.mark.integration
def test_separate_and_evaluate_refuse_the_payload_in_one_line(tmp_path):
    """The commands users type: exit 2, one line naming the file, nothing executed."""
    marker = tmp_path / "pwned"
    store = _store(tmp_path, _payloads(marker)["torch.load via the module"])
    song = tmp_path / "song.wav"
    import soundfile as sf

    sf.write(song, torch.zeros(44100, 2).numpy(), 44100)
    for cmd in (
        [sys.executable, str(ROOT / "separate.py"), f"model={store}", f"input={song}"],
        [sys.executable, str(ROOT / "evaluate.py"), f"ckpt={store}"],
    ):
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "refusing" in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr
    assert not marker.exists()


def test_allowed_store_still_loads(tmp_path):
    store = tmp_path / "ok"
    model = _tiny()
    node = {"_target_": "longsep.models.umx.UMX", "nb_bins": STFT.nb_bins, "nb_channels": 2,
            "hidden_size": 8, "nb_layers": 1, "max_bin": 32}  # fmt: skip
    save_store(store, model, StoreEntry("vocals", node, STFT))
    loaded, entry = load_store(store, "vocals")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert entry.target == "vocals"


def test_truncated_safetensors_and_orphan_yaml_are_one_line_errors(tmp_path):
    store = tmp_path / "store"
    node = {"_target_": "longsep.models.umx.UMX", "nb_bins": STFT.nb_bins, "nb_channels": 2,
            "hidden_size": 8, "nb_layers": 1, "max_bin": 32}  # fmt: skip
    save_store(store, _tiny(), StoreEntry("vocals", node, STFT))
    weights = store / "vocals.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(LongsepError, match="cannot read weights") as info:
        load_store(store, "vocals")
    assert "\n" not in str(info.value)
    (store / "drums.yaml").write_text((store / "vocals.yaml").read_text())
    with pytest.raises(LongsepError, match=r"drums\.yaml has no weights"):
        Separator.from_pretrained(store)


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("train.py", ["data=musdb"], "data.root is not set"),
        ("evaluate.py", ["data=musdb", "oracle=irm1"], "data.root is not set"),
        ("train.py", ["seq_len=abc"], "seq_len=abc"),
        ("separate.py", ["model=m", "input=song.wav", "codec=aac"], "codec=aac"),
        ("separate.py", ["model=m", "input=song.wav", "bitrate=fast"], "bitrate=fast"),
    ],
)
@pytest.mark.integration
def test_bad_keys_exit_with_one_line(tmp_path, script, args, message):
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("bitrate", ["320k", 320000, 320, "320"])
def test_bitrate_spellings(bitrate):
    from longsep import audio

    assert audio.parse_bitrate(bitrate) == 320

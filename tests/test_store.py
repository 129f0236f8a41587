"""store / store_openunmix: Open-Unmix's distributed layout, published names, init_from."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import urllib.error
from pathlib import Path

import openunmix
import pytest
import torch
from openunmix.model import OpenUnmix

from longsep.errors import LongsepError
from longsep.inference.separator import Separator
from longsep.models.umx import UMX
from longsep.store import init_network, load_models, read_init_weights, resolve_model
from longsep.store_openunmix import OPENUNMIX_MODELS

RATE = 44100


def random_umx(seed: int, nb_bins: int = 257, hidden: int = 16, max_bin: int = 80) -> OpenUnmix:
    """An Open-Unmix model with random weights, BatchNorm statistics and scalings."""
    model = OpenUnmix(nb_bins=nb_bins, nb_channels=2, hidden_size=hidden, max_bin=max_bin)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if "running_var" in name or name.endswith("scale"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.3)
    return model.eval()


def save_distributed(folder: Path, target: str, model: torch.nn.Module, **args) -> Path:
    """``<target>-<sha256[:8]>.pth`` + ``<target>.json`` as Open-Unmix publishes them."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{target}.tmp"
    torch.save(model.state_dict(), tmp)
    weights = folder / f"{target}-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.pth"
    tmp.rename(weights)
    args = {"nb_channels": 2, "bandwidth": 16000, "seq_dur": 6.0, **args}
    (folder / f"{target}.json").write_text(json.dumps({"args": args, "best_loss": 1.0}))
    return weights


def music(seconds: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(int(seconds * RATE)) / RATE
    tones = sum(torch.sin(2 * torch.pi * f * t) for f in (110.0, 440.0, 1250.0)) / 3
    return (0.3 * tones + 0.1 * torch.randn(2, t.numel(), generator=gen)).float()


def test_openunmix_distributed_layout_needs_no_separator_json(tmp_path):
    targets = ["vocals", "drums"]
    for i, target in enumerate(targets):
        save_distributed(
            tmp_path / "umx", target, random_umx(i), nfft=512, nhop=128, hidden_size=16
        )
    assert not (tmp_path / "umx" / "separator.json").exists()
    ours = Separator.from_pretrained(tmp_path / "umx", niter=1, segment=None)
    assert ours.targets == targets and ours.stft_config.sample_rate == RATE
    # Open-Unmix's own loader needs separator.json: give it one in a copy
    shutil.copytree(tmp_path / "umx", tmp_path / "theirs")
    conf = {"nfft": 512, "nhop": 128, "sample_rate": RATE, "nb_channels": 2}
    (tmp_path / "theirs" / "separator.json").write_text(json.dumps(conf))
    theirs = openunmix.utils.load_separator(
        model_str_or_path=str(tmp_path / "theirs"), targets=targets, niter=1
    ).eval()
    mix = music(1.5)[None]
    with torch.no_grad():
        expected = theirs(mix)
    got = ours(mix)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-4 * max(1.0, float(expected.abs().max()))


def test_openunmix_settings_must_agree(tmp_path):
    save_distributed(tmp_path, "vocals", random_umx(0), nfft=512, nhop=128)
    save_distributed(tmp_path, "drums", random_umx(1, nb_bins=513), nfft=1024, nhop=256)
    with pytest.raises(LongsepError, match="vocals and drums use different STFT") as err:
        load_models(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "separator.json").write_text(json.dumps({"nfft": 512, "nhop": 64}))
    with pytest.raises(LongsepError, match=r"nhop=64 disagrees with .*vocals.json \(128\)"):
        load_models(tmp_path, ["vocals"])


@pytest.mark.parametrize("name", sorted(OPENUNMIX_MODELS))
def test_name_table_copies_openunmix_urls(name):
    source = inspect.getsource(getattr(openunmix, f"{name}_spec"))
    urls = dict(re.findall(r'"(\w+)": "(https://[^"]+\.pth)"', source))
    assert OPENUNMIX_MODELS[name] == urls


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache; downloads fail as without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch" / "hub" / "checkpoints"


def publish(hub: Path, monkeypatch, model: torch.nn.Module) -> Path:
    """Put ``model`` in the hub cache as umxhq's vocals (the table names its real hash)."""
    weights = save_distributed(hub, "vocals", model)
    (hub / "vocals.json").unlink()  # torch hub caches the weights only
    url = f"https://zenodo.example/files/{weights.name}"
    monkeypatch.setitem(OPENUNMIX_MODELS, "umxhq", {"vocals": url})
    return weights


def test_published_name_resolves_to_the_hub_cache(hub, monkeypatch):
    model = random_umx(3, nb_bins=2049, max_bin=100)
    publish(hub, monkeypatch, model)
    source = resolve_model("umxhq")
    assert source.label == "umxhq"
    models, entries = load_models(source.model)
    assert list(models) == ["vocals"] and entries[0].stft.n_fft == 4096
    mag = torch.rand(1, 2, 2049, 5)
    with torch.no_grad():
        assert torch.allclose(models["vocals"](mag), model(mag), atol=1e-5)


def test_published_name_with_a_wrong_hash_is_refused(hub, monkeypatch):
    weights = publish(hub, monkeypatch, random_umx(3, nb_bins=2049, max_bin=100))
    with weights.open("ab") as stream:
        stream.write(b"corrupt")
    with pytest.raises(LongsepError, match=f"{weights}: SHA-256 .* does not match") as err:
        load_models("umxhq")
    assert "\n" not in str(err.value) and weights.exists()


def test_a_bad_download_is_deleted(hub, monkeypatch):
    monkeypatch.setitem(
        OPENUNMIX_MODELS, "umx", {"vocals": "https://x.example/vocals-0000abcd.pth"}
    )
    monkeypatch.setattr(
        torch.hub, "download_url_to_file", lambda url, dst, **kw: Path(dst).write_bytes(b"junk")
    )
    with pytest.raises(LongsepError, match="vocals-0000abcd.pth: SHA-256 .* deleted"):
        load_models("umx")
    assert not (hub / "vocals-0000abcd.pth").exists()


def test_published_name_offline_says_what_to_fetch_and_where(hub):
    with pytest.raises(LongsepError) as err:
        load_models("umxl")
    message = str(err.value)
    assert "\n" not in message and str(hub) in message and "network unreachable" in message
    assert all(url in message for url in OPENUNMIX_MODELS["umxl"].values())


def test_init_network_strict_shapes_and_pth_files(tmp_path):
    weights = save_distributed(tmp_path, "vocals", random_umx(0), nfft=512, nhop=128)
    same = UMX(nb_bins=257, nb_channels=2, hidden_size=16, max_bin=80)
    assert init_network(same, read_init_weights(weights, "drums")) == "vocals"  # another stem
    source = random_umx(0).state_dict()
    assert all(torch.equal(v, source[k]) for k, v in same.state_dict().items())
    wider = UMX(nb_bins=257, nb_channels=2, hidden_size=24, max_bin=80)
    with pytest.raises(LongsepError, match=r"init_from=.*vocals-\w+\.pth: 'fc1.weight' is"):
        init_network(wider, read_init_weights(tmp_path, "vocals"))
    with pytest.raises(LongsepError, match="does not exist"):
        read_init_weights(tmp_path / "missing", "vocals")


def test_half_precision_store_loads_as_float32(tmp_path):
    """store_dtype=float16 halves the files; the network comes back in float32 with the
    weights rounded to half precision, and an unknown dtype is a one-line error."""
    from safetensors.torch import load_file

    from longsep.spectral import STFTConfig
    from longsep.store import StoreEntry, load_store, save_store

    stft = STFTConfig()
    node = {"_target_": "longsep.models.umx.UMX", "nb_bins": stft.nb_bins, "nb_channels": 2,
            "hidden_size": 16, "nb_layers": 1, "max_bin": 100}  # fmt: skip
    model = UMX(**{k: v for k, v in node.items() if k != "_target_"})
    entry = StoreEntry("vocals", node, stft, seq_len=6.0)
    save_store(tmp_path / "full", model, entry)
    save_store(tmp_path / "half", model, entry, dtype="float16")
    full, half = (tmp_path / d / "vocals.safetensors" for d in ("full", "half"))
    assert {t.dtype for t in load_file(half).values() if t.is_floating_point()} == {torch.float16}
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, _ = load_store(tmp_path / "half", "vocals")
    for name, value in loaded.state_dict().items():
        original = model.state_dict()[name]
        if original.is_floating_point():
            assert value.dtype == torch.float32
            original = original.half().float()
        torch.testing.assert_close(value, original)
    with pytest.raises(LongsepError, match="store_dtype=float8 is not one of float32, float16"):
        save_store(tmp_path / "bad", model, entry, dtype="float8")
    # readable by everyone, as files open() makes under umask 022 (safetensors alone: 0600),
    # so a store installed by root (a wheel, a shared model folder) loads for every user
    umask = os.umask(0o022)
    os.umask(umask)
    for path in (full, half, tmp_path / "half" / "vocals.yaml"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_default_model_is_shipped_or_named_in_one_line(monkeypatch):
    from longsep import store

    assert store.is_model_dir(store.default_model())
    assert store.store_targets(store.default_model()) == ["vocals", "drums", "bass", "other"]
    monkeypatch.setattr(store, "DEFAULT_MODEL", "no_such_model")
    with pytest.raises(LongsepError, match="model=... is not given and the default model .*"):
        store.default_model()

"""Separators: shapes, gradients, determinism, Open-Unmix equivalence, config builders."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf
from openunmix.model import OpenUnmix

from longsep.config import CONF_DIR, conf_dir, max_bin, nb_bins, seconds_to_frames
from longsep.errors import LongsepError
from longsep.models import (
    ATTENTIONS,
    UMX,
    AutoTransformer,
    UMXTransformer,
    build_network,
    instantiate_network,
    is_valid_combination,
    network_config,
    valid_combinations,
)
from longsep.models.attention import (
    MHA,
    QKV1D,
    QKV2D,
    QKVG1D,
    QKV1DDense,
    QKV2DDense,
    QKVG1DDense,
)

BINS, MAX_BIN = 33, 20


def tiny(kind: str, channels: int = 2, attention: str = "mha", **kw) -> torch.nn.Module:
    """A small separator on 33 bins (fast); ``kind``: umx | umx_transformer | auto_transformer."""
    common = {"nb_bins": BINS, "nb_channels": channels, "hidden_size": 16, "max_bin": MAX_BIN}
    if kind == "umx":
        return UMX(nb_layers=2, **common, **kw)
    cls = UMXTransformer if kind == "umx_transformer" else AutoTransformer
    return cls(nb_layers=2, heads=4, ff_mult=2, attention=attention, **common, **kw)


SEPARATOR_CASES = [
    ("umx", {}),
    ("umx_transformer", {}),
    ("umx_transformer", {"attention": "qkv1D", "positional": "rotary"}),
    ("umx_transformer", {"attention": "qkvg1D", "positional": "learned", "max_frames": 64}),
    ("auto_transformer", {"attention": "qkv2D"}),
    ("auto_transformer", {"attention": "qkvg1D", "downsample": 2, "positional": "rotary"}),
    ("auto_transformer", {"attention": "qkv1D", "downsample": 3, "positional": "none"}),
    ("umx_transformer", {"attention": "qkv2D", "positional": "none"}),
    ("umx_transformer", {"attention": "qkv1D_dense", "positional": "rotary"}),
    ("auto_transformer", {"attention": "qkvg1D_dense", "downsample": 2}),
]
CASE_IDS = [f"{k}-{'-'.join(map(str, kw.values()))}" for k, kw in SEPARATOR_CASES]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


FULL_SIZE = ["umx", "umx_transformer", "auto_transformer"]


@pytest.mark.parametrize(("kind", "kw"), SEPARATOR_CASES, ids=CASE_IDS)
def test_shapes_mono_stereo_batches_and_frame_counts(kind, kw):
    for channels, batch in ((1, 3), (2, 1)):
        model = tiny(kind, channels, **kw).eval()
        for frames in (1, 2, 7, 13):
            mag = torch.rand(batch, channels, BINS, frames)
            with torch.no_grad():
                out = model(mag)
            assert out.shape == mag.shape
            assert torch.isfinite(out).all() and (out >= 0).all()


@pytest.mark.parametrize(("kind", "kw"), SEPARATOR_CASES, ids=CASE_IDS)
def test_gradients_reach_every_parameter(kind, kw):
    model = tiny(kind, **kw).train()
    with torch.no_grad():
        model.output_mean.fill_(2.0)  # keep the ReLU mask open so every path carries gradient
    mag = torch.rand(2, 2, BINS, 40)  # enough frames for several strided keys per level
    model(mag).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("kind", "kw"), SEPARATOR_CASES, ids=CASE_IDS)
def test_eval_is_deterministic_and_items_independent(kind, kw):
    """Eval output is repeatable and each batch item is separated on its own."""
    model = tiny(kind, **kw).eval()
    mag = torch.rand(3, 2, BINS, 10)
    with torch.no_grad():
        out = model(mag)
        torch.testing.assert_close(model(mag), out, atol=0, rtol=0)
        torch.testing.assert_close(model(mag[1:2]), out[1:2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["umx", "umx_transformer", "auto_transformer"])
def test_output_is_a_mask_of_the_mixture_below_max_bin(kind):
    """Bins above max_bin do not change the mask; silent bins stay silent."""
    model = tiny(kind).eval()
    mag = torch.rand(1, 2, BINS, 9) + 0.1
    louder = mag.clone()
    louder[:, :, MAX_BIN:] *= 3.0
    silent = mag.clone()
    silent[:, :, 5] = 0.0
    with torch.no_grad():
        torch.testing.assert_close(model(louder) / louder, model(mag) / mag, atol=1e-5, rtol=1e-5)
        assert (model(silent)[:, :, 5] == 0).all()


@pytest.mark.parametrize(
    "separator", ["umx_small", "umx_transformer_small", "auto_transformer_small"]
)
def test_small_presets_take_2600_frames(separator):
    model = build_network(separator, None, seq_len=60).eval()
    mag = torch.rand(1, 2, 2049, 2600)
    with torch.no_grad():
        assert model(mag).shape == mag.shape


def randomise(model: torch.nn.Module) -> None:
    """Random weights and BatchNorm running statistics."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.05 if "lstm" in name or "fc" in name else 0.5))
            if name in ("input_scale", "output_scale", "output_mean"):
                p.abs_().add_(0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize(
    "kw",
    [
        {"nb_bins": 2049, "nb_channels": 2, "hidden_size": 512, "nb_layers": 3, "max_bin": 1487},
        {"nb_bins": 65, "nb_channels": 1, "hidden_size": 16, "nb_layers": 2, "max_bin": 40},
        {
            "nb_bins": 65,
            "nb_channels": 2,
            "hidden_size": 16,
            "nb_layers": 1,
            "unidirectional": True,
        },
    ],
    ids=["full", "small-mono", "small-unidirectional"],
)
def test_umx_matches_openunmix(kw):
    reference = OpenUnmix(**kw)
    randomise(reference)
    reference.eval()
    ours = UMX(**kw)
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert shapes == {k: v.shape for k, v in reference.state_dict().items()}
    ours.load_state_dict(reference.state_dict(), strict=True)
    ours.eval()
    mag = torch.rand(2, kw["nb_channels"], kw["nb_bins"], 23) * 2
    with torch.no_grad():
        expected = reference(mag)
        got = ours(mag)
    assert expected.abs().max() > 0
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    reverse = OpenUnmix(**kw)
    reverse.load_state_dict(ours.state_dict(), strict=True)


def test_umx_eval_gradients_match_finite_differences():
    """The eval-mode output layers (folded into one product) keep input gradients right,
    as saliency and context analyses take them."""
    model = UMX(nb_bins=9, nb_channels=2, hidden_size=4, nb_layers=1, max_bin=6)
    randomise(model)
    model.double().eval()
    mag = torch.rand(1, 2, 9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(model, (mag.add(0.1).requires_grad_(),))


def test_umx_input_statistics_like_openunmix():
    rng = np.random.default_rng(0)
    mean, std = rng.random(65), rng.random(65) + 0.5
    reference = OpenUnmix(nb_bins=65, hidden_size=8, max_bin=30, input_mean=mean, input_scale=std)
    ours = UMX(nb_bins=65, hidden_size=8, max_bin=30, input_mean=mean, input_scale=std)
    torch.testing.assert_close(ours.input_mean, reference.input_mean)
    torch.testing.assert_close(ours.input_scale, reference.input_scale)


def test_umx_takes_no_attention():
    with pytest.raises(TypeError):
        UMX(nb_bins=BINS, attention="mha")


def test_transformer_options():
    model = tiny("umx_transformer", attention="qkv1D")
    assert all(isinstance(layer.attn, QKV1D) for layer in model.layers)
    auto = tiny("auto_transformer", attention="qkvg1D", downsample=2)
    assert all(isinstance(layer.cross, QKVG1D) for layer in auto.decoder)
    assert len(auto.down) == len(auto.up) == 1
    learned = tiny("umx_transformer", positional="learned", max_frames=8).eval()
    with pytest.raises(LongsepError, match="at most 8 frames"):
        learned(torch.rand(1, 2, BINS, 9))
    with pytest.raises(LongsepError, match="needs separator.max_frames"):
        tiny("umx_transformer", positional="learned")
    with pytest.raises(LongsepError, match="positional='alibi'"):
        tiny("umx_transformer", positional="alibi")
    with pytest.raises(LongsepError, match="not divisible"):
        UMXTransformer(nb_bins=BINS, hidden_size=18, heads=4)
    with pytest.raises(LongsepError, match="expects a magnitude"):
        model(torch.rand(1, 2, BINS + 1, 5))


@pytest.mark.parametrize("kind", ["umx_transformer", "auto_transformer"])
def test_gradient_checkpointing_gives_the_same_gradients(kind):
    extra = {"downsample": 2} if kind == "auto_transformer" else {}
    model = tiny(kind, dropout=0.0, **extra).train()
    mag = torch.rand(2, 2, BINS, 12)
    grads = []
    for flag in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = flag
        model(mag).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


# --- configs and builders -------------------------------------------------------------


def test_resolvers_match_open_unmix_values():
    assert nb_bins(4096) == 2049
    assert max_bin(4096, 44100, 16000) == 1487  # Open-Unmix's max_bin at 16 kHz
    assert max_bin(4096, 44100, None) == 2049
    stft = {"n_fft": 4096, "hop_length": 1024, "center": True, "sample_rate": 44100}
    assert seconds_to_frames(60, OmegaConf.create(stft)) == 60 * 44100 // 1024 + 1
    assert conf_dir() == CONF_DIR and (CONF_DIR / "separator" / "umx.yaml").exists()


@pytest.mark.parametrize(("separator", "attention"), valid_combinations(FULL_SIZE))
def test_build_every_valid_combination(separator, attention):
    model = build_network(f"{separator}_small", attention, seq_len=7).eval()
    classes = {"umx": UMX, "umx_transformer": UMXTransformer, "auto_transformer": AutoTransformer}
    assert type(model) is classes[separator]
    assert model.nb_bins == 1487 and model.nb_output_bins == 2049 and model.hidden_size == 128
    if attention:
        assert all(type(m) is ATTENTIONS[attention] for m in model.modules() if hasattr(m, "heads"))
    mag = torch.rand(1, 2, 2049, 5)
    with torch.no_grad():
        assert model(mag).shape == mag.shape


def test_full_size_configs():
    umx = build_network("umx", None)
    assert sum(p.numel() for p in umx.parameters()) == sum(
        p.numel()
        for p in OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=512, max_bin=1487).parameters()
    )
    model = build_network("auto_transformer", "qkv1D", seq_len=60, positional="learned")
    assert len(model.encoder) == len(model.decoder) == 3 and model.hidden_size == 512
    assert model.position.max_frames == 2584
    assert model.encoder[0].attn.kv_stride == 4 and model.encoder[0].attn.heads == 8


def test_build_errors_and_overrides(caplog):
    with pytest.raises(LongsepError, match="separator=umx has no attention; drop attention=qkv1D"):
        build_network("umx", "qkv1D")
    with pytest.raises(LongsepError, match="separator=umx_small has no attention"):
        build_network("umx_small", "mha")
    with pytest.raises(LongsepError, match="attention=linformer does not exist"):
        build_network("umx_transformer", "linformer")
    with pytest.raises(LongsepError, match="separator=lstm does not exist"):
        build_network("lstm")
    with pytest.raises(LongsepError, match="no option 'hiden_size'"):
        build_network("umx_small", hiden_size=8)
    mono = build_network("umx_small", nb_channels=1, hidden_size=32, bandwidth=None)
    assert mono.nb_channels == 1 and mono.hidden_size == 32 and mono.nb_bins == 2049
    strided = build_network("umx_transformer_small", "qkv1D", kv_stride=2, window=8)
    assert strided.layers[0].attn.kv_stride == 2 and strided.layers[0].attn.window == 8
    with caplog.at_level(logging.INFO, logger="longsep.models"):
        default = build_network("umx_transformer_small", None)
    assert all(isinstance(layer.attn, MHA) for layer in default.layers)
    assert "mha" in caplog.text


def test_is_valid_combination():
    assert is_valid_combination("umx", None) and is_valid_combination("umx_small", None)
    assert not is_valid_combination("umx", "qkv1D") and not is_valid_combination("umx_small", "mha")
    assert is_valid_combination("auto_transformer_small", "qkvg1D")
    assert is_valid_combination("umx_transformer", None)
    pairs = valid_combinations(FULL_SIZE)
    assert ("umx", None) in pairs and ("umx", "mha") not in pairs
    assert len(pairs) == 1 + 2 * (1 + len(ATTENTIONS))  # umx; transformers: none + each
    assert all(is_valid_combination(s, a) for s, a in valid_combinations())


def test_build_network_keeps_an_outer_hydra_initialisation():
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        build_network("umx_small")
        assert GlobalHydra.instance().is_initialized()
        assert compose("build", overrides=["separator=umx_small"]).separator.hidden_size == 128
    assert not GlobalHydra.instance().is_initialized()


def _compose_train(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def test_instantiate_from_training_config_and_rebuild_from_record():
    """The training config builds the separator; the recorded node rebuilds the same one."""
    cfg = _compose_train(["separator=auto_transformer_small", "attention=qkvg1D", "seq_len=7"])
    model = instantiate_network(cfg)
    assert isinstance(model, AutoTransformer) and isinstance(model.encoder[0].attn, QKVG1D)
    record = network_config(cfg)
    assert record["attention"]["_target_"] == "longsep.models.attention.QKVG1D"
    assert record["max_bin"] == 1487 and record["max_frames"] == 302
    rebuilt = instantiate(OmegaConf.to_container(OmegaConf.create(record)), _convert_="all")
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


# attention config: class, key stride, heads x head size at the `_small` width (128, 4 heads)
ATTENTION_CONFIGS = {
    "qkv1D": (QKV1D, 4, 4, 32),
    "qkv2D": (QKV2D, 2, 16, 128),
    "qkvg1D": (QKVG1D, 4, 4, 32),
    "qkv1D_dense": (QKV1DDense, 4, 4, 32),
    "qkv2D_dense": (QKV2DDense, 1, 4, 32),
    "qkvg1D_dense": (QKVG1DDense, 1, 4, 32),
}


@pytest.mark.parametrize("attention", sorted(ATTENTION_CONFIGS))
def test_attention_configs_original_and_dense(attention):
    """conf/attention: the original designs strided, the `_dense` ones as before; a recorded
    node rebuilds the model; positional=none runs."""
    cls, stride, heads, head_dim = ATTENTION_CONFIGS[attention]
    cfg = _compose_train(["separator=umx_transformer_small", f"attention={attention}", "seq_len=7"])
    model = instantiate_network(cfg)
    attn = model.layers[0].attn
    assert type(attn) is cls and attn.kv_stride == stride
    assert (attn.heads, attn.head_dim) == (heads, head_dim)
    record = network_config(cfg)
    assert record["attention"]["_target_"] == f"longsep.models.attention.{cls.__name__}"
    rebuilt = instantiate(OmegaConf.to_container(OmegaConf.create(record)), _convert_="all")
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    plain = build_network("umx_transformer_small", attention, positional="none").eval()
    assert plain.position.kind == "none"
    mag = torch.rand(1, 2, 2049, 11)
    with torch.no_grad():
        assert plain(mag).shape == mag.shape


def test_training_config_defaults_and_errors():
    cfg = _compose_train(["separator=umx_transformer_small"])
    assert network_config(cfg)["attention"]["_target_"] == "longsep.models.attention.MHA"
    cfg = _compose_train(["separator=umx", "attention=qkv2D"])
    with pytest.raises(LongsepError, match="has no attention; drop attention="):
        instantiate_network(cfg)
    cfg = _compose_train(["separator=umx_transformer_small", "separator.positional=learned"])
    OmegaConf.update(cfg, "separator.max_frames", None)
    with pytest.raises(LongsepError, match="needs separator.max_frames"):
        instantiate_network(cfg)


def test_qkvg1d_has_the_originals_learned_temperature_shared_by_the_layers():
    """One parameter, initialised to 1 (so the untrained model is the one without it),
    shared by every layer, trained by backprop; model files without it still load."""
    import longsep

    torch.manual_seed(0)
    model = longsep.build_network("umx_transformer_small", "qkvg1D", seq_len=2, nb_channels=1)
    names = [n for n, _ in model.named_parameters() if "temperature" in n]
    assert names == ["softmax_temperature"] and model.softmax_temperature.item() == 1.0
    plain = longsep.build_network(
        "umx_transformer_small", "qkvg1D", seq_len=2, nb_channels=1, temperature=False
    )
    assert plain.softmax_temperature is None
    state = {k: v for k, v in model.state_dict().items() if k != "softmax_temperature"}
    plain.load_state_dict(state)  # strict: a model file from before the temperature
    mag = torch.rand(2, 1, model.nb_output_bins, 40)
    model.train(), plain.train()
    torch.manual_seed(1)
    out = model(mag)
    torch.manual_seed(1)
    torch.testing.assert_close(out, plain(mag))
    out.sum().backward()
    assert model.softmax_temperature.grad is not None and model.softmax_temperature.grad.abs() > 0
    with torch.no_grad():
        model.softmax_temperature.fill_(3.0)
    model.eval(), plain.eval()
    assert not torch.allclose(model(mag), plain(mag))

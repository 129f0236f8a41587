"""Metrics: SI-SDR against analytic values; the fast BSSEval v4 against museval, frame by frame.

Signals are short (2-3 s) so that museval, the reference, stays quick.
"""

import json
import math
from collections import OrderedDict
from types import SimpleNamespace

import jsonschema
import museval
import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from longsep.errors import LongsepError
from longsep.evaluation.bsseval import BSS_METRICS as METRICS
from longsep.evaluation.metrics import (
    bss_eval,
    evaluate_track,
    neg_si_sdr_loss,
    save_museval_json,
    si_sdr,
    to_museval_json,
    track_si_sdr,
)
from longsep.evaluation.results import ResultStore, nan_median

RATE = 44100
TOL_DB = 0.01


def music(nsrc: int, seconds: float, seed: int) -> np.ndarray:
    """``(nsrc, samples, 2)`` stereo sources: decaying harmonic notes plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    sources = []
    for _ in range(nsrc):
        f0 = 55.0 * 2 ** rng.uniform(0, 4)
        tone = sum(
            rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
            for h in range(1, 9)
        )
        period = rng.uniform(0.2, 0.6)
        mono = tone * np.exp(-(t % period) / (0.3 * period)) + 0.02 * rng.standard_normal(t.size)
        gain = rng.uniform(0.3, 0.7)
        noise = 0.005 * rng.standard_normal((t.size, 2))
        sources.append(np.stack([gain * mono, (1 - gain) * mono], axis=1) + noise)
    return np.stack(sources)


def separated(refs: np.ndarray, seed: int) -> np.ndarray:
    """Separator-like estimates: each source filtered, plus leakage of the next and noise."""
    rng = np.random.default_rng(seed)
    filtered = lfilter([0.7, 0.2, 0.1], [1.0], refs, axis=1)
    leak = 0.2 * np.roll(refs, 1, axis=0)
    return filtered + leak + 0.02 * refs.std() * rng.standard_normal(refs.shape)


def assert_frames_agree(fast: dict, ref: dict, tol: float = TOL_DB) -> None:
    """Same shape, same nan / inf positions, finite values within ``tol`` dB."""
    for m in METRICS:
        assert fast[m].shape == ref[m].shape, m
        np.testing.assert_array_equal(np.isnan(fast[m]), np.isnan(ref[m]), err_msg=m)
        np.testing.assert_allclose(fast[m], ref[m], rtol=0, atol=tol, equal_nan=True, err_msg=m)


def both(refs, ests, **kwargs) -> tuple[dict, dict]:
    fast = bss_eval(refs, ests, backend="fast", device="cpu", **kwargs)
    return fast, bss_eval(refs, ests, backend="museval", **kwargs)


# ---------------------------------------------------------------------------- SI-SDR


def orthogonal_noise(ref: torch.Tensor, snr_db: float, seed: int) -> torch.Tensor:
    """Zero-mean white noise orthogonal to ``ref`` (per row) with ``|ref|^2 / |n|^2 = snr``."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    noise -= noise.mean(-1, keepdim=True)
    noise -= (noise * ref).sum(-1, keepdim=True) / ref.pow(2).sum(-1, keepdim=True) * ref
    scale = ref.pow(2).sum(-1, keepdim=True) / noise.pow(2).sum(-1, keepdim=True)
    return noise * (scale / 10 ** (snr_db / 10)).sqrt()


def zero_mean_signal(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x - x.mean(-1, keepdim=True)


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 12.0, 30.0])
def test_si_sdr_of_orthogonal_noise_is_the_snr(snr_db):
    ref = zero_mean_signal((3, 16000), seed=0)
    est = ref + orthogonal_noise(ref, snr_db, seed=1)
    value = si_sdr(est.float(), ref.float())
    assert value.shape == (3,)
    assert torch.allclose(value, torch.full((3,), snr_db), atol=0.1)


def test_si_sdr_perfect_estimate_is_very_large():
    ref = zero_mean_signal((2, 8000), seed=2)
    assert (si_sdr(ref, ref) > 100).all()
    assert (si_sdr(0.25 * ref, ref) > 100).all()


def test_si_sdr_is_scale_invariant_and_batched():
    ref = zero_mean_signal((2, 3, 8000), seed=3)
    est = ref + orthogonal_noise(ref, 6.0, seed=4) + 0.3 * zero_mean_signal((2, 3, 8000), 5)
    base = si_sdr(est, ref)
    assert base.shape == (2, 3)
    for scale in (0.01, 0.5, 7.0):
        assert torch.allclose(si_sdr(scale * est, ref), base, atol=1e-6)
    assert not torch.allclose(si_sdr(est, 2 * ref + est), base, atol=0.1)


def test_si_sdr_matches_torchmetrics():
    from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio as tm

    ref = torch.randn(4, 5000, dtype=torch.float64) + 0.3
    est = 0.6 * ref + 0.4 * torch.randn(4, 5000, dtype=torch.float64)
    for zero_mean in (True, False):
        ours = si_sdr(est, ref, zero_mean=zero_mean)
        assert torch.allclose(ours, tm(est, ref, zero_mean=zero_mean), atol=1e-6)


def test_si_sdr_zero_mean_ignores_dc_offset():
    ref = zero_mean_signal((1, 8000), seed=6)
    est = ref + orthogonal_noise(ref, 10.0, seed=7)
    assert torch.allclose(si_sdr(est + 0.5, ref), si_sdr(est, ref), atol=1e-6)
    assert si_sdr(est + 0.5, ref, zero_mean=False) < si_sdr(est, ref) - 1


@pytest.mark.parametrize("kind", ["noisy", "perfect", "scaled", "unrelated", "offset"])
def test_blockwise_track_si_sdr_equals_si_sdr_in_float64(kind):
    """Over several blocks, float32 input, against si_sdr on the whole float64 signal."""
    rng = np.random.default_rng(20)
    ref = (rng.standard_normal((700_000, 2)) + 0.2).astype(np.float32)
    est = {
        "noisy": ref + 0.03 * rng.standard_normal(ref.shape),
        "perfect": ref,
        "scaled": 0.5 * ref,
        "unrelated": rng.standard_normal(ref.shape),
        "offset": ref + 0.7,
    }[kind].astype(np.float32)
    for zero_mean in (True, False):
        whole = si_sdr(
            *(torch.from_numpy(x.reshape(-1)).double() for x in (est, ref)), zero_mean=zero_mean
        )
        assert track_si_sdr(est, ref, zero_mean=zero_mean) == pytest.approx(float(whole), abs=1e-9)


def test_neg_si_sdr_loss_trains():
    ref = zero_mean_signal((2, 4000), seed=8)
    est = (ref + orthogonal_noise(ref, 0.0, seed=9)).requires_grad_(True)
    loss = neg_si_sdr_loss(est, ref)
    assert torch.isclose(loss, -si_sdr(est, ref).mean())
    loss.backward()
    assert torch.isfinite(est.grad).all()
    with torch.no_grad():
        stepped = est - 100.0 * est.grad
    assert neg_si_sdr_loss(stepped, ref) < loss - 0.1


# ---------------------------------------------------------------------------- BSSEval


@pytest.mark.parametrize(
    ("nsrc", "seconds"),
    [
        (2, 3.0),
        pytest.param(3, 2.0, marks=pytest.mark.slow),
        pytest.param(4, 1.0, marks=pytest.mark.slow),
    ],
)
def test_fast_matches_museval_on_music(nsrc, seconds):
    refs = music(nsrc, seconds, seed=nsrc)
    fast, ref = both(refs, separated(refs, seed=nsrc))
    assert fast["SDR"].shape == (nsrc, math.floor(seconds))
    assert np.isfinite(ref["SDR"]).all()
    assert_frames_agree(fast, ref)


@pytest.mark.parametrize(
    ("window", "hop"),
    [(22050, 11025), (math.inf, math.inf), pytest.param(30000, 30000, marks=pytest.mark.slow)],
)
def test_fast_matches_museval_framing(window, hop):
    refs = music(2, 2.0, seed=10)
    fast, ref = both(refs, separated(refs, seed=10), window=window, hop=hop)
    assert_frames_agree(fast, ref)


def test_mono_and_single_source_inputs_match_museval():
    refs = music(3, 1.0, seed=20)
    ests = separated(refs, seed=20)
    assert_frames_agree(*both(refs[..., 0], ests[..., 0]))  # (nsrc, samples): mono
    fast, ref = both(refs[:1], ests[:1])
    assert np.isposinf(ref["SIR"]).all()  # nothing to interfere
    assert_frames_agree(fast, ref)


def test_silent_windows_are_nan_in_both():
    refs = music(2, 4.0, seed=11)
    ests = separated(refs, seed=11)
    refs[1, RATE : 2 * RATE] = 0.0  # reference silent in window 1
    ests[1, 3 * RATE :] = 0.0  # estimate silent in window 3
    refs[1, : RATE // 2] = 0.0  # silent for half a window only: still scored
    refs[0, 2 * RATE : 3 * RATE, 1] = -refs[0, 2 * RATE : 3 * RATE, 0]  # channel sum is zero
    fast, ref = both(refs, ests)
    expected = np.array([False, True, True, True])
    for m in METRICS:
        np.testing.assert_array_equal(np.isnan(ref[m]).all(0), expected)
        np.testing.assert_array_equal(np.isnan(ref[m]).any(0), expected)
    assert_frames_agree(fast, ref)


def test_near_perfect_estimates_agree():
    refs = music(2, 2.0, seed=12)
    rng = np.random.default_rng(12)
    fast, ref = both(refs, refs + 1e-5 * refs.std() * rng.standard_normal(refs.shape))
    assert (ref["SDR"] > 80).all()
    assert_frames_agree(fast, ref)


def test_perfect_estimates_are_infinite_sdr():
    refs = music(2, 1.0, seed=13)
    fast, ref = both(refs, refs.copy())
    assert np.isposinf(fast["SDR"]).all() and np.isposinf(ref["SDR"]).all()
    for m in ("ISR", "SIR", "SAR"):
        assert (fast[m] > 200).all() and (ref[m] > 200).all()


def test_poor_estimates_agree():
    refs = music(2, 2.0, seed=14)
    noise = np.random.default_rng(14).standard_normal(refs.shape) * refs.std()
    ests = np.stack([refs[1] + 0.1 * noise[0], noise[1]])  # the other source; noise only
    fast, ref = both(refs, ests)
    assert (ref["SDR"] < 0).all()
    assert_frames_agree(fast, ref)


def test_torch_float32_input_matches_numpy():
    refs = music(2, 2.0, seed=15)
    ests = separated(refs, seed=15)
    r32, e32 = refs.astype(np.float32), ests.astype(np.float32)
    from_torch = bss_eval(torch.from_numpy(r32), torch.from_numpy(e32), device="cpu")
    from_numpy = bss_eval(r32.astype(np.float64), e32.astype(np.float64), device="cpu")
    for m in METRICS:
        np.testing.assert_array_equal(from_torch[m], from_numpy[m])


@pytest.mark.slow
def test_lists_of_sources_equal_stacked_arrays():
    refs = music(3, 2.0, seed=16).astype(np.float32)
    ests = separated(refs, seed=16).astype(np.float32)
    for backend in ("fast", "museval"):
        stacked = bss_eval(refs, ests, backend=backend, device="cpu")
        listed = bss_eval(list(refs), [torch.from_numpy(e) for e in ests], backend=backend)
        for m in METRICS:
            np.testing.assert_array_equal(listed[m], stacked[m])


def test_silence_check_reads_past_the_first_block():
    """A source silent for 3 blocks of the silence scan, then not, is not silent."""
    refs = music(2, 5.0, seed=17)
    refs[0, : 3 * 65536] = 0
    refs[1] = 0
    refs[1, -1, 0] = 1e-3
    fast, ref = both(refs, separated(refs, seed=17))
    assert_frames_agree(fast, ref)
    refs[1, -1, 0] = 0
    with pytest.raises(LongsepError, match=r"references: source\(s\) \[1\]"):
        bss_eval(refs, separated(refs, seed=17))


@pytest.mark.parametrize(
    ("refs", "ests", "kwargs", "match"),
    [
        (np.ones((2, 100, 2)), np.ones((2, 90, 2)), {}, "differ"),
        ([np.ones((100, 2)), np.ones((90, 2))], np.ones((2, 100, 2)), {}, "different shapes"),
        (np.zeros((2, 100, 2)), np.ones((2, 100, 2)), {}, "references: source"),
        (np.ones((2, 100, 2)), np.zeros((2, 100, 2)), {}, "estimates: source"),
        (np.ones((2, 100, 2)), np.ones((2, 100, 2)), {"backend": "bsseval"}, "backend"),
        (np.ones((2, 100, 2)), np.ones((2, 100, 2)), {"window": 10.5}, "window"),
    ],
)
def test_bad_input_is_a_longsep_error(refs, ests, kwargs, match):
    with pytest.raises(LongsepError, match=match):
        bss_eval(refs, ests, **kwargs)


# ---------------------------------------------------------------------------- tracks


def musdb_like(names: tuple[str, ...], seconds: float, seed: int, extra: int) -> tuple[dict, dict]:
    """References and estimates per target, ``(samples, 2)``; estimates ``extra`` longer."""
    refs = music(len(names), seconds, seed)
    ests = separated(refs, seed)
    # museval zero-pads short estimates and cuts long ones
    ests = ests[:, :extra] if extra < 0 else np.concatenate([ests, ests[:, :extra]], axis=1)
    return dict(zip(names, refs, strict=True)), dict(zip(names, ests, strict=True))


@pytest.mark.parametrize(
    ("names", "extra"),
    [(("drums", "bass"), -1000), (("vocals", "bass", "accompaniment"), 500)],
)
def test_track_json_matches_museval_and_loads(names, extra, tmp_path):
    references, estimates = musdb_like(names, 2.0, seed=16, extra=extra)
    track = SimpleNamespace(
        name="Artist - Song",
        subset="test",
        rate=RATE,
        targets=OrderedDict((n, SimpleNamespace(audio=a)) for n, a in references.items()),
    )
    expected = json.loads(museval.eval_mus_track(track, estimates).json)

    scores = evaluate_track(references, estimates, backend="fast", device="cpu")
    doc = to_museval_json(track.name, scores)
    schema_path = museval.__path__[0] + "/musdb.schema.json"
    with open(schema_path) as f:
        jsonschema.validate(doc, json.load(f))
    assert [t["name"] for t in doc["targets"]] == [t["name"] for t in expected["targets"]]
    for ours, theirs in zip(doc["targets"], expected["targets"], strict=True):
        assert len(ours["frames"]) == len(theirs["frames"]) == 2
        for a, b in zip(ours["frames"], theirs["frames"], strict=True):
            assert (a["time"], a["duration"]) == (b["time"], b["duration"])
            for m in METRICS:
                assert a["metrics"][m] == pytest.approx(b["metrics"][m], abs=TOL_DB, nan_ok=True)

    save_museval_json(doc, tmp_path / "test" / f"{track.name}.json")
    store = museval.EvalStore()
    store.add_eval_dir(tmp_path)
    assert set(store.df["target"]) == set(names)
    assert len(store.df) == len(doc["targets"]) * 2 * len(METRICS)
    medians = store.agg_frames_scores()
    ours = ResultStore(tmp_path).track_scores(track.name)
    assert set(ours) == set(names)
    for target, values in ours.items():
        for m in METRICS:
            assert medians[(track.name, target, m)] == pytest.approx(values[m], abs=1e-4)
    methods = museval.MethodStore()
    methods.add_eval_dir(tmp_path)
    assert set(methods.df["method"]) == {tmp_path.name}


def test_nan_median_matches_museval_aggregation():
    values = {
        "SDR": [1.0, math.inf, 3.0, math.nan, 10.0],
        "SIR": [2.0, 2.0, 2.0, 2.0, 2.0],
        "ISR": [math.nan] * 5,
        "SAR": [-1.0, 5.0, -math.inf, 0.5, 0.25],
    }
    ours = {m: nan_median(v) for m, v in values.items()}
    store = museval.TrackStore(track_name="t")
    store.add_target("bass", values)
    evals = museval.EvalStore()
    evals.add_track(store)
    theirs = evals.agg_frames_scores()
    for m in METRICS:
        assert ours[m] == pytest.approx(float(theirs[("t", "bass", m)]), nan_ok=True)
    assert ours["SDR"] == 3.0 and math.isnan(ours["ISR"])


def test_track_si_sdr_spans_all_channels():
    refs = music(2, 1.0, seed=18)
    flat = torch.from_numpy(refs.transpose(0, 2, 1).reshape(2, -1).copy())
    flat -= flat.mean(-1, keepdim=True)
    ests = (flat + orthogonal_noise(flat, 15.0, seed=19)).reshape(2, 2, -1).transpose(1, 2)
    scores = evaluate_track(
        {"bass": flat.reshape(2, 2, -1)[0].T, "drums": flat.reshape(2, 2, -1)[1].T},
        {"bass": ests[0], "drums": ests[1]},
        device="cpu",
    )
    for name in ("bass", "drums"):
        assert scores["targets"][name]["SI-SDR"] == pytest.approx(15.0, abs=0.1)
        assert scores["targets"][name]["SDR"].shape == (1,)


def test_track_without_shared_targets_is_a_longsep_error():
    with pytest.raises(LongsepError, match="share no target"):
        evaluate_track({"vocals": np.ones((10, 2))}, {"drums": np.ones((10, 2))})


def test_single_target_gets_si_sdr_only():
    references, estimates = musdb_like(("vocals",), 1.0, seed=17, extra=0)
    scores = evaluate_track(references, estimates, device="cpu")
    assert set(scores["targets"]["vocals"]) == {"SI-SDR"}
    assert to_museval_json("x", scores)["targets"] == []


@pytest.mark.parametrize("start, stop", [(-7, 5), (-7, 40), (3, 20), (25, 40), (31, 45), (-9, -2)])
def test_fast_backend_reads_channel_ranges_zero_padded_outside_the_track(start, stop):
    from longsep.evaluation.bsseval import _Channels

    rng = np.random.default_rng(0)
    refs = [rng.standard_normal((30, 2)) for _ in range(3)]
    ests = [rng.standard_normal((30, 2)).astype(np.float32) for _ in range(3)]
    padded = np.zeros((12, 30 + 100))  # rows: references then estimates, source-major
    padded[:, 50:80] = np.concatenate([x.T for x in refs + ests])
    got = _Channels(refs, ests, torch.device("cpu")).read(start, stop)
    np.testing.assert_array_equal(got.numpy(), padded[:, 50 + start : 50 + stop])


def test_fast_backend_gram_matrix_is_that_of_the_delayed_references():
    from longsep.evaluation.bsseval import _EPS64, _Channels, _gram, _lagged_correlations

    rng = np.random.default_rng(1)
    taps, length = 8, 300
    refs = [rng.standard_normal((length, 2)) for _ in range(2)]
    channels = _Channels(refs, [x + 0.1 for x in refs], torch.device("cpu"))
    corr = _lagged_correlations(channels, taps - 1)[:, :4]
    # column (p, a): reference channel p delayed by a samples, zero-padded
    delayed = np.zeros((length + taps - 1, 4, taps))
    for p, signal in enumerate(np.concatenate([x.T for x in refs])):
        for a in range(taps):
            delayed[a : a + length, p, a] = signal
    delayed = delayed.reshape(length + taps - 1, 4 * taps)
    expected = delayed.T @ delayed + _EPS64 * np.eye(4 * taps)
    np.testing.assert_allclose(_gram(corr, taps).numpy(), expected, rtol=1e-12, atol=1e-9)

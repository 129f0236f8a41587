"""Attention variants: naive softmax references, striding, local windows, rotary, memory."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from longsep.errors import LongsepError
from longsep.models.attention import (
    ATTENTIONS,
    MHA,
    QKV1D,
    QKV2D,
    QKVG1D,
    attend,
    attention_factory,
    build_attention,
)
from longsep.models.layers import RotaryEmbedding

DIM, HEADS = 16, 4
HEAD = DIM // HEADS


def naive(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d)) v per head; q, k, v: (batch, frames, dim)."""
    b, tq, _ = q.shape
    qh, kh, vh = (t.reshape(b, t.shape[1], HEADS, HEAD).transpose(1, 2) for t in (q, k, v))
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(HEAD)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    out = scores.softmax(-1) @ vh
    return out.transpose(1, 2).reshape(b, tq, DIM)


def block_mask(tq, tk, window, kv_window):
    """True where query block == key block."""
    return (torch.arange(tq)[:, None] // window) == (torch.arange(tk)[None] // kv_window)


def linear(layer, x):
    return x @ layer.weight.T + layer.bias


def conv1x1(conv, x):
    """A kernel-1 Conv1d applied to (batch, frames, dim) as a matrix product."""
    return x @ conv.weight[:, :, 0].T + conv.bias


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make(name, **kw):
    return build_attention(name, DIM, HEADS, **kw).eval()


def test_mha_equals_naive_self_and_cross():
    att = make("mha")
    x, ctx = torch.randn(2, 11, DIM), torch.randn(2, 5, DIM)
    with torch.no_grad():
        ref = naive(linear(att.q_proj, x), linear(att.k_proj, x), linear(att.v_proj, x))
        torch.testing.assert_close(att(x), linear(att.out_proj, ref), atol=1e-5, rtol=1e-5)
        ref = naive(linear(att.q_proj, x), linear(att.k_proj, ctx), linear(att.v_proj, ctx))
        got = att(x, context=ctx)
    torch.testing.assert_close(got, linear(att.out_proj, ref), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stride", [1, 3, 4])
def test_qkv1d_strided_keys_are_every_stride_th_frame(stride):
    """With kernel 1 the conv projections are linear maps and keys are x[::stride]."""
    att = make("qkv1D", kernel_size=1, kv_kernel_size=1, kv_stride=stride)
    x = torch.randn(2, 10, DIM)
    with torch.no_grad():
        sub = x[:, ::stride]
        ref = naive(conv1x1(att.q_conv, x), conv1x1(att.k_conv, sub), conv1x1(att.v_conv, sub))
        got = att(x)
    torch.testing.assert_close(got, linear(att.out_proj, ref), atol=1e-5, rtol=1e-5)


def test_qkv1d_key_count_and_default_kernel():
    att = make("qkv1D", kv_stride=4)
    assert att.k_conv.kernel_size == (5,) and att.q_conv.kernel_size == (3,)
    for frames in (1, 4, 5, 9, 301):
        keys = att.k_conv(torch.randn(1, DIM, frames))
        assert keys.shape[-1] == math.ceil(frames / 4)


def test_qkvg1d_equals_naive_gated_reference():
    att = make("qkvg1D", kernel_size=1, gate="tanh")
    x = torch.randn(2, 9, DIM)

    def sep(name, t):  # depthwise kernel 1 = per-channel scale and shift, then pointwise
        proj = att.projs[name]
        dw = t * proj.depthwise.weight[:, 0, 0] + proj.depthwise.bias
        return linear(proj.pointwise, dw)

    with torch.no_grad():
        v = sep("v", x)
        attn = naive(sep("q", x), sep("k", x), v)
        ref = linear(att.out_proj, torch.tanh(sep("g", x)) * attn + v)
        got = att(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_qkv2d_equals_naive_per_head_reference():
    att = make("qkv2D", channels=2, kernel_time=1, kernel_freq=1)
    x = torch.randn(2, 6, DIM)

    def proj(name, t):  # 1x1 conv: per-channel scale and shift; then per-head linear maps
        conv, head = att.convs[name], att.heads_proj[name]
        maps = t[:, None] * conv.weight[:, 0, 0, 0, None, None] + conv.bias[:, None, None]
        out = []
        for h in range(HEADS):
            chunk = maps[..., h * HEAD : (h + 1) * HEAD]  # (batch, channels, frames, head)
            y = sum(chunk[:, c] @ head.weight[h, c] for c in range(maps.shape[1]))
            out.append(y + head.bias[h])
        return torch.cat(out, -1)

    with torch.no_grad():
        ref = linear(att.out_proj, naive(proj("q", x), proj("k", x), proj("v", x)))
        got = att(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("frames", [8, 13, 24])
def test_mha_window_equals_block_masked_attention(frames):
    att = make("mha", window=8)
    x = torch.randn(2, frames, DIM)
    with torch.no_grad():
        q, k, v = (linear(p, x) for p in (att.q_proj, att.k_proj, att.v_proj))
        ref = linear(att.out_proj, naive(q, k, v, block_mask(frames, frames, 8, 8)))
        got = att(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("frames", [8, 10, 16, 21])
def test_qkv1d_window_blocks_strided_keys(frames):
    att = make("qkv1D", kernel_size=1, kv_kernel_size=1, kv_stride=4, window=8)
    x = torch.randn(1, frames, DIM)
    with torch.no_grad():
        sub = x[:, ::4]
        q, k, v = conv1x1(att.q_conv, x), conv1x1(att.k_conv, sub), conv1x1(att.v_conv, sub)
        mask = block_mask(frames, sub.shape[1], 8, 2)
        got = att(x)
    torch.testing.assert_close(
        got, linear(att.out_proj, naive(q, k, v, mask)), atol=1e-5, rtol=1e-5
    )


VARIANTS = {
    "mha": {},
    "qkv1D": {"kv_stride": 4},
    "qkv2D": {},
    "qkvg1D": {},
}


@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_window_is_local_and_full_attention_is_not(name):
    """Changing frames past the first block (and the conv reach) leaves the first block's
    output alone with window=8, and changes it without a window."""
    x = torch.randn(1, 24, DIM)
    y = x.clone()
    y[:, 10:] = torch.randn(1, 14, DIM)
    local = make(name, window=8, **VARIANTS[name])
    full = make(name, **VARIANTS[name])
    full.load_state_dict(local.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(local(x)[:, :8], local(y)[:, :8], atol=1e-6, rtol=0)
        assert not torch.allclose(full(x)[:, :8], full(y)[:, :8], atol=1e-4)
        # a sequence that fits in one window: local == full attention
        torch.testing.assert_close(local(x[:, :8]), full(x[:, :8]), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(ATTENTIONS))
@pytest.mark.parametrize("frames", [1, 2, 7, 33])
def test_shapes_self_and_cross(name, frames):
    att = make(name, **VARIANTS[name])
    x = torch.randn(3, frames, DIM)
    assert att(x).shape == x.shape
    assert att(x, context=torch.randn(3, frames, DIM)).shape == x.shape
    if name != "qkvg1D":
        assert att(x, context=torch.randn(3, frames + 5, DIM)).shape == x.shape


def test_qkvg1d_cross_needs_equal_length_context():
    with pytest.raises(LongsepError, match="context as long as x"):
        make("qkvg1D")(torch.randn(1, 4, DIM), context=torch.randn(1, 6, DIM))


@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_gradients_reach_every_parameter(name):
    att = build_attention(name, DIM, HEADS, dropout=0.1, window=8, **VARIANTS[name]).train()
    rotary = RotaryEmbedding(HEAD)
    x = torch.randn(2, 19, DIM, requires_grad=True)
    att(x, rotary=rotary).square().mean().backward()
    for pname, p in att.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    assert torch.isfinite(x.grad).all()


def test_no_frames_by_frames_tensor_is_saved_for_backward():
    """Every tensor kept for the backward pass is far smaller than frames x frames."""
    frames = 1024
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    for name in ATTENTIONS:
        att = build_attention(name, DIM, HEADS, **VARIANTS[name]).train()
        x = torch.randn(1, frames, DIM, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = att(x, rotary=RotaryEmbedding(HEAD))
        out.sum().backward()
    assert sizes and max(sizes) < frames * frames // 8


def test_rotary_scores_depend_only_on_relative_position():
    rotary = RotaryEmbedding(8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m, n):
        return (rotary(q, torch.tensor([m])) * rotary(k, torch.tensor([n]))).sum()

    torch.testing.assert_close(score(3, 1), score(10, 8))
    torch.testing.assert_close(score(0, 5), score(7, 12))
    assert not torch.allclose(score(3, 1), score(1, 3))
    torch.testing.assert_close(rotary(q, torch.tensor([4])).norm(), q.norm())


def test_rotary_uses_strided_key_positions():
    """qkv1D with stride 2 and rotary equals a naive reference with keys at 0, 2, 4, ..."""
    att = make("qkv1D", kernel_size=1, kv_kernel_size=1, kv_stride=2)
    rotary = RotaryEmbedding(HEAD)
    x = torch.randn(1, 7, DIM)

    def heads(t, positions):
        th = t.reshape(1, t.shape[1], HEADS, HEAD).transpose(1, 2)
        return rotary(th, positions).transpose(1, 2).reshape(t.shape)

    with torch.no_grad():
        sub = x[:, ::2]
        q = heads(conv1x1(att.q_conv, x), torch.arange(7))
        k = heads(conv1x1(att.k_conv, sub), torch.arange(0, 7, 2))
        ref = linear(att.out_proj, naive(q, k, conv1x1(att.v_conv, sub)))
        got = att(x, rotary=rotary)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_attend_rejects_mismatched_blocks():
    q, k = torch.randn(1, 1, 16, 4), torch.randn(1, 1, 3, 4)
    with pytest.raises(LongsepError, match="window=null"):
        attend(q, k, k, window=4, kv_window=2)
    torch.testing.assert_close(
        attend(q, q, q), F.scaled_dot_product_attention(q, q, q), atol=1e-6, rtol=0
    )


def test_registry_and_bad_options():
    assert set(ATTENTIONS) == {"mha", "qkv1D", "qkv2D", "qkvg1D"}
    assert ATTENTIONS["mha"] is MHA and ATTENTIONS["qkv1D"] is QKV1D
    assert ATTENTIONS["qkv2D"] is QKV2D and ATTENTIONS["qkvg1D"] is QKVG1D
    with pytest.raises(LongsepError, match="is not one of"):
        build_attention("linformer", DIM, HEADS)
    with pytest.raises(LongsepError, match="not divisible"):
        build_attention("mha", 10, 4)
    with pytest.raises(LongsepError, match="multiple of kv_stride"):
        build_attention("qkv1D", DIM, HEADS, kv_stride=4, window=6)
    with pytest.raises(LongsepError, match="odd"):
        build_attention("qkvg1D", DIM, HEADS, kernel_size=4)
    with pytest.raises(LongsepError, match="gate"):
        build_attention("qkvg1D", DIM, HEADS, gate="relu")
    with pytest.raises(LongsepError, match="expects"):
        make("mha")(torch.randn(1, 4, DIM + 1))
    assert isinstance(attention_factory(None)(dim=DIM, heads=HEADS, dropout=0.0), MHA)
    assert isinstance(attention_factory("qkv2D")(dim=DIM, heads=HEADS, dropout=0.0), QKV2D)

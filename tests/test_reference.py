"""The plain-torch reference (the seed's math) against torch autograd in float64 (CPU)."""

import math

import pytest
import torch

from aot_sdpa import reference

F64 = torch.float64


def _inputs(B=2, H=3, T=11, M=13, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, dtype=F64, generator=g) for s in
            ((B, H, T, D), (B, H, M, D), (B, H, M, D), (B, H, T, D), (B, H, M, D), (B, H, M, D))]


@pytest.mark.parametrize("T,M,D", [(1, 1, 1), (11, 13, 8), (7, 29, 59), (16, 3, 64)])
def test_forward_stats_definitions(T, M, D):
    q, k, v = _inputs(T=T, M=M, D=D)[:3]
    o, m, l = reference.forward(q, k, v)
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(D))
    torch.testing.assert_close(m, s.amax(-1), rtol=0, atol=0)
    torch.testing.assert_close(l, torch.exp(s - m[..., None]).sum(-1), rtol=1e-14, atol=0)
    torch.testing.assert_close(o, torch.softmax(s, -1) @ v, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("T,M,D,scale", [(1, 1, 4, None), (11, 13, 8, None), (5, 31, 40, 0.37)])
def test_reference_backward_equals_autograd(T, M, D, scale):
    q, k, v, do = _inputs(T=T, M=M, D=D)[:4]
    x = [t.clone().requires_grad_() for t in (q, k, v)]
    auto = torch.autograd.grad(reference.attention(*x, scale=scale), x, do)
    _, m, l = reference.forward(q, k, v, scale=scale)
    ours = reference.backward(q, k, v, do, m, l, scale=scale)
    for a, b in zip(ours, auto):
        assert (a - b).abs().max().item() < 1e-10


@pytest.mark.parametrize("T,M,D,scale", [(1, 7, 4, None), (11, 13, 8, None), (6, 17, 40, 0.5)])
def test_reference_jvp_equals_func_jvp(T, M, D, scale):
    q, k, v, tq, tk, tv = _inputs(T=T, M=M, D=D)
    _, exact = torch.func.jvp(lambda a, b, c: reference.attention(a, b, c, scale=scale),
                              (q, k, v), (tq, tk, tv))
    _, m, l = reference.forward(q, k, v, scale=scale)
    ours = reference.jvp(q, k, v, tq, tk, tv, m, l, scale=scale)
    assert (ours - exact).abs().max().item() < 1e-10


def test_frozen_stats_jvp_is_not_the_constant_stats_derivative():
    # Guard the centering term: dropping it (m, l treated as constants) must be detectably wrong.
    q, k, v, tq, tk, tv = _inputs()
    _, exact = torch.func.jvp(reference.attention, (q, k, v), (tq, tk, tv))
    _, m, l = reference.forward(q, k, v)
    _, const_stats = torch.func.jvp(
        lambda a, b, c: reference.probs(a, b, m, l) @ c, (q, k, v), (tq, tk, tv))
    assert (const_stats - exact).abs().max().item() > 1e-3


def test_reference_fd_hvp_within_fd_error_of_double_backward():
    q, k, v, tq, tk, tv = _inputs(T=9, M=10, D=8)
    do = torch.randn_like(q)

    def grad_l(a, b, c):
        return torch.func.grad(lambda x, y, z: (reference.attention(x, y, z) * do).sum(),
                               argnums=(0, 1, 2))(a, b, c)

    _, exact = torch.func.jvp(grad_l, (q, k, v), (tq, tk, tv))
    errs = {}
    for eps in (1e-2, 1e-3):
        fd = reference.hvp_fd(q, k, v, do, tq, tk, tv, eps=eps)
        errs[eps] = max(((a - b).norm() / b.norm()).item() for a, b in zip(fd, exact))
    # central differences: truncation error O(eps^2) -> ~100x smaller for 10x smaller eps
    assert errs[1e-3] < 1e-4
    assert errs[1e-3] < errs[1e-2] / 30


def _grad_l(do, scale):
    def grad_l(q, k, v):
        return torch.func.grad(lambda a, b, c: (reference.attention(a, b, c, scale=scale) * do).sum(),
                               argnums=(0, 1, 2))(q, k, v)
    return grad_l


@pytest.mark.parametrize("T,M,D,scale", [(1, 1, 1, None), (1, 7, 4, None), (11, 13, 8, None),
                                         (6, 17, 40, 0.5)])
def test_reference_sdpa_hvp_equals_forward_over_reverse(T, M, D, scale):
    q, k, v, tq, tk, tv = _inputs(T=T, M=M, D=D)
    do = torch.randn_like(q)
    _, exact = torch.func.jvp(_grad_l(do, scale), (q, k, v), (tq, tk, tv))
    ours = reference.sdpa_hvp(q, k, v, do, tq, tk, tv, scale=scale)
    for name, a, b in zip(("hq", "hk", "hv"), ours, exact):
        assert (a - b).abs().max().item() < 1e-10, name


@pytest.mark.parametrize("T,M,D", [(1, 7, 4), (11, 13, 8)])
def test_reference_bwd_jvp_carries_the_cotangent_tangent(T, M, D):
    # the tangent of (dq, dk, dv) when do itself moves: d/dt VJP(x + t tx, do + t tdo)
    q, k, v, tq, tk, tv = _inputs(T=T, M=M, D=D)
    do, tdo = torch.randn_like(q), torch.randn_like(q)

    def vjp(a, b, c, g):
        return torch.func.vjp(reference.attention, a, b, c)[1](g)

    _, exact = torch.func.jvp(vjp, (q, k, v, do), (tq, tk, tv, tdo))
    _, m, l = reference.forward(q, k, v)
    ours = reference.bwd_jvp(q, k, v, do, m, l, tq, tk, tv, tdo)
    for name, a, b in zip(("hq", "hk", "hv"), ours, exact):
        assert (a - b).abs().max().item() < 1e-10, name
    # without tdo it is the HVP; the difference is exactly the VJP of tdo (linearity in do)
    no_tdo = reference.bwd_jvp(q, k, v, do, m, l, tq, tk, tv)
    for a, b, c in zip(ours, no_tdo, reference.backward(q, k, v, tdo, m, l)):
        assert (a - b - c).abs().max().item() < 1e-10


@pytest.mark.parametrize("H,Hkv", [(4, 2), (6, 1), (3, 3)])
def test_reference_grouped_query_equals_torch_enable_gqa(H, Hkv):
    """The reference's grouped-query formulas (fp64, CPU) vs torch's own enable_gqa SDPA
    (math backend) through autograd and torch.func: forward, backward, JVP, backward's tangent."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = torch.Generator().manual_seed(H * 10 + Hkv)
    B, T, M, D = 2, 5, 7, 8
    rn = lambda h, n: torch.randn(B, h, n, D, dtype=torch.float64, generator=g)
    q, k, v, do, tq, tk, tv = rn(H, T), rn(Hkv, M), rn(Hkv, M), rn(H, T), rn(H, T), rn(Hkv, M), rn(Hkv, M)
    f = lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    _, m, l = reference.forward(q, k, v)
    with sdpa_kernel(SDPBackend.MATH):
        o, vjp = torch.func.vjp(f, q, k, v)
        jv = torch.func.jvp(f, (q, k, v), (tq, tk, tv))[1]
        hv = torch.func.jvp(lambda *x: torch.func.vjp(f, *x)[1](do), (q, k, v), (tq, tk, tv))[1]
    pairs = [(reference.attention(q, k, v), o), (reference.jvp(q, k, v, tq, tk, tv, m, l), jv),
             *zip(reference.backward(q, k, v, do, m, l), vjp(do)),
             *zip(reference.bwd_jvp(q, k, v, do, m, l, tq, tk, tv), hv)]
    for ours, theirs in pairs:
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max().item() < 1e-12


def _masks(B, H, T, M, g):
    """Boolean (True = take part) and additive masks of the shapes models pass: key padding
    (B, 1, 1, M), one (T, M) pattern for all, and a full (B, H, T, M) additive bias."""
    pad = torch.ones(B, 1, 1, M, dtype=torch.bool)
    pad[0, ..., M - 2:] = False
    pattern = torch.rand(1, 1, T, M, generator=g) > 0.3
    pattern[..., 0] = True  # every row keeps a key (torch's math gives NaN rows otherwise)
    bias = torch.randn(B, H, T, M, dtype=F64, generator=g)
    bias[1, 0, :, 1] = float("-inf")
    return {"key padding": pad, "bool pattern": pattern, "additive": bias}


@pytest.mark.parametrize("name", ["key padding", "bool pattern", "additive"])
def test_reference_masks_equal_torch_sdpa(name):
    """The reference's masked formulas (the ground truth for masked kernels) vs torch's math
    SDPA with the same attn_mask: forward, backward (frozen stats), JVP, backward's tangent."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = torch.Generator().manual_seed(7)
    B, H, T, M, D = 2, 3, 5, 7, 8
    mask = _masks(B, H, T, M, g)[name]
    q, k, v, do, tq, tk, tv = (torch.randn(B, H, n, D, dtype=F64, generator=g)
                               for n in (T, M, M, T, T, M, M))
    f = lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v,
                                                                          attn_mask=mask)
    _, m, l = reference.forward(q, k, v, mask=mask)
    with sdpa_kernel(SDPBackend.MATH):
        o, vjp = torch.func.vjp(f, q, k, v)
        jv = torch.func.jvp(f, (q, k, v), (tq, tk, tv))[1]
        hv = torch.func.jvp(lambda *x: torch.func.vjp(f, *x)[1](do), (q, k, v), (tq, tk, tv))[1]
    pairs = [(reference.attention(q, k, v, mask=mask), o),
             (reference.jvp(q, k, v, tq, tk, tv, m, l, mask=mask), jv),
             *zip(reference.backward(q, k, v, do, m, l, mask=mask), vjp(do)),
             *zip(reference.bwd_jvp(q, k, v, do, m, l, tq, tk, tv, mask=mask), hv)]
    for ours, theirs in pairs:
        assert (ours - theirs).abs().max().item() < 1e-12


def test_reference_mask_with_causal_and_rows_that_see_no_key():
    """A mask combines with causal (torch takes one or the other: its mask is built here);
    a row whose every key is masked gets o = 0, m = -inf, l = 0 and zero gradients (torch's
    SDPA gives 0 there too in recent versions, NaN in older ones: compared on the others)."""
    g = torch.Generator().manual_seed(3)
    B, H, T, M, D = 1, 2, 6, 6, 4
    q, k, v, do = (torch.randn(B, H, n, D, dtype=F64, generator=g) for n in (T, M, M, T))
    mask = torch.ones(B, 1, T, M, dtype=torch.bool)
    mask[..., 0] = False  # key 0 excluded: with causal, row 0 sees no key
    both = mask & reference.visible(T, M, True)
    o, m, l = reference.forward(q, k, v, causal=True, mask=mask)
    assert torch.equal(o[..., 0, :], torch.zeros_like(o[..., 0, :]))
    assert torch.isinf(m[..., 0]).all() and (l[..., 0] == 0).all()
    torch_o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=both)
    assert (o[..., 1:, :] - torch_o[..., 1:, :]).abs().max().item() < 1e-12
    dq, dk, dv = reference.backward(q, k, v, do, m, l, causal=True, mask=mask)
    assert torch.equal(dq[..., 0, :], torch.zeros_like(dq[..., 0, :]))
    xs = [t.clone().requires_grad_() for t in (q, k, v)]
    reference.attention(*xs, causal=True, mask=mask).backward(do)
    for a, b in zip((dq, dk, dv), xs):
        assert (a - b.grad).abs().max().item() < 1e-12

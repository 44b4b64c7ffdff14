"""The exact second-order kernels (sdpa_bwd_jvp, sdpa_hvp) and the FD HVP vs fp64 references
(skipped without CUDA)."""

import pytest
import torch

import aot_sdpa
from aot_sdpa import reference

from _helpers import assert_within, attention_inputs, qkv, randn, rel_err

pytestmark = pytest.mark.gpu

# (dtype, factor, atol): ours <= factor x torch's same-dtype forward-over-reverse error + atol.
# 16-bit factor 3: dS and dS. are rounded to the input dtype before the tensor-core products
# (as the backward's dq, tests/test_backward_gpu.py); fp32 runs on tensor cores in 3xTF32.
DTYPES = [
    (torch.float16, 3.0, 2e-3),
    (torch.bfloat16, 3.0, 2e-2),
    (torch.float32, 2.0, 2e-5),
]
HEAD_DIMS = [8, 16, 40, 64]
SIZES = [(1, 1), (1, 7), (113, 203), (1023, 1024), (2048, 2048)]


def _vjp(q, k, v, do):
    return torch.func.vjp(reference.attention, q, k, v)[1](do)


def _fwd_over_rev(q, k, v, do, tq, tk, tv, tdo):
    """torch's own forward-over-reverse of the math attention: d/dt VJP(x + t tx, do + t tdo)."""
    return torch.func.jvp(_vjp, (q, k, v, do), (tq, tk, tv, tdo))[1]


def _inputs(T, M, D, dtype, seed):
    q, k, v, tq, tk, tv = attention_inputs(T, M, D, dtype, seed)
    do, tdo = randn(q.shape, dtype, seed=seed + 20), randn(q.shape, dtype, seed=seed + 21)
    return q, k, v, do, tq, tk, tv, tdo


@pytest.mark.parametrize("with_tdo", [False, True], ids=["hvp", "tdo"])
@pytest.mark.parametrize("dtype,factor,atol", DTYPES, ids=lambda x: str(x))
@pytest.mark.parametrize("D", HEAD_DIMS)
@pytest.mark.parametrize("T,M", SIZES)
def test_bwd_jvp_matches_forward_over_reverse_fp64(with_tdo, dtype, factor, atol, D, T, M):
    q, k, v, do, tq, tk, tv, tdo = _inputs(T, M, D, dtype, seed=T + 3 * M + D)
    tdo_or_zero = tdo if with_tdo else torch.zeros_like(do)
    ref = _fwd_over_rev(*(x.double() for x in (q, k, v, do, tq, tk, tv, tdo_or_zero)))
    same = _fwd_over_rev(q, k, v, do, tq, tk, tv, tdo_or_zero)
    _, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    ours = aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv, tdo if with_tdo else None)
    for name, a, r, s in zip(("hq", "hk", "hv"), ours, ref, same):
        assert_within(name, a, r, s, factor, atol * (1 + r.abs().max().item()))


@pytest.mark.parametrize("dtype,factor,atol", DTYPES, ids=lambda x: str(x))
def test_sdpa_hvp_matches_jvp_of_grad_fp64(dtype, factor, atol):
    q, k, v, do, tq, tk, tv, _ = _inputs(257, 300, 64, dtype, seed=9)

    def hvp(q, k, v, do, tq, tk, tv):
        g = torch.func.grad(lambda a, b, c: (reference.attention(a, b, c) * do).sum(),
                            argnums=(0, 1, 2))
        return torch.func.jvp(g, (q, k, v), (tq, tk, tv))[1]

    ref = hvp(*(x.double() for x in (q, k, v, do, tq, tk, tv)))
    same = hvp(q, k, v, do, tq, tk, tv)
    ours = aot_sdpa.sdpa_hvp(q, k, v, do, tq, tk, tv, scale=None)
    for name, a, r, s in zip(("hq", "hk", "hv"), ours, ref, same):
        assert_within(name, a, r, s, factor, atol * (1 + r.abs().max().item()))


def test_sdpa_hvp_custom_scale_and_transposed_views():
    # a (B, T, H, D) buffer seen as (B, H, T, D): the same bits as its contiguous copy
    B, H, T, M, D = 2, 3, 130, 77, 40
    raw = [randn((B, n, H, D), torch.float16, seed=i) for i, n in enumerate((T, M, M, T, T, M, M))]
    views = [x.transpose(1, 2) for x in raw]
    dense = [x.contiguous() for x in views]
    a = aot_sdpa.sdpa_hvp(*views, scale=0.3)
    b = aot_sdpa.sdpa_hvp(*dense, scale=0.3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    ref = reference.sdpa_hvp(*(x.double() for x in dense), scale=0.3)
    assert all(rel_err(x, r) < 2e-2 for x, r in zip(a, ref))


def test_bwd_jvp_is_bitwise_deterministic():
    q, k, v, do, tq, tk, tv, tdo = _inputs(1000, 1000, 64, torch.bfloat16, seed=1)
    _, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    first = aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv, tdo)
    for _ in range(20):
        again = aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv, tdo)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_exact_hvp_beats_fd_in_fp32():
    q, k, v, do, tq, tk, tv, _ = _inputs(256, 256, 64, torch.float32, seed=4)
    ref = reference.sdpa_hvp(*(x.double() for x in (q, k, v, do, tq, tk, tv)))
    exact = aot_sdpa.sdpa_hvp(q, k, v, do, tq, tk, tv)
    fd = aot_sdpa.hvp_fd_vjp(q, k, v, do, tq, tk, tv, eps=1e-2)
    for e, f, r in zip(exact, fd, ref):
        assert rel_err(e, r) < rel_err(f, r) / 10


def _fd_error_bound(x, t, exact, eps, grads, grads64):
    """docs/phase9_hvp.md's error model with its constants measured at this point:
    truncation (the fp64 central difference at the same eps, where round-off is negligible)
    + round-off (the fp32 gradients' measured absolute error / eps, and the rounding of
    x +- eps t to fp32: u |x| / eps through H ~ |H t| / |t|), relative to |H t|."""
    u = 2.0 ** -24
    trunc = max(rel_err(a, b) for a, b in zip(
        reference.hvp_fd(*(y.double() for y in x), *(y.double() for y in t), eps=eps), exact))
    out = []
    for h, g, g64 in zip(exact, grads, grads64):
        e_g = (g.double() - g64).norm().item()
        step = u * max(y.norm().item() for y in x[:3]) / max(y.norm().item() for y in t)
        out.append(trunc + (e_g / eps + step * h.norm().item() / eps) / h.norm().item())
    return out


@pytest.mark.parametrize("eps", [None, 1e-2], ids=["default-eps", "eps=1e-2"])
def test_hvp_fd_fp32_within_its_error_model(eps):
    q, k, v, tq, tk, tv = (*qkv(1, 2, 64, 96, 32, torch.float32, seed=3),
                           *qkv(1, 2, 64, 96, 32, torch.float32, seed=13))
    do = randn(q.shape, torch.float32, seed=4)
    x64 = [t.double() for t in (q, k, v, do)]
    exact = reference.sdpa_hvp(*x64, *(t.double() for t in (tq, tk, tv)))
    kw = {} if eps is None else {"eps": eps}
    fd = aot_sdpa.hvp_fd_vjp(q, k, v, do, tq, tk, tv, **kw)
    _, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    grads = aot_sdpa.sdpa_bwd(q, k, v, do, m, l)
    _, m64, l64 = reference.forward(*x64[:3])
    grads64 = reference.backward(*x64, m64, l64)
    bounds = _fd_error_bound((q, k, v, do), (tq, tk, tv), exact, eps or 1e-3, grads, grads64)
    for name, h, e, bound in zip(("hq", "hk", "hv"), fd, exact, bounds):
        # factor 2: the two gradients' errors add in the worst case, the model counts one
        assert rel_err(h, e) <= 2 * bound, f"{name}: {rel_err(h, e):.2e} > 2 x {bound:.2e}"
        assert bound < 5e-3  # the model's own prediction stays far below the old 5% bar

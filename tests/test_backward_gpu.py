"""Backward kernels vs fp64 autograd on the GPU (skipped without CUDA)."""

import pytest
import torch

import aot_sdpa
from aot_sdpa import reference

from _helpers import assert_within, max_err, qkv, randn

pytestmark = pytest.mark.gpu

# (dtype, factor, factor for dq, atol). dq in fp16/bf16 may use 3x: dQ = scale * dS K sums
# M products of dS (rounded to the input dtype before the tensor-core product, as FlashAttention
# does) with K, where PyTorch's math path keeps dS in its own rounding; the extra rounding of dS
# grows with M and is the documented allowance of the issue.
DTYPES = [
    (torch.float16, 2.0, 3.0, 1e-4),
    (torch.bfloat16, 2.0, 3.0, 1e-3),
    # fp32 atol 1e-5: z (from dO.O or P V) and dP (dO.V) are reduced in different orders, so
    # where the exact dS is 0 (M = 1) an fp32 residue ~ D * u * |dO| |V| survives in dq, dk.
    (torch.float32, 2.0, 2.0, 1e-5),
]
HEAD_DIMS = [8, 16, 40, 59, 64]
SIZES = [(1, 1), (3, 799), (113, 203), (1023, 1024), (2048, 2048)]


def _grads_autograd(q, k, v, do):
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    o = reference.attention(q, k, v)
    return torch.autograd.grad(o, (q, k, v), do)


@pytest.mark.parametrize("dtype,factor,factor_dq,atol", DTYPES, ids=lambda x: str(x))
@pytest.mark.parametrize("D", HEAD_DIMS)
@pytest.mark.parametrize("T,M", SIZES)
def test_backward_matches_fp64_autograd(dtype, factor, factor_dq, atol, D, T, M):
    B, H = (1, 2) if T * M > 1_000_000 else (2, 3)
    q, k, v = qkv(B, H, T, M, D, dtype, seed=T * 7 + M + D)
    do = randn((B, H, T, D), dtype, seed=99)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    ref = _grads_autograd(q.double(), k.double(), v.double(), do.double())
    same = _grads_autograd(q, k, v, do)  # PyTorch, same dtype
    results = {
        "sdpa_bwd(o=o)": aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o),
        "sdpa_bwd": aot_sdpa.sdpa_bwd(q, k, v, do, m, l),
        "single": (aot_sdpa.sdpa_bwd_dq(q, k, v, do, m, l), aot_sdpa.sdpa_bwd_dk(q, k, v, do, m, l),
                   aot_sdpa.sdpa_bwd_dv(q, k, v, do, m, l)),
    }
    for how, grads in results.items():
        for name, g, r, s, f in zip(("dq", "dk", "dv"), grads, ref, same,
                                    (factor_dq, factor, factor)):
            assert g.dtype == dtype and g.shape == r.shape
            assert_within(f"{how} {name}", g, r, s, f, atol)


def test_grads_keep_primal_layout():
    q_bthd = randn((2, 50, 3, 64), torch.float16, seed=3)
    k_bthd = randn((2, 70, 3, 64), torch.float16, seed=4)
    v_bthd = randn((2, 70, 3, 64), torch.float16, seed=5)
    q, k, v = (x.transpose(1, 2) for x in (q_bthd, k_bthd, v_bthd))
    do = randn((2, 3, 50, 64), torch.float16, seed=6)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    dq, dk, dv = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)
    assert dq.stride() == q.stride() and dk.stride() == k.stride() and dv.stride() == v.stride()
    dqc, dkc, dvc = aot_sdpa.sdpa_bwd(q.contiguous(), k.contiguous(), v.contiguous(), do, m, l,
                                      o=o.contiguous())
    assert max_err(dq, dqc) == 0 and max_err(dk, dkc) == 0 and max_err(dv, dvc) == 0


def test_backward_is_bitwise_deterministic():
    q, k, v = qkv(2, 4, 1000, 1000, 64, torch.float16, seed=11)
    do = randn((2, 4, 1000, 64), torch.float16, seed=12)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    a = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)
    b = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                    reason="the one-kernel float32 backward is compiled for sm_90")
@pytest.mark.parametrize("Hkv,causal", [(4, False), (2, True)])
def test_float32_backward_is_one_kernel_unless_deterministic(Hkv, causal):
    """float32 on sm_90 runs bwd_fused (dQ by atomic adds: not bitwise repeatable) in the head
    dims of buckets 64 and 128, the two kernels elsewhere and under
    torch.use_deterministic_algorithms(True), which are bitwise repeatable; both within the
    tolerance rule at a length of many key blocks (each dQ row gets 8 atomic adds)."""
    from aot_sdpa import _ops
    from aot_sdpa._checks import dtype_code

    f32, dev = dtype_code(torch.float32), torch.cuda.current_device()
    assert all(_ops.fused_bwd(f32, D, dev) for D in (33, 40, 64, 72, 128))
    assert not any(_ops.fused_bwd(f32, D, dev) for D in (8, 32, 129, 256))
    assert not _ops.fused_bwd(dtype_code(torch.float16), 64, dev)
    B, H, T, D = 2, 4, 1000, 64
    q = randn((B, H, T, D), torch.float32, seed=13)
    k, v = randn((B, Hkv, T, D), torch.float32, seed=14), randn((B, Hkv, T, D), torch.float32, seed=15)
    do = randn((B, H, T, D), torch.float32, seed=16)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v, causal=causal)

    def autograd(*xs):
        xs = [x.detach().requires_grad_() for x in xs]
        out = reference.attention(*xs[:3], causal=causal)
        return torch.autograd.grad(out, xs[:3], xs[3])

    ref = autograd(*(x.double() for x in (q, k, v, do)))
    same = autograd(q, k, v, do)
    fused = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o, causal=causal)
    torch.use_deterministic_algorithms(True)
    try:
        assert not _ops.fused_bwd(f32, D, dev)
        first = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o, causal=causal)
        again = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o, causal=causal)
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    for how, grads in (("bwd_fused", fused), ("deterministic", first)):
        for name, g, r, s_ in zip(("dq", "dk", "dv"), grads, ref, same):
            assert_within(f"{how} {name}", g, r, s_, 2.0, 1e-5)


def test_row_strided_stats_take_the_general_flavour():
    """The fast flavours read the stats with a row stride of 1 compiled in ([abi] unit_strides);
    m and l with row stride 2 (views into wider buffers) must run the general flavour and give
    the contiguous stats' gradients, not read every other row."""
    B, H, T, D = 2, 3, 256, 64  # aligned, D fills its bucket: the fast flavour's case
    q, k, v = qkv(B, H, T, T, D, torch.float16, seed=21)
    do = randn((B, H, T, D), torch.float16, seed=22)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    wide = torch.full((2, B, H, 2 * T), float("nan"), device=m.device)
    ms, ls = wide[0, ..., ::2], wide[1, ..., ::2]
    ms.copy_(m)
    ls.copy_(l)
    assert ms.stride(-1) == 2 and torch.isnan(wide[..., 1::2]).all()
    want = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)
    got = aot_sdpa.sdpa_bwd(q, k, v, do, ms, ls, o=o)
    # the JVP reads the stats the same way
    t = [randn((B, H, T, D), torch.float16, seed=23 + i) for i in range(3)]
    want = (*want, aot_sdpa.sdpa_jvp(q, k, v, *t, m, l))
    got = (*got, aot_sdpa.sdpa_jvp(q, k, v, *t, ms, ls))
    for g, w in zip(got, want):
        assert torch.isfinite(g).all() and max_err(g, w) <= 1e-3 * w.abs().max().item()

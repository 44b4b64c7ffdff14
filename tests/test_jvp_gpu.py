"""JVP kernels and the autograd drop-in vs fp64 references (skipped without CUDA); the HVPs are in
test_hvp_gpu.py."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import aot_sdpa
from aot_sdpa import _ops, reference
from aot_sdpa._checks import dtype_code

from _helpers import assert_within, attention_inputs, max_err, qkv, randn

pytestmark = pytest.mark.gpu

# (dtype, factor, atol): ours <= factor x torch.func.jvp's same-dtype error + atol
DTYPES = [
    (torch.float16, 2.0, 2e-4),
    (torch.bfloat16, 2.0, 2e-3),
    (torch.float32, 2.0, 1e-6),
]
HEAD_DIMS = [8, 16, 40, 64]
SIZES = [(1, 7), (113, 203), (1024, 1023), (2048, 2048)]


def _jvp_ref(q, k, v, tq, tk, tv):
    return torch.func.jvp(reference.attention, (q, k, v), (tq, tk, tv))


@pytest.mark.parametrize("dtype,factor,atol", DTYPES, ids=lambda x: str(x))
@pytest.mark.parametrize("D", HEAD_DIMS)
@pytest.mark.parametrize("T,M", SIZES)
def test_jvp_kernels_match_func_jvp_fp64(dtype, factor, atol, D, T, M):
    q, k, v, tq, tk, tv = attention_inputs(T, M, D, dtype, seed=T + 3 * M + D)
    ro, rt = _jvp_ref(*(x.double() for x in (q, k, v, tq, tk, tv)))
    so, st = _jvp_ref(q, k, v, tq, tk, tv)  # PyTorch, same dtype
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    t = aot_sdpa.sdpa_jvp(q, k, v, tq, tk, tv, m, l)
    assert_within("sdpa_jvp", t, rt, st, factor, atol)
    fo, fm, fl, ft = aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv)
    assert_within("fused o", fo, ro, so, factor, atol)
    assert_within("fused tangent", ft, rt, st, factor, atol)
    assert torch.allclose(fm, m, rtol=1e-5, atol=1e-5) and torch.allclose(fl, l, rtol=1e-4)


DROPIN = [(torch.float16, 2.0, 2e-4), (torch.float32, 2.0, 1e-6)]


@pytest.mark.parametrize("dtype,factor,atol", DROPIN, ids=lambda x: str(x))
def test_dropin_forward_and_reverse_modes(dtype, factor, atol):
    q, k, v, tq, tk, tv = attention_inputs(113, 203, 40, dtype, seed=5)
    do = randn(q.shape, dtype, seed=77)
    r64 = [x.double() for x in (q, k, v, tq, tk, tv)]
    ro, rt = _jvp_ref(*r64)
    so, st = _jvp_ref(q, k, v, tq, tk, tv)
    f = aot_sdpa.scaled_dot_product_attention
    # torch.func.jvp
    o, t = torch.func.jvp(f, (q, k, v), (tq, tk, tv))
    assert_within("func.jvp o", o, ro, so, factor, atol)
    assert_within("func.jvp tangent", t, rt, st, factor, atol)
    # torch.autograd.forward_ad
    with fwAD.dual_level():
        out = f(fwAD.make_dual(q, tq), fwAD.make_dual(k, tk), fwAD.make_dual(v, tv))
        t2 = fwAD.unpack_dual(out).tangent
    assert_within("forward_ad tangent", t2, rt, st, factor, atol)
    # .backward() and torch.autograd.grad
    ref_g = torch.autograd.grad(reference.attention(*(x.requires_grad_() for x in r64[:3])),
                                r64[:3], do.double())
    qq, kk, vv = (x.detach().clone().requires_grad_() for x in (q, k, v))
    same_out = reference.attention(qq, kk, vv)
    same_g = torch.autograd.grad(same_out, (qq, kk, vv), do)
    qq, kk, vv = (x.detach().clone().requires_grad_() for x in (q, k, v))
    f(qq, kk, vv).backward(do)
    for name, g, r, s in zip("qkv", (qq.grad, kk.grad, vv.grad), ref_g, same_g):
        assert_within(f".backward d{name}", g, r, s, 3.0 if name == "q" else factor, atol)
    # the same dq through each path: bitwise, except float32 on sm_90, whose dq the one-kernel
    # backward adds up atomically (its last bits follow the order the key blocks' programs
    # reach a row: docs/phase9_backward.md, Determinism), so there within 8 ulps of its size
    same = torch.equal
    if dtype == torch.float32 and _ops.fused_bwd(dtype_code(dtype), q.shape[-1], q.device.index):
        def same(a, b):
            return max_err(a, b) <= 8 * torch.finfo(dtype).eps * b.abs().max().item()
    g2 = torch.autograd.grad(f(q.requires_grad_(), k, v), q, do)[0]
    assert same(g2, qq.grad)
    # torch.func.grad of a scalar loss
    gq = torch.func.grad(lambda x: (f(x, k, v).float() * do.float()).sum())(q.detach())
    assert same(gq, qq.grad)


def test_dropin_rejects_unsupported_arguments():
    q, k, v = qkv(1, 2, 8, 8, 16, torch.float16)
    f = aot_sdpa.scaled_dot_product_attention
    with pytest.raises(ValueError, match="attn_mask and is_causal=True cannot be combined"):
        f(q, k, v, attn_mask=torch.ones(8, 8, device="cuda", dtype=torch.bool), is_causal=True)
    with pytest.raises(NotImplementedError, match="dropout_p"):
        f(q, k, v, dropout_p=0.1)
    with pytest.raises(ValueError, match="enable_gqa"):
        f(q, k[:, :1], v[:, :1])  # fewer key/value heads need enable_gqa=True, as in torch
    with pytest.raises(ValueError, match="D=320"):
        f(*qkv(1, 2, 8, 8, 320, torch.float16))

"""Forward kernel vs the fp64 reference on the GPU (skipped without CUDA)."""

import subprocess
import sys

import pytest
import torch

import aot_sdpa
from aot_sdpa import reference

from _helpers import assert_within, poison_allocator, qkv, rel_err

pytestmark = pytest.mark.gpu

# (dtype, factor, atol): ours <= factor x PyTorch's same-dtype math error + atol
DTYPES = [
    (torch.float16, 2.0, 1e-4),
    (torch.bfloat16, 2.0, 1e-3),
    (torch.float32, 2.0, 1e-6),
]
HEAD_DIMS = [1, 8, 16, 40, 59, 64]
SIZES = [(1, 1), (113, 203), (1023, 1024), (2048, 2048)]


def _bh(T, M):
    return (1, 2) if T * M > 1_000_000 else (2, 3)


@pytest.mark.parametrize("dtype,factor,atol", DTYPES, ids=lambda x: str(x))
@pytest.mark.parametrize("D", HEAD_DIMS)
@pytest.mark.parametrize("T,M", SIZES)
def test_forward_matches_fp64(dtype, factor, atol, D, T, M):
    B, H = _bh(T, M)
    q, k, v = qkv(B, H, T, M, D, dtype, seed=T + M + D)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    assert o.dtype == dtype and m.dtype == torch.float32 and l.dtype == torch.float32
    assert o.shape == q.shape and m.shape == (B, H, T) and l.shape == (B, H, T)
    ro, rm, rl = reference.forward(q.double(), k.double(), v.double())
    to, tm, tl = reference.forward(q, k, v)  # PyTorch, same dtype
    assert_within("o", o, ro, to, factor, atol)
    # m's size is that of the scores |S| (~10 at D=1, scale 1): fp32's split-precision
    # products (tf32x3 on sm_80; bf16x6 or fp16x3 on sm_90) drop their smallest terms, a relative error
    # ~2**-22 per product where IEEE has 2**-24, so m's atol is relative to max |m| (measured
    # in tf32x3 at D=1, T*M >= 1e5, H200: 1.9e-6..2.9e-6 vs torch's 2.4e-7..4.7e-7, for |m| up
    # to ~10).
    assert_within("m", m, rm, tm, factor, atol * max(1.0, rm.abs().max().item()))
    # l is a sum of M terms <= 1, so its error scales with l itself; the online softmax also
    # rounds once more per key block when it rescales l. Hence atol relative to max l.
    assert_within("l", l, rl, tl, factor, atol * rl.abs().max().item())
    if dtype == torch.float32:  # fp32 must be fp32-accurate, not TF32
        assert rel_err(o, ro) < 1e-5 and rel_err(m, rm) < 1e-5 and rel_err(l, rl) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("D", [40, 64])
def test_transposed_view_matches_contiguous(dtype, D):
    B, T, H, M = 2, 130, 3, 77
    g = torch.Generator(device="cuda").manual_seed(1)
    q_bthd = torch.randn(B, T, H, D, device="cuda", dtype=dtype, generator=g)
    k_bthd = torch.randn(B, M, H, D, device="cuda", dtype=dtype, generator=g)
    v_bthd = torch.randn(B, M, H, D, device="cuda", dtype=dtype, generator=g)
    q, k, v = (x.transpose(1, 2) for x in (q_bthd, k_bthd, v_bthd))  # (B,H,T,D) views, no copy
    assert not q.is_contiguous()
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    oc, mc, lc = aot_sdpa.triton_sdpa_fused(q.contiguous(), k.contiguous(), v.contiguous())
    torch.testing.assert_close(o, oc, rtol=0, atol=0)
    torch.testing.assert_close(m, mc, rtol=0, atol=0)
    torch.testing.assert_close(l, lc, rtol=0, atol=0)
    assert o.stride() == q.stride()  # output keeps the input's layout


def test_custom_scale_and_poisoned_output():
    q, k, v = qkv(2, 2, 65, 130, 32, torch.float16, seed=5)
    poison_allocator()  # o, m, l land on NaN-filled memory: every element must be written
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v, scale=0.3)
    assert torch.isfinite(o).all() and torch.isfinite(m).all() and torch.isfinite(l).all()
    ro, rm, rl = reference.forward(q.double(), k.double(), v.double(), scale=0.3)
    assert rel_err(o, ro) < 2e-3 and rel_err(m, rm) < 1e-3 and rel_err(l, rl) < 1e-3


def test_empty_batch_returns_empty_without_launch():
    q, k, v = qkv(0, 2, 5, 7, 16, torch.float16)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    assert o.shape == (0, 2, 5, 16) and m.shape == (0, 2, 5)
    q, k, v = qkv(1, 2, 0, 7, 16, torch.float16)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    assert o.shape == (1, 2, 0, 16)


def test_no_matching_variant_raises_named_error():
    # bypass the Python contract (D <= 256; float32 D <= 128) to reach the dispatcher's own
    # failure path: no bucket holds D = 300, and float32 has no 256 bucket
    from aot_sdpa import _C
    from aot_sdpa._native import OPS

    with pytest.raises(aot_sdpa.NoKernelError, match="float16 with head dim 300"):
        _C.launch(OPS["fwd"].index, 0, 0, 0, [0] * 7, [0] * 18, (1, 1, 1, 1, 300, 0, 1, 0, 0, 1), 1.0)
    with pytest.raises(aot_sdpa.NoKernelError, match="float32 with head dim 200"):
        _C.launch(OPS["fwd"].index, 2, 0, 0, [0] * 7, [0] * 18, (1, 1, 1, 1, 200, 0, 1, 0, 0, 1), 1.0)
    # the masked flavour's own failure path (HAS_BIAS set): named as a masked kernel
    with pytest.raises(aot_sdpa.NoKernelError, match="'fwd' kernel with a mask for float16 with "
                                                     "head dim 300"):
        _C.launch(OPS["fwd"].index, 0, 0, 0, [0] * 7, [0] * 18, (1, 1, 1, 1, 300, 0, 1, 0, 1, 1), 1.0)


def test_python_m_aot_sdpa_passes():
    r = subprocess.run([sys.executable, "-m", "aot_sdpa"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "self-check passed" in r.stdout

"""Grouped-query and multi-query attention (k, v with Hkv < H heads) on the GPU: every op vs
the fp64 reference (which repeats k, v per query head), the project's tolerance rule; dK and
dV deterministic; the drop-in's enable_gqa=True vs torch's."""

from __future__ import annotations

import pytest
import torch

import aot_sdpa
from aot_sdpa import reference

from _helpers import RULE_DTYPES, assert_within, operands

pytestmark = pytest.mark.gpu

def _ops(x, m, l, impl):
    q, k, v, do, tq, tk, tv = x
    if impl == "aot":
        return {"fwd": (aot_sdpa.triton_sdpa_fused(q, k, v)[0],),
                "bwd": aot_sdpa.sdpa_bwd(q, k, v, do, m, l),
                "jvp": (aot_sdpa.sdpa_jvp(q, k, v, tq, tk, tv, m, l),),
                "fwd_jvp": (aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv)[3],),
                "bwd_jvp": aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv)}
    return {"fwd": (reference.forward(q, k, v)[0],),
            "bwd": reference.backward(q, k, v, do, m, l),
            "jvp": (reference.jvp(q, k, v, tq, tk, tv, m, l),),
            "fwd_jvp": (reference.jvp(q, k, v, tq, tk, tv, *reference.forward(q, k, v)[1:]),),
            "bwd_jvp": reference.bwd_jvp(q, k, v, do, m, l, tq, tk, tv)}


@pytest.mark.parametrize("dtype,factor,atol", RULE_DTYPES, ids=lambda x: str(x))
@pytest.mark.parametrize("Hkv", [1, 2])
@pytest.mark.parametrize("T,M,D", [(1, 3, 8), (113, 203, 40), (1023, 1024, 64)])
def test_every_op_grouped_query_matches_fp64(dtype, factor, atol, Hkv, T, M, D):
    x = operands(1 if T * M > 1_000_000 else 2, 8, Hkv, T, M, D, dtype, seed=T + Hkv)
    x64 = [t.double() for t in x]
    _, m64, l64 = reference.forward(*x64[:3])
    ref = _ops(x64, m64, l64, "ref")
    ours = _ops(x, m64.float(), l64.float(), "aot")
    same = _ops(x, m64.float(), l64.float(), "torch")
    for op in ref:
        f = 3.0 if op == "bwd_jvp" and dtype != torch.float32 else factor
        for i, (a, r, s) in enumerate(zip(ours[op], ref[op], same[op])):
            assert a.shape == r.shape
            assert_within(f"{op}[{i}]", a, r, s, f, atol * (1 + r.abs().max().item()))


def test_grouped_query_backward_is_bitwise_deterministic():
    q, k, v, do, *_ = operands(2, 8, 2, 1024, 1024, 64, torch.bfloat16, seed=7)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    first = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)
    for _ in range(3):
        again = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dropin_enable_gqa_matches_torch(dtype):
    q, k, v, do, *_ = operands(2, 8, 2, 197, 197, 64, dtype, seed=3)
    xs = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = [t.clone().requires_grad_() for t in (q, k, v)]
    o = aot_sdpa.scaled_dot_product_attention(*xs, enable_gqa=True)
    o.backward(do)
    r = torch.nn.functional.scaled_dot_product_attention(*ref, enable_gqa=True)
    r.backward(do)
    scale = r.abs().max().item()
    assert (o - r).abs().max().item() < 1e-2 * scale
    for a, b in zip(xs, ref):
        assert (a.grad - b.grad).abs().max().item() < 2e-2 * (1e-3 + b.grad.abs().max().item())

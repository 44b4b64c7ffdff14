"""Derivative compositions through the drop-in: each returns the fp64 reference's value or
raises NotImplementedError naming what is unsupported, never a wrong number (CPU).

The kernels are replaced by the float64 reference formulas behind the same interface; like the
real kernels, the stand-ins read raw storage (they detach and unwrap their inputs), so a rule
that hands them a tensor still carrying a transform loses that transform's derivative here
exactly as on the GPU."""

from __future__ import annotations

import pytest
import torch

import aot_sdpa
from aot_sdpa import _autograd, _checks, reference
from aot_sdpa._checks import check_attention, check_like

from _compositions import COMPOSITIONS, SMALL, flat, inputs
from _helpers import max_err

F64 = torch.float64


def _raw(t):
    if t is None:
        return None
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t.detach()


@pytest.fixture
def reference_kernels(monkeypatch):
    monkeypatch.setitem(_checks.DTYPE_CODE, torch.float64, 2)  # the stand-ins compute in fp64
    # the kernels' own contract checks (all but the device rule) run on what they are given
    def fwd(q, k, v, *, scale=None):
        q, k, v = _raw(q), _raw(k), _raw(v)
        check_attention(q, k, v, scale)
        return reference.forward(q, k, v, scale)

    def bwd(q, k, v, do, m, l, *, o=None, scale=None):
        q, k, v, do, m, l = (_raw(t) for t in (q, k, v, do, m, l))
        check_attention(q, k, v, scale)
        check_like("do", do, q, "q")
        return reference.backward(q, k, v, do, m, l, scale)

    def jvp(q, k, v, tq, tk, tv, m, l, *, scale=None):
        x = [_raw(t) for t in (q, k, v, tq, tk, tv, m, l)]
        check_attention(*x[:3], scale)
        for name, t, p in zip(("dq", "dk", "dv"), x[3:6], x[:3]):
            check_like(name, t, p, "q")
        return reference.jvp(*x, scale)

    def fwd_jvp(q, k, v, tq, tk, tv, *, scale=None):
        x = [_raw(t) for t in (q, k, v, tq, tk, tv)]
        check_attention(*x[:3], scale)
        o, m, l = reference.forward(*x[:3], scale)
        return o, m, l, reference.jvp(*x, m, l, scale)

    for name, fn in (("triton_sdpa_fused", fwd), ("sdpa_bwd", bwd), ("sdpa_jvp", jvp),
                     ("sdpa_fwd_jvp", fwd_jvp)):
        monkeypatch.setattr(_autograd, name, fn)


@pytest.mark.parametrize("name", list(COMPOSITIONS))
def test_composition_is_exact_or_raises(reference_kernels, name):
    x = inputs(*((1, 2, 3, 4, 4) if name in SMALL else (2, 2, 9, 11, 8)), F64, "cpu")
    try:
        ours = flat(COMPOSITIONS[name](aot_sdpa.scaled_dot_product_attention, x))
    except NotImplementedError as exc:
        assert "aot_sdpa" in str(exc) or "not supported" in str(exc), exc
        return
    except RuntimeError as exc:  # torch's own refusal (no vmap rule on the Function) names vmap
        assert "vmap" in str(exc), exc
        return
    ref = flat(COMPOSITIONS[name](reference.attention, x))
    for a, b in zip(ours, ref):
        assert max_err(a, b) <= 1e-9 * (1 + b.abs().max().item()), (name, max_err(a, b))

"""The reverse-mode rules of the primitives, written once for both of their registrations: the
autograd.Functions of _autograd (eager) and the custom operators of _library (torch.compile,
torch.export). With J the Jacobian of attention and H_do the Hessian of <do, O> (the
identities in _autograd's docstring and docs/phase9_hvp.md, "Compositions"):

    forward:        x gets J^T do
    backward:       x gets H_do g, do gets J g                  (double backward)
    JVP:            x gets H_g t,  t gets J^T g                 (reverse through a JVP)
    forward + JVP:  x gets J^T go + H_gt t, t gets J^T gt

`ops` supplies bwd (q, k, v, do, o, m, l, scale, causal, bias), jvp (q, k, v, tq, tk, tv, m,
l, scale, causal, bias) and bwd_jvp (q, k, v, do, m, l, tq, tk, tv, tdo, scale, causal, bias):
the autograd.Functions' apply or the custom operators (`causal`: _checks.check_causal's code;
`bias`: the attention mask as _ops.bias_from_mask gives it, or None; it gets no gradient).
`need` is ctx.needs_input_grad; what is not needed is not computed (None).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor
_NONE3 = (None, None, None)


def unit_stride(t: Tensor | None) -> Tensor | None:
    """Upstream grads and tangents may arrive in any layout; kernels need a unit last stride."""
    if t is None or t.stride(-1) == 1 or t.shape[-1] == 1:
        return t
    return t.contiguous()


def or_zeros(t: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if t is None else unit_stride(t)


def fwd_backward(ops, saved, scale, causal, bias, do):
    """(dq, dk, dv) of the forward; saved = (q, k, v, o, m, l)."""
    q, k, v, o, m, l = saved
    return ops.bwd(q, k, v, or_zeros(do, o), o, m, l, scale, causal, bias)


def bwd_backward(ops, saved, scale, causal, bias, need, gq, gk, gv):
    """(hq, hk, hv, gdo) of the backward; saved = (q, k, v, do, m, l)."""
    q, k, v, do, m, l = saved
    gq, gk, gv = or_zeros(gq, q), or_zeros(gk, k), or_zeros(gv, v)
    hx, gdo = _NONE3, None
    if any(need[:3]):
        hx = ops.bwd_jvp(q, k, v, do, m, l, gq, gk, gv, None, scale, causal, bias)
    if need[3]:
        gdo = ops.jvp(q, k, v, gq, gk, gv, m, l, scale, causal, bias)
    return (*hx, gdo)


def jvp_backward(ops, saved, scale, causal, bias, need, g):
    """(hq, hk, hv, dtq, dtk, dtv) of the JVP; saved = (q, k, v, tq, tk, tv, m, l)."""
    q, k, v, tq, tk, tv, m, l = saved
    g = or_zeros(g, q)
    hx = dt = _NONE3
    if any(need[:3]):
        hx = ops.bwd_jvp(q, k, v, g, m, l, tq, tk, tv, None, scale, causal, bias)
    if any(need[3:6]):
        dt = ops.bwd(q, k, v, g, None, m, l, scale, causal, bias)
    return (*hx, *dt)


def fwd_jvp_backward(ops, saved, scale, causal, bias, need, go, gt):
    """(hq, hk, hv, dtq, dtk, dtv) of the fused forward + JVP (one backward-JVP with go as its
    tdo, or the plain backward when no gradient reaches the tangent output); saved = (q, k, v,
    tq, tk, tv, m, l)."""
    q, k, v, tq, tk, tv, m, l = saved
    hx = dt = _NONE3
    if gt is None:
        if go is not None and any(need[:3]):
            hx = ops.bwd(q, k, v, unit_stride(go), None, m, l, scale, causal, bias)
    else:
        gt = unit_stride(gt)
        if any(need[:3]):
            hx = ops.bwd_jvp(q, k, v, gt, m, l, tq, tk, tv, unit_stride(go), scale, causal,
                             bias)
        if any(need[3:6]):
            dt = ops.bwd(q, k, v, gt, None, m, l, scale, causal, bias)
    return (*hx, *dt)

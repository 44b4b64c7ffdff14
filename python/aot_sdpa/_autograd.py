"""The public, differentiable API: autograd Functions whose derivative rules are other kernels.

Five primitives, each a torch.autograd.Function with backward, jvp and vmap rules:

    _Fwd     (q, k, v)                             -> (o, m, l)
    _Bwd     (q, k, v, do, o, m, l)                -> (dq, dk, dv)
    _Jvp     (q, k, v, tq, tk, tv, m, l)           -> to
    _FwdJvp  (q, k, v, tq, tk, tv)                 -> (o, m, l, to)
    _BwdJvp  (q, k, v, do, m, l, tq, tk, tv, tdo)  -> (hq, hk, hv)

With O(x) attention of x = (q, k, v), J its Jacobian and H_do the Hessian of <do, O(x)>, the
backward is J^T do and the JVP is J t. By the symmetry of the Hessian every second-order
derivative reduces to these and to the backward's tangent H_do t + J^T tdo (docs/phase9_hvp.md,
"Compositions"):

    d/dx <g, J^T do> = H_do g       d/ddo <g, J^T do> = J g        (double backward)
    d/dt [J^T do]    = H_do tx + J^T tdo                           (forward over reverse)
    d/dx <g, J t>    = H_g t        d/dt <g, J t>     = J^T g      (reverse through a JVP)

The rules call the primitives (never kernels on unwrapped tensors), so torch.func levels and
torch.autograd modes stack: each level is handled by the rule of the primitive called below
it. The stats m, l (and o) are the forward's own, treated as functions of (q, k, v) whose
influence the exact formulas already carry: they receive no gradient. Third derivatives (a
derivative of _BwdJvp) and forward-over-forward (a jvp of a JVP) raise NotImplementedError.
"""

from __future__ import annotations

import inspect
import types

import torch

from . import _library, _ops, _rules
from ._checks import (
    _tensor,
    check_attention,
    check_causal,
    check_devices,
    check_eps,
    check_like,
    check_mask,
)
from ._torch_compat import (
    compiling,
    forward_ad_active,
    functorch_active,
    innermost_jvp_level,
    make_dual,
    plain_call,
    unpack_dual,
    unwrap_jvp_dual,
)

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------- helpers
_unit_stride, _or_zeros = _rules.unit_stride, _rules.or_zeros


def _vmap_rule(apply, info, in_dims, *args):
    """Fold the vmapped dimension into the batch dimension B and call `apply` once.

    Every tensor argument of the primitives has B as its dimension 0, so a batched argument
    (vmap dim moved to the front) of shape (N, B, ...) becomes (N*B, ...); an unbatched one is
    expanded to N first. The last argument is the bias (the attention mask or None), whose
    dim 0 is B or 1 (_fold_bias). Outputs are unfolded back to (N, B, ...) with out_dim 0.
    """
    n = info.batch_size
    folded, batch = [], None
    for x, d in zip(args[:-1], in_dims[:-1]):
        if isinstance(x, torch.Tensor):
            x = x.movedim(d, 0) if d is not None else x.expand(n, *x.shape)
            batch = x.shape[1]
            x = _unit_stride(x.reshape(n * batch, *x.shape[2:]))
        folded.append(x)
    out = apply(*folded, _fold_bias(args[-1], in_dims[-1], n, batch))
    single = isinstance(out, torch.Tensor)
    outs = tuple(None if o is None else o.reshape(n, batch, *o.shape[1:])
                 for o in ((out,) if single else out))
    dims = tuple(None if o is None else 0 for o in outs)
    return (outs[0], dims[0]) if single else (outs, dims)


def _fold_bias(bias, d, n: int, batch: int):
    """A bias (4-D, dim 0 of size B or 1) for the folded batch N*B: kept when unbatched with
    dim 0 of 1 (it broadcasts), else its N copies / slices stacked along dim 0."""
    if bias is None:
        return None
    if d is None:
        return bias if bias.shape[0] == 1 else bias.repeat(n, 1, 1, 1)
    b = bias.movedim(d, 0)
    b = b.expand(n, batch, *b.shape[2:])
    return _unit_stride(b.reshape(n * batch, *b.shape[2:]))


def _refuse(what: str):
    raise NotImplementedError(f"aot_sdpa: {what} is not supported (no kernel computes it); "
                              "every other composition of grad, jvp, vmap and the autograd "
                              "modes is exact")


# ------------------------------------------------------------------------------- primitives
class _Fwd(torch.autograd.Function):
    """(o, m, l) = forward(q, k, v); m, l are not differentiable."""

    @staticmethod
    def forward(q, k, v, scale, causal, bias):
        return _ops.fwd(q, k, v, scale, causal, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _library.fwd_setup_context(ctx, inputs, output)  # the custom operator's, shared
        # m and l take no gradient: their grads reach backward as None instead of zeros
        # that autograd would fill (a fill kernel per backward; fwd_backward takes None)
        ctx.set_materialize_grads(False)
        (q, k, v, *_), (_, m, l) = inputs, output
        ctx.save_for_forward(q, k, v, m, l)

    @staticmethod
    def backward(ctx, do, _dm, _dl):
        return (*_rules.fwd_backward(_EAGER, ctx.saved_tensors, ctx.scale, ctx.causal, ctx.bias,
                                     do), None, None, None)

    @staticmethod
    def jvp(ctx, tq, tk, tv, _tscale, _tcausal, _tbias):
        q, k, v, m, l = ctx.saved_tensors
        to = _Jvp.apply(q, k, v, _or_zeros(tq, q), _or_zeros(tk, k), _or_zeros(tv, v), m, l,
                        ctx.scale, ctx.causal, ctx.bias)
        return to, None, None

    @staticmethod
    def vmap(info, in_dims, q, k, v, scale, causal, bias):
        return _vmap_rule(_Fwd.apply, info, in_dims, q, k, v, scale, causal, bias)


class _Bwd(torch.autograd.Function):
    """(dq, dk, dv) = J^T do from the frozen stats (o, if given, supplies z = dO . O)."""

    @staticmethod
    def forward(q, k, v, do, o, m, l, scale, causal, bias):
        return _ops.bwd(q, k, v, do, m, l, o, scale, causal, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, do, o, m, l, scale, causal, bias = inputs
        ctx.scale, ctx.causal, ctx.bias = scale, causal, bias
        ctx.save_for_backward(q, k, v, do, m, l)
        ctx.save_for_forward(q, k, v, do, m, l)

    @staticmethod
    def backward(ctx, gq, gk, gv):
        # double backward: d<g, J^T do>/dx = H_do g, d<g, J^T do>/ddo = J g
        return (*_rules.bwd_backward(_EAGER, ctx.saved_tensors, ctx.scale, ctx.causal, ctx.bias,
                                     ctx.needs_input_grad, gq, gk, gv), None, None, None, None,
                None, None)

    @staticmethod
    def jvp(ctx, tq, tk, tv, tdo, _to, _tm, _tl, _tscale, _tcausal, _tbias):
        # forward over reverse: H_do t + J^T tdo
        q, k, v, do, m, l = ctx.saved_tensors
        return _BwdJvp.apply(q, k, v, do, m, l, _or_zeros(tq, q), _or_zeros(tk, k),
                             _or_zeros(tv, v), _unit_stride(tdo), ctx.scale, ctx.causal, ctx.bias)

    @staticmethod
    def vmap(info, in_dims, q, k, v, do, o, m, l, scale, causal, bias):
        return _vmap_rule(_Bwd.apply, info, in_dims, q, k, v, do, o, m, l, scale, causal, bias)


class _Jvp(torch.autograd.Function):
    """to = J t from the frozen stats."""

    @staticmethod
    def forward(q, k, v, tq, tk, tv, m, l, scale, causal, bias):
        return _ops.jvp(q, k, v, tq, tk, tv, m, l, scale, causal, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, tq, tk, tv, m, l, scale, causal, bias = inputs
        ctx.scale, ctx.causal, ctx.bias = scale, causal, bias
        ctx.save_for_backward(q, k, v, tq, tk, tv, m, l)

    @staticmethod
    def backward(ctx, g):
        # reverse through the JVP: d<g, J t>/dx = H_g t, d<g, J t>/dt = J^T g
        return (*_rules.jvp_backward(_EAGER, ctx.saved_tensors, ctx.scale, ctx.causal, ctx.bias,
                                     ctx.needs_input_grad, g), None, None, None, None, None)

    @staticmethod
    def jvp(ctx, *tangents):
        _refuse("forward-over-forward (a jvp of the JVP, e.g. jacfwd(jacfwd(f)); use "
                "forward-over-reverse: torch.func.hessian or jacfwd(jacrev(f)))")

    @staticmethod
    def vmap(info, in_dims, q, k, v, tq, tk, tv, m, l, scale, causal, bias):
        return _vmap_rule(_Jvp.apply, info, in_dims, q, k, v, tq, tk, tv, m, l, scale, causal, bias)


class _FwdJvp(torch.autograd.Function):
    """(o, m, l, to) in one fused pass; m, l are not differentiable."""

    @staticmethod
    def forward(q, k, v, tq, tk, tv, scale, causal, bias):
        return _ops.fwd_jvp(q, k, v, tq, tk, tv, scale, causal, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, tq, tk, tv, scale, causal, bias = inputs
        o, m, l, to = output
        ctx.scale, ctx.causal, ctx.bias = scale, causal, bias
        ctx.mark_non_differentiable(m, l)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(q, k, v, tq, tk, tv, m, l)

    @staticmethod
    def backward(ctx, go, _gm, _gl, gt):
        # d<go, O> + <gt, J t>: x gets J^T go + H_gt t (one backward-JVP, go as its tdo),
        # t gets J^T gt
        return (*_rules.fwd_jvp_backward(_EAGER, ctx.saved_tensors, ctx.scale, ctx.causal, ctx.bias,
                                         ctx.needs_input_grad, go, gt), None, None, None)

    @staticmethod
    def jvp(ctx, *tangents):
        _refuse("a jvp of sdpa_fwd_jvp (forward-over-forward)")

    @staticmethod
    def vmap(info, in_dims, q, k, v, tq, tk, tv, scale, causal, bias):
        return _vmap_rule(_FwdJvp.apply, info, in_dims, q, k, v, tq, tk, tv, scale, causal, bias)


class _BwdJvp(torch.autograd.Function):
    """(hq, hk, hv) = H_do t + J^T tdo: the tangent of the backward (tdo may be None)."""

    @staticmethod
    def forward(q, k, v, do, m, l, tq, tk, tv, tdo, scale, causal, bias):
        return _ops.bwd_jvp(q, k, v, do, m, l, tq, tk, tv, tdo, scale, causal, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        _refuse("a third derivative (reverse mode through the HVP / backward's tangent)")

    @staticmethod
    def jvp(ctx, *tangents):
        _refuse("a third derivative (forward mode through the HVP / backward's tangent)")

    @staticmethod
    def vmap(info, in_dims, q, k, v, do, m, l, tq, tk, tv, tdo, scale, causal, bias):
        return _vmap_rule(_BwdJvp.apply, info, in_dims, q, k, v, do, m, l, tq, tk, tv, tdo, scale,
                          causal, bias)


# torch's Function.apply binds every call's arguments to forward's signature, which it builds
# anew each time (inspect.signature: about half of that bind's host time, on every training
# step's forward and backward); inspect returns a function's own __signature__ as is, and
# forward's never changes
for _cls in (_Fwd, _Bwd, _Jvp, _FwdJvp, _BwdJvp):
    _cls.forward.__signature__ = inspect.signature(_cls.forward)


def _eager(function):
    """The rules' op for `function`: its apply where a derivative may pass through the call
    (_differentiated), else its forward, the kernels alone. A backward run without
    create_graph, outside torch.func and with no forward-AD tangent has apply record nothing,
    for ~26 us of host time per call (H200 host: results/profile_host_bwd_h200.log)."""
    apply, kernels = function.apply, function.forward

    def op(*args):
        return apply(*args) if _differentiated(*args) else kernels(*args)

    return op


# the primitives as the rules of _rules see them (the custom operators are the other `ops`)
_EAGER = types.SimpleNamespace(bwd=_eager(_Bwd), jvp=_eager(_Jvp), bwd_jvp=_eager(_BwdJvp))


# ------------------------------------------------------------------------------ public API
def _mask_bias(mask, q, k) -> Tensor | None:
    """The public `mask` checked (_checks.check_mask) and as the kernels' bias."""
    if mask is None:
        return None
    if not (isinstance(q, Tensor) and isinstance(k, Tensor) and q.dim() == k.dim() == 4):
        return mask  # the kernels' own checks refuse q / k first
    check_mask(mask, q, k)
    return _ops.bias_from_mask(mask)


def _differentiated(*ts) -> bool:
    """Whether a derivative may pass through the call: a torch.func transform is running,
    a tensor requires grad (grad mode on), or one carries a forward-AD tangent. Non-tensors
    (which the kernels' checks then refuse) never do."""
    if torch.is_grad_enabled():
        for t in ts:
            if isinstance(t, torch.Tensor) and t.requires_grad:
                return True
    if functorch_active():
        return True
    if forward_ad_active():
        for t in ts:
            if isinstance(t, torch.Tensor) and unpack_dual(t)[1] is not None:
                return True
    return False


def triton_sdpa_fused(q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None,
                      causal: bool | str = False, mask: Tensor | None = None,
                      out: tuple[Tensor, Tensor, Tensor] | None = None
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """Fused attention forward.

    Args:
        q: (B, H, T, D) CUDA tensor, float16/bfloat16/float32, 1 <= D <= 256, last dim stride 1.
        k, v: (B, Hkv, M, D), same dtype and device, M >= 1, H % Hkv == 0 (grouped-query
            attention when Hkv < H: query head h uses key/value head h // (H / Hkv)).
        scale: score scale; None means 1/sqrt(D).
    causal: False (every query sees every key), True or "top_left" (query i sees keys j <= i,
            torch's is_causal) or "bottom_right" (j <= i + M - T, FlashAttention's; with T > M
            the first T - M queries see no key and get o = 0, m = -inf, l = 0). Key blocks
            above the diagonal are skipped. Derivative calls take the forward's `causal`.

    Returns:
        o: (B, H, T, D) in q's dtype (and layout, when q is dense).
        m: (B, H, T) float32, m_i = max_j S_ij with S = scale * q k^T.
        l: (B, H, T) float32, l_i = sum_j exp(S_ij - m_i).

    Differentiable in o (reverse and forward mode, any order up to two); m, l are not.

    ``out=(o, m, l)`` writes the results into the caller's tensors and returns them (no
    allocation: the lowest host time per call). o: shaped and typed like q, unit last stride;
    m, l: float32 (B, H, T) with equal strides; none overlapping the inputs or each other.
    As torch's out= functions, it is not differentiable (an error when a derivative would be
    needed) and, here, eager only (an error under torch.compile).
    """
    if mask is None and out is None and plain_call(q, k, v):  # inference, no mask
        return _ops.fwd(q, k, v, scale, check_causal(causal))
    causal, bias = check_causal(causal), _mask_bias(mask, q, k)
    if out is not None:
        if compiling():
            raise NotImplementedError("triton_sdpa_fused(out=...) is eager only: under "
                                      "torch.compile / torch.export call it without out=")
        if _differentiated(q, k, v):
            raise RuntimeError("triton_sdpa_fused(out=...) does not support automatic "
                               "differentiation (as torch's out= functions), but q, k or v "
                               "requires grad, carries a forward-AD tangent or is under a "
                               "torch.func transform; call it without out=")
        return _ops.fwd(q, k, v, scale, causal, bias, out)
    if compiling():
        return _library.fwd(q, k, v, scale, causal, bias)
    if _differentiated(q, k, v):
        return _Fwd.apply(q, k, v, scale, causal, bias)
    return _ops.fwd(q, k, v, scale, causal, bias)


def sdpa_bwd(q: Tensor, k: Tensor, v: Tensor, do: Tensor, m: Tensor, l: Tensor, *,
             o: Tensor | None = None, scale: float | None = None,
             causal: bool | str = False,
             mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Fused backward from frozen stats: (dq, dk, dv), bitwise deterministic (no atomics).

    P = exp(S - m)/l; dV = P^T dO; dP = dO V^T; z = rowsum(dP * P); dS = P * (dP - z);
    dQ = scale dS K; dK = scale dS^T Q. Passing the forward's ``o`` computes z as dO . O.
    Differentiable (double backward, forward over reverse) in q, k, v and do. ``causal`` as
    the forward's (triton_sdpa_fused).
    """
    causal, bias = check_causal(causal), _mask_bias(mask, q, k)
    if compiling():
        return _library.bwd(q, k, v, do, o, m, l, scale, causal, bias)
    if _differentiated(q, k, v, do, o, m, l):
        return _Bwd.apply(q, k, v, do, o, m, l, scale, causal, bias)
    return _ops.bwd(q, k, v, do, m, l, o, scale, causal, bias)


def _bwd_piece(i: int, raw, q, k, v, do, m, l, scale, causal, mask) -> Tensor:
    causal, bias = check_causal(causal), _mask_bias(mask, q, k)
    if compiling():
        return _library.bwd(q, k, v, do, None, m, l, scale, causal, bias)[i]
    if _differentiated(q, k, v, do, m, l):
        return _Bwd.apply(q, k, v, do, None, m, l, scale, causal, bias)[i]
    return raw(q, k, v, do, m, l, scale, causal, bias)


def sdpa_bwd_dq(q: Tensor, k: Tensor, v: Tensor, do: Tensor, m: Tensor, l: Tensor, *,
                scale: float | None = None, causal: bool | str = False,
                mask: Tensor | None = None) -> Tensor:
    """dQ = scale * dS K from frozen stats (z recomputed from the stats)."""
    return _bwd_piece(0, _ops.bwd_dq, q, k, v, do, m, l, scale, causal, mask)


def sdpa_bwd_dk(q: Tensor, k: Tensor, v: Tensor, do: Tensor, m: Tensor, l: Tensor, *,
                scale: float | None = None, causal: bool | str = False,
                mask: Tensor | None = None) -> Tensor:
    """dK = scale * dS^T Q from frozen stats (z recomputed from the stats)."""
    return _bwd_piece(1, _ops.bwd_dk, q, k, v, do, m, l, scale, causal, mask)


def sdpa_bwd_dv(q: Tensor, k: Tensor, v: Tensor, do: Tensor, m: Tensor, l: Tensor, *,
                scale: float | None = None, causal: bool | str = False,
                mask: Tensor | None = None) -> Tensor:
    """dV = P^T dO from frozen stats (needs no z)."""
    return _bwd_piece(2, _ops.bwd_dv, q, k, v, do, m, l, scale, causal, mask)


def sdpa_jvp(q: Tensor, k: Tensor, v: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, m: Tensor,
             l: Tensor, *, scale: float | None = None, causal: bool | str = False,
                mask: Tensor | None = None) -> Tensor:
    """Exact JVP of attention with tangents (dq, dk, dv), P from the frozen stats (m, l).

    dS = scale (dq K^T + Q dk^T); dP = P * (dS - rowsum(P dS)); dout = dP V + P dv.
    Differentiable in reverse mode in q, k, v and the tangents.
    """
    causal, bias = check_causal(causal), _mask_bias(mask, q, k)
    if compiling():
        return _library.jvp(q, k, v, dq, dk, dv, m, l, scale, causal, bias)
    if _differentiated(q, k, v, dq, dk, dv, m, l):
        return _Jvp.apply(q, k, v, dq, dk, dv, m, l, scale, causal, bias)
    return _ops.jvp(q, k, v, dq, dk, dv, m, l, scale, causal, bias)


def sdpa_fwd_jvp(q: Tensor, k: Tensor, v: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, *,
                 scale: float | None = None,
                 causal: bool | str = False,
                 mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Primal and tangent in one fused pass: returns (o, m, l, dout).

    Differentiable in reverse mode: dout depends on q, k, v and on the tangents.
    """
    return _fwd_jvp(q, k, v, dq, dk, dv, scale, check_causal(causal), _mask_bias(mask, q, k))


def _fwd_jvp(q, k, v, dq, dk, dv, scale, causal: int, bias):
    """sdpa_fwd_jvp with `causal` as its code and the mask already as the kernels' bias."""
    if compiling():
        return _library.fwd_jvp(q, k, v, dq, dk, dv, scale, causal, bias)
    if _differentiated(q, k, v, dq, dk, dv):
        return _FwdJvp.apply(q, k, v, dq, dk, dv, scale, causal, bias)
    return _ops.fwd_jvp(q, k, v, dq, dk, dv, scale, causal, bias)


def sdpa_bwd_jvp(q: Tensor, k: Tensor, v: Tensor, do: Tensor, m: Tensor, l: Tensor, tq: Tensor,
                 tk: Tensor, tv: Tensor, tdo: Tensor | None = None, *,
                 scale: float | None = None,
                 causal: bool | str = False,
             mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Tangent of the backward: (hq, hk, hv) = d/dt sdpa_bwd(x + t tx, do + t tdo) at t = 0.

    The exact forward-over-reverse product (H_do t + J^T tdo, docs/phase9_hvp.md), with the
    frozen stats m, l of the forward at (q, k, v); tdo=None means tdo = 0 (the HVP).
    Deterministic (no atomics), O(T) extra memory. Not differentiable (a third derivative).
    """
    causal, bias = check_causal(causal), _mask_bias(mask, q, k)
    if compiling():
        return _library.bwd_jvp(q, k, v, do, m, l, tq, tk, tv, tdo, scale, causal, bias)
    if _differentiated(q, k, v, do, m, l, tq, tk, tv, tdo):
        return _BwdJvp.apply(q, k, v, do, m, l, tq, tk, tv, tdo, scale, causal, bias)
    return _ops.bwd_jvp(q, k, v, do, m, l, tq, tk, tv, tdo, scale, causal, bias)


def sdpa_hvp(q: Tensor, k: Tensor, v: Tensor, do: Tensor, tq: Tensor, tk: Tensor, tv: Tensor, *,
             scale: float | None = None,
             causal: bool | str = False,
             mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Exact Hessian-vector product of L = <do, SDPA(q, k, v)> along (tq, tk, tv).

    One forward for the stats, then sdpa_bwd_jvp with tdo = 0: the exact counterpart of
    hvp_fd_vjp, with no step size and no truncation error.
    """
    _check_hvp_args(q, k, v, do, tq, tk, tv, scale)
    _, m, l = triton_sdpa_fused(q, k, v, scale=scale, causal=causal, mask=mask)
    return sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv, scale=scale, causal=causal, mask=mask)


def _check_hvp_args(q, k, v, do, tq, tk, tv, scale) -> None:
    check_attention(q, k, v, scale)
    check_like("do", do, q, "q")
    check_like("tq", tq, q, "q")
    check_like("tk", tk, k, "k")
    check_like("tv", tv, v, "v")
    check_devices(("q", "k", "v", "do", "tq", "tk", "tv"), (q, k, v, do, tq, tk, tv))


def hvp_fd_vjp(q: Tensor, k: Tensor, v: Tensor, do: Tensor, tq: Tensor, tk: Tensor, tv: Tensor,
               *, eps: float = 1e-3, scale: float | None = None,
               causal: bool | str = False,
             mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Finite-difference HVP of L = <do, SDPA(q, k, v)> along (tq, tk, tv).

    H t ~= (grad L(x + eps t) - grad L(x - eps t)) / (2 eps), each gradient from the explicit
    VJP with stats recomputed by the forward at the perturbed point. Truncation error is
    O(eps^2), round-off O(u / eps) for the dtype's unit roundoff u: use float32 (see
    docs/phase9_hvp.md), or the exact sdpa_hvp.
    """
    eps = check_eps(eps)
    _check_hvp_args(q, k, v, do, tq, tk, tv, scale)
    grads = []
    for sign in (1.0, -1.0):
        xq, xk, xv = q + sign * eps * tq, k + sign * eps * tk, v + sign * eps * tv
        o, m, l = triton_sdpa_fused(xq, xk, xv, scale=scale, causal=causal, mask=mask)
        grads.append(sdpa_bwd(xq, xk, xv, do, m, l, o=o, scale=scale, causal=causal,
                              mask=mask))
    inv = 1.0 / (2.0 * eps)
    return tuple((gp - gm) * inv for gp, gm in zip(*grads))


# --------------------------------------------------------------------------------- drop-in
def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor,
                                 attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> Tensor:
    """Drop-in for the supported subset of ``torch.nn.functional.scaled_dot_product_attention``.

    Supported: (B, H, T, D) inputs, ``attn_mask`` (bool: True = the key takes part; or a
    float added to the scores; broadcastable to (B, H, T, M), e.g. (B, 1, 1, M) key padding),
    no dropout, ``is_causal`` (torch's top-left alignment: query i sees keys j <= i; not
    together with attn_mask, as torch), D <= 256, float16/bfloat16/float32 on CUDA; with
    ``enable_gqa=True``, key and value may have fewer heads Hkv (H % Hkv == 0; query head h
    uses key/value head h // (H / Hkv), as torch). A query row whose keys are all masked gets
    0 (torch's math backend gives NaN there). Anything else raises (never a silent fallback).
    Differentiable to second order in every composition of torch.autograd (backward,
    create_graph=True double backward, forward_ad, reverse through a forward-AD tangent) and
    torch.func (grad, jvp, vjp, vmap, jacrev, jacfwd, hessian): see docs/phase9_hvp.md.
    Paths: no derivative needed -> one forward kernel; forward_ad tangents with nothing
    requiring grad -> the fused primal+tangent kernel (one pass); otherwise the autograd
    primitives, whose rules are the backward, JVP and backward-JVP kernels.
    """
    if (attn_mask is None and dropout_p == 0.0 and (is_causal is False or is_causal is True)
            and plain_call(query, key, value)):  # inference, no mask: the kernel's fast path
        o = _ops.fwd_fast_out(query, key, value, scale, int(is_causal))
        if o is not None:
            return o
    for name, x in (("query", query), ("key", key), ("value", value)):
        _tensor(name, x)
    if attn_mask is not None and is_causal:
        raise ValueError("attn_mask and is_causal=True cannot be combined (as torch's SDPA); "
                         "the explicit API (triton_sdpa_fused(..., causal=True, mask=...)) can")
    if dropout_p != 0.0:
        raise NotImplementedError(f"dropout_p={dropout_p} is not supported by aot_sdpa (pass 0.0)")
    causal = 1 if is_causal else 0  # torch's is_causal: top-left aligned
    bias = _mask_bias(attn_mask, query, key)
    if not enable_gqa and query.dim() == 4 and key.dim() == 4 and key.shape[1] != query.shape[1]:
        raise ValueError(f"key has {key.shape[1]} heads but query has {query.shape[1]}: pass "
                         "enable_gqa=True for grouped-query attention (as torch's SDPA)")
    if compiling():  # torch.compile / torch.export: the custom operator
        return _library.fwd(query, key, value, scale, causal, bias)[0]
    # _differentiated's tests, in an order that unpacks forward-AD duals once
    if functorch_active():
        interpreter = innermost_jvp_level()
        if interpreter is not None:  # torch.func.jvp: primal and tangent in one fused pass
            return _fused_func_jvp(interpreter, query, key, value, scale, causal, bias)
        return _Fwd.apply(query, key, value, scale, causal, bias)[0]
    if forward_ad_active():
        duals = [unpack_dual(x) for x in (query, key, value)]
        if any(t is not None for _, t in duals):
            if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                    for d in duals for t in d)):
                # forward_ad alone: primal and tangent in one fused pass
                o, to = _ops.fwd_jvp_out(*(p for p, _ in duals),
                                         *(_or_zeros(t, p) for p, t in duals), scale, causal,
                                         bias)
                return make_dual(o, to)
            return _Fwd.apply(query, key, value, scale, causal, bias)[0]
    if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad
                                    or value.requires_grad):
        return _Fwd.apply(query, key, value, scale, causal, bias)[0]
    return _ops.fwd_out(query, key, value, scale, causal, bias)  # inference: no stats kept


def _fused_func_jvp(interpreter, q: Tensor, k: Tensor, v: Tensor, scale, causal, bias) -> Tensor:
    """The drop-in under torch.func.jvp (the innermost transform, at `interpreter`'s level):
    peel the level off the inputs, run the fused forward+JVP one level below (where any outer
    transform, e.g. grad or vmap, applies through _FwdJvp's rules, or the kernel runs
    directly), and return O as a dual at this level with tangent J t. This is what torch's
    own jvp rule for an autograd.Function computes with _Fwd's forward and jvp, in one pass
    instead of two and without building a per-call Function class."""
    level = interpreter.level()
    (pq, tq), (pk, tk), (pv, tv) = (unwrap_jvp_dual(x, level) for x in (q, k, v))
    if bias is not None:  # made at this level (it has no tangent): its value one level below
        bias = unwrap_jvp_dual(bias, level)[0]
    with interpreter.lower():
        args = (pq, pk, pv, _or_zeros(tq, pq), _or_zeros(tk, pk), _or_zeros(tv, pv))
        # _fwd_jvp's test without its forward-AD part: below torch.func.jvp's own level no
        # tensor carries a forward_ad tangent (that level is the only dual level there may
        # be: torch.func.jvp opens it, and forward_ad refuses nested levels)
        if functorch_active() or (torch.is_grad_enabled() and any(t.requires_grad for t in args)):
            o, _, _, to = _FwdJvp.apply(*args, scale, causal, bias)
        else:
            o, to = _ops.fwd_jvp_out(*args, scale, causal, bias)
    return make_dual(o, to)

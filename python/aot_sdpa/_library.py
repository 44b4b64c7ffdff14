"""The kernels as PyTorch custom operators (torch.ops.aot_sdpa.*), for torch.compile and
torch.export.

Each op has a fake implementation (output shapes, dtypes and strides, after the same contract
checks, so a traced call fails at trace time as an eager one would) and, where the op has a
derivative, an autograd formula built from the other ops: the rules of _rules, shared with
the autograd.Functions of _autograd (docs/phase9_hvp.md, "Compositions"):

    fwd      (q, k, v, scale, causal, bias)                   -> (o, m, l)     d: bwd
    bwd      (q, k, v, do, o, m, l, scale, causal, bias)      -> (dq, dk, dv)  d: bwd_jvp, jvp
    jvp      (q, k, v, tq, tk, tv, m, l, scale, causal, bias) -> to            d: bwd_jvp, bwd
    fwd_jvp  (q, k, v, tq, tk, tv, scale, causal, bias)       -> (o, m, l, to) d: bwd, bwd_jvp
    bwd_jvp  (q, k, v, do, m, l, tq, tk, tv, tdo, scale, causal, bias) -> (hq, hk, hv)  (none)

`causal` is _checks.check_causal's code (0 none, 1 top-left, 2 bottom-right); `bias` the
attention mask as _ops.bias_from_mask gives it (float32, broadcastable to (B, H, T, M)) or
None. The mask gets no gradient.

Eager calls keep the autograd.Function path (torch has no forward-mode AD for custom ops, nor
custom jvp rules under dynamo): the public functions call these ops only while torch.compile
or torch.export traces (_torch_compat.compiling()). The implementations call _ops at call time
(so the CPU tests' stand-in kernels serve them too); on a CPU tensor the real kernels raise.
"""

from __future__ import annotations

import torch

from . import _ops, _rules
from ._checks import check_attention, check_causal, check_mask

Tensor = torch.Tensor
lib_ops = torch.ops.aot_sdpa  # filled by the definitions below


def _check_bias(q, k, bias) -> None:
    """The fake implementations' check of a bias (the real one: _ops._bias_view)."""
    if bias is not None and q.dim() == k.dim() == 4:  # else check_attention refuses q, k
        check_mask(bias, q, k, "bias")


# ------------------------------------------------------------------------- forward
@torch.library.custom_op("aot_sdpa::fwd", mutates_args=())
def fwd(q: Tensor, k: Tensor, v: Tensor, scale: float | None,
        causal: int = 0, bias: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    o, m, l = _ops.fwd(q, k, v, scale, causal, bias)
    return o, m, l


@fwd.register_fake
def _(q, k, v, scale, causal=0, bias=None):
    check_causal(causal)
    _check_bias(q, k, bias)
    B, H, T, *_ = check_attention(q, k, v, scale)
    stats = (B, H, T)
    return _ops.empty_like_q(q, k), q.new_empty(stats, dtype=torch.float32), q.new_empty(
        stats, dtype=torch.float32)


def fwd_setup_context(ctx, inputs, output):
    """Saved for the forward's backward (shared with _autograd._Fwd): q, k, v, o, m, l."""
    q, k, v, scale, causal, bias = inputs
    o, m, l = output
    ctx.scale, ctx.causal, ctx.bias = scale, causal, bias
    ctx.mark_non_differentiable(m, l)
    ctx.save_for_backward(q, k, v, o, m, l)


def _fwd_backward(ctx, do, _dm, _dl):
    return (*_rules.fwd_backward(lib_ops, ctx.saved_tensors, ctx.scale, ctx.causal, ctx.bias,
                                 do), None, None, None)


fwd.register_autograd(_fwd_backward, setup_context=fwd_setup_context)


# ------------------------------------------------------------------------ backward
@torch.library.custom_op("aot_sdpa::bwd", mutates_args=())
def bwd(q: Tensor, k: Tensor, v: Tensor, do: Tensor, o: Tensor | None, m: Tensor, l: Tensor,
        scale: float | None, causal: int = 0,
        bias: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    dq, dk, dv = _ops.bwd(q, k, v, do, m, l, o, scale, causal, bias)
    return dq, dk, dv


@bwd.register_fake
def _(q, k, v, do, o, m, l, scale, causal=0, bias=None):
    check_causal(causal)
    _check_bias(q, k, bias)
    _ops.check_bwd_args(q, k, v, do, m, l, scale, o)
    return _ops.empty_like_q(q, k), torch.empty_like(k), torch.empty_like(v)


def _bwd_setup(ctx, inputs, output):
    q, k, v, do, o, m, l, scale, causal, bias = inputs
    ctx.scale, ctx.causal, ctx.bias = scale, causal, bias
    ctx.save_for_backward(q, k, v, do, m, l)


def _bwd_backward(ctx, gq, gk, gv):
    return (*_rules.bwd_backward(lib_ops, ctx.saved_tensors, ctx.scale, ctx.causal, ctx.bias,
                                 ctx.needs_input_grad, gq, gk, gv), None, None, None, None, None,
            None)


bwd.register_autograd(_bwd_backward, setup_context=_bwd_setup)


# ----------------------------------------------------------------------------- JVP
@torch.library.custom_op("aot_sdpa::jvp", mutates_args=())
def jvp(q: Tensor, k: Tensor, v: Tensor, tq: Tensor, tk: Tensor, tv: Tensor, m: Tensor,
        l: Tensor, scale: float | None, causal: int = 0, bias: Tensor | None = None) -> Tensor:
    return _ops.jvp(q, k, v, tq, tk, tv, m, l, scale, causal, bias)


@jvp.register_fake
def _(q, k, v, tq, tk, tv, m, l, scale, causal=0, bias=None):
    check_causal(causal)
    _check_bias(q, k, bias)
    _ops.check_jvp_args(q, k, v, tq, tk, tv, m, l, scale)
    return _ops.empty_like_q(q, k)


def _jvp_setup(ctx, inputs, output):
    q, k, v, tq, tk, tv, m, l, scale, causal, bias = inputs
    ctx.scale, ctx.causal, ctx.bias = scale, causal, bias
    ctx.save_for_backward(q, k, v, tq, tk, tv, m, l)


def _jvp_backward(ctx, g):
    return (*_rules.jvp_backward(lib_ops, ctx.saved_tensors, ctx.scale, ctx.causal, ctx.bias,
                                 ctx.needs_input_grad, g), None, None, None, None, None)


jvp.register_autograd(_jvp_backward, setup_context=_jvp_setup)


# ---------------------------------------------------------------- fused forward + JVP
@torch.library.custom_op("aot_sdpa::fwd_jvp", mutates_args=())
def fwd_jvp(q: Tensor, k: Tensor, v: Tensor, tq: Tensor, tk: Tensor, tv: Tensor,
            scale: float | None, causal: int = 0,
            bias: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    o, m, l, to = _ops.fwd_jvp(q, k, v, tq, tk, tv, scale, causal, bias)
    return o, m, l, to


@fwd_jvp.register_fake
def _(q, k, v, tq, tk, tv, scale, causal=0, bias=None):
    check_causal(causal)
    _check_bias(q, k, bias)
    B, H, T, *_ = check_attention(q, k, v, scale)
    _ops.check_tangents(q, k, v, tq, tk, tv)
    f32 = torch.float32
    return (_ops.empty_like_q(q, k), q.new_empty((B, H, T), dtype=f32),
            q.new_empty((B, H, T), dtype=f32), _ops.empty_like_q(q, k))


def _fwd_jvp_setup(ctx, inputs, output):
    q, k, v, tq, tk, tv, scale, causal, bias = inputs
    _, m, l, _ = output
    ctx.scale, ctx.causal, ctx.bias = scale, causal, bias
    ctx.mark_non_differentiable(m, l)
    ctx.save_for_backward(q, k, v, tq, tk, tv, m, l)


def _fwd_jvp_backward(ctx, go, _gm, _gl, gt):
    return (*_rules.fwd_jvp_backward(lib_ops, ctx.saved_tensors, ctx.scale, ctx.causal, ctx.bias,
                                     ctx.needs_input_grad, go, gt), None, None, None)


fwd_jvp.register_autograd(_fwd_jvp_backward, setup_context=_fwd_jvp_setup)


# ---------------------------------------------------------------- backward's tangent
@torch.library.custom_op("aot_sdpa::bwd_jvp", mutates_args=())
def bwd_jvp(q: Tensor, k: Tensor, v: Tensor, do: Tensor, m: Tensor, l: Tensor, tq: Tensor,
            tk: Tensor, tv: Tensor, tdo: Tensor | None,
            scale: float | None, causal: int = 0,
        bias: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    hq, hk, hv = _ops.bwd_jvp(q, k, v, do, m, l, tq, tk, tv, tdo, scale, causal, bias)
    return hq, hk, hv


@bwd_jvp.register_fake
def _(q, k, v, do, m, l, tq, tk, tv, tdo, scale, causal=0, bias=None):
    check_causal(causal)
    _check_bias(q, k, bias)
    _ops.check_bwd_args(q, k, v, do, m, l, scale,
                        tangents=_ops.bwd_jvp_tangents(q, k, v, tq, tk, tv, tdo))
    return _ops.empty_like_q(q, k), torch.empty_like(k), torch.empty_like(v)


def _third_order(ctx, *grads):
    raise NotImplementedError("aot_sdpa: a third derivative (reverse mode through the HVP / "
                              "backward's tangent) is not supported (no kernel computes it)")


bwd_jvp.register_autograd(_third_order, setup_context=lambda ctx, inputs, output: None)

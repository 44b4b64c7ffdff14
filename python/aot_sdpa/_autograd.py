"""Drop-in `scaled_dot_product_attention`, differentiable in reverse and forward mode."""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD

from ._ops import sdpa_bwd, sdpa_fwd_jvp, sdpa_jvp, triton_sdpa_fused

Tensor = torch.Tensor


class _SDPA(torch.autograd.Function):
    """o = SDPA(q, k, v); saves o, m, l (never P). Backward and JVP use the frozen stats."""

    @staticmethod
    def forward(q, k, v, scale):
        return triton_sdpa_fused(q, k, v, scale=scale)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, scale = inputs
        o, m, l = output
        ctx.scale = scale
        ctx.mark_non_differentiable(m, l)
        ctx.save_for_backward(q, k, v, o, m, l)
        ctx.save_for_forward(q, k, v, m, l)

    @staticmethod
    def backward(ctx, do, _dm, _dl):
        _refuse_second_order("backward", (*ctx.saved_tensors, do),
                             "a second derivative through the backward (double backward, "
                             "create_graph=True, torch.func.jvp/grad of torch.func.grad, hessian)")
        q, k, v, o, m, l = (_plain(t) for t in ctx.saved_tensors)
        with torch._C._DisableFuncTorch():  # outputs allocated plain, not functorch-wrapped
            dq, dk, dv = sdpa_bwd(q, k, v, _unit_stride(_plain(do)), m, l, o=o, scale=ctx.scale)
        return dq, dk, dv, None

    @staticmethod
    def jvp(ctx, tq, tk, tv, _tscale):
        _refuse_second_order("jvp", (*ctx.saved_tensors, tq, tk, tv),
                             "a derivative of the forward-mode tangent (reverse mode through a "
                             "JVP, or a JVP of a JVP)")
        q, k, v, m, l = (_plain(t) for t in ctx.saved_tensors)
        with torch._C._DisableFuncTorch():  # outputs allocated plain, not functorch-wrapped
            tq = torch.zeros_like(q) if tq is None else _unit_stride(_plain(tq))
            tk = torch.zeros_like(k) if tk is None else _unit_stride(_plain(tk))
            tv = torch.zeros_like(v) if tv is None else _unit_stride(_plain(tv))
            return sdpa_jvp(q, k, v, tq, tk, tv, m, l, scale=ctx.scale), None, None


def _refuse_second_order(rule: str, tensors, what: str) -> None:
    """Raise where the derivative rule's result would have to be differentiated again.

    The rules compute their result with kernels on raw storage, so a transform wrapped around
    them (an outer torch.func level, a forward-AD tangent, or an autograd graph recording the
    rule) would see a constant and silently get a wrong second derivative. Until second-order
    kernels exist, such compositions raise instead.
    """
    outer = False
    for t in tensors:
        if t is None:
            continue
        depth = 0
        while torch._C._functorch.is_functorch_wrapped_tensor(t):
            if torch._C._functorch.is_batchedtensor(t):
                raise NotImplementedError(
                    "aot_sdpa: torch.func.vmap over a derivative of attention (jacrev, jacfwd, "
                    "hessian, per-sample gradients) is not supported yet; the rules would "
                    "compute on the unbatched storage")
            t = torch._C._functorch.get_unwrapped(t)
            depth += 1
        if depth > 1 or fwAD.unpack_dual(t).tangent is not None:
            outer = True
        if rule == "jvp" and torch.is_grad_enabled() and t.requires_grad:
            outer = True
    if rule == "backward" and torch.is_grad_enabled() and not _functorch_wrapped(*tensors):
        outer = True  # torch.autograd with create_graph=True records the backward for a 2nd pass
    if outer:
        raise NotImplementedError(f"aot_sdpa: {what} is not supported yet; the {rule} rule "
                                  "would return a wrong value here, so it refuses")


def _unit_stride(t: Tensor) -> Tensor:
    """Upstream grads and tangents may arrive in any layout; kernels need a unit last stride."""
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def _plain(t: Tensor) -> Tensor:
    """The storage-backed tensor under torch.func's wrappers (our kernels read raw pointers).

    Under torch.func.jvp/grad the derivative rules see functorch-wrapped tensors (and tensors
    they allocate come out wrapped unless functorch is disabled); the kernels compute the
    rule's value directly, which is a constant at that level.
    """
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor,
                                 attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> Tensor:
    """Drop-in for the supported subset of ``torch.nn.functional.scaled_dot_product_attention``.

    Supported: (B, H, T, D) inputs, no mask, no dropout, non-causal, no GQA, D <= 64,
    float16/bfloat16/float32 on CUDA. Anything else raises (never a silent fallback).
    Differentiable by reverse mode (explicit backward kernels; saves o, m, l) and forward
    mode: torch.autograd.grad, .backward(), torch.func.jvp, torch.func.grad and
    torch.autograd.forward_ad all work. Paths: no grad and no tangents -> one forward kernel;
    forward_ad tangents without reverse mode -> the fused primal+tangent kernel (one pass);
    otherwise a torch.autograd.Function whose jvp rule is the frozen-stats JVP kernel.
    """
    if attn_mask is not None:
        raise NotImplementedError("attn_mask is not supported by aot_sdpa (pass None)")
    if dropout_p != 0.0:
        raise NotImplementedError(f"dropout_p={dropout_p} is not supported by aot_sdpa (pass 0.0)")
    if is_causal:
        raise NotImplementedError("is_causal=True is not supported by aot_sdpa")
    if enable_gqa:
        raise NotImplementedError("enable_gqa=True is not supported by aot_sdpa")
    needs_graph = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad
                                               or value.requires_grad)
    if not needs_graph and not _functorch_wrapped(query, key, value):
        if fwAD._current_level < 0:
            # inference: no graph to record and no tangents to carry
            return triton_sdpa_fused(query, key, value, scale=scale)[0]
        # forward AD only (torch.autograd.forward_ad): primal and tangent in one fused pass
        duals = [fwAD.unpack_dual(x) for x in (query, key, value)]
        if torch.is_grad_enabled() and any(d.tangent is not None and d.tangent.requires_grad
                                           for d in duals):
            raise NotImplementedError("aot_sdpa: reverse mode through a forward-mode tangent "
                                      "(tangents that require grad) is not supported yet")
        if any(d.tangent is not None for d in duals):
            q, k, v = (d.primal for d in duals)
            tq, tk, tv = (torch.zeros_like(d.primal) if d.tangent is None
                          else _unit_stride(d.tangent) for d in duals)
            o, _, _, t = sdpa_fwd_jvp(q, k, v, tq, tk, tv, scale=scale)
            return fwAD.make_dual(o, t)
    # reverse mode, torch.func transforms, or both modes at once
    return _SDPA.apply(query, key, value, scale)[0]


def _functorch_wrapped(*ts: Tensor) -> bool:
    return any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in ts
               if isinstance(t, torch.Tensor))

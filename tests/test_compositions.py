"""Every derivative composition through the drop-in and the explicit ops: equal to the fp64
reference within the tolerance rule, or (for the compositions no kernel computes) a raised
NotImplementedError, never a wrong number.

On the CPU the kernels are replaced by the float64 reference formulas behind the same raw
interface (tests/_compositions.py runs the transforms; `reference_kernels` below stands in for
the kernels and refuses, as the real ones would silently not see, any tensor that still
carries a transform). That checks the autograd/functorch plumbing exactly (1e-9). On the GPU the
real kernels run in each dtype and the rule is "error vs fp64 <= factor x the same composition
through torch's math in that dtype + atol".
"""

from __future__ import annotations

import os

import pytest
import torch

import aot_sdpa
from aot_sdpa import _autograd, _ops, reference

from _compositions import COMPOSITIONS, FORWARD_MODE, SMALL, UNSUPPORTED, flat, inputs
from _helpers import max_err

F64 = torch.float64


# explicit ops, wrapped as attention functions of (q, k, v)
def _via_fused(q, k, v):
    return aot_sdpa.triton_sdpa_fused(q, k, v)[0]


def _via_fwd_jvp(q, k, v):
    # o from the fused primal+tangent op (tangent discarded): its backward and vmap rules
    return aot_sdpa.sdpa_fwd_jvp(q, k, v, torch.zeros_like(q), torch.zeros_like(k),
                                 torch.zeros_like(v))[0]


ATTNS = {"dropin": aot_sdpa.scaled_dot_product_attention, "fused": _via_fused,
         "fwd_jvp": _via_fwd_jvp}
# what must raise per attention function
REFUSED = {"dropin": UNSUPPORTED, "fused": UNSUPPORTED, "fwd_jvp": FORWARD_MODE}


def _shape(name):
    return (1, 2, 3, 4, 4) if name in SMALL else (2, 2, 9, 11, 8)  # B, H, T, M, D


def _run(name, attn, x, refused=UNSUPPORTED):
    fn = COMPOSITIONS[name]
    if name in refused:
        with pytest.raises(NotImplementedError, match="aot_sdpa"):
            fn(attn, x)
        return None
    return flat(fn(attn, x))


@pytest.mark.parametrize("attn_name", list(ATTNS))
@pytest.mark.parametrize("name", list(COMPOSITIONS))
def test_composition_plumbing_cpu(reference_kernels, name, attn_name):
    x = inputs(*_shape(name), F64, "cpu")
    ours = _run(name, ATTNS[attn_name], x, REFUSED[attn_name])
    if ours is None:
        return
    ref = flat(COMPOSITIONS[name](reference.attention, x))
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        assert max_err(a, b) <= 1e-9 * (1 + b.abs().max().item()), (name, i, max_err(a, b))


@pytest.mark.parametrize("name", [n for n in COMPOSITIONS if n not in UNSUPPORTED])
def test_grouped_query_composition_plumbing_cpu(reference_kernels, name):
    """Every composition through the drop-in with enable_gqa=True (4 query heads, 2 key/value
    heads) vs torch's own transforms of the float64 reference (which repeats k, v)."""
    x = inputs(*((1, 4, 3, 4, 4) if name in SMALL else (2, 4, 9, 11, 8)), F64, "cpu", Hkv=2)
    attn = lambda q, k, v: aot_sdpa.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    ours = flat(COMPOSITIONS[name](attn, x))
    ref = flat(COMPOSITIONS[name](reference.attention, x))
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        assert max_err(a, b) <= 1e-9 * (1 + b.abs().max().item()), (name, max_err(a, b))


@pytest.mark.parametrize("causal", [True, "bottom_right"])
@pytest.mark.parametrize("name", [n for n in COMPOSITIONS if n not in UNSUPPORTED])
def test_causal_composition_plumbing_cpu(reference_kernels, name, causal):
    """Every composition with causal attention (the drop-in's is_causal for top-left, the
    explicit op's causal="bottom_right" with T > M: rows that see no key) vs torch's own
    transforms of the causal float64 reference: every rule passes the forward's causal on."""
    x = inputs(*((1, 2, 4, 3, 4) if name in SMALL else (2, 2, 11, 9, 8)), F64, "cpu")
    if causal is True:
        attn = lambda q, k, v: aot_sdpa.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        attn = lambda q, k, v: aot_sdpa.triton_sdpa_fused(q, k, v, causal=causal)[0]
    ours = flat(COMPOSITIONS[name](attn, x))
    ref = flat(COMPOSITIONS[name](lambda q, k, v: reference.attention(q, k, v, causal=causal),
                                  x))
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        assert max_err(a, b) <= 1e-9 * (1 + b.abs().max().item()), (name, max_err(a, b))


def _padding_and_additive(B, H, T, M, g):
    """A boolean key-padding mask (B, 1, 1, M) (batch 0 keeps every key, the others lose
    their last keys; the last batch keeps none: rows that see no key) and an additive
    (1, H, T, M) float mask with -inf entries."""
    keep = torch.arange(M)[None, :] < torch.tensor([M - 2 * b for b in range(B)])[:, None]
    keep[-1] = False
    add = torch.randn(1, H, T, M, generator=g)
    add = add.masked_fill(torch.rand(1, H, T, M, generator=g) < 0.3, float("-inf"))
    return keep[:, None, None, :], add


# two compositions change the problem's shape, so one mask cannot fit both: vmap_grad_per_sample
# calls attention per sample (batch 1; test_vmap_with_a_mask maps a mask along with q instead)
# and functional_call_grad is self-attention of q (M = T)
_MASK_SHAPED = ("vmap_grad_per_sample", "functional_call_grad")


@pytest.mark.parametrize("kind", ["dropin_bool", "explicit_additive_causal", "gqa_rows"])
@pytest.mark.parametrize("name", [n for n in COMPOSITIONS
                                  if n not in UNSUPPORTED and n not in _MASK_SHAPED])
def test_masked_composition_plumbing_cpu(reference_kernels, name, kind):
    """Every composition with an attention mask vs torch's own transforms of the masked
    float64 reference: every rule passes the forward's mask on (never a gradient for it).
    dropin_bool: the drop-in's attn_mask, key padding; explicit_additive_causal: the explicit
    op's mask= with causal="bottom_right"; gqa_rows: a (B, 1, T, M) mask with grouped heads
    (the kernels' view needs its heads materialised)."""
    B, H, T, M, D = (2, 2, 4, 3, 4) if name in SMALL else (3, 2, 11, 9, 8)
    g = torch.Generator().manual_seed(7)
    keep, add = _padding_and_additive(B, H, T, M, g)
    if kind == "dropin_bool":
        x, mask, causal = inputs(B, H, T, M, D, F64, "cpu"), keep, False
        attn = lambda q, k, v: aot_sdpa.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    elif kind == "explicit_additive_causal":
        x, mask, causal = inputs(B, H, T, M, D, F64, "cpu"), add, "bottom_right"
        attn = lambda q, k, v: aot_sdpa.triton_sdpa_fused(q, k, v, causal=causal, mask=mask)[0]
    else:
        x, causal = inputs(B, 4, T, M, D, F64, "cpu", Hkv=2), False
        mask = torch.rand(B, 1, T, M, generator=g) > 0.4
        attn = lambda q, k, v: aot_sdpa.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                                       enable_gqa=True)
    ours = flat(COMPOSITIONS[name](attn, x))
    ref = flat(COMPOSITIONS[name](
        lambda q, k, v: reference.attention(q, k, v, causal=causal, mask=mask), x))
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        assert max_err(a, b) <= 1e-9 * (1 + b.abs().max().item()), (name, max_err(a, b))


@pytest.mark.parametrize("mask_batched", [False, True])
def test_vmap_with_a_mask_cpu(reference_kernels, mask_batched):
    """vmap over q (and the mask, or a fixed mask) of the masked drop-in and of its grad:
    equal to the per-sample loop over the float64 reference."""
    x = inputs(2, 2, 7, 9, 8, F64, "cpu", seed=3)
    g = torch.Generator().manual_seed(1)
    qs = torch.stack([x["q"], x["tq"], 2 * x["q"]])
    masks = torch.rand(3, 2, 1, 7, 9, generator=g) > 0.3
    fixed = masks[0]

    def ours(q, mk):
        return aot_sdpa.scaled_dot_product_attention(q, x["k"], x["v"], attn_mask=mk)

    def ref(q, mk):
        return reference.attention(q, x["k"], x["v"], mask=mk)

    for f, want_f in ((ours, ref),
                      (torch.func.grad(lambda q, mk: (ours(q, mk) * x["w"]).sum()),
                       torch.func.grad(lambda q, mk: (ref(q, mk) * x["w"]).sum()))):
        if mask_batched:
            got = torch.func.vmap(f)(qs, masks)
            want = torch.stack([want_f(q, mk) for q, mk in zip(qs, masks)])
        else:
            got = torch.func.vmap(f, in_dims=(0, None))(qs, fixed)
            want = torch.stack([want_f(q, fixed) for q in qs])
        assert max_err(got, want) <= 1e-9 * (1 + want.abs().max().item())


@pytest.mark.parametrize("outer", ["none", "grad", "vmap"])
def test_func_jvp_through_dropin_is_one_fused_pass_cpu(reference_kernels, monkeypatch, outer):
    """torch.func.jvp through the drop-in runs the fused forward+JVP once (no separate
    forward and JVP), also when grad or vmap is applied around the jvp; alone, its stats-less
    form (fwd_jvp_out: the drop-in never returns the stats)."""
    calls = []
    for name in ("fwd", "jvp", "fwd_jvp", "fwd_jvp_out"):
        fn = getattr(_ops, name)
        monkeypatch.setattr(_ops, name, lambda *a, _fn=fn, _n=name, **kw: (calls.append(_n),
                                                                              _fn(*a, **kw))[1])
    x = inputs(2, 2, 9, 11, 8, F64, "cpu", seed=5)
    args, tangents = (x["q"], x["k"], x["v"]), (x["tq"], x["tk"], x["tv"])
    drop_in = aot_sdpa.scaled_dot_product_attention

    def tangent_sum(f, q):  # a scalar of the jvp's tangent, for grad
        return (torch.func.jvp(f, (q, *args[1:]), tangents)[1] * x["w"]).sum()

    if outer == "none":
        got = torch.func.jvp(drop_in, args, tangents)
        want = torch.func.jvp(reference.attention, args, tangents)
    elif outer == "grad":
        got = (torch.func.grad(lambda q: tangent_sum(drop_in, q))(x["q"]),)
        want = (torch.func.grad(lambda q: tangent_sum(reference.attention, q))(x["q"]),)
    else:
        got = torch.func.vmap(lambda q: torch.func.jvp(drop_in, (q, *args[1:]), tangents)[1])(
            torch.stack([x["q"], 2 * x["q"]]))
        want = torch.func.vmap(lambda q: torch.func.jvp(reference.attention, (q, *args[1:]),
                                                        tangents)[1])(
            torch.stack([x["q"], 2 * x["q"]]))
        got, want = (got,), (want,)
    assert calls == (["fwd_jvp_out"] if outer == "none" else ["fwd_jvp"]), calls
    for a, b in zip(got, want):
        assert max_err(a, b) <= 1e-9 * (1 + b.abs().max().item())


def test_backward_records_its_primitive_only_when_differentiated_cpu(reference_kernels,
                                                                     monkeypatch):
    """The drop-in's backward runs _Bwd through autograd.Function.apply (a node for double
    backward) when create_graph, torch.func or forward-AD tangents need it, and its kernels
    directly otherwise (apply would record nothing there, at ~26 us of host time): the same
    gradients either way."""
    recorded = []
    setup = _autograd._Bwd.setup_context
    monkeypatch.setattr(_autograd._Bwd, "setup_context", staticmethod(
        lambda ctx, inputs, output: (recorded.append(1), setup(ctx, inputs, output))[1]))
    x = inputs(2, 2, 9, 11, 8, F64, "cpu", seed=7)
    leaves = [x[n].clone().requires_grad_() for n in ("q", "k", "v")]
    drop_in = aot_sdpa.scaled_dot_product_attention

    def grads(**kw):
        return torch.autograd.grad(drop_in(*leaves), leaves, x["do"], **kw)

    want = torch.autograd.grad(reference.attention(*leaves), leaves, x["do"])
    for create_graph, records in ((False, 0), (True, 1)):
        recorded.clear()
        got = grads(create_graph=create_graph)
        assert len(recorded) == records, (create_graph, recorded)
        for a, b in zip(got, want):
            assert max_err(a, b) <= 1e-9 * (1 + b.abs().max().item())
    recorded.clear()
    torch.func.grad(lambda q: (drop_in(q, *leaves[1:]) * x["do"]).sum())(x["q"])
    assert recorded  # under torch.func: through apply (functorch may set it up per level)
    recorded.clear()
    with torch.autograd.forward_ad.dual_level():  # reverse over a forward-AD tangent
        dual = torch.autograd.forward_ad.make_dual(leaves[0], x["tq"])
        torch.autograd.grad(drop_in(dual, *leaves[1:]), leaves[0], x["do"])
    assert recorded


def test_func_jvp_with_some_inputs_constant_cpu(reference_kernels):
    """torch.func.jvp in q only (k, v captured: no tangent at the jvp level), and in v only."""
    x = inputs(2, 2, 9, 11, 8, F64, "cpu", seed=6)
    q, k, v, tq, tv = x["q"], x["k"], x["v"], x["tq"], x["tv"]
    drop_in = aot_sdpa.scaled_dot_product_attention
    for ours, ref, primal, tangent in (
            (lambda a: drop_in(a, k, v), lambda a: reference.attention(a, k, v), q, tq),
            (lambda a: drop_in(q, k, a), lambda a: reference.attention(q, k, a), v, tv)):
        got = torch.func.jvp(ours, (primal,), (tangent,))
        want = torch.func.jvp(ref, (primal,), (tangent,))
        for a, b in zip(got, want):
            assert max_err(a, b) <= 1e-9 * (1 + b.abs().max().item())


def test_explicit_second_order_ops_plumbing_cpu(reference_kernels):
    """sdpa_bwd double backward, sdpa_jvp and sdpa_fwd_jvp's tangent backward, sdpa_hvp."""
    x = inputs(2, 2, 9, 11, 8, F64, "cpu", seed=3)
    q, k, v, do, tq, tk, tv, w = (x[n].clone().requires_grad_() for n in
                                  ("q", "k", "v", "do", "tq", "tk", "tv", "w"))
    ref_g = torch.func.vjp(reference.attention, x["q"], x["k"], x["v"])[1]
    # reverse through the explicit backward = the HVP and the JVP (symmetry of the Hessian)
    _, m, l = reference.forward(x["q"], x["k"], x["v"])
    dq, dk, dv = aot_sdpa.sdpa_bwd(q, k, v, do, m, l)
    s = (dq * x["tq"]).sum() + (dk * x["tk"]).sum() + (dv * x["tv"]).sum()
    got = torch.autograd.grad(s, (q, k, v, do))
    exp_x = reference.sdpa_hvp(x["q"], x["k"], x["v"], x["do"], x["tq"], x["tk"], x["tv"])
    exp_do = reference.jvp(x["q"], x["k"], x["v"], x["tq"], x["tk"], x["tv"], m, l)
    for a, b in zip(got, (*exp_x, exp_do)):
        assert max_err(a, b) < 1e-10
    # reverse through sdpa_fwd_jvp's tangent: x gets J^T w + H_w t, t gets J^T w
    _, _, _, t_out = aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv)
    got = torch.autograd.grad((t_out * x["w"]).sum(), (q, k, v, tq, tk, tv))
    exp_t = ref_g(x["w"])
    exp_x = reference.bwd_jvp(x["q"], x["k"], x["v"], x["w"], m, l, x["tq"], x["tk"], x["tv"])
    for a, b in zip(got, (*exp_x, *exp_t)):
        assert max_err(a, b) < 1e-10
    # sdpa_hvp is not differentiable: a third derivative raises
    h = aot_sdpa.sdpa_hvp(q, k, v, do, tq, tk, tv)
    with pytest.raises(NotImplementedError, match="third derivative"):
        torch.autograd.grad(h[0].sum(), q)


# ------------------------------------------------------------------------------------ GPU
# (dtype, factor, rel_atol): ours <= factor x (the same composition through torch's math in
# the dtype) + rel_atol x max|ref|. 16-bit factor 3: dS and dS. are rounded to the input dtype
# before the tensor-core products, as in the backward's dq (tests/test_backward_gpu.py).
GPU_DTYPES = [(torch.float16, 3.0, 2e-3), (torch.bfloat16, 3.0, 1.6e-2), (torch.float32, 2.0, 1e-6)]


def _report(line: str) -> None:
    path = os.environ.get("AOT_SDPA_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,factor,rel_atol", GPU_DTYPES, ids=lambda x: str(x))
@pytest.mark.parametrize("name", list(COMPOSITIONS))
def test_composition_gpu(name, dtype, factor, rel_atol):
    x = inputs(*_shape(name), dtype, "cuda", seed=len(name))
    ours = _run(name, aot_sdpa.scaled_dot_product_attention, x)
    if ours is None:
        _report(f"| {name} | {str(dtype)[6:]} | raises NotImplementedError | |")
        return
    x64 = {n: t.double() for n, t in x.items()}
    ref = flat(COMPOSITIONS[name](reference.attention, x64))
    same = flat(COMPOSITIONS[name](reference.attention, x))
    worst, allow = 0.0, 0.0
    for a, b, c in zip(ours, ref, same):
        assert a.dtype == c.dtype and a.shape == b.shape
        e, e_torch = max_err(a, b), max_err(c, b)
        budget = factor * e_torch + rel_atol * b.abs().max().item()
        worst, allow = max(worst, e), max(allow, budget)
        assert e <= budget, f"{name}: max error {e:.3e} > {factor} x torch's {e_torch:.3e} + atol"
    _report(f"| {name} | {str(dtype)[6:]} | {worst:.2e} | {allow:.2e} |")

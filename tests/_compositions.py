"""Derivative compositions through an attention function, for the composition tests.

Each entry maps a name to `fn(attn, x)`, where `attn(q, k, v)` is the attention under test and
`x` holds float inputs (q, k, v, do, tq, tk, tv, w: a weight for scalar losses). It returns a
tuple of tensors: the same call through `aot_sdpa.reference.attention` in float64 is the
reference. UNSUPPORTED names the compositions that must raise NotImplementedError instead.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD
from torch import func


def _loss(attn, w):
    return lambda q, k, v: (attn(q, k, v) * w).sum()


def _sq_loss(attn, w):  # nonlinear in o: its cotangent moves with x (tdo != 0 under jvp)
    return lambda q, k, v: (attn(q, k, v).square() * w).sum()


def _leaves(x, names):
    return [x[n].detach().clone().requires_grad_() for n in names]


def backward(attn, x):
    q, k, v = _leaves(x, "qkv")
    attn(q, k, v).backward(x["do"])
    return q.grad, k.grad, v.grad


def double_backward(attn, x):
    q, k, v, do = _leaves(x, ("q", "k", "v", "do"))
    g = torch.autograd.grad(attn(q, k, v), (q, k, v), do, create_graph=True)
    s = sum((gi * t).sum() for gi, t in zip(g, (x["tq"], x["tk"], x["tv"])))
    return torch.autograd.grad(s, (q, k, v, do))


def grad_penalty_backward(attn, x):
    q, k, v = _leaves(x, "qkv")
    g = torch.autograd.grad(_sq_loss(attn, x["w"])(q, k, v), (q, k, v), create_graph=True)
    sum(gi.square().sum() for gi in g).backward()
    return q.grad, k.grad, v.grad


def jvp_of_grad(attn, x):
    g = func.grad(_loss(attn, x["w"]), argnums=(0, 1, 2))
    return func.jvp(g, (x["q"], x["k"], x["v"]), (x["tq"], x["tk"], x["tv"]))[1]


def jvp_of_grad_nonlinear(attn, x):
    g = func.grad(_sq_loss(attn, x["w"]), argnums=(0, 1, 2))
    return func.jvp(g, (x["q"], x["k"], x["v"]), (x["tq"], x["tk"], x["tv"]))[1]


def forward_ad_over_backward(attn, x):
    with fwAD.dual_level():
        q, k, v = (fwAD.make_dual(x[n], x["t" + n]).requires_grad_() for n in "qkv")
        g = torch.autograd.grad(attn(q, k, v), (q, k, v), x["do"], create_graph=True)
        return tuple(fwAD.unpack_dual(gi).tangent for gi in g)


def hessian(attn, x):
    f = lambda q: _loss(attn, x["w"])(q, x["k"], x["v"])
    return (func.hessian(f)(x["q"]),)


def jacfwd(attn, x):
    return func.jacfwd(attn, argnums=(0, 1, 2))(x["q"], x["k"], x["v"])


def jacrev(attn, x):
    return func.jacrev(attn, argnums=(0, 1, 2))(x["q"], x["k"], x["v"])


def func_jvp(attn, x):
    return func.jvp(attn, (x["q"], x["k"], x["v"]), (x["tq"], x["tk"], x["tv"]))


def forward_ad(attn, x):
    with fwAD.dual_level():
        out = attn(*(fwAD.make_dual(x[n], x["t" + n]) for n in "qkv"))
        return fwAD.unpack_dual(out)


def grad_through_jvp(attn, x):
    t = (x["tq"], x["tk"], x["tv"])
    f = lambda q, k, v: (func.jvp(attn, (q, k, v), t)[1] * x["w"]).sum()
    return func.grad(f, argnums=(0, 1, 2))(x["q"], x["k"], x["v"])


def backward_through_forward_ad_tangent(attn, x):
    # rCM-style: tangents are ordinary inputs that require grad; loss on primal and tangent
    q, k, v, tq, tk, tv = _leaves(x, ("q", "k", "v", "tq", "tk", "tv"))
    with fwAD.dual_level():
        out = attn(fwAD.make_dual(q, tq), fwAD.make_dual(k, tk), fwAD.make_dual(v, tv))
        o, t = fwAD.unpack_dual(out)
        loss = (o * x["do"]).sum() + (t * x["w"]).sum()
    return torch.autograd.grad(loss, (q, k, v, tq, tk, tv))


def vmap(attn, x):
    q, k, v = (torch.stack([x[n], 0.5 * x[n]]) for n in "qkv")  # (2, B, H, T, D)
    return (func.vmap(attn)(q, k, v),)


def vmap_dim2_shared_kv(attn, x):
    q = torch.stack([x["q"], -x["q"], 2 * x["q"]], dim=2)  # vmap over dim 2 of (B, H, 3, T, D)
    return (func.vmap(attn, in_dims=(2, None, None))(q, x["k"], x["v"]),)


def nested_vmap(attn, x):
    q, k, v = (torch.stack([torch.stack([x[n], -x[n]]), torch.stack([0.5 * x[n], x[n]])])
               for n in "qkv")  # (2, 2, B, H, T, D)
    return (func.vmap(func.vmap(attn))(q, k, v),)


def vmap_grad_per_sample(attn, x):
    w = x["w"]

    def loss_one(q, k, v, w1):  # one sample (H, T, D), batch of one inside
        return (attn(q[None], k[None], v[None])[0] * w1).sum()

    return func.vmap(func.grad(loss_one, argnums=(0, 1, 2)))(x["q"], x["k"], x["v"], w)


def vmap_jvp(attn, x):
    def jvp_one(q, k, v, tq, tk, tv):
        return func.jvp(attn, (q, k, v), (tq, tk, tv))[1]

    stack = lambda n: torch.stack([x[n], 2 * x[n]])
    return (func.vmap(jvp_one)(*(stack(n) for n in ("q", "k", "v", "tq", "tk", "tv"))),)


class _Block(torch.nn.Module):
    def __init__(self, attn, D, dtype, device):
        super().__init__()
        self.attn = attn
        self.proj = torch.nn.Linear(D, 3 * D, bias=False, dtype=dtype, device=device)

    def forward(self, h):  # h: (B, H, T, D)
        q, k, v = self.proj(h).chunk(3, dim=-1)
        return self.attn(q.contiguous(), k.contiguous(), v.contiguous())


def functional_call_grad(attn, x):
    D = x["q"].shape[-1]
    block = _Block(attn, D, x["q"].dtype, x["q"].device)
    g = torch.Generator(device="cpu").manual_seed(0)
    weight = (torch.randn(3 * D, D, generator=g, dtype=torch.float64) / D ** 0.5).to(x["q"])
    params = {"proj.weight": weight}
    f = lambda p: (func.functional_call(block, p, (x["q"],)) * x["w"]).sum()
    return (func.grad(f)(params)["proj.weight"],)


def jacfwd_of_jacfwd(attn, x):
    f = lambda q: _loss(attn, x["w"])(q, x["k"], x["v"])
    return (func.jacfwd(func.jacfwd(f))(x["q"]),)


def third_order(attn, x):
    f = lambda q: _loss(attn, x["w"])(q, x["k"], x["v"])
    return (func.jacrev(func.hessian(f))(x["q"]),)


COMPOSITIONS = {f.__name__: f for f in (
    backward, double_backward, grad_penalty_backward, jvp_of_grad, jvp_of_grad_nonlinear,
    forward_ad_over_backward, hessian, jacfwd, jacrev, func_jvp, forward_ad, grad_through_jvp,
    backward_through_forward_ad_tangent, vmap, vmap_dim2_shared_kv, nested_vmap,
    vmap_grad_per_sample, vmap_jvp, functional_call_grad, jacfwd_of_jacfwd, third_order)}
#: compositions no kernel computes: they must raise NotImplementedError, never return
UNSUPPORTED = {"jacfwd_of_jacfwd", "third_order"}
#: compositions that differentiate in forward mode: through sdpa_fwd_jvp's outputs that would
#: be forward-over-forward (a tangent of its tangent output), which no kernel computes
FORWARD_MODE = {"jvp_of_grad", "jvp_of_grad_nonlinear", "forward_ad_over_backward", "hessian",
                "jacfwd", "func_jvp", "forward_ad", "grad_through_jvp",
                "backward_through_forward_ad_tangent", "vmap_jvp"} | UNSUPPORTED
#: the small shapes for jacobians and hessians (their outputs grow as the square of the input)
SMALL = {"hessian", "jacfwd", "jacrev", "jacfwd_of_jacfwd", "third_order"}


def inputs(B, H, T, M, D, dtype, device, seed=0, Hkv=None):
    """Hkv: key/value heads (grouped-query attention), H by default."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    Hkv = H if Hkv is None else Hkv
    shapes = {"q": (B, H, T, D), "k": (B, Hkv, M, D), "v": (B, Hkv, M, D), "do": (B, H, T, D),
              "tq": (B, H, T, D), "tk": (B, Hkv, M, D), "tv": (B, Hkv, M, D),
              "w": (B, H, T, D)}
    return {n: torch.randn(s, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
            for n, s in shapes.items()}


def flat(outputs):
    """The tensors of a composition's result, in order (nested tuples and dicts flattened)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    out = []
    for o in outputs:
        out.extend(flat(o))
    return out

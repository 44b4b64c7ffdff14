"""Host time of a training call's backward at a small shape, (1, 12, 197, 64) fp16 (ViT-B at
batch 1: the GPU work is ~20 us, so an eager loop measures the host): ours through autograd
against torch's default SDPA, and the parts of ours: the public sdpa_bwd, the _Bwd
autograd.Function that _Fwd.backward calls (so that double backward works), _ops.bwd below it,
and a trivial Python autograd.Function (what any Python backward node costs in torch's engine).
"before" lines time the backward as it was before 9166f21 (monkeypatched here): _Fwd.backward
through _Bwd.apply even where nothing differentiates the call."""

import contextlib

import torch
import torch.nn.functional as F

import aot_sdpa
from aot_sdpa import _autograd, _ops

from _harness import interleaved_rounds, wall_ms


class _Identity(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g


def us(fn, n=2000):
    return wall_ms(fn, n, warmup=100) * 1e3


def main():
    shape = (1, 12, 197, 64)
    q, k, v, do = (torch.randn(shape, device="cuda", dtype=torch.float16) for _ in range(4))
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    sdpa = aot_sdpa.scaled_dot_product_attention
    o_torch, o_ours = F.scaled_dot_product_attention(qg, kg, vg), sdpa(qg, kg, vg)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    y = _Identity.apply(qg)
    grads = lambda out: torch.autograd.grad(out, (qg, kg, vg), do, retain_graph=True)  # noqa: E731
    eager = _autograd._EAGER.bwd

    def before(fn):
        def run():
            _autograd._EAGER.bwd = _autograd._Bwd.apply
            try:
                fn()
            finally:
                _autograd._EAGER.bwd = eager
        return run

    def step(attn):
        return lambda: torch.autograd.grad(attn(qg, kg, vg), (qg, kg, vg), do)

    parts = {
        "torch: forward with grad": lambda: F.scaled_dot_product_attention(qg, kg, vg),
        "ours: forward with grad": lambda: sdpa(qg, kg, vg),
        "torch: autograd.grad": lambda: grads(o_torch),
        "ours: autograd.grad": lambda: grads(o_ours),
        "before: autograd.grad, via apply": before(lambda: grads(o_ours)),
        "torch: forward + grad": step(F.scaled_dot_product_attention),
        "ours: forward + grad": step(sdpa),
        "before: forward + grad, via apply": before(step(sdpa)),
        "ours: sdpa_bwd (public)": lambda: aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o),
        "_Bwd.apply (no grad)": lambda: _autograd._Bwd.apply(q, k, v, do, o, m, l, None, 0, None),
        "_ops.bwd": lambda: _ops.bwd(q, k, v, do, m, l, o, None, 0, None),
        "identity Function: grad": lambda: torch.autograd.grad(y, qg, do, retain_graph=True),
    }
    # both ways give the same gradients bit for bit
    ref, got = grads(o_ours), []
    before(lambda: got.extend(grads(o_ours)))()
    print("gradients equal before and now:", len(got) == 3 and all(map(torch.equal, ref, got)))
    def timer(name, fn):
        grad_mode = torch.no_grad if name.startswith("_Bwd") else contextlib.nullcontext

        def run():
            with grad_mode():
                return us(fn)
        return run

    # interleaved rounds (profile_host.py: a leased host's speed drifts)
    rounds = interleaved_rounds({name: timer(name, fn) for name, fn in parts.items()}, 3)
    for name, t in rounds.items():
        t.sort()
        print(f"{name:<36}{t[1]:8.2f} us  (rounds {t[0]:.2f} .. {t[2]:.2f})")


if __name__ == "__main__":
    main()

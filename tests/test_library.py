"""The torch.library custom operators (torch.ops.aot_sdpa.*): opcheck, torch.compile with
fullgraph=True (inference and training), torch.export.

CPU: the kernels are the float64 stand-ins (`reference_kernels`, tests/conftest.py) behind
the same _ops functions the operators call, which checks the registrations (schemas, fake
implementations, autograd formulas) and the tracing paths; backend "aot_eager" traces exactly
as inductor does up to code generation. GPU: the same on the real kernels, with inductor."""

from __future__ import annotations

import pytest
import torch
from torch.library import opcheck

import aot_sdpa
from aot_sdpa import reference

from _helpers import max_err, qkv

F32 = torch.float32  # the operators' contract (checked by the fake implementations too)
OPS = torch.ops.aot_sdpa


def _x(B=2, H=2, T=5, M=7, D=8, dtype=F32, device="cpu", seed=0, grad=False, Hkv=None,
       bthd=False):
    """q, k, v, tq, tk, tv, do, tdo; Hkv: key/value heads (grouped-query); bthd: the
    query-like tensors as (B, T, H, D) buffers seen as (B, H, T, D)."""
    g = torch.Generator(device=device).manual_seed(seed)
    Hkv = H if Hkv is None else Hkv

    def make(h, n, query_like):
        if bthd and query_like:
            x = torch.randn(B, n, h, D, dtype=dtype, device=device, generator=g).transpose(1, 2)
        else:
            x = torch.randn(B, h, n, D, dtype=dtype, device=device, generator=g)
        return x.requires_grad_(grad)

    spec = [(H, T, True), (Hkv, M, False), (Hkv, M, False)] * 2 + [(H, T, True)] * 2
    return [make(*s) for s in spec]


def _op_cases(x):
    q, k, v, tq, tk, tv, do, tdo = x
    _, m, l = reference.forward(q.detach(), k.detach(), v.detach())
    o = reference.attention(q.detach(), k.detach(), v.detach())
    return {
        "fwd": (OPS.fwd, (q, k, v, None)),
        "bwd": (OPS.bwd, (q, k, v, do, o, m, l, 0.3)),
        "jvp": (OPS.jvp, (q, k, v, tq, tk, tv, m, l, None)),
        "fwd_jvp": (OPS.fwd_jvp, (q, k, v, tq, tk, tv, None)),
        "bwd_jvp": (OPS.bwd_jvp, (q, k, v, do, m, l, tq, tk, tv, tdo, None)),
    }


# opcheck's autograd test runs the op's backward; bwd_jvp's raises (third order) by design
OPCHECK = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")


def _bias(T=5, M=7, seed=1):
    """A (1, 1, T, M) float32 bias with -inf entries: the operators' `bias` argument."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(1, 1, T, M, generator=g)
    return b.masked_fill(torch.rand(1, 1, T, M, generator=g) < 0.3, float("-inf"))


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "bias"])
@pytest.mark.parametrize("causal", [0, 2], ids=["full", "causal-bottom-right"])
@pytest.mark.parametrize("layout", [{}, {"Hkv": 1, "bthd": True}, {"Hkv": 2, "H": 4}],
                         ids=["mha", "mqa-bthd", "gqa"])
@pytest.mark.parametrize("op", ["fwd", "bwd", "jvp", "fwd_jvp", "bwd_jvp"])
def test_opcheck_cpu(reference_kernels, op, layout, causal, masked):
    bias = _bias() if masked else None
    fn, args = _op_cases(_x(**layout))[op]
    opcheck(fn, (*args, causal, bias), test_utils=OPCHECK)
    if op != "bwd_jvp":
        fn2, args2 = _op_cases(_x(grad=True, **layout))[op]
        opcheck(fn2, (*args2, causal, bias), test_utils=("test_autograd_registration",))


def test_fake_implementation_checks_the_contract():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty(2, 3, 5, 257)
        with pytest.raises(ValueError, match="head dim"):
            OPS.fwd(q, q, q, None)
        q = torch.empty(2, 3, 5, 16)
        with pytest.raises(TypeError, match="causal must be"):  # codes are 0, 1, 2
            OPS.fwd(q, q, q, None, 3)
        q, k = torch.empty(2, 3, 5, 16), torch.empty(2, 3, 7, 16)
        o, m, l = OPS.fwd(q, k, k, None)
        assert o.shape == q.shape and m.shape == l.shape == (2, 3, 5) and m.dtype == torch.float32


def _attention_loss(q, k, v, do):
    """A training step's attention part through the drop-in: the output and <o, do>, whose
    backward (run outside the compiled function, as a training loop does) gives dq, dk, dv.
    (torch.autograd.grad inside a compiled function is not traced by torch 2.11's dynamo.)"""
    o = aot_sdpa.scaled_dot_product_attention(q, k, v)
    return o, (o.float() * do.float()).sum()


def _step(fn, q, k, v, do):
    xs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    o, loss = fn(*xs, do)
    loss.backward()
    return o.detach(), [t.grad for t in xs]


def test_compile_fullgraph_inference_and_training_cpu(reference_kernels):
    q, k, v, *_, do, _ = _x()
    infer = torch.compile(aot_sdpa.scaled_dot_product_attention, fullgraph=True,
                          backend="aot_eager")
    want = aot_sdpa.scaled_dot_product_attention(q, k, v)
    assert max_err(infer(q, k, v), want) < 1e-5

    def train(q, k, v, do):
        o = aot_sdpa.scaled_dot_product_attention(q, k, v)
        return (o * do).sum()

    step = torch.compile(train, fullgraph=True, backend="aot_eager")
    xs = [t.clone().requires_grad_() for t in (q, k, v)]
    step(*xs, do).backward()
    ref = [t.clone().requires_grad_() for t in (q, k, v)]
    train(*ref, do).backward()
    for a, b in zip(xs, ref):
        assert max_err(a.grad, b.grad) < 1e-5


def test_compile_fullgraph_causal_cpu(reference_kernels):
    """is_causal through the custom operators: the compiled forward and its backward equal
    the causal reference's (the operators carry the causal code to every rule)."""
    q, k, v, *_, do, _ = _x(T=9, M=6)

    def train(q, k, v, do):
        return (aot_sdpa.scaled_dot_product_attention(q, k, v, is_causal=True) * do).sum()

    xs = [t.clone().requires_grad_() for t in (q, k, v)]
    torch.compile(train, fullgraph=True, backend="aot_eager")(*xs, do).backward()
    ref = [t.clone().requires_grad_() for t in (q, k, v)]
    (reference.attention(*ref, causal=True) * do).sum().backward()
    for a, b in zip(xs, ref):
        assert max_err(a.grad, b.grad) < 1e-5


def test_compile_fullgraph_masked_cpu(reference_kernels):
    """attn_mask through the custom operators: a compiled training step with a boolean
    key-padding mask equals the masked reference's (the operators carry the bias to every
    rule), and the explicit op's mask= with causal too."""
    q, k, v, *_, do, _ = _x(B=3, T=9, M=6)
    keep = torch.arange(6)[None, :] < torch.tensor([6, 4, 0])[:, None]
    mask = keep[:, None, None, :]

    def train(q, k, v, do):
        o = aot_sdpa.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        o2 = aot_sdpa.triton_sdpa_fused(q, k, v, causal="bottom_right", mask=mask)[0]
        return (o * do).sum() + (o2 * do).sum()

    xs = [t.clone().requires_grad_() for t in (q, k, v)]
    torch.compile(train, fullgraph=True, backend="aot_eager")(*xs, do).backward()
    ref = [t.clone().requires_grad_() for t in (q, k, v)]
    ((reference.attention(*ref, mask=mask) * do).sum()
     + (reference.attention(*ref, causal="bottom_right", mask=mask) * do).sum()).backward()
    for a, b in zip(xs, ref):
        assert max_err(a.grad, b.grad) < 1e-5


def test_compile_backward_takes_a_gradient_of_any_layout_cpu(reference_kernels):
    """The operators' autograd formulas bring upstream gradients to a unit last stride, as
    the eager rules do (here dO arrives transposed, with stride 1 in no dimension but T)."""
    q, k, v, *_ = _x()
    w = torch.randn(q.shape[:2] + (q.shape[3], q.shape[2]))

    def loss(q, k, v):
        return (aot_sdpa.scaled_dot_product_attention(q, k, v).transpose(-1, -2) * w).sum()

    got = [t.clone().requires_grad_() for t in (q, k, v)]
    torch.compile(loss, fullgraph=True, backend="aot_eager")(*got).backward()
    want = [t.clone().requires_grad_() for t in (q, k, v)]
    loss(*want).backward()
    for a, b in zip(got, want):
        assert max_err(a.grad, b.grad) < 1e-5


def test_compile_fullgraph_explicit_ops_cpu(reference_kernels):
    q, k, v, tq, tk, tv, do, _ = _x()

    def f(q, k, v, tq, tk, tv, do):
        o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
        dq, dk, dv = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)
        to = aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv)[3]
        hq, _, _ = aot_sdpa.sdpa_hvp(q, k, v, do, tq, tk, tv)
        return o, dq, dk, dv, to, hq

    got = torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, v, tq, tk, tv, do)
    for a, b in zip(got, f(q, k, v, tq, tk, tv, do)):
        assert max_err(a, b) < 1e-5


class _Block(torch.nn.Module):
    """A pre-norm transformer block calling the drop-in (q, k, v strided views of one
    projection, as models produce them)."""

    def __init__(self, width=32, heads=4):
        super().__init__()
        self.heads = heads
        self.norm = torch.nn.LayerNorm(width)
        self.qkv, self.proj = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.GELU(),
                                       torch.nn.Linear(2 * width, width))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm(x)).view(B, T, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = aot_sdpa.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(x)


def test_compile_fullgraph_model_training_cpu(reference_kernels):
    """A two-block model compiled whole (one graph, forward and backward) vs eager."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(_Block(), _Block())
    x = torch.randn(2, 9, 32)

    def grads(m):
        m.zero_grad(set_to_none=True)
        m(x).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    want = grads(model)
    got = grads(torch.compile(model, fullgraph=True, backend="aot_eager"))
    for a, b in zip(got, want):
        assert max_err(a, b) < 1e-5 * (1 + b.abs().max().item())


class _Attn(torch.nn.Module):
    def forward(self, q, k, v):
        return aot_sdpa.scaled_dot_product_attention(q, k, v) * 2


class _MaskedAttn(torch.nn.Module):
    def forward(self, q, k, v, mask):
        return aot_sdpa.scaled_dot_product_attention(q, k, v, attn_mask=mask) * 2


def test_export_cpu(reference_kernels):
    q, k, v, *_ = _x()
    ep = torch.export.export(_Attn(), (q, k, v))
    assert any("aot_sdpa.fwd" in str(n.target) for n in ep.graph.nodes)
    assert max_err(ep.module()(q, k, v), _Attn()(q, k, v)) < 1e-5
    mask = torch.rand(2, 1, 1, 7, generator=torch.Generator().manual_seed(0)) > 0.3
    ep = torch.export.export(_MaskedAttn(), (q, k, v, mask))
    assert max_err(ep.module()(q, k, v, mask), _MaskedAttn()(q, k, v, mask)) < 1e-5


@pytest.mark.gpu
def test_export_gpu():
    """torch.export of modules calling the drop-in (with and without a mask) on the GPU: the
    exported program runs the same kernels as eager, bitwise."""
    q, k, v = qkv(2, 4, 197, 197, 64, torch.float16, seed=4)
    ep = torch.export.export(_Attn(), (q, k, v))
    assert any("aot_sdpa.fwd" in str(n.target) for n in ep.graph.nodes)
    assert max_err(ep.module()(q, k, v), _Attn()(q, k, v)) == 0.0
    mask = torch.rand(2, 1, 1, 197, device="cuda") > 0.2
    ep = torch.export.export(_MaskedAttn(), (q, k, v, mask))
    assert max_err(ep.module()(q, k, v, mask), _MaskedAttn()(q, k, v, mask)) == 0.0


@pytest.mark.gpu
def test_opcheck_masked_gpu():
    for fn, args in _op_cases(_x(dtype=torch.float32, device="cuda")).values():
        opcheck(fn, (*args, 0, _bias().cuda()), test_utils=OPCHECK)


# ------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.parametrize("op", ["fwd", "bwd", "jvp", "fwd_jvp", "bwd_jvp"])
def test_opcheck_gpu(op):
    fn, args = _op_cases(_x(dtype=torch.float32, device="cuda"))[op]
    opcheck(fn, args, test_utils=OPCHECK)
    if op != "bwd_jvp":
        fn2, args2 = _op_cases(_x(dtype=torch.float32, device="cuda", grad=True))[op]
        opcheck(fn2, args2, test_utils=("test_autograd_registration",))


@pytest.mark.gpu
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_compile_training_step_matches_eager_gpu(mode):
    q, k, v = qkv(2, 4, 197, 197, 64, torch.float16, seed=3)
    do = torch.randn_like(q)
    want_o, want_g = _step(_attention_loss, q, k, v, do)
    compiled = torch.compile(_attention_loss, fullgraph=True, mode=mode)
    for _ in range(3):  # reduce-overhead records a CUDA graph, then replays it
        got_o, got_g = _step(compiled, q, k, v, do)
    # same kernels, same inputs: compiled results equal eager ones
    assert max_err(got_o, want_o) == 0.0
    for a, b in zip(got_g, want_g):
        assert max_err(a, b) == 0.0

import pytest
import torch
import torch.autograd.forward_ad as fwAD

from aot_sdpa import _autograd, _ops, reference

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_two = pytest.mark.skip(reason="needs two CUDA GPUs")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        if "multigpu" in item.keywords and (not HAS_CUDA or torch.cuda.device_count() < 2):
            item.add_marker(skip_two)


@pytest.fixture(autouse=True)
def _strict_fp32():
    # PyTorch's own float32 comparisons must be true fp32, never TF32.
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


# ------------------------------------------------------------- CPU stand-ins for the kernels
# The raw kernel functions of aot_sdpa._ops replaced by the float64 reference formulas behind
# the same interface, for CPU tests of everything above the kernels (autograd and torch.func
# plumbing, routing). `_plain` refuses, as the real kernels would silently not see, any tensor
# that still carries a transform.
def _plain(*ts):
    """What a kernel sees: raw storage. A tensor still carrying a transform would lose it."""
    for t in ts:
        if not isinstance(t, torch.Tensor):
            continue
        if torch._C._functorch.is_functorch_wrapped_tensor(t):
            raise AssertionError("a torch.func-wrapped tensor reached a kernel")
        if fwAD.unpack_dual(t).tangent is not None:
            raise AssertionError("a tensor with a forward-AD tangent reached a kernel")
        if torch.is_grad_enabled() and t.requires_grad:
            raise AssertionError("a tensor recording an autograd graph reached a kernel")
    return [t.detach() if isinstance(t, torch.Tensor) else t for t in ts]


def _like(x: torch.Tensor, value: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
    """value laid out as the ops lay out an output shaped like x: empty_like(x) for k/v-like
    outputs, _ops.empty_like_q(x, k) for q-like ones (for a strided view, e.g. q of a
    (B, T, 3, H, D) projection, the view's dimension order), as the operators' fake
    implementations predict."""
    return (torch.empty_like(x) if k is None else _ops.empty_like_q(x, k)).copy_(value)


def _stand_in_kernels():
    def fwd(q, k, v, scale=None, causal=0, bias=None):
        q, k, v, bias = _plain(q, k, v, bias)
        o, m, l = reference.forward(q, k, v, scale, causal, mask=bias)
        return _like(q, o, k), m, l

    def bwd(q, k, v, do, m, l, o=None, scale=None, causal=0, bias=None):
        x = _plain(q, k, v, do, m, l, bias)
        dq, dk, dv = reference.backward(*x[:6], scale, causal, mask=x[6])
        return _like(q, dq, k), _like(k, dk), _like(v, dv)

    def jvp(q, k, v, tq, tk, tv, m, l, scale=None, causal=0, bias=None):
        x = _plain(q, k, v, tq, tk, tv, m, l, bias)
        return _like(q, reference.jvp(*x[:8], scale, causal, mask=x[8]), k)

    def fwd_jvp(q, k, v, tq, tk, tv, scale=None, causal=0, bias=None):
        x = _plain(q, k, v, tq, tk, tv, bias)
        o, m, l = reference.forward(*x[:3], scale, causal, mask=x[6])
        return (_like(q, o, k), m, l,
                _like(q, reference.jvp(*x[:6], m, l, scale, causal, mask=x[6]), k))

    def bwd_jvp(q, k, v, do, m, l, tq, tk, tv, tdo=None, scale=None, causal=0, bias=None):
        x = _plain(q, k, v, do, m, l, tq, tk, tv, tdo, bias)
        hq, hk, hv = reference.bwd_jvp(*x[:10], scale=scale, causal=causal, mask=x[10])
        return _like(q, hq, k), _like(k, hk), _like(v, hv)

    def piece(i):
        return lambda q, k, v, do, m, l, scale=None, causal=0, bias=None: bwd(
            q, k, v, do, m, l, None, scale, causal, bias)[i]

    return {"fwd": fwd,
            "fwd_out": lambda q, k, v, scale=None, causal=0, bias=None: fwd(q, k, v, scale,
                                                                           causal, bias)[0],
            "bwd": bwd, "jvp": jvp, "fwd_jvp": fwd_jvp, "bwd_jvp": bwd_jvp,
            "fwd_jvp_out": lambda *a, **kw: fwd_jvp(*a, **kw)[::3],
            "bwd_dq": piece(0), "bwd_dk": piece(1), "bwd_dv": piece(2)}


@pytest.fixture
def reference_kernels(monkeypatch):
    for name, fn in _stand_in_kernels().items():
        monkeypatch.setattr(_ops, name, fn)
    # the stand-ins take float64 CPU tensors, which the kernels' contract (checked up front by
    # sdpa_hvp and hvp_fd_vjp) refuses
    monkeypatch.setattr(_autograd, "_check_hvp_args", lambda *args: None)



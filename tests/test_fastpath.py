"""The forward's C fast path (csrc/aot_fastpath.cpp) and out= (CPU: what it accepts; GPU: that
it runs, and gives exactly what the Python path gives).

The fast path must accept only calls that check_attention and check_devices accept, with the
same sizes, dtype code and scale; everything else goes to the Python checks, which raise the
named errors (tests/test_contracts.py)."""

import math

import pytest
import torch

import aot_sdpa
from aot_sdpa import _C, _ops
from aot_sdpa._checks import check_attention

from _helpers import operands, qkv

F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32
ACCEPTS = _C._fwd_fast_accepts


def _t(*shape, dtype=F16, device="cpu"):
    return torch.zeros(shape, dtype=dtype, device=device)


def _bthd(B, H, T, D, dtype=F16):  # a (B, T, H, D) tensor seen as (B, H, T, D)
    return torch.zeros(B, T, H, D, dtype=dtype).transpose(1, 2)


# (id, (q, k, v), scale, causal): calls the fast path must take
TAKEN = [
    ("fp16", (_t(1, 8, 128, 64), _t(1, 8, 128, 64), _t(1, 8, 128, 64)), None, 0),
    ("bf16 ragged", (_t(2, 3, 113, 72, dtype=BF16), *(_t(2, 3, 203, 72, dtype=BF16),) * 2),
     None, 1),
    ("fp32 D=128", (_t(1, 2, 5, 128, dtype=F32), *(_t(1, 2, 7, 128, dtype=F32),) * 2), 0.3, 2),
    ("T=1 D=1", (_t(1, 1, 1, 1), _t(1, 1, 3, 1), _t(1, 1, 3, 1)), None, 0),
    ("T=0", (_t(1, 2, 0, 16), _t(1, 2, 3, 16), _t(1, 2, 3, 16)), None, 0),
    ("B=0", (_t(0, 2, 5, 16), _t(0, 2, 3, 16), _t(0, 2, 3, 16)), None, 0),
    ("D=256 fp16", (_t(1, 1, 4, 256), _t(1, 1, 4, 256), _t(1, 1, 4, 256)), -1.5, 0),
    ("(B, T, H, D) views", (_bthd(2, 3, 50, 40), _bthd(2, 3, 60, 40), _bthd(2, 3, 60, 40)),
     None, 0),
    ("k, v broadcast batch", (_t(4, 2, 5, 16), *(_t(1, 2, 7, 16).expand(4, 2, 7, 16),) * 2),
     None, 0),
]


@pytest.mark.parametrize("case,args,scale,causal", TAKEN, ids=[c[0] for c in TAKEN])
def test_fast_path_accepts_what_check_attention_accepts_with_the_same_result(case, args, scale,
                                                                              causal):
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # the hook returns the code before TF32
    try:
        assert ACCEPTS(*args, scale, causal) == check_attention(*args, scale)
    finally:
        torch.set_float32_matmul_precision(old)


class _Sub(torch.Tensor):
    pass


_q, _k, _v = qkv(1, 2, 5, 7, 16, F16, device="cpu")
# (id, (q, k, v), scale, causal): calls the fast path must leave to the Python path
LEFT = [
    ("q not a tensor", ([1.0], _k, _v), None, 0),
    ("k None", (_q, None, _v), None, 0),
    ("float64", qkv(1, 2, 5, 7, 16, torch.float64, device="cpu"), None, 0),
    ("int32", tuple(x.to(torch.int32) for x in (_q, _k, _v)), None, 0),
    ("mixed dtype k", (_q, _k.to(BF16), _v), None, 0),
    ("mixed dtype v", (_q, _k, _v.to(F32)), None, 0),
    ("rank 3 q", (_q[0], _k, _v), None, 0),
    ("rank 5 k", (_q, _k[None], _v), None, 0),
    ("batch mismatch", (_t(2, 2, 5, 16), _k, _v), None, 0),
    ("grouped-query heads (valid: folded by Python)", (_t(1, 4, 5, 16), _k, _v), None, 0),
    ("D mismatch", (_t(1, 2, 5, 32), _k, _v), None, 0),
    ("Dv != D", (_q, _k, _t(1, 2, 7, 8)), None, 0),
    ("v M mismatch", (_q, _k, _t(1, 2, 6, 16)), None, 0),
    ("D = 0", (_t(1, 2, 5, 0), _t(1, 2, 7, 0), _t(1, 2, 7, 0)), None, 0),
    ("D > 256", (_t(1, 2, 5, 264), _t(1, 2, 7, 264), _t(1, 2, 7, 264)), None, 0),
    ("fp32 D > 128", tuple(_t(1, 1, 5, 136, dtype=F32) for _ in range(3)), None, 0),
    ("M = 0", (_q, _t(1, 2, 0, 16), _t(1, 2, 0, 16)), None, 0),
    ("q last stride", (_t(1, 2, 16, 5).transpose(-1, -2), _k, _v), None, 0),
    ("v last stride", (_q, _k, _t(1, 2, 16, 7).transpose(-1, -2)), None, 0),
    ("scale int (valid: Python converts)", (_q, _k, _v), 1, 0),
    ("scale str", (_q, _k, _v), "0.1", 0),
    ("scale bool", (_q, _k, _v), True, 0),
    ("scale tensor", (_q, _k, _v), torch.tensor(0.1), 0),
    ("scale nan", (_q, _k, _v), math.nan, 0),
    ("scale inf", (_q, _k, _v), -math.inf, 0),
    ("causal 3", (_q, _k, _v), None, 3),
    ("causal -1", (_q, _k, _v), None, -1),
    ("causal str", (_q, _k, _v), None, "top_left"),
    ("tensor subclass", (_q.as_subclass(_Sub), _k, _v), None, 0),
    ("parameter", (torch.nn.Parameter(_q), _k, _v), None, 0),
    ("B*H too large", (torch.empty(2**31, 1, 1, 16, device="meta", dtype=F16),
                       *(torch.empty(1, 1, 1, 16, device="meta", dtype=F16)
                         .expand(2**31, 1, 1, 16) for _ in range(2))), None, 0),
    ("T too long", (torch.empty(1, 1, 2**31 - 1000, 1, device="meta", dtype=F16),
                    *(torch.empty(1, 1, 7, 1, device="meta", dtype=F16) for _ in range(2))),
     None, 0),
]


@pytest.mark.parametrize("case,args,scale,causal", LEFT, ids=[c[0] for c in LEFT])
def test_fast_path_leaves_everything_else_to_the_python_checks(case, args, scale, causal):
    assert ACCEPTS(*args, scale, causal) is None


def test_fast_path_answers_none_off_the_gpu():
    """CPU or meta tensors (or a torch without CUDA): None, and the Python path raises."""
    for dev in ("cpu", "meta"):
        q, k, v = (_t(1, 2, 5, 16, device=dev) for _ in range(3))
        assert ACCEPTS(q, k, v, None, 0) is not None  # everything but the device is fine
        assert _C._fwd_fast(q, k, v, None, 0, True, None) is None
        with pytest.raises(ValueError, match=f"q is on {dev}; aot_sdpa kernels need CUDA"):
            aot_sdpa.triton_sdpa_fused(q, k, v)


def _out(B=1, H=2, T=5, D=16, dtype=F16):
    return _t(B, H, T, D, dtype=dtype), _t(B, H, T, dtype=F32), _t(B, H, T, dtype=F32)


_big = _t(2, 1, 2, 5, dtype=F32)
_wide = _t(1, 2, 10, dtype=F32)
OUT_CASES = [
    ("not a tuple", lambda: _out()[0], TypeError, r"out must be a tuple \(o, m, l\) of three"),
    ("two tensors", lambda: _out()[:2], TypeError, r"tuple \(o, m, l\) of three tensors, got "
     r"tuple of length 2"),
    ("m not a tensor", lambda: (_out()[0], None, _out()[2]), TypeError,
     r"out\[1\] must be a torch\.Tensor"),
    ("o dtype", lambda: (_t(1, 2, 5, 16, dtype=BF16), *_out()[1:]), TypeError,
     r"out\[0\] \(o\) has dtype torch\.bfloat16 but q has torch\.float16"),
    ("o shape", lambda: (_t(1, 2, 6, 16), *_out()[1:]), ValueError,
     r"out\[0\] \(o\) has shape \(1, 2, 6, 16\) but must be shaped like q"),
    ("o last stride", lambda: (_t(1, 2, 16, 5).transpose(-1, -2), *_out()[1:]), ValueError,
     r"out\[0\] \(o\) must have stride 1 in its last"),
    ("m dtype", lambda: (_out()[0], _t(1, 2, 5), _out()[2]), TypeError,
     r"out\[1\] \(m\) must be float32 row stats"),
    ("l shape", lambda: (*_out()[:2], _t(1, 2, 4, dtype=F32)), ValueError,
     r"out\[2\] \(l\) must have shape \(B, H, T\) = \(1, 2, 5\)"),
    ("m, l strides differ", lambda: (_out()[0], _out()[1], _wide[..., ::2]), ValueError,
     r"out\[1\] \(m\) has strides \(10, 5, 1\) but out\[2\] \(l\) has \(20, 10, 2\): they "
     r"must match"),
    ("m is l", lambda: (_out()[0], _big[0], _big[0]), ValueError,
     r"out\[1\] overlaps out\[2\] in memory: the forward writes both"),
    ("o is q", lambda: (_q, *_out()[1:]), ValueError,
     r"out\[0\] overlaps q in memory: the forward writes out while it reads its inputs"),
    ("o inside v", lambda: (_v[:, :, 1:6], *_out()[1:]), ValueError, r"out\[0\] overlaps v"),
    ("o requires grad", lambda: (_out()[0].requires_grad_(), *_out()[1:]), ValueError,
     r"out\[0\] requires grad: out= tensors take no part in autograd"),
    ("out on meta", lambda: (_t(1, 2, 5, 16, device="meta"), *_out()[1:]), ValueError,
     r"out\[0\] is on meta but q is on cpu"),
    ("cpu", lambda: _out(), ValueError, r"q is on cpu; aot_sdpa kernels need CUDA"),
]


@pytest.mark.parametrize("case,make,exc,pattern", OUT_CASES, ids=[c[0] for c in OUT_CASES])
def test_out_contract(case, make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        aot_sdpa.triton_sdpa_fused(_q, _k, _v, out=make())


def test_out_is_not_differentiable():
    with pytest.raises(RuntimeError, match=r"out=\.\.\.\) does not support automatic diff"):
        aot_sdpa.triton_sdpa_fused(_q.clone().requires_grad_(), _k, _v, out=_out())


def test_out_with_grouped_heads_must_fold_without_a_copy():
    q = _t(1, 4, 5, 16)
    o = _t(1, 5, 4, 16).transpose(1, 2)  # (B, H, T, D) whose heads do not fold into rows
    with pytest.raises(ValueError, match=r"viewable as the kernels' rows"):
        aot_sdpa.triton_sdpa_fused(q, _k, _v, out=(o, _t(1, 4, 5, dtype=F32),
                                                   _t(1, 4, 5, dtype=F32)))


# ---- GPU: the fast path runs and gives what the Python path gives, bit for bit ----

def _python_path(monkeypatch):
    monkeypatch.setattr(_ops, "_fwd_fast", lambda *a: None)


GPU_CASES = [  # (id, B, H, T, M, D, dtype, scale, causal, layout)
    ("fp16", 2, 3, 197, 197, 64, F16, None, False, "bhtd"),
    ("bf16 T<M top-left", 1, 2, 67, 131, 64, BF16, None, True, "bhtd"),
    ("fp16 T>M bottom-right", 1, 2, 131, 67, 40, F16, 0.3, "bottom_right", "bhtd"),
    ("fp32 D=72 bthd", 2, 3, 50, 60, 72, F32, None, False, "bthd"),
    ("fp16 D=128 tier", 2, 2, 131, 200, 128, F16, None, False, "bhtd"),
    ("bf16 D=256", 1, 2, 40, 50, 256, BF16, -0.2, True, "bhtd"),
]


def _gpu_qkv(B, H, T, M, D, dtype, layout):
    q, k, v = qkv(B, H, T, M, D, dtype, seed=T + M + D)
    if layout == "bthd":
        q, k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    return q, k, v


@pytest.mark.gpu
@pytest.mark.parametrize("case,B,H,T,M,D,dtype,scale,causal,layout", GPU_CASES,
                         ids=[c[0] for c in GPU_CASES])
@pytest.mark.parametrize("precision", ["highest", "high"])
def test_fast_path_equals_the_python_path(monkeypatch, case, B, H, T, M, D, dtype, scale, causal,
                                          layout, precision):
    if precision == "high" and dtype != F32:
        pytest.skip("the matmul precision only matters for float32")
    q, k, v = _gpu_qkv(B, H, T, M, D, dtype, layout)
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        code = 1 if causal is True else (2 if causal else 0)
        assert _C._fwd_fast(q, k, v, scale, code, True, None) is not None  # it is taken
        fast = aot_sdpa.triton_sdpa_fused(q, k, v, scale=scale, causal=causal)
        drop = aot_sdpa.scaled_dot_product_attention(q, k, v, scale=scale,
                                                      is_causal=causal is True)
        bufs = tuple(torch.full_like(x, float("nan")) for x in fast)
        given = aot_sdpa.triton_sdpa_fused(q, k, v, scale=scale, causal=causal, out=bufs)
        _python_path(monkeypatch)
        slow = aot_sdpa.triton_sdpa_fused(q, k, v, scale=scale, causal=causal)
        slow_drop = aot_sdpa.scaled_dot_product_attention(q, k, v, scale=scale,
                                                          is_causal=causal is True)
    finally:
        torch.set_float32_matmul_precision(old)
    assert all(a is b for a, b in zip(given, bufs))  # out= returns the caller's tensors
    for a, b, c in zip(fast, slow, given):
        assert a.stride() == b.stride() and a.dtype == b.dtype
        assert torch.equal(a, b) and torch.equal(a, c)
    if causal in (False, True):
        assert torch.equal(drop, slow_drop)
        assert torch.equal(drop, fast[0])


@pytest.mark.gpu
@pytest.mark.parametrize("fast_path", [True, False])
def test_out_strided_stats_and_grouped_heads(monkeypatch, fast_path):
    """out= with m, l strided slices of larger tensors (one stride triple), and with grouped
    heads (the Python path folds the caller's tensors): the results of the allocating call."""
    if not fast_path:
        _python_path(monkeypatch)
    q, k, v = qkv(2, 4, 77, 90, 64, F16, seed=3)
    big = torch.full((2, 2, 4, 100), float("nan"), device="cuda")
    o = torch.full_like(q, float("nan"))
    out = (o, big[0, :, :, 3:80], big[1, :, :, 3:80])
    ref = aot_sdpa.triton_sdpa_fused(q, k, v, causal=True)
    res = aot_sdpa.triton_sdpa_fused(q, k, v, causal=True, out=out)
    assert all(a is b for a, b in zip(res, out))
    for a, b in zip(res, ref):
        assert torch.equal(a, b)
    assert torch.isnan(big[..., :3]).all() and torch.isnan(big[..., 80:]).all()  # untouched
    q, k, v = operands(2, 8, 2, 33, 40, 64, BF16, seed=5)[:3]  # Hkv = 2
    ref = aot_sdpa.triton_sdpa_fused(q, k, v)
    out = tuple(torch.full_like(x, float("nan")) for x in ref)
    res = aot_sdpa.triton_sdpa_fused(q, k, v, out=out)
    for a, b in zip(res, ref):
        assert torch.equal(a, b)


@pytest.mark.gpu
def test_out_refusals_on_the_gpu():
    """What the C fast path refuses for out= reaches the Python rules, which raise: overlaps,
    and an out tensor requiring grad with grad mode on (with it off, the call runs)."""
    q, k, v = qkv(1, 2, 64, 64, 64, F16, seed=1)
    m, l = (torch.empty(1, 2, 64, device="cuda") for _ in range(2))
    with pytest.raises(ValueError, match=r"out\[0\] overlaps k in memory"):
        aot_sdpa.triton_sdpa_fused(q, k, v, out=(k, m, l))
    with pytest.raises(ValueError, match=r"out\[1\] overlaps out\[2\]"):
        aot_sdpa.triton_sdpa_fused(q, k, v, out=(torch.empty_like(q), m, m))
    o = torch.empty_like(q).requires_grad_()
    with pytest.raises(ValueError, match=r"out\[0\] requires grad"):
        aot_sdpa.triton_sdpa_fused(q, k, v, out=(o, m, l))
    with torch.no_grad():
        res = aot_sdpa.triton_sdpa_fused(q, k, v, out=(o, m, l))
    assert res[0] is o and torch.equal(o.detach(), aot_sdpa.triton_sdpa_fused(q, k, v)[0])


# ---- GPU: the drop-in's unread stats go to one scratch per device ----

SCRATCH_CAPTURE_SCRIPT = '''
import torch
import aot_sdpa
from aot_sdpa import _C, _ops

def make(B):
    return [torch.randn(B, 8, 197, 64, device="cuda", dtype=torch.float16) for _ in range(3)]

drop_in = aot_sdpa.scaled_dot_product_attention
drop_in(*make(1))  # the first call: the scratch's first size (65536 rows)
torch.cuda.synchronize()
assert _C._stats_scratch(0) == (65536, 0), _C._stats_scratch(0)
static = make(100)  # 157600 rows: the scratch grows during capture
graph = torch.cuda.CUDAGraph()
with torch.cuda.graph(graph):
    out = drop_in(*static)
assert _C._stats_scratch(0) == (262144, 1), _C._stats_scratch(0)
for x in static:
    x.copy_(torch.randn_like(x))
graph.replay()
torch.cuda.synchronize()
_ops._fwd_fast = lambda *a: None  # the reference: the Python path, its own stats tensor
assert torch.equal(out, drop_in(*static))
del graph
torch.cuda.empty_cache()
for x in static:
    x.copy_(torch.randn_like(x))
_ops._fwd_fast = _C._fwd_fast
again = drop_in(*static)  # the scratch allocated under capture, used after the graph is gone
_ops._fwd_fast = lambda *a: None
assert torch.equal(again, drop_in(*static))
print("SCRATCH_CAPTURE_OK")
'''


@pytest.mark.gpu
def test_scratch_grows_under_cuda_graph_capture_in_a_fresh_process(tmp_path):
    """The drop-in's first call sizes the scratch; a captured call that needs more grows it
    during capture (from the graph's pool); replays with new values, and eager calls after the
    graph is deleted, equal the Python path's (its own stats tensor) bit for bit."""
    import subprocess
    import sys

    script = tmp_path / "scratch_capture.py"
    script.write_text(SCRATCH_CAPTURE_SCRIPT)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "SCRATCH_CAPTURE_OK" in r.stdout, r.stdout + r.stderr


@pytest.mark.gpu
def test_scratch_is_shared_by_calls_on_two_streams_and_capped(monkeypatch):
    drop_in = aot_sdpa.scaled_dot_product_attention
    xs = [qkv(4, 8, 300, 300, 64, F16, seed=s) for s in (1, 2)]
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    torch.cuda.synchronize()
    outs = []
    for i in range(8):  # interleaved on two streams: both write the one scratch
        with torch.cuda.stream(streams[i % 2]):
            outs.append(drop_in(*xs[i % 2]))
    torch.cuda.synchronize()
    rows, _ = _C._stats_scratch(0)
    assert rows >= 4 * 8 * 300
    # past the cap (2**22 rows) a call allocates its own stats and the scratch stays capped
    big = [torch.randn(1, 1, 2**22 + 5, 8, device="cuda", dtype=F16) for _ in range(2)]
    kv = torch.randn(1, 1, 1, 8, device="cuda", dtype=F16)
    o_big = drop_in(big[0], kv, big[1][:, :, :1])
    assert _C._stats_scratch(0)[0] <= 2**22
    assert torch.equal(o_big, big[1][:, :, :1].expand_as(o_big))  # one key: o = v
    _python_path(monkeypatch)
    for i, o in enumerate(outs):
        assert torch.equal(o, drop_in(*xs[i % 2]))

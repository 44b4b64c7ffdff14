"""Reliability on the GPU: CUDA errors as exceptions, threads, CUDA graphs, > 2**31 elements,
numerics at the edges, run-to-run races, soak. (Skipped without CUDA; soak and 2-GPU tests
carry their own markers.)"""

import gc
import inspect
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import aot_sdpa
from aot_sdpa import reference

from _helpers import poison_allocator, qkv, randn, rel_err

pytestmark = pytest.mark.gpu
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _run_all_ops(q, k, v, do, tq, tk, tv):
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    grads = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)
    singles = (aot_sdpa.sdpa_bwd_dq(q, k, v, do, m, l), aot_sdpa.sdpa_bwd_dk(q, k, v, do, m, l),
               aot_sdpa.sdpa_bwd_dv(q, k, v, do, m, l))
    t = aot_sdpa.sdpa_jvp(q, k, v, tq, tk, tv, m, l)
    fused = aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv)
    second = aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv, do)
    return (o, m, l, *grads, *singles, t, *fused, *second)


# ---------------------------------------------------------------- CUDA errors, no exits
def test_cuda_failure_becomes_exception_with_error_name():
    from aot_sdpa._native import OPS

    bad_device = torch.cuda.device_count()  # one past the last device
    with pytest.raises(aot_sdpa.CudaError, match="CUDA_ERROR_INVALID_DEVICE"):
        aot_sdpa._C.launch(OPS["fwd"].index, 0, bad_device, 0, [0] * 7, [0] * 18,
                           (1, 1, 1, 1, 16, 0, 1, 0, 0, 1), 1.0)
    # the process and the device are still fine afterwards
    q, k, v = qkv(1, 1, 8, 8, 16, torch.float16)
    assert torch.isfinite(aot_sdpa.triton_sdpa_fused(q, k, v)[0]).all()


def test_empty_tensors_return_empty_results():
    for B, H, T in ((0, 2, 5), (1, 0, 5)):
        q, k, v = qkv(B, H, T, 7, 16, torch.float16)
        tq = torch.randn_like(q)
        o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
        assert o.shape == q.shape and m.shape == (B, H, T)
        dq, dk, dv = aot_sdpa.sdpa_bwd(q, k, v, tq, m, l, o=o)
        assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
        assert aot_sdpa.sdpa_jvp(q, k, v, tq, k, v, m, l).shape == q.shape
        assert all(h.shape == x.shape for h, x in zip(
            aot_sdpa.sdpa_bwd_jvp(q, k, v, tq, m, l, tq, k, v), (q, k, v)))


def test_no_query_rows_give_zero_key_gradients():
    # T = 0 with keys present: the key-side kernels run and must write exact zeros
    q, k, v = qkv(2, 3, 0, 37, 16, torch.float16)
    tk, tv = torch.randn_like(k), torch.randn_like(v)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    poison_allocator()
    dq, dk, dv = aot_sdpa.sdpa_bwd(q, k, v, q, m, l, o=o)
    assert dk.numel() > 0 and (dk == 0).all() and (dv == 0).all()
    poison_allocator()
    hq, hk, hv = aot_sdpa.sdpa_bwd_jvp(q, k, v, q, m, l, q, tk, tv)
    assert hk.numel() > 0 and (hk == 0).all() and (hv == 0).all()


# ---------------------------------------------------------------- threads
def _make_inputs(dt):
    g = torch.Generator(device="cuda").manual_seed(0)
    shapes = [(2, 3, 100, 40), (2, 3, 77, 40), (2, 3, 77, 40), (2, 3, 100, 40), (2, 3, 100, 40),
              (2, 3, 77, 40), (2, 3, 77, 40)]
    return [torch.randn(s, device="cuda", dtype=dt, generator=g) for s in shapes]


THREADS_SCRIPT = textwrap.dedent('''
    import threading, torch, aot_sdpa
    from tests_helpers_path import _run_all_ops as run_all_ops, _make_inputs as make_inputs
    inputs = {dt: make_inputs(dt) for dt in (torch.float16, torch.bfloat16, torch.float32)}
    torch.cuda.synchronize()
    barrier = threading.Barrier(16)
    results, errors = {}, []

    def worker(i):
        try:
            barrier.wait()
            dt = list(inputs)[i % 3]
            out = run_all_ops(*inputs[dt])
            torch.cuda.current_stream().synchronize()
            results[i] = (dt, out)
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors, errors
    torch.cuda.synchronize()
    for i, (dt, out) in results.items():
        ref = run_all_ops(*inputs[dt])
        assert all(torch.equal(a, b) for a, b in zip(out, ref)), f"thread {i} differs"
    print("THREADS_OK", len(results))
''')


def test_sixteen_threads_first_calls_in_fresh_process(tmp_path):
    helper = tmp_path / "tests_helpers_path.py"
    helper.write_text("import torch\nimport aot_sdpa\n\n" + inspect.getsource(_run_all_ops)
                      + inspect.getsource(_make_inputs))
    script = tmp_path / "threads.py"
    script.write_text(THREADS_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0 and "THREADS_OK 16" in r.stdout, r.stdout + r.stderr


# ---------------------------------------------------------------- CUDA graphs
def _capture_new_values_replay_equals_eager(static, dtype):
    """Capture every op on `static`, refill it with new values, replay: bitwise eager."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = _run_all_ops(*static)
    for i, x in enumerate(static):
        x.copy_(randn(x.shape, dtype, seed=100 + i))
    graph.replay()
    torch.cuda.synchronize()
    eager = _run_all_ops(*static)
    for a, b in zip(outs, eager):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_cuda_graph_capture_and_replay_with_new_values(dtype):
    static = [randn(s, dtype, seed=i) for i, s in enumerate(
        [(2, 3, 130, 64), (2, 3, 90, 64), (2, 3, 90, 64), (2, 3, 130, 64), (2, 3, 130, 64),
         (2, 3, 90, 64), (2, 3, 90, 64)])]
    _run_all_ops(*static)  # warm call: modules load outside capture
    torch.cuda.synchronize()
    _capture_new_values_replay_equals_eager(static, dtype)


# ---------------------------------------------------------------- > 2**31 elements
@pytest.mark.parametrize("layout", ["bhtd", "bthd"])
def test_tensors_over_2_31_elements_give_correct_tail_rows(layout):
    # q has 2.1e9 elements (> 2**31). "bhtd": each head's row offsets fit 32 bits (T * 64);
    # "bthd", a (B, T, H, D) view: the row stride is H * D = 1024, so one head's row offsets
    # pass 2**31 and the fast flavours' int32 row addressing ([abi] narrow_row_strides) must
    # not run: the dispatcher takes the general flavour
    B, H, T, M, D = 1, 16, 2_097_216, 128, 64
    if torch.cuda.get_device_properties(0).total_memory < 60 * 2**30:
        pytest.skip("needs ~40 GB of GPU memory")
    dt = torch.float16
    if layout == "bhtd":
        q = torch.empty(B, H, T, D, device="cuda", dtype=dt).normal_()
    else:
        q = torch.empty(B, T, H, D, device="cuda", dtype=dt).normal_().transpose(1, 2)
        assert q.stride(2) * T > 2**31
    assert q.numel() > 2**31
    k, v = randn((B, H, M, D), dt, seed=1), randn((B, H, M, D), dt, seed=2)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    tail = slice(T - 300, T)
    ro, rm, rl = reference.forward(q[:, :, tail].double(), k.double(), v.double())
    assert rel_err(o[:, :, tail], ro) < 2e-3 and rel_err(m[:, :, tail], rm) < 1e-3
    do = torch.empty_like(q).normal_()
    dq, dk, dv = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)
    del o
    rdq, _, _ = reference.backward(q[:, :, tail].double(), k.double(), v.double(),
                                   do[:, :, tail].double(), m[:, :, tail], l[:, :, tail])
    assert rel_err(dq[:, :, tail], rdq) < 5e-3
    # dk, dv sum over every row: a chunked fp64 reference over all 2.1M rows
    rdk = torch.zeros_like(k, dtype=torch.float64)
    rdv = torch.zeros_like(v, dtype=torch.float64)
    for s in range(0, T, 1 << 18):
        c = slice(s, min(T, s + (1 << 18)))
        _, ck, cv = reference.backward(q[:, :, c].double(), k.double(), v.double(),
                                       do[:, :, c].double(), m[:, :, c], l[:, :, c])
        rdk += ck
        rdv += cv
    assert rel_err(dk, rdk) < 5e-3 and rel_err(dv, rdv) < 5e-3
    del dq, do
    tq = torch.empty_like(q).normal_()
    tk, tv = randn((B, H, M, D), dt, seed=3), randn((B, H, M, D), dt, seed=4)
    t = aot_sdpa.sdpa_jvp(q, k, v, tq, tk, tv, m, l)
    rt = reference.jvp(q[:, :, tail].double(), k.double(), v.double(), tq[:, :, tail].double(),
                       tk.double(), tv.double(), m[:, :, tail], l[:, :, tail])
    assert rel_err(t[:, :, tail], rt) < 5e-3


# ---------------------------------------------------------------- B*H beyond one grid axis
def _check_rows(op_out, ref, rows, tol):
    """op_out[i][rows] against ref[i], the reference computed on those rows only."""
    for a, b in zip(op_out, ref):
        assert rel_err(a[rows], b) < tol


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_heads_beyond_65535_every_op(dtype):
    # B*H = 70_001 > 65535: the grid folds batch*heads into axes 1 and 2 (pid2 > 0)
    B, H, T, M, D = 70_001, 1, 5, 9, 16
    q, k, v, do, tq, tk, tv = (randn((B, H, n, D), dtype, seed=i)
                               for i, n in enumerate((T, M, M, T, T, M, M)))
    out = _run_all_ops(q, k, v, do, tq, tk, tv)
    rows = [0, 65534, 65535, 65536, B - 1]
    x64 = [t[rows].double() for t in (q, k, v, do, tq, tk, tv)]
    ro, rm, rl = reference.forward(*x64[:3])
    rg = reference.backward(*x64[:4], rm, rl)
    rt = reference.jvp(*x64[:3], *x64[4:], rm, rl)
    rh = reference.bwd_jvp(*x64[:4], rm, rl, *x64[4:], x64[3])
    tol = 2e-5 if dtype == torch.float32 else 3e-2
    o, m, l, dq, dk, dv, dq1, dk1, dv1, t, fo, fm, fl, ft, hq, hk, hv = out
    _check_rows((o, m, l, fo, fm, fl), (ro, rm, rl, ro, rm, rl), rows, tol)
    _check_rows((dq, dk, dv, dq1, dk1, dv1), (*rg, *rg), rows, tol * 3)
    _check_rows((t, ft), (rt, rt), rows, tol * 3)
    _check_rows((hq, hk, hv), rh, rows, tol * 10)


def test_batch_heads_at_the_bound():
    # B*H = 2**31 - 1, the largest the checks admit: correct first and last rows, no crash
    if torch.cuda.get_device_properties(0).total_memory < 100 * 2**30:
        pytest.skip("needs ~60 GB of GPU memory")
    B = 2**31 - 1
    dt = torch.float16
    q = torch.empty(B, 1, 1, 1, device="cuda", dtype=dt).normal_()
    k = randn((1, 1, 1, 1), dt, seed=1).expand(B, 1, 1, 1)  # stride-0 keys: no copy
    v = torch.empty(B, 1, 1, 1, device="cuda", dtype=dt).normal_()
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    # one key: softmax is exactly 1, o = v, m = q k / sqrt(1), l = 1
    for rows in (slice(0, 1000), slice(B - 1000, B)):
        assert torch.equal(o[rows], v[rows]) and (l[rows] == 1).all()
        assert torch.allclose(m[rows], (q[rows].float() * k[rows].float())[..., 0], atol=1e-3)
    del o
    dq, dk, dv = aot_sdpa.sdpa_bwd(q, k, v, q, m, l)
    for rows in (slice(0, 1000), slice(B - 1000, B)):  # one key: dS = P (dP - z) = 0, dV = dO
        # (P is 1 up to the rounding of the stored stats, so up to that rounding)
        assert dq[rows].abs().max() < 1e-3
        assert torch.allclose(dv[rows].float(), q[rows].float(), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="B\\*H"):
        aot_sdpa.triton_sdpa_fused(torch.empty(2**31, 1, 1, 1, device="meta", dtype=dt),
                                   k[:1].expand(2**31, 1, 1, 1).to("meta"),
                                   k[:1].expand(2**31, 1, 1, 1).to("meta"))


# ---------------------------------------------------------------- failing loads release everything
@pytest.mark.parametrize("mode", [0, 1], ids=["bad-function-name", "impossible-attribute"])
def test_failing_module_load_releases_it(mode):
    from aot_sdpa import _C

    q, k, v = qkv(1, 1, 8, 8, 16, torch.float16)
    aot_sdpa.triton_sdpa_fused(q, k, v)  # context retained, some modules loaded
    torch.cuda.synchronize()
    before = _C._runtime_counters()
    free0 = torch.cuda.mem_get_info()[0]
    match = "CUDA_ERROR_NOT_FOUND" if mode == 0 else "CUDA_ERROR_INVALID_VALUE"
    for _ in range(200):
        with pytest.raises(aot_sdpa.CudaError, match=match):
            _C._test_failing_load(0, mode)
    after = _C._runtime_counters()
    loaded = after["modules_loaded"] - before["modules_loaded"]
    unloaded = after["modules_unloaded"] - before["modules_unloaded"]
    assert loaded == 200 and unloaded == 200  # every module loaded was unloaded again
    assert after["contexts_retained"] == before["contexts_retained"]
    assert torch.cuda.mem_get_info()[0] >= free0 - (8 << 20)  # no device memory growth
    assert torch.isfinite(aot_sdpa.triton_sdpa_fused(q, k, v)[0]).all()  # still fine


# ---------------------------------------------------------------- CUDA graphs, any alignment
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_cuda_graph_captures_misaligned_views_after_an_aligned_warmup(dtype):
    B, H, T, M, D = 2, 3, 70, 50, 64
    aligned = [randn(s, dtype, seed=i) for i, s in enumerate(
        [(B, H, T, D), (B, H, M, D), (B, H, M, D), (B, H, T, D), (B, H, T, D), (B, H, M, D),
         (B, H, M, D)])]
    _run_all_ops(*aligned)  # warm-up: aligned, so the fast flavours run
    torch.cuda.synchronize()
    # views at a 1-element offset: data pointers no longer 16-byte aligned (general flavour)
    bufs = [torch.empty(x.numel() + 1, device="cuda", dtype=dtype) for x in aligned]
    static = [b[1:].view(x.shape) for b, x in zip(bufs, aligned)]
    for s_, x in zip(static, aligned):
        s_.copy_(x)
    assert all(s_.data_ptr() % 16 != 0 for s_ in static)
    _capture_new_values_replay_equals_eager(static, dtype)


TIER_CAPTURE_SCRIPT = textwrap.dedent('''
    import torch
    import aot_sdpa
    from aot_sdpa import _C

    fwd = [o["name"] for o in _C.ops()].index("fwd")
    # fp16 D = 64: max(T, M) = 1024 (past the tier's max_len, whole 128-row blocks: past its
    # tail_len rule) runs the untiered forward, 100 its tier (a module of its own)
    runs = [_C._select(fwd, 0, 64, 0, True, False, rows=n)[0] for n in (1024, 100)]
    assert runs == ["fwd_fp16_d64_fast_sm90", "fwd_fp16_d64_fast_sm90_t200"], runs

    def make(T):
        return [torch.randn(2, 3, T, 64, device="cuda", dtype=torch.float16) for _ in range(3)]

    aot_sdpa.triton_sdpa_fused(*make(1024))  # the only call before capture: the long length
    torch.cuda.synchronize()
    static = make(100)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = aot_sdpa.triton_sdpa_fused(*static)[0]
    for x in static:
        x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, aot_sdpa.triton_sdpa_fused(*static)[0])
    print("TIER_CAPTURE_OK")
''')


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                    reason="the sequence-length tier is compiled for sm_90")
def test_cuda_graph_captures_another_sequence_length_tier_in_a_fresh_process(tmp_path):
    """A fresh process calls the 16-bit D = 64 forward at one length only (T = 1024, untiered),
    then captures it at T = 100, which runs the sequence-length tier: the first call loaded the
    tier's module with its own (loading is not allowed during capture), and the replay with
    new values equals the eager call bitwise."""
    script = tmp_path / "tier_capture.py"
    script.write_text(TIER_CAPTURE_SCRIPT)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "TIER_CAPTURE_OK" in r.stdout, r.stdout + r.stderr


def test_warmup_loads_every_kernel_of_the_device():
    from aot_sdpa import _C

    n = aot_sdpa.warmup()
    arch = f"sm_{_C.device_arch(0)}"
    assert n == sum(r["arch"] == arch for r in aot_sdpa.kernel_inventory()) > 0
    assert aot_sdpa.warmup("cuda:0") == n
    with pytest.raises(ValueError, match="CUDA device"):
        aot_sdpa.warmup("cpu")


# ---------------------------------------------------------------- numerics at the edges
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_in_one_query_row_poisons_only_that_row(dtype):
    q, k, v = qkv(1, 2, 50, 60, 32, dtype, seed=9)
    q[0, 1, 17, 3] = float("nan")
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    assert torch.isnan(o[0, 1, 17]).all()
    bad = torch.zeros(o.shape[:3], dtype=torch.bool, device="cuda")
    bad[0, 1, 17] = True
    assert torch.isfinite(o[~bad]).all()
    ro, _, _ = reference.forward(q.double(), k.double(), v.double())
    assert rel_err(o[~bad], ro[~bad]) < 2e-2


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_huge_logits_do_not_overflow(dtype):
    q, k, v = qkv(1, 2, 64, 96, 64, dtype, seed=4)
    q = (q * 40).to(dtype)  # |S| up to ~1e4 with scale 1/8
    k = (k * 40).to(dtype)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    ro, rm, rl = reference.forward(q.double(), k.double(), v.double())
    assert rm.abs().max() > 5e3
    assert torch.isfinite(o).all() and torch.isfinite(l).all()
    assert rel_err(o, ro) < 2e-2 and rel_err(m, rm) < 1e-3


def test_infinite_logits_match_fp64_reference():
    q, k, v = qkv(1, 1, 8, 16, 16, torch.float32, seed=6)
    q = q.abs() + 0.1  # positive rows: an infinite key coordinate gives an infinite score
    k[0, 0, 3, 0] = float("-inf")  # S[:, 3] = -inf: probability exactly 0
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    ro, rm, rl = reference.forward(q.double(), k.double(), v.double())
    torch.testing.assert_close(o.double(), ro, rtol=1e-5, atol=1e-6)
    k[0, 0, 5, 0] = float("inf")  # S[:, 5] = +inf: the reference's softmax is NaN
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    ro, rm, rl = reference.forward(q.double(), k.double(), v.double())
    torch.testing.assert_close(o.double(), ro, equal_nan=True)
    torch.testing.assert_close(m.double(), rm, equal_nan=True)


@pytest.mark.parametrize("D", [16, 64])
@pytest.mark.parametrize("case", ["-inf key", "+inf key", "inf q and k", "inf v"])
def test_infinities_in_float32_products_match_fp64(D, case):
    """float32 runs its products as three fp16 ones on sm_90 (D <= 64, "fp16x3"): an infinite
    element must come out of them as out of a float32 product (kernels/_common.split_f16),
    in the forward, the backward and the forward+JVP alike: finite where float64 is finite,
    the same infinities, NaN exactly where float64 has NaN (but for the forward+JVP's tangent
    in the column of an infinite value: NaN or float64's infinity there)."""
    q, k, v = qkv(1, 2, 37, 45, D, torch.float32, seed=12)
    q = q.abs() + 0.1  # positive rows: an infinite key coordinate gives an infinite score
    do, tq, tk, tv = (randn(x.shape, torch.float32, seed=13 + i) for i, x in enumerate((q, q, k, v)))
    if case == "-inf key":  # scores -inf: probabilities 0; dQ NaN (0 * -inf), the rest finite
        k[:, :, 3, 0] = float("-inf")
    elif case == "+inf key":  # scores +inf: the rows' softmax is NaN
        k[:, 0, 5, 1] = float("inf")
    elif case == "inf q and k":  # inf * -inf at one coordinate
        k[:, :, 3, 0], q[:, :, 4, 0] = float("-inf"), float("inf")
    else:
        v[:, :, 7, 2] = float("inf")
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    x64 = [t.double().requires_grad_() for t in (q, k, v)]
    ro = reference.attention(*x64)
    grads = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)
    rgrads = torch.autograd.grad(ro, x64, do.double())
    fo, _, _, ft = aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv)
    _, rt = torch.func.jvp(reference.attention, tuple(t.detach() for t in x64),
                           (tq.double(), tk.double(), tv.double()))
    for name, ours, ref in [("O", o, ro), ("fwd_jvp O", fo, ro), ("fwd_jvp tO", ft, rt)] + [
            (n, a, r) for n, a, r in zip(("dQ", "dK", "dV"), grads, rgrads)]:
        ours, ref = ours.double(), ref.detach()
        if case == "inf v" and name == "fwd_jvp tO":
            # the documented limit (README "Infinite and NaN inputs"): the forward+JVP's one
            # pass forms tO = A / l - (r / l) O, and with an infinite v_j both terms of its
            # column are infinite: NaN in the rows where the two have the same sign, where
            # float64 gives +-inf (measured: 36-37 of the column's 74 rows, H200). Where float64
            # is finite ours must match it, and an infinity of ours must be float64's
            fin, inf = torch.isfinite(ref), torch.isinf(ours)
            assert not torch.isfinite(ours[~fin]).any(), f"{case} {name}: finite for inf"
            assert torch.equal(ours[inf], ref[inf]), f"{case} {name}: wrong infinities"
            ours, ref = ours[fin], ref[fin]
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5,
                                   equal_nan=True, msg=lambda e, n=name: f"{case} {n}: {e}")
    if case == "-inf key":  # the case that matters to a user: finite outputs stay finite
        assert torch.isfinite(o).all() and torch.isfinite(grads[1]).all()


def test_fp16_overflow_becomes_inf_not_garbage():
    q, k, v = qkv(1, 1, 32, 48, 16, torch.float16, seed=8)
    v = torch.full_like(v, 30000.0)
    v[..., 1::2, :] = -30000.0
    tq = randn(q.shape, torch.float16, seed=9) * 20
    tk, tv = torch.zeros_like(k), torch.zeros_like(v)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    t = aot_sdpa.sdpa_jvp(q, k, v, tq, tk, tv, m, l)
    _, rt = torch.func.jvp(reference.attention, (q.double(), k.double(), v.double()),
                           (tq.double(), tk.double(), tv.double()))
    over = rt.abs() > 70000  # clearly beyond fp16's max (65504) after rounding
    fine = rt.abs() < 60000
    assert over.any(), "test data must overflow somewhere"
    assert torch.isinf(t[over]).all() and (torch.sign(t[over]) == torch.sign(rt[over])).all()
    assert torch.isfinite(t[fine]).all()


# ---------------------------------------------------------------- races of the result
def test_250_repeats_are_bitwise_equal():
    q, k, v = qkv(2, 4, 1000, 1000, 64, torch.float16, seed=21)
    do = randn(q.shape, torch.float16, seed=22)
    o0, m0, l0 = aot_sdpa.triton_sdpa_fused(q, k, v)
    g0 = aot_sdpa.sdpa_bwd(q, k, v, do, m0, l0, o=o0)
    for _ in range(250):
        o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
        g = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)
        assert torch.equal(o, o0) and torch.equal(m, m0) and torch.equal(l, l0)
        assert all(torch.equal(a, b) for a, b in zip(g, g0))


# ---------------------------------------------------------------- soak
def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.soak
def test_soak_memory_flat_over_1e5_calls():
    q, k, v = qkv(1, 4, 64, 64, 32, torch.float16, seed=31)
    do = randn(q.shape, torch.float16, seed=32)

    def step():
        o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
        aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)

    for _ in range(2000):
        step()
    torch.cuda.synchronize()
    gc.collect()
    rss0, cuda0 = _rss_bytes(), torch.cuda.memory_allocated()
    for _ in range(100_000):
        step()
    torch.cuda.synchronize()
    gc.collect()
    rss1, cuda1 = _rss_bytes(), torch.cuda.memory_allocated()
    assert abs(rss1 - rss0) <= 0.01 * rss0, (rss0, rss1)
    assert cuda1 == cuda0
    # many shapes and dtypes: handles are per (variant, device), so memory stays bounded
    for i in range(3000):
        dt = DTYPES[i % 3]
        T, M, D = 1 + (i * 7) % 300, 1 + (i * 13) % 200, 1 + (i * 5) % 64
        q2, k2, v2 = qkv(1, 2, T, M, D, dt, seed=i)
        o, m, l = aot_sdpa.triton_sdpa_fused(q2, k2, v2)
        aot_sdpa.sdpa_bwd(q2, k2, v2, q2, m, l, o=o)
    torch.cuda.synchronize()
    gc.collect()
    rss2 = _rss_bytes()
    assert rss2 <= rss1 * 1.01 + 16 * 2**20, (rss1, rss2)

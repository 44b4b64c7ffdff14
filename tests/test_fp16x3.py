"""The "fp16x3" float32 products (kernels/_common.py mma: rows of a and columns of b scaled by
powers of two, each split in two fp16 parts, three fp16 products in fp32 accumulation) in
Triton's interpreter, on the CPU, against float64: an element error within 2**-20 of
sum_k |a_ik| |b_kj| (three dropped terms of ~2**-22 each, plus fp32 accumulation), on rows and
columns whose sizes span 10**-15 .. 10**15, rows of 1e36 and of float32 subnormals, sizes
spanning 10**24 inside a row (fp16 alone holds 6e-8 .. 65504), a zero row, and an
accumulator. The interpreter runs fp16 dots as NumPy matmuls in float32 (exact products), so
this checks the scaling and splitting; the GPU tests (test_precision_gpu.py) check the
kernels that use it against torch's error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
np = pytest.importorskip("numpy")
if tuple(int(x) for x in np.__version__.split(".")[:2]) >= (2, 3):
    pytest.skip("Triton 3.6's interpreter needs NumPy < 2.3 (the test extras pin it)",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "kernels"

# run in a child process: TRITON_INTERPRET must hold when _common's @triton.jit runs
SCRIPT = r"""
import json, sys
import numpy as np
import torch
import triton
import triton.language as tl
sys.path.insert(0, sys.argv[1])
from _common import mma

@triton.jit
def _kernel(A, B, C, M: tl.constexpr, K: tl.constexpr, N: tl.constexpr, PREC: tl.constexpr,
            ACC: tl.constexpr):
    rm, rk, rn = tl.arange(0, M), tl.arange(0, K), tl.arange(0, N)
    a = tl.load(A + rm[:, None] * K + rk[None, :])
    b = tl.load(B + rk[:, None] * N + rn[None, :])
    c_ptrs = C + rm[:, None] * N + rn[None, :]
    if ACC:
        tl.store(c_ptrs, mma(a, b, tl.load(c_ptrs), PREC))
    else:
        tl.store(c_ptrs, mma(a, b, None, PREC))

M, K, N = 32, 64, 16
rng = np.random.default_rng(0)
cases = {}
for name in ("gaussian", "wide", "extremes"):
    a = rng.standard_normal((M, K))
    b = rng.standard_normal((K, N))
    if name == "wide":  # rows of a and columns of b from 1e-15 to 1e15
        a *= 10.0 ** rng.uniform(-15, 15, (M, 1))
        b *= 10.0 ** rng.uniform(-15, 15, (1, N))
    if name == "extremes":  # a zero row, float32-subnormal and huge rows, mixed inside rows
        a[0] = 0
        a[1] *= 1e-40
        a[2] *= 1e36
        a[3] *= 10.0 ** rng.uniform(-12, 12, K)
        b[:, 0] *= 1e-36
        b[:, 1] *= 1e-30
    a, b = a.astype(np.float32), b.astype(np.float32)
    for acc in (0, 1):
        c0 = rng.standard_normal((M, N)).astype(np.float32) if acc else np.zeros((M, N), np.float32)
        c = torch.from_numpy(c0.copy())
        _kernel[(1,)](torch.from_numpy(a), torch.from_numpy(b), c, M, K, N, "fp16x3", acc)
        c = c.numpy()
        exact = a.astype(np.float64) @ b.astype(np.float64) + c0
        scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64) + np.abs(c0)
        err = np.abs(c - exact)
        ok = scale > 1e-30  # below: float32 itself underflows (a[1] b[:, 0] ~ 1e-76)
        cases[f"{name} acc{acc}"] = {
            "finite": bool(np.isfinite(c).all()),
            "worst": float((err[ok] / scale[ok]).max()),
            "underflow_err": float(err[~ok].max()) if (~ok).any() else 0.0,
            "zero_exact": bool((err[scale == 0] == 0).all()),
        }
# infinities and a NaN: a float32 product's inf, -inf and NaN, entry for entry; the rest as
# accurate as above. a's rows 0-2 and b's columns 0-1 hold them, the infinities all at k = 9:
# an infinite element's partners in its row / column are scaled under fp16's range and read
# as 0, so an infinite row meeting an infinite column at another k would give 0 * inf = NaN
# where float32 adds two infinities (inf, or NaN for opposite signs: a documented limit)
a = rng.standard_normal((M, K)).astype(np.float32)
b = rng.standard_normal((K, N)).astype(np.float32)
a[0, 9], a[1, 9] = np.inf, -np.inf   # rows 0, 1: +-inf * b[9, j]
b[9, 0], b[9, 1] = -np.inf, np.inf   # columns 0, 1: a[i, 9] * -+inf; (0..1, 0..1): inf * inf
a[2, 3] = np.nan                     # row 2: NaN
a[5, 9] = 0.0                        # (5, 0), (5, 1): 0 * inf = NaN
a[6] = np.ldexp(np.round(np.ldexp(a[6], 4)), -4)  # short mantissas: lo = 0 (the defect's case)
c = torch.zeros(M, N)
_kernel[(1,)](torch.from_numpy(a), torch.from_numpy(b), c, M, K, N, "fp16x3", 0)
c = c.numpy().astype(np.float64)
with np.errstate(invalid="ignore"):
    exact = a.astype(np.float64) @ b.astype(np.float64)
fin = np.isfinite(exact)
scale = np.abs(a[3:]).astype(np.float64) @ np.abs(b[:, 2:]).astype(np.float64)
cases["nonfinite"] = {
    "inf_entries": int(np.isinf(exact).sum()),
    "nan_entries": int(np.isnan(exact).sum()),
    "same_nan": bool((np.isnan(c) == np.isnan(exact)).all()),
    "same_inf": bool((c[np.isinf(exact)] == exact[np.isinf(exact)]).all()),
    "finite_where_finite": bool(np.isfinite(c[fin]).all()),
    "worst": float((np.abs(c[3:, 2:] - exact[3:, 2:]) / scale).max()),
}
print(json.dumps(cases))
"""


@pytest.fixture(scope="module")
def cases():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(KERNELS)], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["gaussian", "wide", "extremes"])
@pytest.mark.parametrize("acc", [0, 1])
def test_fp16x3_products_are_float32_accurate(cases, name, acc):
    case = cases[f"{name} {'acc1' if acc else 'acc0'}"]
    assert case["finite"]  # no fp16 overflow: the power-of-two scales hold every size
    assert case["zero_exact"]  # a zero row gives exactly the accumulator
    assert case["underflow_err"] <= 1e-30
    # 2**-20 relative to sum |a||b|: a dropped lo part (fp16 alone: ~2**-11) or an unscaled
    # operand (flushed or overflowed in fp16) fails it by orders of magnitude
    assert case["worst"] <= 2.0 ** -20, case  # measured 0.9-1.1e-7 (~2**-23)


def test_fp16x3_products_carry_infinities_and_nan_as_float32(cases):
    """An infinite operand splits into (hi, lo) = (+-65504, +-inf) (_common.split_f16): each
    entry is the float32 product's +-inf or NaN. With hi = inf, lo = inf - inf = NaN turned
    every entry that met an infinity into NaN (the forward gave NaN where an infinite key
    coordinate made a score -inf and its probability 0: test_reliability_gpu)."""
    case = cases["nonfinite"]
    # the data do exercise it: inf * -inf, -inf * inf, 0 * inf and NaN entries
    assert case["inf_entries"] >= 40 and case["nan_entries"] >= 16, case
    assert case["same_inf"] and case["same_nan"] and case["finite_where_finite"], case
    assert case["worst"] <= 2.0 ** -20, case


@pytest.fixture(scope="module")
def through_the_ops():
    """tests/_interpret_ops.py fp16x3: every public op on float32 problems, each launch whose
    sm_90 variant ships fp16x3 running it in the interpreter (the rest IEEE)."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "_interpret_ops.py"),
                          "fp16x3"], capture_output=True, text=True, env=env, timeout=1200)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_ops_in_fp16x3_match_float64_in_the_interpreter(through_the_ops):
    """Each output against float64 within the project's rule (2x torch's float32 error +
    5e-7 (1 + |ref|)): ragged shapes, the full 64 and 128 buckets (one-kernel backward both ways),
    causal, grouped heads, key-padding and dense masks; and, per output column, the forward
    and forward+JVP on sizes spanning up to 10**24 (_interpret_ops._check_wide). Dropping the
    lo products from mma fails 150 of the first 158 checks (measured)."""
    from build_tools import jit_call
    from build_tools.variants import load

    spec = load(KERNELS / "variants.toml")
    # the launches checked do run fp16x3: the general / masked sm_90 float32 variants that
    # jit_call picks for D = 16 and 64 have it
    for op, D, masked in (("fwd", 16, False), ("fwd", 16, True), ("jvp", 64, False),
                          ("fwd_jvp", 40, False), ("bwd_fused", 64, False)):
        assert jit_call.variant(spec, op, "fp32", D, masked).input_precision == "fp16x3", (
            op, D, masked)
    # and at D = 128 the forward's fast flavour (the EVEN_D code an interpreted launch at the
    # bucket's own head dim runs) has it, its general flavour not
    fast = [v for v in spec.variants if (v.op, v.dtype, v.head_dim, v.arch, v.flavor)
            == ("fwd", "fp32", 128, 90, "fast")]
    assert [v.input_precision for v in fast] == ["fp16x3"]
    assert jit_call.variant(spec, "fwd", "fp32", 128).input_precision == "bf16x6"
    assert jit_call.variant(spec, "jvp", "fp32", 128).input_precision == "fp16x3"
    checks = through_the_ops
    assert {"fwd[0]", "jvp[0]", "fwd_jvp[1]", "bwd_fused(o)[0]", "bwd_fused(stats)[2]"} <= {
        k.split()[0] for k in checks}
    assert {k.split()[0] for k in checks if " D128 " in k} >= {"fwd[0]", "jvp[0]", "fwd_jvp[1]"}
    # the forward's two ways of scaling K (one scale per program, or per key where the keys'
    # sizes spread past _common.K_ONE_SPAN), each output column against its own allowance
    # (_interpret_ops._check_wide; a 1e-4 error in the one-scale path's 1 / s_k fails those
    # checks 110-120x, measured)
    wide = {" ".join(k.split()[:3]) for k in checks if " wide " in k}
    assert {"fwd wide column", "fwd k_one wide", "fwd_jvp[1] tv wide",
            "fwd_jvp[1] all wide", "jvp tv wide", "jvp all wide"} <= wide, wide
    assert all(k.endswith(" fp16x3") for k in checks)
    bad = {k: v for k, v in checks.items() if not v[0] <= v[1]}  # NaN fails
    assert not bad, bad

"""Every public op with its Triton kernels run by Triton's interpreter on the CPU, against the
float64 reference: the kernels' math, masking (ragged T and M, D below its bucket) and the
Python side (allocation, op sequence, arguments by name) carry weight in CI, not only on the
GPU. Needs Triton (the test extras) and NumPy < 2.3 (Triton 3.6's interpreter converts
one-element arrays with int(), which newer NumPy refuses)."""

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

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def interpreted():
    """The checks of tests/_interpret_ops.py, its float32 and float16 halves run side by side
    in two processes (CI has 2 cores)."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    procs = [subprocess.Popen([sys.executable, str(HERE / "_interpret_ops.py"), half],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for half in ("fp32", "fp16")]
    checks = {}
    for p in procs:
        stdout, stderr = p.communicate(timeout=1800)
        assert p.returncode == 0, stderr[-4000:]
        checks.update(json.loads(stdout.strip().splitlines()[-1]))
    return checks


def test_every_op_runs_in_the_interpreter(interpreted):
    ops = {key.split()[0].split("[")[0] for key in interpreted}
    assert {"fwd", "bwd(o)", "bwd(stats)", "sdpa_bwd_dq", "sdpa_bwd_dk", "sdpa_bwd_dv", "jvp",
            "fwd_jvp", "bwd_jvp", "bwd_jvp+tdo"} <= ops
    assert any("fp16" in key for key in interpreted) and any("fp32" in key for key in interpreted)
    # the split buckets (80 and 96: kernels/variants.toml [split_buckets]) of the forward and
    # of the backward's dQ and dK/dV kernels
    for op in ("fwd[0]", "bwd(o)[0]", "bwd(stats)[1]"):
        assert {d for d in (" D72", " D96") if any(k.startswith(f"{op} fp16") and d in k
                                                   for k in interpreted)} == {" D72", " D96"}
    every = {"fwd", "bwd(o)", "bwd(stats)", "sdpa_bwd_dq", "sdpa_bwd_dk", "sdpa_bwd_dv", "jvp",
             "fwd_jvp", "bwd_jvp", "bwd_jvp+tdo"}
    # narrow ragged tails (_interpret_ops TAILS): the forward's and dQ's keys, dK/dV's rows
    tails = {key.split()[0].split("[")[0] for key in interpreted if key.endswith(" tails")}
    assert {"fwd", "bwd(o)", "bwd(stats)", "sdpa_bwd_dq", "sdpa_bwd_dk", "sdpa_bwd_dv"} <= tails
    # dK/dV's TWO_PASS (a dV sweep, then a dK sweep), plain, causal and grouped + causal
    two_pass = [key for key in interpreted if key.endswith(" two_pass")]
    assert {key.split()[0] for key in two_pass} == {"fwd[0]", "fwd[1]", "fwd[2]", "fwd",
                                                      "bwd(o)[0]", "bwd(o)[1]", "bwd(o)[2]",
                                                      "bwd(stats)[0]", "bwd(stats)[1]",
                                                      "bwd(stats)[2]"}
    assert any("causal" in key and "Hkv2" in key for key in two_pass)
    # the backward's HEAD_CHUNK (causal 16-bit dQ and dK/dV programs dealt out by chunks of
    # heads): the backward's three outputs and dQ alone, causal with a short last chunk,
    # grouped + TWO_PASS, bottom-right T > M
    chunked = [key for key in interpreted if " chunk" in key]
    assert {"bwd(o)[0]", "bwd(o)[1]", "bwd(o)[2]", "bwd(stats)[0]", "bwd(stats)[1]",
            "bwd(stats)[2]", "sdpa_bwd_dq[0]"} <= {key.split()[0] for key in chunked}
    assert all(" fp16 " in key for key in chunked)
    assert any("H5" in key and "causal=True" in key for key in chunked)
    assert any("Hkv2" in key and "two_pass" in key for key in chunked)
    masked = {key.split()[0].split("[")[0] for key in interpreted if " mask(" in key}
    assert every <= masked
    # key padding through both mask codes: the hinted flavours' (MASKED 2, its own sweeps) and
    # the masked flavour's single masked sweep (MASKED 1)
    for level in (" MASKED=1", ""):
        padded = {key.split()[0].split("[")[0] for key in interpreted
                  if ", 1, 1, " in key and (level in key if level else " MASKED=1" not in key)}
        assert every <= padded, level


def test_interpreted_kernels_match_the_fp64_reference(interpreted):
    bad = {k: v for k, v in interpreted.items() if not v[0] <= v[1]}
    assert not bad, json.dumps(bad, indent=1)

"""Block-config sweep for the backward-JVP kernels (JIT, on the GPU machine only).

Times each config of bwd_jvp_rows / bwd_jvp_dq / bwd_jvp_dkdv with Triton's JIT and arguments
assembled by name (build_tools/jit_call.py, as the AOT launchers do) at B=2, H=16, T=M=4096,
D=64 ("d128": T=M=1024, D=128), with tdO absent (the HVP), and prints the best per kernel and
precision. Precisions: bf16, fp32 (the products variants.toml gives these ops: "tf32x3"; only
the shipped sm_90 config, as the control) and bf16x6 (fp32 as six bfloat16 products, the sm_90
float32 precision of the first-order ops). At D = 128 every float32 candidate is compiled with
ptxas --minnctapersm 1 (variants.toml min_blocks_per_sm: without it ptxas planned some of these
kernels for full occupancy and spilled KBs per thread). Candidates compile in parallel worker
processes first (tune_real.py's _precompile), then are timed one after another.
Configs found here go into kernels/variants.toml; the AOT build then ships them.
Usage: python tune_hvp.py [bf16 fp32 bf16x6 d128]   (default: bf16 fp32 at D = 64)
"""

import math
import sys
from functools import partial
from pathlib import Path

import torch
from triton.testing import do_bench
from tune_real import _key, _precompile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from build_tools import jit_call  # noqa: E402
from build_tools.variants import load  # noqa: E402

SPEC = load(ROOT / "kernels" / "variants.toml")
SHAPE = {64: (2, 16, 4096, 64), 128: (2, 16, 1024, 128)}
PRECISIONS = {"bf16": ("bf16", None), "fp32": ("fp32", None), "bf16x6": ("fp32", "bf16x6")}
# (BLOCK_M, BLOCK_N, num_warps, num_stages) candidates per precision, head dim and op
GRID = {
    ("bf16", 64): {
        "bwd_jvp_rows": [(64, 64, 4, 2), (128, 64, 8, 2), (64, 128, 4, 2), (128, 32, 4, 2),
                         (64, 32, 4, 3), (128, 64, 4, 2)],
        "bwd_jvp_dq": [(64, 32, 4, 2), (64, 64, 4, 2), (128, 32, 8, 2), (128, 64, 8, 2),
                       (64, 32, 4, 3), (128, 32, 4, 2)],
        "bwd_jvp_dkdv": [(32, 64, 4, 2), (16, 64, 4, 2), (32, 128, 8, 2), (64, 64, 4, 2),
                         (32, 64, 4, 3), (64, 128, 8, 2)],
    },
    # the control: the shipped sm_90 configs ("tf32x3"; tune_hvp_h200.log, hvp_fp32_d128_h200.log)
    ("fp32", 64): {"bwd_jvp_rows": [(64, 64, 4, 1)], "bwd_jvp_dq": [(32, 32, 4, 2)],
                   "bwd_jvp_dkdv": [(32, 32, 4, 2)]},
    ("fp32", 128): {"bwd_jvp_rows": [(16, 32, 4, 1)], "bwd_jvp_dq": [(16, 32, 4, 1)],
                    "bwd_jvp_dkdv": [(16, 16, 4, 1)]},
    ("bf16x6", 64): {
        "bwd_jvp_rows": [(64, 64, 4, 1), (64, 64, 4, 2), (128, 64, 8, 1), (128, 64, 8, 2),
                         (64, 32, 4, 2), (128, 32, 8, 2), (64, 128, 8, 1)],
        "bwd_jvp_dq": [(32, 32, 4, 2), (64, 32, 4, 2), (64, 64, 4, 2), (128, 64, 8, 2),
                       (128, 32, 8, 2), (64, 32, 4, 1), (64, 64, 8, 2)],
        "bwd_jvp_dkdv": [(32, 32, 4, 2), (32, 64, 4, 2), (64, 64, 4, 2), (32, 128, 8, 2),
                         (64, 64, 8, 2), (32, 64, 8, 1), (64, 128, 8, 1)],
    },
    ("bf16x6", 128): {
        "bwd_jvp_rows": [(16, 32, 4, 1), (32, 32, 4, 1), (64, 32, 8, 1), (32, 64, 8, 1),
                         (64, 64, 8, 1), (64, 32, 4, 1)],
        "bwd_jvp_dq": [(16, 32, 4, 1), (32, 32, 4, 1), (64, 32, 8, 1), (32, 32, 8, 1),
                       (64, 64, 8, 1), (128, 32, 8, 1)],
        "bwd_jvp_dkdv": [(16, 16, 4, 1), (16, 32, 4, 1), (32, 32, 8, 1), (32, 32, 4, 1),
                         (16, 64, 4, 1), (32, 64, 8, 1)],
    },
}
MATMULS = {"bwd_jvp_rows": 5, "bwd_jvp_dq": 7, "bwd_jvp_dkdv": 8}  # of 2*T*M*D each
TORCH_DTYPE = {"bf16": torch.bfloat16, "fp32": torch.float32}


def _tensors(shape, dtype):
    """The HVP's inputs and outputs by pointer name (tdO absent)."""
    import aot_sdpa

    B, H, T, D = shape
    x = {n: torch.randn(B, H, T, D, device="cuda", dtype=dtype)
         for n in ("Q", "K", "V", "TQ", "TK", "TV", "DO")}
    _, m, l = aot_sdpa.triton_sdpa_fused(x["Q"], x["K"], x["V"])  # the forward's stats
    rows = torch.empty(3, B * H, T, device="cuda")
    return {**x, "TDO": None, "Mstat": m, "Lstat": l, "Rbuf": rows[0], "Zbuf": rows[1],
            "ZDbuf": rows[2], "HQ": torch.empty_like(x["Q"]), "HK": torch.empty_like(x["K"]),
            "HV": torch.empty_like(x["V"])}


def _launch(job, tensors, shape):
    import aot_sdpa

    op, _, dtype, ip, (bm, bn, w, st), mb = job
    B, H, T, D = shape
    named = {n: tensors.get(n) for n in aot_sdpa._native.OPS[op].pointers}
    jit_call.call(SPEC, op, dtype, named, (B, H, T, T, D), 1 / math.sqrt(D),
                  blocks={"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st,
                  input_precision=ip, min_blocks_per_sm=mb)


def _compile(job, D):
    """Worker: compile (and run once) one candidate at small sizes (the cache is shared)."""
    try:  # Triton specialises ints on divisibility by 16: one size of each kind
        for T in (197, 256):
            shape = (1, 2, T, D)
            _launch(job, _tensors(shape, TORCH_DTYPE[job[2]]), shape)
        torch.cuda.synchronize()
        return None
    except Exception as exc:  # out of resources etc.
        return f"{job[0]} {job[1]} {job[4]}: {type(exc).__name__} {exc}"[:200]


def main(names):
    D = 128 if "d128" in names else 64
    precs = [p for p in PRECISIONS if p in names] or ["bf16", "fp32"]
    shape = SHAPE[D]
    B, H, T, _ = shape
    # fp32 at D = 128 as shipped: --minnctapersm 1 (the control: its dK/dV kernel only)
    jobs = [(op, p, *PRECISIONS[p], cfg,
             1 if D == 128 and PRECISIONS[p][0] == "fp32"
             and (p != "fp32" or op == "bwd_jvp_dkdv") else None)
            for p in precs for op, cfgs in GRID[(p, D)].items() for cfg in cfgs]
    failed = _precompile(jobs, partial(_compile, D=D))
    best = {}
    for p in precs:
        tensors = _tensors(shape, TORCH_DTYPE[PRECISIONS[p][0]])
        for job in (j for j in jobs if j[1] == p and _key(j) not in failed):
            op, cfg = job[0], job[4]
            try:
                ms = do_bench(lambda j=job, x=tensors: _launch(j, x, shape), warmup=10, rep=40)
            except Exception as exc:
                print(f"{p} {op} {cfg}: {type(exc).__name__} {exc}"[:200])
                continue
            tf = MATMULS[op] * 2 * B * H * T * T * D / ms / 1e9
            best.setdefault((p, op), []).append((round(ms, 4), cfg))
            print(f"D={D} {p} {op} {cfg}: {ms:.3f} ms {tf:.0f} TFLOP/s", flush=True)
        del tensors
        torch.cuda.empty_cache()
    for (p, op), res in best.items():
        print(f"BEST D={D} {p} {op}: {sorted(res)[:3]}  first {res[0]}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

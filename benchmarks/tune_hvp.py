"""Block-config sweep for the backward-JVP kernels (JIT, on the GPU machine only).

Times each config of bwd_jvp_rows / bwd_jvp_dq / bwd_jvp_dkdv with Triton's JIT and arguments
assembled by name (build_tools/jit_call.py, as the AOT launchers do) at B=2, H=16, T=M=4096,
D=64 ("d128": T=M=1024, D=128), with tdO absent (the HVP), and prints the best per kernel and
precision. Precisions: bf16, fp32 ("tf32x3" products on the sm_90 tiles of that precision, as
the control) and bf16x6 (fp32 as six bfloat16 products, the sm_90
float32 precision of the first-order ops). At D = 128 every float32 candidate is compiled with
ptxas --minnctapersm 1 (variants.toml min_blocks_per_sm: without it ptxas planned some of these
kernels for full occupancy and spilled KBs per thread). Candidates compile in parallel worker
processes first, then are timed one after another, with tune_real.py's tensors, launch and
workers (_tensors, _launch, _compile, _precompile).
Configs found here go into kernels/variants.toml; the AOT build then ships them.
Usage: python tune_hvp.py [bf16 fp32 bf16x6 d128]   (default: bf16 fp32 at D = 64)
"""

import sys
from functools import partial

import torch
from triton.testing import do_bench
from tune_real import TORCH_DTYPE, _compile, _key, _launch, _precompile, _tensors

SHAPE = {64: (2, 16, 4096, 64), 128: (2, 16, 1024, 128)}
PRECISIONS = {"bf16": ("bf16", None), "fp32": ("fp32", "tf32x3"), "bf16x6": ("fp32", "bf16x6")}
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
    # the control: the sm_90 "tf32x3" tiles (shipped for rows and dQ; dK/dV's until it moved to
    # bf16x6): tune_hvp_h200.log, hvp_fp32_d128_h200.log
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
    failed = _precompile(jobs, partial(_compile, Ds=(D,)))
    best = {}
    for p in precs:
        tensors = _tensors(shape, TORCH_DTYPE[PRECISIONS[p][0]])
        for job in (j for j in jobs if j[1] == p and _key(j) not in failed):
            op, _, dtype, ip, cfg, mb = job
            try:
                ms = do_bench(lambda x=tensors: _launch(op, dtype, ip, cfg, x, shape, mb=mb),
                              warmup=10, rep=40)
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

"""Block-config sweep for the backward-JVP kernels (JIT, on the GPU machine only).

Times each config of bwd_jvp_rows / bwd_jvp_dq / bwd_jvp_dkdv with Triton's JIT and arguments
assembled by name (build_tools/jit_call.py, as the AOT launchers do) at B=2, H=16, T=M=4096,
D=64, with tdO absent (the HVP), and prints the best per kernel and dtype. Configs found here
go into kernels/variants.toml; the AOT build then ships them. Usage: python tune_hvp.py [dtypes]
"""

import math
import sys
from pathlib import Path

import torch
from triton.testing import do_bench

import aot_sdpa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from build_tools import jit_call  # noqa: E402
from build_tools.variants import load  # noqa: E402

SPEC = load(ROOT / "kernels" / "variants.toml")
B, H, T, D = 2, 16, 4096, 64
GRID = {  # (BLOCK_M, BLOCK_N, num_warps, num_stages) candidates per op
    "bwd_jvp_rows": [(64, 64, 4, 2), (128, 64, 8, 2), (64, 128, 4, 2), (128, 32, 4, 2),
                     (64, 32, 4, 3), (128, 64, 4, 2)],
    "bwd_jvp_dq": [(64, 32, 4, 2), (64, 64, 4, 2), (128, 32, 8, 2), (128, 64, 8, 2),
                   (64, 32, 4, 3), (128, 32, 4, 2)],
    "bwd_jvp_dkdv": [(32, 64, 4, 2), (16, 64, 4, 2), (32, 128, 8, 2), (64, 64, 4, 2),
                     (32, 64, 4, 3), (64, 128, 8, 2)],
}
FP32_GRID = {
    "bwd_jvp_rows": [(64, 32, 4, 1), (32, 32, 4, 1), (64, 64, 4, 1), (32, 64, 4, 2)],
    "bwd_jvp_dq": [(32, 32, 4, 1), (64, 32, 4, 1), (32, 32, 4, 2), (64, 32, 8, 1)],
    "bwd_jvp_dkdv": [(32, 32, 4, 1), (16, 64, 4, 1), (32, 64, 4, 1), (32, 32, 4, 2)],
}
MATMULS = {"bwd_jvp_rows": 5, "bwd_jvp_dq": 7, "bwd_jvp_dkdv": 8}  # of 2*T*M*D each


def main(dtypes):
    for dtype in dtypes:
        dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
        x = {n: torch.randn(B, H, T, D, device="cuda", dtype=dt)
             for n in ("Q", "K", "V", "TQ", "TK", "TV", "DO")}
        _, m, l = aot_sdpa.triton_sdpa_fused(x["Q"], x["K"], x["V"])  # the forward's stats
        rows = torch.empty(3, B * H, T, device="cuda")
        out = {"HQ": torch.empty_like(x["Q"]), "HK": torch.empty_like(x["K"]),
               "HV": torch.empty_like(x["V"])}
        tensors = {**x, "TDO": None, "Mstat": m, "Lstat": l, "Rbuf": rows[0], "Zbuf": rows[1],
                   "ZDbuf": rows[2], **out}
        grid = FP32_GRID if dtype == "fp32" else GRID
        for op, cfgs in grid.items():
            abi = aot_sdpa._native.OPS[op]
            named = {n: tensors[n] for n in abi.pointers}
            res = []
            for bm, bn, w, st in cfgs:
                def run():
                    jit_call.call(SPEC, op, dtype, named, (B, H, T, T, D), 1 / math.sqrt(D),
                                  blocks={"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w,
                                  num_stages=st)
                try:
                    run()
                    ms = do_bench(run, warmup=10, rep=40)
                except Exception as exc:  # out of resources etc.
                    print(f"{dtype} {op} {(bm, bn, w, st)}: {type(exc).__name__} {exc}"[:200])
                    continue
                tf = MATMULS[op] * 2 * B * H * T * T * D / ms / 1e9
                res.append((ms, (bm, bn, w, st)))
                print(f"{dtype} {op} {(bm, bn, w, st)}: {ms:.3f} ms {tf:.0f} TFLOP/s", flush=True)
            res.sort()
            print(f"BEST {dtype} {op}: {res[:3]}", flush=True)
        del x, tensors
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:] or ["bf16", "fp32"])

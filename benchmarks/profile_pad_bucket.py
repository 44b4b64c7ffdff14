"""What the head-dim bucket 32 buys: D <= 32 in its own bucket against padded into bucket 64.

Each op at each shape runs twice in one process with Triton's JIT (arguments assembled by name
as the AOT launchers do, build_tools/jit_call.py): once dispatched as shipped (bucket 32 and
its configs) and once with bucket 32 left out of the variant list (bucket 64 and its configs,
the tail columns masked), each timed inside a CUDA graph. Measured to decide whether the bucket
could go to save build time (results/pad_bucket32_h200.log: it stays).

    python profile_pad_bucket.py
"""

import dataclasses
import math

import torch
import tune_real  # puts the repository root on sys.path (build_tools)
from triton.testing import do_bench_cudagraph

from build_tools import jit_call

SHAPES = {  # name: (B, H, T, D)
    "swin": (4096, 3, 49, 32),  # Swin-T stage 1: 7x7 windows of 64 images, 3 heads of 32
    "vit": (32, 12, 197, 32), "mid": (8, 16, 1024, 32), "long": (2, 16, 4096, 32),
    "d16": (32, 12, 197, 16),
}
OPS = ("fwd", "bwd_dkdv", "bwd_dq", "jvp", "fwd_jvp")


def main():
    shipped = tune_real.SPEC
    padded = dataclasses.replace(
        shipped, variants=[v for v in shipped.variants if v.head_dim != 32])
    for name, (B, H, T, D) in SHAPES.items():
        for dtype in ("fp16", "fp32"):
            tensors = tune_real._tensors((B, H, T, D), tune_real.TORCH_DTYPE[dtype])
            for op in OPS:
                ms = []
                for spec in (shipped, padded):
                    def fn(spec=spec, op=op, x=tensors):
                        jit_call.call(spec, op, dtype, x, (B, H, T, T, D), 1 / math.sqrt(D))
                    fn()  # compile outside the graph
                    torch.cuda.synchronize()
                    ms.append(do_bench_cudagraph(fn, rep=30))
                print(f"{name} {(B, H, T, D)} {dtype} {op}: bucket32 {ms[0]:.4f} ms  "
                      f"bucket64 {ms[1]:.4f} ms  x{ms[1] / ms[0]:.2f}", flush=True)
            tensors = None
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

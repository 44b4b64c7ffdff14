"""Block-config sweep for the fast fp16 variants at D=64 (JIT, on the GPU machine only).

Imports the kernels from kernels/ with Triton's JIT (present on the device machine, never at
run time of the package), times each config with CUDA events, prints the best per kernel.
Configs found here go into kernels/variants.toml; the AOT build then ships them.
"""

import itertools
import math
import sys
from pathlib import Path

import torch
import triton
from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "kernels"))
import sdpa_bwd  # noqa: E402
import sdpa_fwd  # noqa: E402

B, H, T, D = 4, 16, 4096, 64
dt = torch.float16


def strides3(*ts):
    return [s for t in ts for s in t.stride()[:3]]


def main():
    q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=dt) for _ in range(4))
    o = torch.empty_like(q)
    stats = torch.empty(2, B, H, T, device="cuda", dtype=torch.float32)
    m, l = stats[0], stats[1]
    z = torch.empty(B * H, T, device="cuda", dtype=torch.float32)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    scale = 1 / math.sqrt(D)
    flops = 4 * B * H * T * T * D
    common = dict(HEAD_DIM=D, EVEN_D=True, INPUT_PRECISION="tf32")
    results = {}

    def run(name, fn, cfg, f):
        try:
            ms = do_bench(fn, warmup=25, rep=100)
        except Exception as exc:  # out of resources etc.
            print(f"{name} {cfg}: {type(exc).__name__}")
            return
        results.setdefault(name, []).append((ms, cfg))
        print(f"{name} {cfg}: {ms:.4f} ms {f / ms / 1e9:.1f} TFLOP/s", flush=True)

    for bm, bn, w, s in itertools.product((64, 128), (64, 128), (4, 8), (2, 3, 4)):
        grid = (triton.cdiv(T, bm), B * H, 1)
        fn = lambda: sdpa_fwd._sdpa_fwd_kernel[grid](
            q, k, v, o, m, l, scale, *strides3(q, k, v, o, m), B, H, T, T, D,
            BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=s, **common)
        run("fwd", fn, (bm, bn, w, s), flops)
    sdpa_bwd._sdpa_bwd_z_from_o_kernel[(triton.cdiv(T, 64), B * H, 1)](
        o, do, z, *strides3(o, do), B, H, T, D, BLOCK_M=64, HEAD_DIM=D, EVEN_D=True)
    for bm, bn, w, s in itertools.product((32, 64), (64, 128), (4, 8), (2, 3, 4)):
        grid = (triton.cdiv(T, bn), B * H, 1)
        fn = lambda: sdpa_bwd._sdpa_bwd_dkdv_kernel[grid](
            q, k, v, do, m, l, z, dk, dv, scale, *strides3(q, k, v, do, dk, dv, m, l),
            B, H, T, T, D, BLOCK_M=bm, BLOCK_N=bn, COMPUTE_DK=1, COMPUTE_DV=1, num_warps=w,
            num_stages=s, **common)
        run("bwd_dkdv", fn, (bm, bn, w, s), 2.0 * flops)  # S^T, dV, dP^T, dK: 4 matmuls
    for bm, bn, w, s in itertools.product((64, 128), (32, 64), (4, 8), (2, 3, 4)):
        grid = (triton.cdiv(T, bm), B * H, 1)
        fn = lambda: sdpa_bwd._sdpa_bwd_dq_kernel[grid](
            q, k, v, do, m, l, z, dq, scale, *strides3(q, k, v, do, dq, m, l), B, H, T, T, D,
            BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=s, **common)
        run("bwd_dq", fn, (bm, bn, w, s), 1.5 * flops)  # S, dP, dQ: 3 matmuls
    print("\nbest (BLOCK_M, BLOCK_N, num_warps, num_stages), fp16 D=64 T=4096:")
    for name, rs in results.items():
        rs.sort()
        print(name, [(round(ms, 4), cfg) for ms, cfg in rs[:4]])


if __name__ == "__main__":
    main()

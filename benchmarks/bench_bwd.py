"""Backward TFLOP/s: aot_sdpa.sdpa_bwd vs torch flash and cuDNN backward, same run.

D=64, B*T = 16k, T in {512..8k}. FLOPs = 2.5 x forward = 2.5 * 4*B*H*T*M*D (the usual
convention: five T x M x D matmuls in the backward vs two in the forward).
"""

import torch

import aot_sdpa

from _harness import (
    compare,
    fwd_flops,
    plot,
    sweep_16k,
    table,
    torch_backend,
    torch_bwd,
    write_csv,
)


def main():
    rows = []
    H, D = 16, 64
    for dtype, B, T, key in sweep_16k(H, D):
        q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=dtype) for _ in range(4))
        o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
        impls = {"aot_sdpa": (None, lambda: aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o))}
        for bk in ("flash", "cudnn"):
            with torch_backend(bk):  # build each backend's graph under that backend
                impls[bk] = (bk, torch_bwd(q, k, v, do))
        rows += compare(impls, flops=2.5 * fwd_flops(B, H, T, T, D), key=key)
    write_csv("bwd", rows)
    plot("bwd", [r for r in rows if r["dtype"] == "float16"], "T", "tflops", "impl",
         "SDPA backward fp16, D=64, B*T=16k (TFLOP/s, 2.5 x 4BHTMD)")
    print(table(rows, ["dtype", "T", "impl", "ms", "p10_ms", "p90_ms", "tflops", "aot_speedup"]))


if __name__ == "__main__":
    main()

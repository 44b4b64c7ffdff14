"""Forward TFLOP/s: aot_sdpa vs torch flash (FA2) and cuDNN, same run, D=64, B*T = 16k.

FLOPs = 4*B*H*T*M*D (Q K^T and P V, 2*T*M*D each per batch*head).
"""

import torch

import aot_sdpa

from _harness import compare, fwd_flops, plot, sweep_16k, table, write_csv

F = torch.nn.functional


def main():
    rows = []
    H, D = 16, 64
    for dtype, B, T, key in sweep_16k(H, D):
        q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=dtype) for _ in range(3))
        rows += compare(
            {"aot_sdpa": (None, lambda: aot_sdpa.triton_sdpa_fused(q, k, v)),
             "flash": ("flash", lambda: F.scaled_dot_product_attention(q, k, v)),
             "cudnn": ("cudnn", lambda: F.scaled_dot_product_attention(q, k, v))},
            flops=fwd_flops(B, H, T, T, D), key=key)
    write_csv("fwd", rows)
    plot("fwd", [r for r in rows if r["dtype"] == "float16"], "T", "tflops", "impl",
         "SDPA forward fp16, D=64, B*T=16k (TFLOP/s, 4BHTMD)")
    print(table(rows, ["dtype", "T", "impl", "ms", "p10_ms", "p90_ms", "tflops", "aot_speedup"]))


if __name__ == "__main__":
    main()

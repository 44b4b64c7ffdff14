"""sdpa_hvp in float32, per kernel (GPU only): device time per call (backlogged_ms) and each
kernel's share (torch.profiler), at D = 128 (T = 1k, 4k), D = 64 and DiT-XL/2 (D = 72).

    python profile_hvp_kernels.py LABEL      # LABEL tags the printed lines (e.g. a tree)

results/hvp_fp32_d128_h200.log: the dK/dV kernel's ptxas occupancy fallback, before and after.
"""

import sys

import torch

import aot_sdpa

from _harness import backlogged_ms, kernel_times

SHAPES = ((2, 16, 1024, 128), (2, 16, 4096, 128), (2, 16, 1024, 64), (32, 16, 256, 72))


def main(label: str) -> None:
    for B, H, T, D in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, do, tq, tk, tv = (torch.randn(B, H, T, D, device="cuda", generator=g)
                                   for _ in range(7))
        fn = lambda: aot_sdpa.sdpa_hvp(q, k, v, do, tq, tk, tv)  # noqa: E731
        ms = backlogged_ms(fn)["ms"]
        ks = "; ".join(f"{n[:40]} {t:.3f}" for n, t in kernel_times(fn) if t > 0.01)
        print(f"HVP {label} fp32 {(B, H, T, D)} {ms:.3f} ms | {ks}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")

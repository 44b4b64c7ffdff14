"""Forward+JVP as one fused kernel or as the forward kernel then the JVP kernel (same process,
same inputs), float32 (fp32-accurate, "highest") and TF32 ("high"): the measurement behind
python/aot_sdpa/_ops.py split_fwd_jvp, which splits float32 calls in the 128 head-dim bucket where
their products are "tf32x3" (sm_80), and TF32 calls at D = 128.
Shapes: ViT-B (D = 64, the fused kernel's control), DiT-XL/2 (D = 72, bucket 128), D = 128 at
T = 1024 and 4096. Device time per sdpa_fwd_jvp call with a GPU backlog (_harness). FLOPs:
forward+JVP 3 x forward = 12*B*H*T*M*D. Writes results/fwd_jvp_split.csv.
"""

from __future__ import annotations

import torch

import aot_sdpa
from aot_sdpa import _ops

from _harness import backlogged_ms, fwd_flops, table, write_csv

SHAPES = {"ViT-B": (32, 12, 197, 64), "DiT-XL/2": (32, 16, 256, 72),
          "D128-1k": (16, 16, 1024, 128), "D128-4k": (4, 16, 4096, 128)}
PRECISION = {"fp32": "highest", "tf32": "high"}


def main():
    rule = _ops.split_fwd_jvp
    rows = []
    try:
        for name, (B, H, T, D) in SHAPES.items():
            x = [torch.randn(B, H, T, D, device="cuda") for _ in range(6)]
            for prec, mode in PRECISION.items():
                torch.set_float32_matmul_precision(mode)
                row = {"shape": name, "B": B, "H": H, "T": T, "D": D, "precision": prec}
                for label, split in (("fused", False), ("split", True)):
                    _ops.split_fwd_jvp = lambda dt, d, dev, s=split: s
                    r = backlogged_ms(lambda: aot_sdpa.sdpa_fwd_jvp(*x))
                    row[f"{label}_ms"] = round(r["ms"], 4)
                _ops.split_fwd_jvp = rule
                row["split_speedup"] = round(row["fused_ms"] / row["split_ms"], 3)
                row["rule_splits"] = rule(3 if prec == "tf32" else 2, D,
                                          torch.cuda.current_device())
                row["tflops_best"] = round(3 * fwd_flops(B, H, T, T, D) / min(
                    row["fused_ms"], row["split_ms"]) / 1e9, 1)
                rows.append(row)
                print(table([row], list(row)), flush=True)
    finally:
        _ops.split_fwd_jvp = rule
        torch.set_float32_matmul_precision("highest")
    write_csv("fwd_jvp_split", rows)
    print(table(rows, list(rows[0])))
    for r in rows:
        wins = "split" if r["split_speedup"] > 1 else "fused"
        agree = (wins == "split") == r["rule_splits"]
        print(f"RULE {r['shape']} {r['precision']}: faster {wins} ({r['split_speedup']}x), "
              f"split_fwd_jvp says {'split' if r['rule_splits'] else 'fused'}: "
              f"{'agrees' if agree else 'DISAGREES'}")


if __name__ == "__main__":
    main()

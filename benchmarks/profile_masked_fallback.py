"""The masked flavour's key padding: what a call that masked_fast / padding_fast do not take
(a head dim below its bucket, unaligned data) and the second-order op cost, by device time
(backlogged_ms: the host out of the way). bf16, BERT-base-sized (B=32, H=12, T=512) at
D = 64 (aligned: padding_fast) and D = 80 (bucket 128: the masked flavour), no mask / key
padding (bench_masks' bool (B, 1, 1, M)) / dense additive ((1, H, T, M)); forward (the
fused forward), backward (sdpa_bwd with o) and the backward-JVP (sdpa_bwd_jvp, masked flavour at
every D). Prints one line per cell; run it on two builds to compare them (the key-padding
sweeps were compiled out of the masked flavour, kernels/variants.toml)."""

import torch
from bench_masks import _mask

import aot_sdpa

from _harness import backlogged_ms


def main():
    B, H, T = 32, 12, 512
    dt = torch.bfloat16
    for D in (64, 80):
        q, k, v, do, tq, tk, tv = (torch.randn(B, H, T, D, device="cuda", dtype=dt)
                                   for _ in range(7))
        o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
        for kind in ("none", "key_padding", "additive"):
            mask = None if kind == "none" else _mask(kind, B, H, T, T, dt)
            o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v, mask=mask)
            work = {
                "fwd": lambda: aot_sdpa.triton_sdpa_fused(q, k, v, mask=mask),
                "bwd": lambda: aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o, mask=mask),
                "bwd_jvp": lambda: aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv,
                                                         mask=mask),
            }
            for name, fn in work.items():
                t = backlogged_ms(fn)
                print(f"D={D} {kind:12s} {name:8s} {t['ms']:.4f} ms "
                      f"(p10 {t['p10_ms']:.4f}, p90 {t['p90_ms']:.4f})", flush=True)


if __name__ == "__main__":
    main()

"""Head dims below their bucket (D = 40, 72, 80, 96: SD 1.x, DiT-XL, Phi): the hinted flavours
(aligned operands: 16-byte vector loads, cp.async pipelining; ragged below the bucket, fast
where the 16-bit sm_90 forward's split buckets 80 and 96 fit D exactly) against the general
flavour (the same operands with rows D + 4 elements apart, which no hinted flavour accepts)
and torch's best path, one process, one GPU.

fp16 and bf16, B*T = 8k tokens at T = 256 (DiT-XL/2's sequence) and 16k at T = 1024, H = 16.
Work: forward (triton_sdpa_fused) and backward (sdpa_bwd from the forward's stats, with O);
torch: flash, cuDNN, efficient (each where it runs), forward and autograd backward.
FLOPs: forward 4*B*H*T*M*D, backward 2.5x that. aot_speedup = impl time / ours (ragged).
Writes results/ragged.csv.
"""

import torch

import aot_sdpa

from _harness import compare, fwd_flops, padded_rows, table, torch_backend, torch_bwd, write_csv

F = torch.nn.functional


def main():
    rows = []
    H = 16
    for dtype in (torch.float16, torch.bfloat16):
        for D in (40, 72, 80, 96):
            for T, tokens in ((256, 8192), (1024, 16384)):
                B = tokens // T
                key = {"dtype": str(dtype).split(".")[-1], "D": D, "T": T, "B": B, "H": H}
                q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=dtype)
                               for _ in range(4))
                pq, pk, pv, pdo = (padded_rows(x, 4) for x in (q, k, v, do))
                o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
                po = padded_rows(o, 4)
                flops = fwd_flops(B, H, T, T, D)
                sdpa = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
                fwd = {"aot_sdpa": (None, lambda: aot_sdpa.triton_sdpa_fused(q, k, v)),
                       "aot_general": (None, lambda: aot_sdpa.triton_sdpa_fused(pq, pk, pv))}
                bwd = {"aot_sdpa": (None, lambda: aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)),
                       "aot_general": (None, lambda: aot_sdpa.sdpa_bwd(pq, pk, pv, pdo, m, l,
                                                                       o=po))}
                for bk in ("flash", "cudnn", "efficient"):
                    try:  # the backends that run this head dim and dtype, forward and backward
                        with torch_backend(bk):
                            sdpa()
                            fn = torch_bwd(q, k, v, do)
                            fn()
                    except RuntimeError:
                        continue
                    fwd[bk], bwd[bk] = (bk, sdpa), (bk, fn)
                rows += compare(fwd, flops=flops, key={**key, "op": "fwd"})
                rows += compare(bwd, flops=2.5 * flops, key={**key, "op": "bwd"})
    write_csv("ragged", rows)
    print(table(rows, ["dtype", "D", "T", "op", "impl", "ms", "tflops", "aot_speedup"]))
    for op in ("fwd", "bwd"):
        gen = [r["aot_speedup"] for r in rows if r["op"] == op and r["impl"] == "aot_general"]
        best = {}
        for r in rows:
            if r["op"] == op and r["impl"] not in ("aot_sdpa", "aot_general"):
                k = (r["dtype"], r["D"], r["T"])
                best[k] = min(best.get(k, float("inf")), r["aot_speedup"])
        print(f"{op}: general / ragged {min(gen):.2f}-{max(gen):.2f}x; "
              f"torch best / ragged {min(best.values()):.2f}-{max(best.values()):.2f}x")


if __name__ == "__main__":
    main()

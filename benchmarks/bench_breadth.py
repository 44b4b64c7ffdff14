"""Head dim 128 and causal attention: aot_sdpa vs torch flash (FA2) and cuDNN, same run.

bf16 and fp16, B*T = 16k tokens, H = 16, D in {64, 128} (or the head dims named, e.g. 256),
causal in {no, top-left}, T in {1k, 4k, 8k}. Forward, backward (from the forward's stats /
torch's autograd graph) and forward + JVP (sdpa_fwd_jvp vs torch.func.jvp of the math backend,
the only torch path with forward AD; T <= 4k there: the math backend materialises B*H*T*T
scores). FLOPs (non-causal; causal does half, counted as half): forward 4*B*H*T*M*D,
backward 2.5x that, forward+JVP 3x.
Goals printed at the end: >= 1.2x torch flash at D=128 forward and backward, causal >= 1.2x.

    python bench_breadth.py          # every row
    python bench_breadth.py 128 256  # measure the named head dims, keep the CSV's other rows
"""

import sys

import torch

import aot_sdpa

from _harness import (
    compare,
    fwd_flops,
    kept_rows,
    plot,
    table,
    torch_backend,
    torch_bwd,
    write_csv,
)

F = torch.nn.functional


def main(head_dims: list[int]):
    rows = kept_rows("breadth", lambda r: r["D"] not in head_dims) if head_dims else []
    H = 16
    for dtype in (torch.bfloat16, torch.float16):
        for D in head_dims or (64, 128):
            for causal in (False, True):
                for T in (1024, 4096, 8192):
                    B = 16384 // T
                    key = {"dtype": str(dtype).split(".")[-1], "D": D,
                           "causal": int(causal), "T": T, "B": B, "H": H}
                    x = [torch.randn(B, H, T, D, device="cuda", dtype=dtype) for _ in range(7)]
                    q, k, v, do, tq, tk, tv = x
                    flops = fwd_flops(B, H, T, T, D) * (0.5 if causal else 1.0)
                    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v, causal=causal)
                    sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    rows += compare(
                        {"aot_sdpa": (None, lambda: aot_sdpa.triton_sdpa_fused(
                            q, k, v, causal=causal)),
                         "flash": ("flash", sdpa), "cudnn": ("cudnn", sdpa)},
                        flops=flops, key={**key, "op": "fwd"})
                    impls = {"aot_sdpa": (None, lambda: aot_sdpa.sdpa_bwd(
                        q, k, v, do, m, l, o=o, causal=causal))}
                    for bk in ("flash", "cudnn"):
                        with torch_backend(bk):
                            impls[bk] = (bk, torch_bwd(q, k, v, do, is_causal=causal))
                    rows += compare(impls, flops=2.5 * flops, key={**key, "op": "bwd"})
                    if T <= 4096:
                        jvp = {"aot_sdpa": (None, lambda: aot_sdpa.sdpa_fwd_jvp(
                            q, k, v, tq, tk, tv, causal=causal)),
                            "math": ("math", lambda: torch.func.jvp(
                                lambda a, b, c: F.scaled_dot_product_attention(
                                    a, b, c, is_causal=causal), (q, k, v), (tq, tk, tv)))}
                        rows += compare(jvp, flops=3 * flops, key={**key, "op": "fwd_jvp"})
    write_csv("breadth", rows)
    for op in ("fwd", "bwd"):
        plot(f"breadth_{op}", [r for r in rows if r["dtype"] == "bfloat16" and r["op"] == op
                               and r["impl"] != "math"],
             "T", "tflops", "impl", f"SDPA {op} bf16 (D and causal in the CSV), B*T=16k")
    print(table(rows, ["dtype", "op", "D", "causal", "T", "impl", "ms", "p10_ms", "p90_ms",
                       "tflops", "aot_speedup"]))
    _goals(rows)


def _goals(rows):
    """flash time / ours per (dtype, op, D, causal, T), and the cuDNN ratio beside it."""
    print("\ngoals: >= 1.2x torch flash at D=128 fwd/bwd and causal (ratio = their ms / ours)")
    for r in rows:
        if r["impl"] in ("flash", "cudnn", "math") and r["op"] in ("fwd", "bwd", "fwd_jvp"):
            tag = (r["dtype"], r["op"], r["D"], r["causal"], r["T"])
            if r["impl"] == "flash" and (r["D"] == 128 or r["causal"]):
                ok = "ok" if r["aot_speedup"] >= 1.2 else "MISSED"
                print(f"  {tag}: {r['aot_speedup']:.2f}x flash  {ok}")
            elif r["impl"] == "cudnn" and (r["D"] == 128 or r["causal"]):
                print(f"  {tag}: {r['aot_speedup']:.2f}x cudnn")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])

"""Host time per call at a tiny, host-bound shape (1, 8, 128, 64) fp16, same process.

Wall time of N back-to-back calls / N (the GPU work is shorter than the host work here, so
this is the Python + dispatch + launch cost a latency-sensitive caller pays).
"""

import time

import torch

import aot_sdpa

from _harness import table, torch_backend, write_csv

F = torch.nn.functional


def per_call_us(fn, n=3000, repeats=5):
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        best.append((time.perf_counter() - t0) / n * 1e6)
    best.sort()
    return best[len(best) // 2], best[0], best[-1]


def main():
    q, k, v = (torch.randn(1, 8, 128, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    do = torch.randn_like(q)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    cases = [
        ("aot_sdpa.triton_sdpa_fused", None, lambda: aot_sdpa.triton_sdpa_fused(q, k, v)),
        ("aot_sdpa.scaled_dot_product_attention", None,
         lambda: aot_sdpa.scaled_dot_product_attention(q, k, v)),
        ("aot_sdpa.sdpa_bwd(o=o)", None, lambda: aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)),
        ("F.sdpa default", None, lambda: F.scaled_dot_product_attention(q, k, v)),
        ("F.sdpa flash", "flash", lambda: F.scaled_dot_product_attention(q, k, v)),
        ("F.sdpa cudnn", "cudnn", lambda: F.scaled_dot_product_attention(q, k, v)),
    ]
    rows = []
    for name, backend, fn in cases:
        if backend:
            with torch_backend(backend):
                med, lo, hi = per_call_us(fn)
        else:
            med, lo, hi = per_call_us(fn)
        rows.append({"call": name, "us_per_call": round(med, 2), "min_us": round(lo, 2),
                     "max_us": round(hi, 2)})
    write_csv("host_overhead", rows)
    print(table(rows, ["call", "us_per_call", "min_us", "max_us"]))


if __name__ == "__main__":
    main()

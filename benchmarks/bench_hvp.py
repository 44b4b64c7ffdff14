"""Exact HVP: aot_sdpa.sdpa_hvp vs hvp_fd_vjp vs torch's forward-over-reverse (torch.func.jvp of
torch.func.grad through F.scaled_dot_product_attention, math backend: the only torch backend
with forward AD), and one fused backward (sdpa_bwd with o) as the yardstick.

B=2, H=16, D=64, T=M in {1k, 2k, 4k, 8k}, fp32 and bf16; L = <do, SDPA(q, k, v)>, direction
(tq, tk, tv). Time (median, p10/p90), peak extra memory, and relative error vs an fp64
reference (reference.sdpa_hvp in float64 on batch*head 0, the whole T x M of that head).
FLOPs of the exact HVP: a forward (2 matmuls) and the backward's tangent (rows 5, dq 7,
dkdv 8 matmuls), each 2*T*M*D per batch*head: 44*B*H*T*M*D; one backward: 14*B*H*T*M*D.
Goals printed at the end: >= 10x faster and >= 30x less memory than math at 4k, more accurate
than FD in the same dtype, time within 2x of one fused backward.
"""

import torch

import aot_sdpa
from aot_sdpa import reference

from _harness import peak_extra_mib, plot, table, time_ms, torch_backend, write_csv

F = torch.nn.functional


def _math_hvp(q, k, v, do, tq, tk, tv):
    g = torch.func.grad(lambda a, b, c: (F.scaled_dot_product_attention(a, b, c) * do).sum(),
                        argnums=(0, 1, 2))
    return torch.func.jvp(g, (q, k, v), (tq, tk, tv))[1]


def _rel(x, ref):
    return max(((a[0, 0].double() - r).norm() / r.norm()).item() for a, r in zip(x, ref))


def main():
    rows = []
    B, H, D = 2, 16, 64
    for dtype in (torch.float32, torch.bfloat16):
        for T in (1024, 2048, 4096, 8192):
            g = torch.Generator(device="cuda").manual_seed(T)
            x = [torch.randn(B, H, T, D, device="cuda", dtype=dtype, generator=g)
                 for _ in range(7)]
            q, k, v, do, tq, tk, tv = x
            ref = reference.sdpa_hvp(*(t[0, 0].double() for t in x))
            key = {"dtype": str(dtype).split(".")[-1], "T": T, "B": B, "H": H, "D": D}
            o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
            impls = {
                "aot_sdpa sdpa_hvp (exact)": (None, lambda: aot_sdpa.sdpa_hvp(*x)),
                "aot_sdpa hvp_fd_vjp": (None, lambda: aot_sdpa.hvp_fd_vjp(*x)),
                "torch math fwd-over-rev": ("math", lambda: _math_hvp(*x)),
                "aot_sdpa sdpa_bwd (1 backward)": (None,
                                                   lambda: aot_sdpa.sdpa_bwd(q, k, v, do, m, l,
                                                                             o=o)),
            }
            res = {}
            for name, (backend, fn) in impls.items():
                try:
                    if backend:
                        with torch_backend(backend):
                            t, mem, out = time_ms(fn, 2, 10), peak_extra_mib(fn), fn()
                    else:
                        t, mem, out = time_ms(fn, 3, 20), peak_extra_mib(fn), fn()
                    err = None if "backward" in name else _rel(out, ref)
                    del out
                except torch.OutOfMemoryError:
                    t, mem, err = {"ms": None, "p10_ms": None, "p90_ms": None}, None, None
                torch.cuda.empty_cache()
                res[name] = (t["ms"], mem)
                rows.append({**key, "impl": name, **{k_: v_ and round(v_, 4) for k_, v_ in t.items()},
                             "peak_extra_mib": mem and round(mem, 1),
                             "rel_err_vs_fp64": err and float(f"{err:.2e}")})
            mt, mm = res["torch math fwd-over-rev"]
            bt = res["aot_sdpa sdpa_bwd (1 backward)"][0]
            for r in rows[-4:]:
                ot, om = res[r["impl"]]
                r["speedup_vs_math"] = mt and ot and round(mt / ot, 1)
                r["mem_ratio_vs_math"] = mm and om and round(mm / om, 1)
                r["time_vs_bwd"] = ot and round(ot / bt, 2)
    write_csv("hvp", rows)
    plot("hvp", [r for r in rows if r["ms"] is not None], "T", "ms", "impl",
         "HVP of <do, SDPA>, B=2, H=16, D=64 (ms, fp32 and bf16)")
    print(table(rows, ["dtype", "T", "impl", "ms", "p10_ms", "p90_ms", "peak_extra_mib",
                       "rel_err_vs_fp64", "speedup_vs_math", "mem_ratio_vs_math",
                       "time_vs_bwd"]))
    print("\ngoals at T=4096 (exact HVP):")
    for dt in ("float32", "bfloat16"):
        r = {x["impl"]: x for x in rows if x["dtype"] == dt and x["T"] == 4096}
        ex, fd = r["aot_sdpa sdpa_hvp (exact)"], r["aot_sdpa hvp_fd_vjp"]
        print(f"  {dt}: {ex['speedup_vs_math']}x faster than math (goal >= 10), "
              f"{ex['mem_ratio_vs_math']}x less memory (goal >= 30), error {ex['rel_err_vs_fp64']}"
              f" vs FD {fd['rel_err_vs_fp64']} (goal: below FD), {ex['time_vs_bwd']}x one "
              "backward (goal <= 2)")


if __name__ == "__main__":
    main()

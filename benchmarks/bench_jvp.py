"""Forward + JVP: aot_sdpa drop-in (torch.func.jvp and forward_ad) and sdpa_fwd_jvp vs torch.func.jvp of
F.scaled_dot_product_attention (math backend, the only torch backend with forward AD).

D=64, B=2, H=16, T=M in {1k, 2k, 4k, 8k}. Time and peak extra memory, same run.
FLOPs = 3 x forward = 3 * 4*B*H*T*M*D (primal + tangent: Q K^T, dQ K^T, Q dK^T, three P-products).
"""

import torch
import torch.autograd.forward_ad as fwAD

import aot_sdpa

from _harness import fwd_flops, peak_extra_mib, plot, table, time_ms, torch_backend, write_csv

F = torch.nn.functional


def main():
    rows = []
    B, H, D = 2, 16, 64
    for dtype in (torch.float16, torch.bfloat16):
        for T in (1024, 2048, 4096, 8192):
            x = [torch.randn(B, H, T, D, device="cuda", dtype=dtype) for _ in range(6)]
            prim, tang = tuple(x[:3]), tuple(x[3:])
            flops = 3 * fwd_flops(B, H, T, T, D)
            key = {"dtype": str(dtype).split(".")[-1], "T": T, "B": B, "H": H, "D": D}
            ours = lambda: torch.func.jvp(aot_sdpa.scaled_dot_product_attention, prim, tang)
            fused = lambda: aot_sdpa.sdpa_fwd_jvp(*prim, *tang)

            def fwd_ad():
                with fwAD.dual_level():
                    out = aot_sdpa.scaled_dot_product_attention(
                        *(fwAD.make_dual(p, t) for p, t in zip(prim, tang)))
                    return fwAD.unpack_dual(out)
            math = lambda: torch.func.jvp(F.scaled_dot_product_attention, prim, tang)
            res = {}
            for name, backend, fn in (("aot_sdpa drop-in func.jvp", None, ours),
                                      ("aot_sdpa drop-in forward_ad", None, fwd_ad),
                                      ("aot_sdpa sdpa_fwd_jvp", None, fused),
                                      ("torch math", "math", math)):
                try:
                    with torch_backend(backend):
                        t, mem = time_ms(fn, warmup=3, rep=10), peak_extra_mib(fn)
                except torch.OutOfMemoryError:
                    t, mem = {"ms": None, "p10_ms": None, "p90_ms": None}, None
                    torch.cuda.empty_cache()
                res[name] = (t["ms"], mem)
                rows.append({**key, "impl": name, **t, "peak_extra_mib": mem and round(mem, 1),
                             "tflops": t["ms"] and round(flops / t["ms"] / 1e9, 1)})
            mt, mm = res["torch math"]
            for r in rows[-4:]:
                ot, om = res[r["impl"]]
                r["speedup_vs_math"] = mt and ot and round(mt / ot, 1)
                r["mem_ratio_vs_math"] = mm and om and round(mm / om, 1)
    write_csv("jvp", rows)
    plot("jvp", [r for r in rows if r["dtype"] == "float16"], "T", "tflops", "impl",
         "SDPA forward+JVP fp16, D=64, B=2, H=16 (TFLOP/s, 3 x 4BHTMD)")
    print(table(rows, ["dtype", "T", "impl", "ms", "tflops", "peak_extra_mib",
                       "speedup_vs_math", "mem_ratio_vs_math"]))


if __name__ == "__main__":
    main()

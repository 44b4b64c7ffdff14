"""What the second-order ops pay at small head dims, where they have no bucket of their own.

The second-order kernels (bwd_jvp_rows / bwd_jvp_dq / bwd_jvp_dkdv, i.e. sdpa_hvp) compile
head-dim buckets 64-256 only (variants.toml, per-op head_dims): D <= 32 runs in the 64 bucket
with the head-dim tail masked. The first-order backward keeps its 32 bucket, so its D = 32 / D = 64
time ratio is what a 32 bucket would give the HVP if it scaled the same way:

    hvp_32_if_bucketed ~= hvp(64) * bwd(32) / bwd(64)
    cost of the missing bucket = hvp(32) / hvp_32_if_bucketed

Device time (backlogged_ms), B=2, H=16, T=M in {1024, 4096}, fp32 and bf16; torch's
forward-over-reverse HVP (math backend, the only one with forward AD) for scale.

    python profile_hvp_small_d.py
"""

import torch

import aot_sdpa

from _harness import backlogged_ms, torch_backend

F = torch.nn.functional


def _math_hvp(q, k, v, do, tq, tk, tv):
    g = torch.func.grad(lambda a, b, c: (F.scaled_dot_product_attention(a, b, c) * do).sum(),
                        argnums=(0, 1, 2))
    return torch.func.jvp(g, (q, k, v), (tq, tk, tv))[1]


def main():
    B, H = 2, 16
    for dtype in (torch.float32, torch.bfloat16):
        for T in (1024, 4096):
            res = {}
            for D in (16, 32, 64):
                g = torch.Generator(device="cuda").manual_seed(D)
                x = [torch.randn(B, H, T, D, device="cuda", dtype=dtype, generator=g)
                     for _ in range(7)]
                q, k, v, do = x[:4]
                o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
                hvp = backlogged_ms(lambda: aot_sdpa.sdpa_hvp(*x))["ms"]
                bwd = backlogged_ms(lambda: aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o))["ms"]
                with torch_backend("math"):
                    math = backlogged_ms(lambda: _math_hvp(*x), n=3, reps=3)["ms"]
                res[D] = (hvp, bwd)
                print(f"{str(dtype)[6:]:8s} T={T:5d} D={D:3d}  sdpa_hvp {hvp:8.4f} ms  "
                      f"sdpa_bwd {bwd:8.4f} ms  torch math HVP {math:8.3f} ms "
                      f"({math / hvp:5.1f}x)", flush=True)
                torch.cuda.empty_cache()
            h64, b64 = res[64]
            for D in (16, 32):
                h, b = res[D]
                est = h64 * b / b64
                print(f"    D={D}: hvp(D)/hvp(64) {h / h64:.2f}, bwd(D)/bwd(64) {b / b64:.2f}; "
                      f"cost of running in the 64 bucket ~{h / est:.2f}x", flush=True)


if __name__ == "__main__":
    main()

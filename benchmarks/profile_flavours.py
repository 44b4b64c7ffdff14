"""The hinted flavour (fast / ragged) against the general one on the same call, by device time
(backlogged_ms). A call runs the general flavour when its data is not 16-byte aligned, so each
case runs twice: on aligned tensors and on the same values seen one element into a larger
buffer. Also torch's efficient backend (float32's best torch path at these shapes) for scale.
Forward (triton_sdpa_fused), backward (sdpa_bwd with o) and JVP (sdpa_jvp).

    python profile_flavours.py            # float32 at D128-1k, D128-4k, DiT-XL/2
"""

import torch

import aot_sdpa

from _harness import backlogged_ms, torch_backend

F = torch.nn.functional
SHAPES = {"D128-1k": (16, 16, 1024, 128), "D128-4k": (4, 16, 4096, 128),
          "DiT-XL/2": (32, 16, 256, 72)}


def _tensors(B, H, T, D, dtype, offset):
    g = torch.Generator(device="cuda").manual_seed(0)
    out = []
    for _ in range(6):
        x = torch.randn(B * H * T * D + offset, device="cuda", dtype=dtype, generator=g)
        out.append(x[offset:].view(B, H, T, D))
    return out


def main():
    dtype = torch.float32
    for name, (B, H, T, D) in SHAPES.items():
        for offset in (0, 1):
            q, k, v, do, tq, tk = _tensors(B, H, T, D, dtype, offset)
            o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
            work = {"fwd": lambda: aot_sdpa.triton_sdpa_fused(q, k, v),
                    "bwd": lambda: aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o),
                    "jvp": lambda: aot_sdpa.sdpa_jvp(q, k, v, tq, tk, do, m, l)}
            flavor = "hinted" if offset == 0 else "general"
            for op, fn in work.items():
                t = backlogged_ms(fn)
                print(f"{name:9s} {flavor:8s} {op:4s} {t['ms']:8.4f} ms "
                      f"(p10 {t['p10_ms']:.4f}, p90 {t['p90_ms']:.4f})", flush=True)
        q, k, v, do, _, _ = _tensors(B, H, T, D, dtype, 0)
        with torch_backend("efficient"):
            t = backlogged_ms(lambda: F.scaled_dot_product_attention(q, k, v))
        print(f"{name:9s} {'torch-eff':8s} fwd  {t['ms']:8.4f} ms", flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

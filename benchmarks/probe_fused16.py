"""Would the one-kernel backward (dQ by float32 atomic adds) pay in 16-bit at short sequences,
where our backward trails cuDNN (GPU only, JIT, a probe: nothing shipped)?

The fp32-only bwd_fused kernel of kernels/sdpa_bwd.py run on float16 data, its dQ summed in a
float32 buffer, against the two kernels it would replace (bwd_dkdv + bwd_dq, the shipped sm_90
tiles), each inside a CUDA graph (triton.testing.do_bench_cudagraph), one process. The fused
time includes zeroing the float32 dQ and converting it to float16 (what a 16-bit variant would
need); the z pre-pass, the same in both, is left out.

    python probe_fused16.py
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch
from triton.testing import do_bench_cudagraph
from tune_real import ROOT, _tensors, jit_call, load

SHAPES = {"t128": (64, 8, 128, 64), "ViT-B": (32, 12, 197, 64), "DiT-B/2": (32, 12, 256, 64),
          "t512": (16, 12, 512, 64), "t1k": (8, 16, 1024, 64)}
CANDIDATES = [(32, 128, 4, 3), (32, 64, 4, 2), (64, 64, 4, 2), (32, 128, 4, 2), (64, 128, 8, 2)]


def _spec():
    """variants.toml with bwd_fused also for float16 (its general sm_90 variant is what
    jit_call runs)."""
    text = (ROOT / "kernels" / "variants.toml").read_text()
    marker = 'kernel = "_sdpa_bwd_fused_kernel"'
    head, tail = text.split(marker)
    tail = tail.replace('dtypes = ["fp32"]', 'dtypes = ["fp32", "fp16"]', 1)
    tail = tail.replace("[[ops.bwd_fused.configs]]", "[[ops.bwd_fused.configs]]\ndtypes = [\"fp16\"]\n"
                        "BLOCK_M = 32\nBLOCK_N = 128\nnum_warps = 4\nnum_stages = 3\n"
                        "[[ops.bwd_fused.configs]]", 1)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(head + marker + tail)
    return load(Path(f.name))


def main():
    spec = _spec()
    for name, shape in SHAPES.items():
        B, H, T, D = shape
        x = _tensors(shape, torch.float16)
        sizes, scale = (B, H, T, T, D), 1 / math.sqrt(D)
        dq32 = torch.empty(B, H, T, D, device="cuda", dtype=torch.float32)

        def split():
            jit_call.call(spec, "bwd_dkdv", "fp16", x, sizes, scale)
            jit_call.call(spec, "bwd_dq", "fp16", x, sizes, scale)

        base = do_bench_cudagraph(split, rep=30)
        print(f"{name} {shape} fp16 dK/dV + dQ (shipped tiles): {base:.4f} ms", flush=True)
        for bm, bn, w, st in CANDIDATES:
            def fused(bm=bm, bn=bn, w=w, st=st):
                dq32.zero_()
                jit_call.call(spec, "bwd_fused", "fp16", {**x, "DQ": dq32}, sizes, scale,
                              blocks={"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st)
                x["DQ"].copy_(dq32)

            try:
                ms = do_bench_cudagraph(fused, rep=30)
            except Exception as exc:  # out of resources etc.
                print(f"  fused {bm}x{bn}/{w}/{st}: {type(exc).__name__} {exc}"[:160])
                continue
            print(f"  fused {bm}x{bn}/{w}/{st} (+ zero, convert): {ms:.4f} ms, "
                  f"{base / ms:.3f}x the two kernels", flush=True)


if __name__ == "__main__":
    main()

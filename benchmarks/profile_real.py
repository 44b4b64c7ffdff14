"""Per-kernel device time (torch.profiler, CUPTI) of the 16-bit forward and backward at the
real-matrix shapes where torch's best path (cuDNN) leads at T <= 512: ours through the drop-in
(autograd), against torch's cuDNN backend on the same tensors. Prints each kernel's mean time
per call and each side's sum. Usage: python profile_real.py [shape ...] (bench_real_shapes names)."""

import sys

import torch
import torch.nn.functional as F
from bench_real_shapes import SHAPES, _work

import aot_sdpa

from _harness import kernel_times, torch_backend

DEFAULT = ("ViT-S", "ViT-B", "ViT-L", "DiT-B/2", "DiT-XL/2")


def main(names):
    for name in names or DEFAULT:
        B, H, T, D = SHAPES[name]
        for kind in ("forward", "backward"):
            for who in ("aot_sdpa", "cudnn"):
                attn = (aot_sdpa.scaled_dot_product_attention if who == "aot_sdpa"
                        else F.scaled_dot_product_attention)
                with torch_backend(None if who == "aot_sdpa" else "cudnn"):
                    fn = _work(kind, attn, B, H, T, D, torch.float16)
                    times = kernel_times(fn, n=20, warmup=3)
                total = sum(ms for _, ms in times)
                print(f"{name} fp16 {kind} {who}: {total:.4f} ms", flush=True)
                for kernel, ms in times:
                    print(f"    {ms:8.4f} ms  {kernel[:110]}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

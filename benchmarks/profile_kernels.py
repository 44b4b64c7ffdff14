"""Per-kernel device time of masked backward calls (torch.profiler, CUPTI), bf16 BERT-base
(32, 12, 512, 64) with bench_masks' key-padding mask: q, k, v, dO aligned (the masked_fast
kernels run) and offset by one element (16-byte alignment broken: the masked kernels run),
plus the unmasked call. Prints each kernel's mean time per call."""

import torch
from bench_masks import _mask

import aot_sdpa

from _harness import kernel_times


def main():
    B, H, T, D = 32, 12, 512, 64
    dt = torch.bfloat16
    mask = _mask("key_padding", B, H, T, T, dt)
    for layout in ("aligned", "offset"):
        def make():
            if layout == "aligned":
                return torch.randn(B, H, T, D, device="cuda", dtype=dt)
            return torch.randn(B * H * T * D + 1, device="cuda", dtype=dt)[1:].view(B, H, T, D)
        q, k, v, do = (make() for _ in range(4))
        for name, mk in (("key_padding", mask), ("none", None)):
            o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v, mask=mk)
            calls = {"fwd": lambda: aot_sdpa.triton_sdpa_fused(q, k, v, mask=mk),
                     "bwd": lambda: aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o, mask=mk)}
            for op, fn in calls.items():
                for kernel, ms in kernel_times(fn, n=20, warmup=3):
                    print(f"{layout:8s} {name:12s} {op:4s} {ms:8.4f} ms  {kernel}", flush=True)


if __name__ == "__main__":
    main()

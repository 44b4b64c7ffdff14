"""Break the host cost of one triton_sdpa_fused call at (1, 8, 128, 64) fp16 into its parts."""

import torch

import aot_sdpa
from aot_sdpa import _C
from aot_sdpa._checks import check_attention, check_devices
from aot_sdpa._native import OPS

from _harness import wall_ms


def us(fn, n=5000):
    return wall_ms(fn, n, warmup=100) * 1e3


def main():
    q, k, v = (torch.randn(1, 8, 128, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    ptrs = [t.data_ptr() for t in (q, k, v, o, m, l)]
    strides = [s for t in (q, k, v, o, m) for s in t.stride()[:3]]
    stream = torch._C._cuda_getCurrentRawStream(0)
    from aot_sdpa import _ops

    def checks():
        check_attention(q, k, v, None)
        check_devices(("q", "k", "v"), (q, k, v))

    def checks_alloc():
        checks()
        torch.empty_like(q)
        _ops._stats_pair(q, 1, 8, 128)

    named = dict(Q=q, K=k, V=v, O=o, Mstat=m, Lstat=l)

    def checks_alloc_args():  # what launch_named reads before launching: the packing by name
        checks_alloc()
        _C._pack_named(OPS["fwd"].index, named)
        torch._C._cuda_getCurrentRawStream(0)

    parts = {
        "full call": lambda: aot_sdpa.triton_sdpa_fused(q, k, v),
        "drop-in (inference)": lambda: aot_sdpa.scaled_dot_product_attention(q, k, v),
        "checks": checks,
        "checks+alloc": checks_alloc,
        "checks+alloc+args": checks_alloc_args,
        "_C.launch only": lambda: _C.launch(OPS["fwd"].index, 0, 0, stream, ptrs, strides,
                                            (1, 8, 128, 128, 64, 0), 0.125),
        "_C.launch empty grid": lambda: _C.launch(OPS["fwd"].index, 0, 0, stream, ptrs, strides,
                                                  (1, 8, 0, 128, 64, 0), 0.125),
        "empty_like": lambda: torch.empty_like(q),
        "stats pair": lambda: _ops._stats_pair(q, 1, 8, 128),
    }
    for name, fn in parts.items():
        print(f"{name:<24}{us(fn):8.2f} us")
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(1000):
        _C.launch(OPS["fwd"].index, 0, 0, stream, ptrs, strides, (1, 8, 128, 128, 64, 0), 0.125)
    e.record()
    torch.cuda.synchronize()
    print(f"{'device time / launch':<24}{s.elapsed_time(e):8.2f} us (1000 launches, ms total)")


if __name__ == "__main__":
    main()

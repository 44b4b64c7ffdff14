"""Where a masked call's time goes: device time (the call replayed as a CUDA graph, so no host
time), host time (the call at a tiny shape, where the GPU work is negligible), and the time
bench_masks reports (CUDA events around each eager call: the slower of the two, plus gaps).
bf16, the shapes of bench_masks; no mask / key padding (bool, (B, 1, 1, M)) / dense additive
((1, H, T, M), q's dtype); forward and backward (sdpa_bwd with o)."""

import torch
from bench_masks import _mask

import aot_sdpa

from _harness import time_ms, wall_ms


def graph_ms(fn, rep: int = 20) -> float:
    """Device time per call: fn captured once in a CUDA graph, the graph replayed rep times."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()
    torch.cuda.synchronize()
    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0.record()
    for _ in range(rep):
        g.replay()
    t1.record()
    torch.cuda.synchronize()
    return t0.elapsed_time(t1) / rep


def _shape(name, B, H, T, D, dt):
    q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=dt) for _ in range(4))
    for kind in ("none", "key_padding", "additive"):
        mask = None if kind == "none" else _mask(kind, B, H, T, T, dt)
        o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v, mask=mask)
        calls = {"fwd": lambda: aot_sdpa.triton_sdpa_fused(q, k, v, mask=mask),
                 "bwd": lambda: aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o, mask=mask)}
        for op, fn in calls.items():
            ev = time_ms(fn)["ms"]
            gr = graph_ms(fn)
            wall = wall_ms(fn, n=200, warmup=10)
            print(f"{name:14s} {kind:12s} {op:4s} {ev:9.4f} {gr:9.4f} {wall:9.4f}", flush=True)


def main():
    shapes = [("tiny", 1, 2, 64, 64), ("vit_b_padded", 32, 12, 197, 64),
              ("bert_base", 32, 12, 512, 64), ("long", 4, 16, 4096, 64)]
    print(f"{'shape':14s} {'mask':12s} {'op':4s} {'events_ms':>9s} {'graph_ms':>9s} "
          f"{'wall_ms':>9s}")
    for shape in shapes:
        _shape(*shape, torch.bfloat16)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

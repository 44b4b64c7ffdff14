"""Break the host cost of one triton_sdpa_fused call at (1, 8, 128, 64) fp16 into its parts,
unmasked and with a key-padding mask (bool, (1, 1, 1, 128)): the C fast path an unmasked call
takes (csrc/aot_fastpath.cpp: its checks alone, and the routing before it), and the pieces of
the Python path that masked and grouped-query calls take: the checks, the allocations, the
packing of the arguments, the launch, and for the mask its conversion to the kernels' bias
(candidates included: one that is not what the library runs is named "candidate")."""

import torch

import aot_sdpa
from aot_sdpa import _C, _ops
from aot_sdpa._checks import check_attention, check_devices, check_mask
from aot_sdpa._native import OPS
from aot_sdpa._torch_compat import plain_call

from _harness import interleaved_rounds, wall_ms


def us(fn, n=5000):
    return wall_ms(fn, n, warmup=100) * 1e3


def main():
    B, H, T, D = 1, 8, 128, 64
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.float16) for _ in range(3))
    mask = (torch.arange(T, device="cuda") < 100)[None, None, None, :]
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    named = dict(Q=q, K=k, V=v, Bias=None, O=o, Mstat=m, Lstat=l)
    fwd = OPS["fwd"].index
    ptrs, strides = _C._pack_named(fwd, named)
    ints = (B, H, T, T, D, 0, T, T - 1, 0, 1)  # Z H T M D HAS_TDO Q_LEN DIAG HAS_BIAS HAS_O
    stream = torch._C._cuda_getCurrentRawStream(0)
    bias = _ops.bias_from_mask(mask)
    bv = _ops._bias_view(bias, q, k)

    def checks():
        check_attention(q, k, v, None)
        check_devices(("q", "k", "v"), (q, k, v))

    def checks_alloc():
        checks()
        torch.empty_like(q)
        _ops._stats_pair(q, B, H, T)

    def checks_alloc_args():  # what launch_named reads before launching: the packing by name
        checks_alloc()
        _C._pack_named(fwd, named)
        torch._C._cuda_getCurrentRawStream(0)

    # the candidates must give the library's bias exactly (True -> 0, False -> -inf)
    for name, conv in (("where", lambda: torch.where(mask, 0.0, float("-inf"))),
                       ("to+log_", lambda: mask.to(torch.float32).log_())):
        same = torch.equal(conv(), bias) and conv().dtype == bias.dtype
        print(f"candidate conversion {name}: equal to bias_from_mask: {same}")

    parts = {
        "full call": lambda: aot_sdpa.triton_sdpa_fused(q, k, v),
        "full call, key padding": lambda: aot_sdpa.triton_sdpa_fused(q, k, v, mask=mask),
        "drop-in (inference)": lambda: aot_sdpa.scaled_dot_product_attention(q, k, v),
        "drop-in, key padding": lambda: aot_sdpa.scaled_dot_product_attention(
            q, k, v, attn_mask=mask),
        "full call, out= buffers": lambda: aot_sdpa.triton_sdpa_fused(q, k, v, out=(o, m, l)),
        "C fast path (_C._fwd_fast)": lambda: _C._fwd_fast(q, k, v, None, 0, True, None),
        "its checks alone": lambda: _C._fwd_fast_accepts(q, k, v, None, 0),
        "plain_call (routing)": lambda: plain_call(q, k, v),
        "checks": checks,
        "checks+alloc": checks_alloc,
        "checks+alloc+args": checks_alloc_args,
        "_C.launch only": lambda: _C.launch(fwd, 0, 0, stream, ptrs, strides, ints, 0.125),
        "_C.launch empty grid": lambda: _C.launch(fwd, 0, 0, stream, ptrs, strides,
                                                  (B, H, 0, T, D, 0, 0, T - 1, 0), 0.125),
        "empty_like": lambda: torch.empty_like(q),
        "stats pair": lambda: _ops._stats_pair(q, B, H, T),
        "mask: check_mask": lambda: check_mask(mask, q, k),
        "mask: bias_from_mask": lambda: _ops.bias_from_mask(mask),
        "mask: torch.log only": lambda: torch.log(mask),
        "mask: _bias_view": lambda: _ops._bias_view(bias, q, k),
        "mask: pack with Bias": lambda: _C._pack_named(fwd, dict(named, Bias=bv)),
        "candidate: torch.where": lambda: torch.where(mask, 0.0, float("-inf")),
        "candidate: to + log_": lambda: mask.to(torch.float32).log_(),
        # m and l from one allocation (the suggestion) against two: views cost calls too
        "stats: one empty_strided": lambda: torch.empty_strided((B, H, T), (H * T, T, 1),
                                                                dtype=torch.float32, device=q.device),
        "candidate: (2,B,H,T)+unbind": lambda: torch.empty(
            (2, B, H, T), dtype=torch.float32, device=q.device).unbind(0),
    }
    # three rounds over every part, interleaved, so that no line is measured only at the start
    # (the single-pass version's first line, the full call, once read 25.8 us against 15.8 for
    # the C fast path it wraps); the median round is printed with the other two
    rounds = interleaved_rounds({name: lambda fn=fn: us(fn, 2000) for name, fn in parts.items()}, 3)
    for name, t in rounds.items():
        t.sort()
        print(f"{name:<28}{t[1]:8.2f} us  (rounds {t[0]:.2f} .. {t[2]:.2f})")
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(1000):
        _C.launch(fwd, 0, 0, stream, ptrs, strides, ints, 0.125)
    e.record()
    torch.cuda.synchronize()
    print(f"{'device time / launch':<28}{s.elapsed_time(e):8.2f} us (1000 launches, ms total)")


if __name__ == "__main__":
    main()

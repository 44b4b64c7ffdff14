"""python -m aot_sdpa: print the kernel inventory; on a GPU, self-check and time one call."""

from __future__ import annotations

import sys
import time
from collections import Counter

import torch

import aot_sdpa
from aot_sdpa import _C, reference


def _inventory() -> None:
    inv = aot_sdpa.kernel_inventory()
    total = sum(r["cubin_bytes"] for r in inv)
    packed = sum(im["packed_bytes"] for im in _C.images())
    print(f"aot_sdpa {aot_sdpa.__version__}: {len(inv)} kernel variants, {total / 1e6:.1f} MB of "
          f"cubins in {packed / 1e6:.1f} MB of compressed images (unpacked per op on first "
          f"use), archs {', '.join(aot_sdpa.built_archs())}")
    print(f"{'op':<18}{'dtype':<10}{'products':<9}{'D':>4} {'arch':<7}{'flavor':<13}{'T,M<=':>15}"
          f"{'BLOCK_M':>8}{'BLOCK_N':>8}{'warps':>6}{'stages':>7}{'smem':>8}{'cubin':>9}")
    for r in inv:
        # products: the tensor-core input precision (float32: bf16x6 or fp16x3 on sm_90,
        # tf32x3 on sm_80 = fp32-accurate, the default; tf32 = under
        # torch.set_float32_matmul_precision("high"/"medium"))
        prec = r["input_precision"] if r["dtype"] == "float32" else "native"
        print(f"{r['op']:<18}{r['dtype']:<10}{prec:<9}{r['head_dim']:>4} {r['arch']:<7}"
              f"{r['flavor']:<13}{_reach(r):>15}{r['block_m']:>8}{r['block_n']:>8}"
              f"{r['num_warps']:>6}{r['num_stages']:>7}{r['shared_bytes']:>8}{r['cubin_bytes']:>9}")
    print("per op:", dict(Counter(r["op"] for r in inv)))


def _reach(r: dict) -> str:
    """The lengths a variant runs for: any, a tier's max_len, its tail_len ("256/576": up to
    576 where the untiered tile's last block would be at most half full), its causal_len
    ("768/1152/c8192": causal calls up to 8192), grid_len ("64/c1024/g512": grids that leave
    waves idle, up to 512) and narrow ("200n16": only where its loop's tail is 1..16 rows)."""
    if not r["max_len"]:
        return "any"
    reach = [str(r["max_len"]) + (f"n{r['narrow']}" if r["narrow"] else ""),
             *([str(r["tail_len"])] if r["tail_len"] else []),
             *([f"c{r['causal_len']}"] if r["causal_len"] else []),
             *([f"g{r['grid_len']}"] if r["grid_len"] else [])]
    return "/".join(reach)


def _self_check() -> bool:
    ok = True
    dev = torch.device("cuda")
    print(f"self-check on {torch.cuda.get_device_name(dev)}:")
    for dtype, tol in ((torch.float16, 2e-3), (torch.bfloat16, 1.6e-2), (torch.float32, 1e-5)):
        g = torch.Generator(device=dev).manual_seed(0)
        q, k, v = (torch.randn(2, 3, 77, 40, device=dev, dtype=dtype, generator=g)
                   for _ in range(3))
        o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
        ro, rm, rl = reference.forward(q.double(), k.double(), v.double())
        errs = {
            "o": ((o.double() - ro).norm() / ro.norm()).item(),
            "m": ((m.double() - rm).norm() / rm.norm()).item(),
            "l": ((l.double() - rl).norm() / rl.norm()).item(),
        }
        good = all(e <= tol for e in errs.values())
        ok &= good
        print(f"  {str(dtype):<15} rel. error o {errs['o']:.1e}  m {errs['m']:.1e}  "
              f"l {errs['l']:.1e}  (tol {tol:.0e}) {'ok' if good else 'FAIL'}")
    return ok


def _timing() -> None:
    q, k, v = (torch.randn(4, 16, 4096, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    for _ in range(3):
        aot_sdpa.triton_sdpa_fused(q, k, v)
    torch.cuda.synchronize()
    n = 20
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        aot_sdpa.triton_sdpa_fused(q, k, v)
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / n
    flops = 4 * 4 * 16 * 4096 * 4096 * 64  # 4*B*H*T*M*D
    print(f"timing: triton_sdpa_fused fp16 (4,16,4096,64): {ms:.3f} ms, "
          f"{flops / ms / 1e9:.0f} TFLOP/s (mean of {n}, {time.strftime('%Y-%m-%d')})")


def main() -> int:
    _inventory()
    if not torch.cuda.is_available():
        print("no CUDA device: skipping the self-check and timing")
        return 0
    ok = _self_check()
    _timing()
    print("self-check passed" if ok else "self-check FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Probe: the forward's ragged key tail as one narrow block (TAIL_N keys) instead of a whole
BLOCK_N block (JIT, GPU only).

At T = M = 197 (ViT) and BLOCK_N = 64 a query block sweeps keys 0..191 in three whole blocks and
the last 5 keys in a fourth, masked, 64-key block: 59 of its 64 score columns are thrown away.
_sdpa_fwd_kernel's TAIL_N (default 0: off) sweeps such a tail, where it is at most TAIL_N keys,
as one TAIL_N-key block. This times the 16-bit forward's two T <= 1152 tiles with TAIL_N = 0 /
16 / 32 at real shapes (each inside a CUDA graph, triton.testing.do_bench_cudagraph), next to
torch's cuDNN and flash forward timed the same way in the same process, and checks each result
against torch's math backend in float64.
The backward's two kernels take the same option: the dQ kernel's key tail (TAIL_N) and the
dK/dV kernel's ragged tail of query rows (TAIL_M); `bwd` times them (dQ first, as the
dispatcher launches them: it writes z and lse2 for dK/dV) against fp64 autograd's gradients;
`small` adds the small-grid tiers' tiles (SMALL_TILES) with and without the tail.
Usage: python benchmarks/probe_tail_n.py [fwd] [bwd] [small] [fp16|bf16 ...] [shape names ...]
(default: every SHAPES entry; CONTROLS' only when named)
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench_cudagraph

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from build_tools import jit_call  # noqa: E402
from build_tools.variants import load  # noqa: E402

SPEC = load(ROOT / "kernels" / "variants.toml")
# (B, H, T, D): ViT-S / B / L at batch 32 / 32 / 16, ViT-B at batch 1 and 4, an 8-key and a
# 40-key tail, DiT-B/2's T = 256 (no tail: the control), and 128 heads at T = 197 (the untiered
# dK/dV tile's 256 programs: one full wave of two per multiprocessor on 132)
SHAPES = {"vit_s": (32, 6, 197, 64), "vit_b": (32, 12, 197, 64), "vit_l": (16, 16, 197, 64),
          "vit_b1": (1, 12, 197, 64), "vit_b4": (4, 12, 197, 64), "t200": (32, 12, 200, 64),
          "t232": (32, 12, 232, 64), "dit_b": (32, 12, 256, 64),
          "h128": (8, 16, 197, 64)}
# long sequences without a tail (T mod 64 = 0), named only: does the option's second loop cost
# the calls that never take it?
CONTROLS = {"t1k": (8, 16, 1024, 64), "t4k": (2, 16, 4096, 64)}
# (BLOCK_M, BLOCK_N, num_warps, num_stages, maxnreg): the shipped T <= 200 tile and the untiered one
TILES = [(64, 64, 4, 2, None), (128, 64, 8, 4, 128)]
TAILS = (0, 16, 32)


def _ours(q, k, v, o, m, l, dtype, tile, tail):
    B, H, T, D = q.shape
    bm, bn, w, st, cap = tile
    blocks = {"BLOCK_M": bm, "BLOCK_N": bn, "TAIL_N": tail}
    return lambda: jit_call.call(SPEC, "fwd", dtype, {"Q": q, "K": k, "V": v, "O": o,
                                                      "Mstat": m, "Lstat": l},
                                 (B, H, T, T, D), 1 / math.sqrt(D), blocks=blocks,
                                 num_warps=w, num_stages=st, maxnreg=cap)


def _torch(q, k, v, backend):
    def run():
        with sdpa_kernel([backend]):
            F.scaled_dot_product_attention(q, k, v)
    return run


# the backward's shipped untiered 16-bit D = 64 tiles (sm_90), each with its tail options
BWD_TILES = {"bwd_dq": [((128, 64, 8, 4, 128), "TAIL_N", (0, 16, 32))],
             "bwd_dkdv": [((32, 128, 4, 3, None), "TAIL_M", (0, 16))]}
# `small`: also the small-grid tiers' tiles (kernels/variants.toml grid_len), with and without
# the tail, each timed against its op's untiered tile without one
SMALL_TILES = {"bwd_dq": [((64, 64, 4, 3, None), "TAIL_N", (0, 16))],
               "bwd_dkdv": [((32, 64, 4, 2, None), "TAIL_M", (0, 16)),
                            ((32, 64, 4, 3, None), "TAIL_M", (0, 16))]}


def _bwd_call(op, x, dname, tile, key, tail):
    B, H, T, D = x["Q"].shape
    bm, bn, w, st, cap = tile
    return lambda: jit_call.call(SPEC, op, dname, x, (B, H, T, T, D), 1 / math.sqrt(D),
                                 blocks={"BLOCK_M": bm, "BLOCK_N": bn, key: tail},
                                 num_warps=w, num_stages=st, maxnreg=cap)


def bwd_main(dtypes, shapes, small=False):
    for dname in dtypes:
        dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[dname]
        for name, (B, H, T, D) in shapes.items():
            g = torch.Generator(device="cuda").manual_seed(0)
            q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=dt, generator=g)
                           for _ in range(4))
            q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
            o64 = F.scaled_dot_product_attention(q64, k64, v64)
            ref = torch.autograd.grad(o64, (q64, k64, v64), do.double())
            s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(D)
            m = s.amax(-1)
            l = (s - m[..., None]).exp().sum(-1)
            x = {"Q": q, "K": k, "V": v, "DO": do, "O": o64.detach().to(dt), "Mstat": m,
                 "Lstat": l, "Zbuf": torch.empty(2, B * H, T, device="cuda"),
                 "DQ": torch.empty_like(q), "DK": torch.empty_like(k), "DV": torch.empty_like(v)}
            names = {"bwd_dq": ("DQ",), "bwd_dkdv": ("DK", "DV")}
            print(f"{dname} {name} {(B, H, T, D)}:", flush=True)
            _bwd_call("bwd_dq", x, dname, BWD_TILES["bwd_dq"][0][0], "TAIL_N", 0)()  # z, lse2
            for op, entries in BWD_TILES.items():
                base = None
                runs = [(tile, key, tail)
                        for tile, key, tails in entries + (SMALL_TILES[op] if small else [])
                        for tail in tails]
                for tile, key, tail in runs:
                    fn = _bwd_call(op, x, dname, tile, key, tail)
                    for n in names[op]:
                        x[n].zero_()
                    fn()
                    errs = [(x[n].double() - ref["QKV".index(n[1])]).abs().max().item()
                            for n in names[op]]
                    ms = do_bench_cudagraph(fn, rep=50)
                    base = base or ms
                    print(f"   {op} {tile[:4]} {key} {tail:2d}  {ms:.4f} ms  "
                          f"untailed/this {base / ms:.3f}  err {max(errs):.2e}", flush=True)


def main(dtypes, shapes):
    for dname in dtypes:
        dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[dname]
        for name, (B, H, T, D) in shapes.items():
            g = torch.Generator(device="cuda").manual_seed(0)
            q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=dt, generator=g)
                       for _ in range(3))
            ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
            with sdpa_kernel([SDPBackend.MATH]):
                torch_err = (F.scaled_dot_product_attention(q, k, v).double() - ref).abs().max()
            o = torch.empty_like(q)
            m, l = (torch.empty(B, H, T, device="cuda") for _ in range(2))
            times = {}
            for be in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION):
                times[be.name.lower()] = do_bench_cudagraph(_torch(q, k, v, be), rep=50)
            for tile in TILES:
                for tail in TAILS:
                    fn = _ours(q, k, v, o, m, l, dname, tile, tail)
                    o.zero_()
                    fn()
                    err = (o.double() - ref).abs().max().item()
                    ok = err <= 2 * torch_err.item() + 1e-5
                    times[f"{tile[:4]} tail {tail}"] = (do_bench_cudagraph(fn, rep=50), err, ok)
            cud = times["cudnn_attention"]
            print(f"{dname} {name} {(B, H, T, D)}: cudnn {cud:.4f} ms, flash "
                  f"{times['flash_attention']:.4f} ms")
            for key, val in times.items():
                if isinstance(val, tuple):
                    ms, err, ok = val
                    print(f"   {key:28s} {ms:.4f} ms  cudnn/ours {cud / ms:.3f}  err {err:.2e} "
                          f"{'ok' if ok else 'WRONG'}", flush=True)


if __name__ == "__main__":
    dts = [a for a in sys.argv[1:] if a in ("fp16", "bf16")] or ["fp16", "bf16"]
    modes = [a for a in sys.argv[1:] if a in ("fwd", "bwd")] or ["fwd", "bwd"]
    every = {**SHAPES, **CONTROLS}
    shapes = {n: every[n] for n in sys.argv[1:] if n in every} or SHAPES
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    if "fwd" in modes:
        main(dts, shapes)
    if "bwd" in modes:
        bwd_main(dts, shapes, small="small" in sys.argv[1:])

"""Each kernel of the forward and backward as our AOT cubin and as Triton's JIT of the same
config, side by side (GPU only; D = 64, fp16 or the dtypes named, each call inside a CUDA graph).

The AOT launch goes through aot_sdpa._ops._launch (the dispatcher: the fast flavour where the
call qualifies, its sequence-length tier where one applies); the JIT one through
build_tools/jit_call.py with the config of the variant the dispatcher ran (blocks, warps,
stages, register cap, ptxas --minnctapersm, its knobs: _C._select names it), compiled by Triton's JIT,
which specialises its integer arguments (an int equal to 1 becomes a constant, a multiple of
16 gets a divisibility hint) as the fast flavour's hints do. A ratio above 1 is time the AOT
build leaves on the table (results/aot_vs_jit_h200.log).

    python aot_vs_jit.py [fp16] [bf16] [fp32]   (default fp16; fp32 is the fp32-accurate variant)
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from triton.testing import do_bench_cudagraph

import aot_sdpa
from aot_sdpa import _C, _ops

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from build_tools import jit_call  # noqa: E402
from build_tools.render import DTYPE_CODE  # noqa: E402  (the extension's dtype codes)
from build_tools.variants import load  # noqa: E402

SPEC = load(ROOT / "kernels" / "variants.toml")
SHAPES = {"t128": (64, 8, 128, 64), "vit_s": (32, 6, 197, 64), "vit_b": (32, 12, 197, 64),
          "t512": (16, 12, 512, 64), "long": (2, 16, 4096, 64)}
# the backward as _ops.bwd runs it given o (unless float32 runs bwd_fused): dQ, which forms z
# from O and stores it (HAS_O), then dK/dV
POINTERS = {"fwd": ("Q", "K", "V", "O", "Mstat", "Lstat"),
            "bwd_dq": ("Q", "K", "V", "DO", "O", "Mstat", "Lstat", "Zbuf", "DQ"),
            "bwd_dkdv": ("Q", "K", "V", "DO", "Mstat", "Lstat", "Zbuf", "DK", "DV")}


TORCH_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _tensors(B, H, T, D, dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = {n: torch.randn(B, H, T, D, device="cuda", dtype=TORCH_DTYPE[dtype], generator=g)
         for n in ("Q", "K", "V", "DO")}
    o, m, l = aot_sdpa.triton_sdpa_fused(x["Q"], x["K"], x["V"])
    x.update(O=o, Mstat=m, Lstat=l, Zbuf=torch.empty(2, B, H, T, device="cuda"))  # z, lse2
    x.update({n: torch.empty_like(x["Q"]) for n in ("DQ", "DK", "DV")})
    return x


def _dispatched_config(op: str, code: int, T: int, D: int) -> dict:
    """jit_call.call's config keywords for the variant the dispatcher runs for this call (the
    fast flavour: D = 64, aligned, contiguous)."""
    name = _C._select(_ops._OP_INDEX[op], code, D, torch.cuda.current_device(), True, False,
                      rows=T, extent=T)[0]  # T = M here: the key-side grid's extent too
    v = next(v for v in SPEC.variants if v.name == name)
    return {"blocks": dict(v.blocks), "num_warps": v.num_warps, "num_stages": v.num_stages,
            "maxnreg": v.maxnreg, "min_blocks_per_sm": v.min_blocks_per_sm,
            "knobs": jit_call.config_knobs(SPEC, v)}


def main(dtype: str):
    for name, (B, H, T, D) in SHAPES.items():
        x = _tensors(B, H, T, D, dtype)
        sizes, scale = (B, H, T, T, D), 1 / math.sqrt(D)
        total = {"aot": 0.0, "jit": 0.0}
        for op, pointers in POINTERS.items():
            t = {p: x[p] for p in pointers}
            code = DTYPE_CODE[dtype]
            aot = do_bench_cudagraph(
                lambda op=op, t=t: _ops._launch(op, code, 0, sizes, scale, **t), rep=40)
            cfg = _dispatched_config(op, code, T, D)
            jit = do_bench_cudagraph(lambda op=op, t=t, cfg=cfg: jit_call.call(
                SPEC, op, dtype, dict(t), sizes, scale, **cfg), rep=40)
            if op != "fwd":
                total["aot"] += aot
                total["jit"] += jit
            print(f"{dtype} {name:6} {op:13} aot {aot:.4f} ms  jit {jit:.4f} ms  "
                  f"aot/jit {aot / jit:.3f}", flush=True)
        bwd = do_bench_cudagraph(lambda x=x: aot_sdpa.sdpa_bwd(
            x["Q"], x["K"], x["V"], x["DO"], x["Mstat"], x["Lstat"], o=x["O"]), rep=40)
        print(f"{dtype} {name:6} bwd {len(POINTERS) - 1} kernels: aot sum {total['aot']:.4f} "
              f"jit sum {total['jit']:.4f}; sdpa_bwd(o=o) graph {bwd:.4f} ms", flush=True)


if __name__ == "__main__":
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 runs the fp32-accurate variants
    for d in sys.argv[1:] or ["fp16"]:
        main(d)

"""A broad tile sweep of the 16-bit bucket-64 forward at the short real-model lengths, where
the shipped tiers were chosen between two or three tiles (GPU only; JIT, the general flavour's
constexprs with Triton's own alignment specialisation, kernel time from the profiler, fp16):
ViT-B (32, 12, 197, 64) with the T <= 200 tier's 16-key narrow tail, DiT-B/2 (32, 12, 256, 64)
and BERT-length (16, 16, 512, 64). Each shape's shipped tile first, cuDNN's and flash's kernel
time last (torch's best forward there). "shipped / X" is the shipped tile's time over X's:
above 1, X is faster.

    python probe_fwd_tiles.py [vit_b dit_b t512]
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import torch

from _harness import kernel_ms, torch_backend

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from build_tools import jit_call  # noqa: E402
from build_tools.variants import load  # noqa: E402

F = torch.nn.functional
SHAPES = {  # name: ((B, H, T, D), shipped tile (BLOCK_M, BLOCK_N, warps, stages), TAIL_N)
    "vit_b": ((32, 12, 197, 64), (64, 64, 4, 2), 16),
    "dit_b": ((32, 12, 256, 64), (64, 64, 4, 3), 0),
    "t512": ((16, 16, 512, 64), (64, 64, 4, 3), 0),
}
TILES = [(bm, bn, w, st) for bm, bn, w, st in itertools.product(
    (64, 128), (32, 64, 128), (4, 8), (2, 3, 4)) if not (bm == 64 and w == 8)]


def main(names: list[str]) -> None:
    spec = load(ROOT / "kernels" / "variants.toml")
    for name in names:
        (B, H, T, D), shipped, tail = SHAPES[name]
        g = torch.Generator(device="cuda").manual_seed(0)
        x = {n: torch.randn(B, H, T, D, device="cuda", dtype=torch.float16, generator=g)
             for n in "QKV"}
        x.update(O=torch.empty_like(x["Q"]), Mstat=torch.empty(B, H, T, device="cuda"),
                 Lstat=torch.empty(B, H, T, device="cuda"), Bias=None)
        res = []
        for bm, bn, w, st in [shipped] + [t for t in TILES if t != shipped]:
            def run(x=x, bm=bm, bn=bn, w=w, st=st):
                return jit_call.call(spec, "fwd", "fp16", x, (B, H, T, T, D), 1 / math.sqrt(D),
                                     blocks={"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w,
                                     num_stages=st, tails={"TAIL_N": tail} if tail else None)
            try:
                k = run()
                ms = kernel_ms(run, n=20)
            except Exception as e:  # noqa: BLE001 (over the shared-memory limit)
                print(f"{name} {(bm, bn, w, st)}: {type(e).__name__}", flush=True)
                continue
            res.append((ms, (bm, bn, w, st)))
            print(f"{name} {(B, H, T, D)} {(bm, bn, w, st)} {ms:.4f} ms  shipped / this "
                  f"{res[0][0] / ms:.3f}  {k.n_regs} regs {k.n_spills} spills", flush=True)
        q, k_, v = x["Q"], x["K"], x["V"]
        for bk in ("cudnn", "flash"):
            with torch_backend(bk):
                ms = kernel_ms(lambda: F.scaled_dot_product_attention(q, k_, v), n=20)
            print(f"{name} {bk} {ms:.4f} ms  shipped / {bk} {res[0][0] / ms:.3f}", flush=True)
        best = sorted(res)[:4]
        print(f"{name} top: " + "; ".join(f"{t} {ms:.4f}" for ms, t in best), flush=True)
        del x
        torch.cuda.empty_cache()


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    main(sys.argv[1:] or list(SHAPES))

"""Where the causal 16-bit forward's time goes (GPU only): the same call timed four ways.

For each shape, causal (top-left) and full, fp16: device time per call from the profiler
(CUPTI kernel durations, no host time) of
  aot        triton_sdpa_fused (the fast flavour: aligned, contiguous),
  aot_gen    the same on row-padded views (row stride D + 8: the general flavour),
  jit        the same kernel source JIT-compiled by Triton with the general flavour's
             constexprs and the untiered config (Triton's own specialisation adds the hints),
  flash, cudnn  torch's SDPA backends,
and the event-timed median (benchmarks/_harness.time_ms, as bench_breadth times them) of aot,
flash and cudnn. Prints one line per (shape, mode, way).

    python probe_causal_fwd.py [D ...]
    python probe_causal_fwd.py rows
    python probe_causal_fwd.py tiles causal|full [T ...]   (D = 128 tiles, JIT)

rows: what the forward's ragged last query block costs at ViT's T = 197 (JIT, fp16 D = 64,
the T <= 200 tier's config, 64x64/4/2 with the 16-key narrow tail, "tier"): over all 197 query
rows (4 blocks per head, the last holding 5 rows) against the same launch over the first 192
(3 blocks; every row still sweeps the 197 keys: the bound on what a cheaper last block can
save); also T = 200 (an 8-row tail) and T = 80 (16 rows). Kernels tried against it (not
shipped, results/probe_causal_fwd_h200.log): the last block as a 16- or 32-row program, and
its rows swept by the block before it as a second tile.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from _harness import kernel_ms, time_ms, torch_backend

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from build_tools import jit_call  # noqa: E402
from build_tools.variants import load  # noqa: E402

F = torch.nn.functional
SHAPES = {128: ((16, 16, 1024), (4, 16, 4096)), 64: ((16, 16, 1024), (4, 16, 4096))}


def main(dims: list[int]) -> None:
    spec = load(ROOT / "kernels" / "variants.toml")
    for D in dims:
        for B, H, T in SHAPES[D]:
            _shape(spec, B, H, T, D)
            torch.cuda.empty_cache()


def _shape(spec, B: int, H: int, T: int, D: int) -> None:
    import aot_sdpa  # here: the rows probe runs without a build

    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.float16, generator=g)
               for _ in range(3))
    pad = [torch.zeros(B, H, T, D + 8, device="cuda", dtype=torch.float16)
           for _ in range(3)]
    for p, x in zip(pad, (q, k, v)):
        p[..., :D] = x
    qg, kg, vg = (p[..., :D] for p in pad)
    o = torch.empty_like(q)
    m = torch.empty(B, H, T, device="cuda")
    l_ = torch.empty_like(m)
    tensors = {"Q": q, "K": k, "V": v, "O": o, "Mstat": m, "Lstat": l_, "Bias": None}
    for causal in (True, False):
        ways = {
            "aot": lambda c=causal: aot_sdpa.triton_sdpa_fused(q, k, v, causal=c),
            "aot_gen": lambda c=causal: aot_sdpa.triton_sdpa_fused(qg, kg, vg, causal=c),
            "jit": lambda c=causal: jit_call.call(
                spec, "fwd", "fp16", tensors, (B, H, T, T, D), 1 / math.sqrt(D),
                causal=(T, 0) if c else None),
        }
        for bk in ("flash", "cudnn"):
            ways[bk] = lambda c=causal, bk=bk: _torch(bk, q, k, v, c)
        for name, fn in ways.items():
            line = f"D{D} B{B} T{T} {'causal' if causal else 'full':6s} {name:8s} " \
                   f"kernel {kernel_ms(fn, n=20):.4f} ms"
            if name in ("aot", "flash", "cudnn"):
                line += f"  events {time_ms(fn)['ms']:.4f} ms"
            print(line, flush=True)


def _torch(bk: str, q, k, v, causal: bool):
    with torch_backend(bk):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def rows() -> None:
    spec = load(ROOT / "kernels" / "variants.toml")
    tier = {"BLOCK_M": 64, "BLOCK_N": 64, "TAIL_N": 16}
    tiles = {  # name: (blocks, num_warps, num_stages, whole blocks only, register cap)
        "tier": (tier, 4, 2, False, None),
        "tier, whole blocks only": (tier, 4, 2, True, None),
    }
    for name, (B, H, T) in {"ViT-S": (32, 6, 197), "ViT-B": (32, 12, 197),
                            "ViT-L": (16, 16, 197), "ViT-B-b4": (4, 12, 197),
                            "T=200": (32, 12, 200), "T=80": (32, 12, 80)}.items():
        D = 64
        x = {n: torch.randn(B, H, T, D, device="cuda", dtype=torch.float16) for n in "QKV"}
        x.update(Mstat=torch.empty(B, H, T, device="cuda"),
                 Lstat=torch.empty(B, H, T, device="cuda"), Bias=None)
        ms, out = {}, {}
        regs = {}
        whole = T - T % 64
        for tile, (blocks, warps, stages, cut, cap) in tiles.items():
            x["O"] = torch.zeros_like(x["Q"])
            r = whole if cut else T

            def run(b=blocks, w=warps, s=stages, r=r, cap=cap):
                return jit_call.call(spec, "fwd", "fp16", x, (B, H, r, T, D), 1 / math.sqrt(D),
                                     blocks=b, num_warps=w, num_stages=s, maxnreg=cap)

            k = run()
            regs[tile] = f"{k.n_regs} regs, {k.n_spills} spills"
            ms[tile] = kernel_ms(run, n=50)
            out[tile] = x["O"]
        for tile in tiles:
            diff = (out[tile][:, :, :whole] - out["tier"][:, :, :whole]).abs().max().item()
            if not tiles[tile][3]:
                diff = max(diff, (out[tile] - out["tier"]).abs().max().item())
            print(f"rows {name} ({B}, {H}, {T}, 64) {tile:26s} {ms[tile]:.4f} ms  "
                  f"tier / this {ms['tier'] / ms[tile]:.3f}  max |O - tier's O| {diff:.1e}  "
                  f"{regs[tile]}",
                  flush=True)


def tiles(causal: bool, lengths: list[int], configs: list[tuple]) -> None:
    """D = 128 fp16 forward tiles at B * T = 16k tokens, H = 16 (JIT, the general flavour's
    constexprs, kernel time), causal (top-left) or not: the untiered config first."""
    spec = load(ROOT / "kernels" / "variants.toml")
    D, H, mode = 128, 16, "causal" if causal else "full"
    for T in lengths:
        B = max(1, 16384 // T)
        x = {n: torch.randn(B, H, T, D, device="cuda", dtype=torch.float16) for n in "QKV"}
        x.update(O=torch.empty_like(x["Q"]), Mstat=torch.empty(B, H, T, device="cuda"),
                 Lstat=torch.empty(B, H, T, device="cuda"), Bias=None)
        base = None
        for bm, bn, w, st in configs:
            ms = kernel_ms(lambda: jit_call.call(
                spec, "fwd", "fp16", x, (B, H, T, T, D), 1 / math.sqrt(D),
                causal=(T, 0) if causal else None, blocks={"BLOCK_M": bm, "BLOCK_N": bn},
                num_warps=w, num_stages=st), n=20)
            base = base or ms
            print(f"tiles D128 B{B} T{T} {mode} {(bm, bn, w, st)} {ms:.4f} ms  "
                  f"first / this {base / ms:.3f}", flush=True)


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    if sys.argv[1:] == ["rows"]:
        rows()
    elif sys.argv[1:2] == ["tiles"]:  # tiles causal|full T ...
        tiles(sys.argv[2] == "causal", [int(t) for t in sys.argv[3:]] or [1024, 4096, 8192],
              [(128, 64, 8, 3), (128, 64, 8, 2), (128, 64, 8, 4), (128, 128, 8, 2),
               (128, 128, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3), (64, 128, 4, 2)]
              if len(sys.argv) == 3 else [(128, 64, 8, 3), (64, 64, 4, 3), (64, 64, 4, 2)])
    else:
        main([int(a) for a in sys.argv[1:]] or [128, 64])

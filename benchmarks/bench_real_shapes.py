"""Real-shape matrix: aot_sdpa vs torch's best path for the same work, one process, one GPU.

Shapes (B, H, T, D): ViT-S/B/L at T=197, DiT-B/2 at 256x256 (T=256), SD-style latent
attention (T=4096, H=8) and a long sequence (T=8192), D=64; DiT-XL/2 (T=256, H=16, D=72: the
head dim pads to the 128 bucket) and D=128 at T=1024 and 4096 (16k tokens); dtypes fp16, bf16, fp32
(torch.get_float32_matmul_precision() left at "highest": fp32-accurate on both sides).
Work per cell:
  forward       aot: the drop-in (inference)          torch: fastest of default, flash, cuDNN,
  backward      aot: autograd.grad through the drop-in       efficient (those that run the dtype)
  jvp_func      aot: torch.func.jvp through the drop-in      torch: torch.func.jvp of F.sdpa,
  jvp_fused     aot: sdpa_fwd_jvp                             fastest of math and default
FLOPs: forward 4*B*H*T*M*D (two matmuls of 2*T*M*D); backward 2.5x forward (five matmuls);
forward+JVP 3x forward (Q K^T, dQ K^T + Q dK^T, three P products as one).
Times: device time per call with a GPU backlog (host out of the way; `ms`), and wall time per
call of an eager loop (`wall_ms`, host included). ratio = torch best / ours (> 1: we are faster).
Writes results/real_shapes.csv and .png; prints the goals of issue 10 and which cells miss them.

    python bench_real_shapes.py [shape names ...] [float16 bfloat16 float32] [works ...]
Named shapes, dtypes or works (forward, backward, jvp_func, jvp_fused) only re-measure those
(all of a kind when none of it is named): their rows replace the same cells' rows of the
existing results/real_shapes.csv, the others are kept, and the goals, table and plot cover
the union.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import aot_sdpa

from _harness import (
    backlogged_ms,
    env,
    fwd_flops,
    kept_rows,
    table,
    torch_backend,
    wall_ms,
    write_csv,
)

SHAPES = {  # name: (B, H, T, D)
    "ViT-S": (32, 6, 197, 64), "ViT-B": (32, 12, 197, 64), "ViT-L": (16, 16, 197, 64),
    "DiT-B/2": (32, 12, 256, 64), "SD-latent": (2, 8, 4096, 64), "long": (1, 16, 8192, 64),
    "DiT-XL/2": (32, 16, 256, 72), "D128-1k": (16, 16, 1024, 128), "D128-4k": (4, 16, 4096, 128),
    # small batches, as a latency-bound service runs them (named only, for now)
    "ViT-B-b1": (1, 12, 197, 64), "ViT-B-b4": (4, 12, 197, 64),
}
NAMED_ONLY = ("ViT-B-b1", "ViT-B-b4")
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
FWD_BACKENDS = ("default", "flash", "cudnn", "efficient")
JVP_BACKENDS = ("math", "default")
FLOP_FACTOR = {"forward": 1.0, "backward": 2.5, "jvp_func": 3.0, "jvp_fused": 3.0}


def _inputs(B, H, T, D, dtype, grad=False):
    g = torch.Generator(device="cuda").manual_seed(0)
    return [torch.randn(B, H, T, D, device="cuda", dtype=dtype, generator=g).requires_grad_(grad)
            for _ in range(3)]


def _work(kind: str, attn, B, H, T, D, dtype):
    """A no-argument callable doing `kind` through attn (or None when attn cannot)."""
    if kind == "forward":
        q, k, v = _inputs(B, H, T, D, dtype)
        return lambda: attn(q, k, v)
    if kind == "backward":
        q, k, v = _inputs(B, H, T, D, dtype, grad=True)
        o = attn(q, k, v)
        do = torch.randn_like(o)
        return lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True)
    prim, tang = _inputs(B, H, T, D, dtype), _inputs(B, H, T, D, dtype)
    if kind == "jvp_fused":
        return lambda: aot_sdpa.sdpa_fwd_jvp(*prim, *tang)
    return lambda: torch.func.jvp(attn, tuple(prim), tuple(tang))


def _time(fn) -> dict:
    fn()  # compile/plan caches, and a first error if the backend refuses the call
    t = backlogged_ms(fn)
    t["wall_ms"] = wall_ms(fn)
    return t


def _torch_all(kind, B, H, T, D, dtype) -> dict:
    """{backend: timing} for every torch path that runs this work."""
    res = {}
    for backend in (JVP_BACKENDS if kind.startswith("jvp") else FWD_BACKENDS):
        try:
            with torch_backend(backend):
                fn = _work(kind if kind != "jvp_fused" else "jvp_func",
                           F.scaled_dot_product_attention, B, H, T, D, dtype)
                t = _time(fn)
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            torch.cuda.empty_cache()
            if "out of memory" in str(exc).lower():
                print(f"  torch {backend} {kind}: out of memory")
            continue
        res[backend] = t
    return res


def main(names: list[str]):
    dtype_names = {str(d).split(".")[-1]: d for d in DTYPES}
    unknown = [n for n in names if n not in SHAPES and n not in dtype_names
               and n not in FLOP_FACTOR]
    if unknown:
        raise SystemExit(f"unknown shapes, dtypes or works {unknown}; known: {list(SHAPES)}, "
                         f"{list(dtype_names)}, {list(FLOP_FACTOR)}")
    shapes = {n: SHAPES[n] for n in names if n in SHAPES} or {
        n: s for n, s in SHAPES.items() if n not in NAMED_ONLY}
    dtypes = {n: d for n, d in dtype_names.items() if n in names} or dtype_names
    kinds = [k for k in FLOP_FACTOR if k in names] or list(FLOP_FACTOR)
    rows = kept_rows("real_shapes", lambda r: r["shape"] not in shapes
                     or r["dtype"] not in dtypes or r["work"] not in kinds) if names else []
    for name, (B, H, T, D) in shapes.items():
        for dtype in dtypes.values():
            flops = fwd_flops(B, H, T, T, D)
            for kind in kinds:
                key = {"shape": name, "B": B, "H": H, "T": T, "D": D,
                       "dtype": str(dtype).split(".")[-1], "work": kind}
                try:
                    ours = _time(_work(kind, aot_sdpa.scaled_dot_product_attention, B, H, T, D,
                                       dtype))
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    ours = None
                alltimes = _torch_all(kind, B, H, T, D, dtype)
                best = min(alltimes.items(), key=lambda bt: bt[1]["ms"]) if alltimes else None
                row = {**key, "aot_ms": ours and round(ours["ms"], 4),
                       "aot_p10": ours and round(ours["p10_ms"], 4),
                       "aot_p90": ours and round(ours["p90_ms"], 4),
                       "aot_wall_ms": ours and round(ours["wall_ms"], 4),
                       "torch_best": best and best[0],
                       "torch_ms": best and round(best[1]["ms"], 4),
                       "torch_wall_ms": best and round(best[1]["wall_ms"], 4)}
                for b in ("flash", "cudnn", "efficient", "math"):
                    row[f"torch_{b}_ms"] = (round(alltimes[b]["ms"], 4) if b in alltimes
                                            else None)
                row["ratio"] = (round(row["torch_ms"] / row["aot_ms"], 3)
                                if ours and best else None)
                row["wall_ratio"] = (round(row["torch_wall_ms"] / row["aot_wall_ms"], 3)
                                     if ours and best else None)
                row["aot_tflops"] = ours and round(FLOP_FACTOR[kind] * flops / ours["ms"] / 1e9, 1)
                rows.append(row)
                print(table([row], list(row)), flush=True)
                torch.cuda.empty_cache()
    order, dnames, works = list(SHAPES), list(dtype_names), list(FLOP_FACTOR)
    rows.sort(key=lambda r: (order.index(r["shape"]), dnames.index(r["dtype"]),
                             works.index(r["work"])))
    write_csv("real_shapes", rows)
    cols = ["shape", "dtype", "work", "aot_ms", "torch_best", "torch_ms", "ratio", "aot_wall_ms",
            "torch_wall_ms", "wall_ratio", "aot_tflops"]
    print(table(rows, cols))
    print("\ncells below 1.0x torch's best (device time):")
    for r in rows:
        if r["ratio"] is not None and r["ratio"] < 1.0:
            print(f"  {r['shape']} {r['dtype']} {r['work']}: {r['ratio']}x vs {r['torch_best']}")
    _goals(rows)
    _heatmap(rows, env())


def _ratio(r, backend):
    t = r[f"torch_{backend}_ms"]
    return round(t / r["aot_ms"], 3) if t and r["aot_ms"] else None


def _goals(rows):
    """Issue 10's goals, each with the cells that miss it."""
    def report(title, cells, ratio, goal):
        miss = [f"{r['shape']} {r['dtype']} {r['work']} {ratio(r)}x" for r in cells
                if ratio(r) is None or ratio(r) < goal]
        print(f"GOAL {title} (>= {goal}x): {len(cells) - len(miss)}/{len(cells)} met"
              + (f"; missed: {', '.join(miss)}" if miss else ""))

    best = lambda r: r["ratio"]
    report("fp32 cells vs torch's best", [r for r in rows if r["dtype"] == "float32"], best, 1.0)
    report("JVP cells vs torch's best", [r for r in rows if r["work"].startswith("jvp")], best, 1.0)
    report("T <= 512 cells vs torch's best", [r for r in rows if r["T"] <= 512], best, 1.0)
    long16 = [r for r in rows if r["T"] > 512 and r["dtype"] != "float32"
              and r["work"] in ("forward", "backward")]
    report("fp16/bf16 fwd/bwd T > 512 vs flash", long16, lambda r: _ratio(r, "flash"), 1.2)
    print("  (vs cuDNN there: " + ", ".join(f"{r['shape']} {r['dtype']} {r['work']} "
                                            f"{_ratio(r, 'cudnn')}x" for r in long16) + ")")
    f32 = [r for r in rows if r["T"] >= 1024 and r["dtype"] == "float32"
           and r["work"] in ("forward", "backward")]
    report("fp32 fwd/bwd T >= 1024 vs efficient", f32, lambda r: _ratio(r, "efficient"), 2.0)
    jvp = [r for r in rows if r["T"] == 4096 and r["dtype"] == "float32"
           and r["work"].startswith("jvp")]
    report("fp32 JVP T = 4096 vs math", jvp, lambda r: _ratio(r, "math"), 10.0)


def _heatmap(rows, stamp: dict):
    """ratio per (shape, dtype x work) as an annotated heat map (results/real_shapes.png),
    titled with `stamp`'s gpu, torch and date (_harness.env() of the run that wrote the CSV)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no real_shapes.png)")
        return
    import os
    from pathlib import Path

    from _harness import RESULTS

    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    cols = list(dict.fromkeys(f"{r['dtype']}\n{r['work']}" for r in rows))
    grid = [[float("nan")] * len(cols) for _ in shapes]
    for r in rows:
        if r["ratio"] is not None:
            grid[shapes.index(r["shape"])][cols.index(f"{r['dtype']}\n{r['work']}")] = r["ratio"]
    fig, ax = plt.subplots(figsize=(1.0 * len(cols) + 2, 0.6 * len(shapes) + 2))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0.5, vmax=2.0, aspect="auto")
    for i, row in enumerate(grid):
        for j, val in enumerate(row):
            if val == val:
                ax.text(j, i, f"{val:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(cols)), cols, fontsize=6)
    ax.set_yticks(range(len(shapes)), shapes, fontsize=8)
    fig.colorbar(im, ax=ax, label="torch best / aot_sdpa (device time)")
    ax.set_title(f"aot_sdpa vs torch's best path — {stamp['gpu']}, torch {stamp['torch']}, "
                 f"{stamp['date']}", fontsize=9)
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(RESULTS / "real_shapes.png", dpi=110)
    if os.environ.get("OUT"):
        fig.savefig(Path(os.environ["OUT"]) / "real_shapes.png", dpi=110)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

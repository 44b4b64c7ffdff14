"""End to end: a 12-block ViT-B-sized transformer (width 768, 12 heads of D=64, MLP 3072,
pre-LayerNorm, GELU), written here in plain torch, with its attention swapped.

Work (one process, one GPU):
  jvp    torch.func.jvp of the model in its input (no parameter gradients):
         aot_sdpa's drop-in vs torch's math backend (the only torch SDPA with forward AD)
  train  one training step: forward, MSE loss, backward, SGD update:
         aot_sdpa's drop-in vs torch's default SDPA
at (B, T) = (32, 197) and (8, 1024), fp32 and bf16 (fp32 at "highest" matmul precision).
Two times per step: device time (`*_ms`: the summed time of the step's kernels, torch.profiler;
what the GPU spends) and wall time (`*_wall_ms`: an eager loop of steps, synchronised at the
end; what a training loop sees, host included: a bf16 step at T=197 launches ~1000 kernels and
is host-bound). speedup = torch / ours for each; the wall ratio is the median of five rounds,
each a loop of ours and then one of torch's back to back (wall_speedup_min / _max: the
rounds' extremes), because a leased host's speed drifts within a run. Attention share
(device time): the same step with attention replaced by a nearly free stand-in (a copy of
q), share = 1 - t(stand-in) / t.
Writes results/e2e_vit.csv.

    python bench_e2e_vit.py [T ...] [float32|bfloat16 ...] [jvp|train ...]
Named sequence lengths, dtypes or works measure only those cells; their rows replace the same
cells' rows of the existing results/e2e_vit.csv, the others are kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import aot_sdpa

from _harness import (
    ENV_COLUMNS,
    interleaved_rounds,
    kept_rows,
    kernel_ms,
    table,
    torch_backend,
    wall_ms,
    write_csv,
)

WIDTH, HEADS, DEPTH, MLP = 768, 12, 12, 3072
SIZES = ((32, 197), (8, 1024))


class LayerNorm(nn.Module):
    """LayerNorm written out (statistics in fp32): torch.func.jvp of nn.LayerNorm in bfloat16
    returns a float32 primal in torch 2.11, which the next bf16 Linear refuses."""

    def __init__(self, n):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))

    def forward(self, x):
        xf = x.float()
        mu = xf.mean(-1, keepdim=True)
        var = (xf - mu).square().mean(-1, keepdim=True)
        return ((xf - mu) * torch.rsqrt(var + 1e-6)).to(x.dtype) * self.weight + self.bias


class Block(nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.attn = attn
        self.ln1, self.ln2 = LayerNorm(WIDTH), LayerNorm(WIDTH)
        self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
        self.fc1, self.fc2 = nn.Linear(WIDTH, MLP), nn.Linear(MLP, WIDTH)

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4)
        a = self.attn(q, k, v)  # (B, H, T, D), q/k/v strided views of the qkv projection
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, WIDTH))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Model(nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.blocks = nn.ModuleList(Block(attn) for _ in range(DEPTH))

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


ATTNS = {
    "aot_sdpa": aot_sdpa.scaled_dot_product_attention,
    "torch": F.scaled_dot_product_attention,
    # no attention, for the attention share: an output shaped and laid out like attention's
    # (contiguous (B, H, T, D)) that carries a tangent, so everything after it costs the same.
    # (Returning v itself, a strided view of the qkv projection, made the rest of the model
    # slower under torch.func.jvp: a negative share for bf16 at T=1024 in the first run.)
    "stand-in": lambda q, k, v: q.contiguous(),  # a copy of q: (B, H, T, D) contiguous
}


def _model(attn, dtype):
    torch.manual_seed(0)
    return Model(attn).to("cuda", dtype)


def _jvp_fn(model, x, tx):
    model.requires_grad_(False)
    return lambda: torch.func.jvp(model, (x,), (tx,))


def _train_fn(model, x, y):
    model.requires_grad_(True)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x), y).backward()
        opt.step()
    return step


def _paired_walls(fns: dict, torch_path: str, rounds: int = 5, steps: int = 5) -> dict:
    """Wall time per step of ours and torch's, measured in `rounds` adjacent pairs (each an
    eager loop of `steps` steps synchronised at the end): a leased host's speed drifts within
    a run (by up to ~1.6x over a minute), so each round's ratio compares two loops run back to
    back. Returns each side's median (ms) and the median, least and greatest of the rounds'
    ratios torch / ours."""
    def timer(impl):
        def run():
            with torch_backend(torch_path if impl == "torch" else None):
                return wall_ms(fns[impl], n=steps)
        return run

    times = interleaved_rounds({impl: timer(impl) for impl in ("aot_sdpa", "torch")}, rounds)
    ratios = [t / o for o, t in zip(times["aot_sdpa"], times["torch"])]
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {"aot_sdpa": med(times["aot_sdpa"]), "torch": med(times["torch"]),
            "ratio": round(med(ratios), 3), "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3)}


def main(args: list[str]):
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    known = {str(T) for _, T in SIZES} | set(dtypes) | {"jvp", "train"}
    if set(args) - known:
        raise SystemExit(f"unknown {sorted(set(args) - known)}; known: {sorted(known)}")

    def chosen(T, dtype, work):  # every cell, or those the arguments name (per kind)
        return all(not (set(args) & group) or value in args for value, group in (
            (str(T), {str(t) for _, t in SIZES}), (dtype, set(dtypes)), (work, {"jvp", "train"})))
    rows = kept_rows("e2e_vit", lambda r: not chosen(r["T"], r["dtype"], r["work"])) if args \
        else []
    for B, T in SIZES:
        for dtype in dtypes.values():
            name = str(dtype).split(".")[-1]
            if not any(chosen(T, name, w) for w in ("jvp", "train")):
                continue
            g = torch.Generator(device="cuda").manual_seed(1)
            x, tx, y = (torch.randn(B, T, WIDTH, device="cuda", dtype=dtype, generator=g)
                        for _ in range(3))
            for work, make, torch_path in (("jvp", lambda m: _jvp_fn(m, x, tx), "math"),
                                           ("train", lambda m: _train_fn(m, x, y), "default")):
                if not chosen(T, name, work):
                    continue
                res, fns = {}, {}
                for impl in ATTNS:
                    fns[impl] = make(_model(ATTNS[impl], dtype))
                    try:
                        with torch_backend(torch_path if impl == "torch" else None):
                            res[impl] = kernel_ms(fns[impl])
                    except torch.OutOfMemoryError:
                        res[impl] = None
                wall = _paired_walls(fns, torch_path) if res["aot_sdpa"] and res["torch"] else {}
                del fns
                torch.cuda.empty_cache()
                ours, theirs, free = res["aot_sdpa"], res["torch"], res["stand-in"]
                w_ours, w_theirs = wall.get("aot_sdpa"), wall.get("torch")
                row = {"B": B, "T": T, "dtype": str(dtype).split(".")[-1], "work": work,
                       "torch_path": torch_path, "aot_ms": ours and round(ours, 3),
                       "torch_ms": theirs and round(theirs, 3),
                       "speedup": ours and theirs and round(theirs / ours, 3),
                       "aot_wall_ms": w_ours and round(w_ours, 3),
                       "torch_wall_ms": w_theirs and round(w_theirs, 3),
                       "wall_speedup": wall.get("ratio"),
                       "wall_speedup_min": wall.get("ratio_min"),
                       "wall_speedup_max": wall.get("ratio_max"),
                       "no_attention_ms": free and round(free, 3),
                       "attn_share_aot": ours and free and round(1 - free / ours, 3),
                       "attn_share_torch": theirs and free and round(1 - free / theirs, 3)}
                rows.append(row)
                print(table([row], list(row)), flush=True)
    order = {(T, d, w): i for i, (T, d, w) in enumerate(
        (T, d, w) for _, T in SIZES for d in dtypes for w in ("jvp", "train"))}
    rows.sort(key=lambda r: order[(r["T"], r["dtype"], r["work"])])
    write_csv("e2e_vit", rows)
    print(table(rows, [k for k in rows[0] if k not in ENV_COLUMNS]))
    for r in rows:
        goal = ({"float32": 1.5, "bfloat16": 2.0}[r["dtype"]] if r["work"] == "jvp"
                and r["T"] == 1024 else 1.0)
        for kind, key in (("device", "speedup"), ("wall", "wall_speedup")):
            ok = r[key] is not None and r[key] >= goal
            spread = (f" (rounds {r.get('wall_speedup_min')}..{r.get('wall_speedup_max')})"
                      if kind == "wall" else "")
            print(f"GOAL e2e {r['work']} B={r['B']} T={r['T']} {r['dtype']} ({kind} time): "
                  f"{r[key]}x{spread} (>= {goal}x) {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

"""float32 products in three fp16 products ("fp16x3": kernels/_common.py mma, each operand's
rows / columns scaled by powers of two, then split in two fp16 parts) against six bfloat16
products ("bf16x6", sm_90's float32 precision until then), GPU only, JIT, general flavour, the
shipped tile of each op: kernel time (profiler, interleaved rounds, median) and max |error|
against a float64 reference, with torch's float32 math error on the same inputs beside it.

    python probe_fp16x3.py [--shapes=vit,dit,sd,long,d128,dit_xl,vit_wide,t256_d128,t1024]
                           [--ops=fwd,fwd_jvp,jvp,bwd_fused] [--precs=bf16x6,fp16x3]
                           [--rounds=3] [--tile=BLOCK_M,BLOCK_N,warps,stages]

jvp runs on the float64 reference's stats (m, l), so its error is the JVP kernel's own.
--tile times that tile for every op named instead of each op's shipped general one (e.g. a
sequence-length tier's fast tile).

AOT_SDPA_KERNELS=<dir> reads the kernels from a tree under test (jit_call). `vit_wide` is ViT-B
with every row of q, k, v scaled by 10**u, u uniform in [-2, 2]: rows of very different size
in one tile, which per-row scaling must keep as accurate as the rest.
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import torch

from _harness import kernel_ms

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from build_tools import jit_call  # noqa: E402
from build_tools.variants import load  # noqa: E402

SHAPES = {  # (B, H, T, D)
    "vit": (32, 12, 197, 64), "vit_wide": (32, 12, 197, 64), "dit": (32, 12, 256, 64),
    "sd": (2, 8, 4096, 64), "long": (1, 16, 8192, 64), "d128": (16, 16, 1024, 128),
    "dit_xl": (32, 16, 256, 72), "t256_d128": (32, 16, 256, 128),
    "t1024": (8, 12, 1024, 64),  # the end-to-end benchmark's T = 1024 attention
}


def _attn(q, k, v, scale):
    """Plain attention (torch's math backend's equations), in the inputs' dtype."""
    s = (q @ k.transpose(-1, -2)) * scale
    return torch.softmax(s, -1) @ v


def _inputs(name: str, B: int, H: int, T: int, D: int) -> dict:
    g = torch.Generator(device="cuda").manual_seed(0)
    x = {n: torch.randn(B, H, T, D, device="cuda", generator=g)
         for n in ("Q", "K", "V", "TQ", "TK", "TV", "DO")}
    if name.endswith("_wide"):
        for n in ("Q", "K", "V"):
            x[n] *= 10 ** (4 * torch.rand(B, H, T, 1, device="cuda", generator=g) - 2)
    return x


def _references(x: dict, scale: float, ops: list[str]) -> dict:
    """name -> (float64 value, torch float32 math value) of each output the ops compute."""
    ref = {}
    s = (x["Q"].double() @ x["K"].double().transpose(-1, -2)) * scale
    m = s.amax(-1)
    ref["m"], ref["l"] = m.float(), (s - m[..., None]).exp().sum(-1).float()
    del s
    for dt in (torch.float64, torch.float32):
        q, k, v, tq, tk, tv, do = (x[n].to(dt) for n in ("Q", "K", "V", "TQ", "TK", "TV", "DO"))
        if "fwd" in ops or "bwd_fused" in ops:
            ref.setdefault("O", []).append(_attn(q, k, v, scale).float())
        if "fwd_jvp" in ops or "jvp" in ops:
            _, t = torch.func.jvp(lambda a, b, c: _attn(a, b, c, scale), (q, k, v), (tq, tk, tv))
            ref.setdefault("TO", []).append(t.float())
        if "bwd_fused" in ops:
            qkv = [t.clone().requires_grad_() for t in (q, k, v)]
            grads = torch.autograd.grad(_attn(*qkv, scale), qkv, do)
            for n, gr in zip(("DQ", "DK", "DV"), grads):
                ref.setdefault(n, []).append(gr.float())
        torch.cuda.empty_cache()
    return ref


def _run(spec, op: str, prec: str, x: dict, out: dict, sizes: tuple, scale: float,
         tile: tuple | None = None):
    if op == "fwd":
        t = {"Q": x["Q"], "K": x["K"], "V": x["V"], "O": out["O"], "Mstat": out["Mstat"],
             "Lstat": out["Lstat"]}
    elif op == "jvp":
        t = {n: x[n] for n in ("Q", "K", "V", "TQ", "TK", "TV")}
        t.update({"Mstat": out["m64"], "Lstat": out["l64"], "TO": out["TO1"]})
    elif op == "fwd_jvp":
        t = {n: x[n] for n in ("Q", "K", "V", "TQ", "TK", "TV")}
        t.update({"O": out["O2"], "Mstat": out["M2"], "Lstat": out["L2"], "TO": out["TO"]})
    else:  # bwd_fused on the forward's O, m, l in the same precision; z = dO . O per row
        t = {n: x[n] for n in ("Q", "K", "V", "DO")}
        t.update({"Mstat": out["Mstat"], "Lstat": out["Lstat"], "Zbuf": out["Z"],
                  "DQ": out["DQ"], "DK": out["DK"], "DV": out["DV"]})
    if tile is None:
        return jit_call.call(spec, op, "fp32", t, sizes, scale, input_precision=prec)
    bm, bn, w, st = tile
    return jit_call.call(spec, op, "fp32", t, sizes, scale, input_precision=prec,
                         blocks={"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st)


def main(shapes: list[str], ops: list[str], precs: list[str], rounds: int,
         tile: tuple | None) -> None:
    spec = load(ROOT / "kernels" / "variants.toml")
    print(torch.cuda.get_device_name(), torch.__version__, "kernels:", jit_call.KERNELS,
          flush=True)
    for name in shapes:
        B, H, T, D = SHAPES[name]
        sizes, scale = (B, H, T, T, D), 1 / math.sqrt(D)
        x = _inputs(name, B, H, T, D)
        ref = _references(x, scale, ops)
        res = {}
        for prec in precs:
            out = {n: torch.empty_like(x["Q"]) for n in ("O", "O2", "TO", "TO1", "DQ", "DK", "DV")}
            out["m64"], out["l64"] = ref["m"], ref["l"]
            for n in ("Mstat", "Lstat", "M2", "L2", "Z"):
                out[n] = torch.empty(B, H, T, device="cuda")
            res[prec] = out
            for op in ops:  # compile, and fill the outputs once for the errors
                if op == "bwd_fused":
                    _run(spec, "fwd", prec, x, out, sizes, scale, tile if "fwd" in ops else None)
                    out["Z"].copy_((out["O"] * x["DO"]).sum(-1))
                    out["DQ"].zero_()
                _run(spec, op, prec, x, out, sizes, scale, tile)
            torch.cuda.synchronize()
            errs = []
            # each output of the ops run against its reference (TO1: the JVP kernel's tangent)
            for n in ("O", "TO", "TO1", "DQ", "DK", "DV"):
                key = "TO" if n == "TO1" else n
                if key in ref and {"TO": "fwd_jvp", "TO1": "jvp"}.get(n, ops[0]) in ops:
                    ours = (out[n] - ref[key][0]).abs().max().item()
                    theirs = (ref[key][1] - ref[key][0]).abs().max().item()
                    errs.append(f"{n} {ours:.2e} (torch {theirs:.2e}, {ours / theirs:.2f}x)")
            print(f"{name} {sizes} {prec} errors: " + "; ".join(errs), flush=True)
        for op in ops:
            timers = {p: (lambda p=p, op=op, x=x, res=res: kernel_ms(
                lambda: _run(spec, op, p, x, res[p], sizes, scale, tile), n=5)) for p in precs}
            times = {p: [] for p in precs}
            for _ in range(rounds):
                for p, timer in timers.items():
                    times[p].append(timer())
            med = {p: statistics.median(t) for p, t in times.items()}
            base = med[precs[0]]
            print(f"{name} {op}{f' tile {tile}' if tile else ''}: " + "  ".join(
                f"{p} {med[p]:.4f} ms ({base / med[p]:.3f}x; {min(times[p]):.4f}-"
                f"{max(times[p]):.4f})" for p in precs), flush=True)
        del x, ref, res
        torch.cuda.empty_cache()


if __name__ == "__main__":
    opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
    main(opts.get("shapes", "vit,vit_wide,dit,sd,long,d128,dit_xl").split(","),
         opts.get("ops", "fwd,fwd_jvp,bwd_fused").split(","),
         opts.get("precs", "bf16x6,fp16x3").split(","), int(opts.get("rounds", 3)),
         tuple(int(t) for t in opts["tile"].split(",")) if "tile" in opts else None)

"""A/B two kernel trees on key-padding or causal calls (JIT, GPU only): run once per tree,
compare.

    python ab_kernels.py KERNELS_DIR LABEL [OP ...]
    python ab_kernels.py KERNELS_DIR LABEL causal [OP ...]

causal: the same ops, fp16, torch's (top-left) causal mask and none, at bench_breadth's
shapes (B*T = 16k tokens, H = 16, D = 64 and 128, T = 1k, 4k, 8k) and at B = 1, T = 8k
(test_breadth_gpu's causal-speed shape: few blocks per SM, where their order shows).

Times the masked forward, dQ, JVP and fused forward+JVP kernels (or the ops named; the
configs of this tree's
kernels/variants.toml, fp16) at ViT-B (32, 12, 197, 64), BERT-base (32, 12, 512, 64) and
(4, 16, 4096, 64), each with key-padding masks (B, 1, 1, M): "none" (every key kept: what
the mask handling costs), "right" (batch b keeps 1 - 0.3 b / B of its keys, as
bench_masks), "left" (the same counts, padded on the left) and "heavy" (0/25/50/75% padded
on the right). Each call is timed inside a CUDA graph (the JIT's host time excluded).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from triton.testing import do_bench_cudagraph

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from build_tools import jit_call  # noqa: E402
from build_tools.variants import load  # noqa: E402

SHAPES = {"vit": (32, 12, 197, 64), "bert": (32, 12, 512, 64), "long": (4, 16, 4096, 64)}
OPS = ("fwd", "bwd_dq", "jvp", "fwd_jvp")


def _keep(kind: str, B: int, M: int) -> torch.Tensor:
    j = torch.arange(M, device="cuda")[None, :]
    if kind == "none":
        n = torch.full((B, 1), M, device="cuda")
    elif kind == "heavy":
        n = torch.tensor([M - (M // 4) * (b % 4) for b in range(B)], device="cuda")[:, None]
    else:
        n = torch.tensor([round(M * (1 - 0.3 * b / B)) for b in range(B)], device="cuda")[:, None]
    return j >= M - n if kind == "left" else j < n


def _spec(kernels_dir: str):
    """Point jit_call at `kernels_dir` (the tree under test); the variants and configs come
    from this tree's kernels/variants.toml."""
    jit_call.KERNELS = Path(kernels_dir).resolve()
    return load(ROOT / "kernels" / "variants.toml")


def _tensors(B: int, H: int, T: int, D: int) -> dict:
    """fp16 operands and outputs of every timed op, random stats m, l, and the z pre-pass's
    two planes (z, then lse2 = m log2(e) + log2(l), consistent with m, l)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    x = {n: torch.randn(B, H, T, D, device="cuda", dtype=torch.float16, generator=g)
         for n in ("Q", "K", "V", "TQ", "TK", "TV", "DO")}
    x.update({n: torch.empty_like(x["Q"]) for n in ("O", "TO", "DQ", "DK", "DV")})
    x["Mstat"] = torch.randn(B, H, T, device="cuda", generator=g)
    x["Lstat"] = torch.rand(B, H, T, device="cuda", generator=g) + 1
    x["Zbuf"] = torch.stack([torch.randn(B * H, T, device="cuda", generator=g),
                             (x["Mstat"] * math.log2(math.e) + x["Lstat"].log2()).view(B * H, T)])
    return x


def main(kernels_dir: str, label: str, ops: tuple = OPS) -> None:
    spec = _spec(kernels_dir)
    for name, (B, H, T, D) in SHAPES.items():
        x = _tensors(B, H, T, D)
        for kind in ("none", "right", "left", "heavy"):
            kp = torch.zeros(B, T, device="cuda").masked_fill(~_keep(kind, B, T), float("-inf"))
            bias = kp.as_strided((B, H, T), (T, 0, 0))
            for op in ops:
                ms = do_bench_cudagraph(lambda op=op, x=x, bias=bias: jit_call.call(
                    spec, op, "fp16", x, (B, H, T, T, D), 1 / math.sqrt(D), bias=bias), rep=30)
                print(f"AB {label} {name} {kind} {op} {ms:.4f} ms", flush=True)
        del x
        torch.cuda.empty_cache()


def causal_main(kernels_dir: str, label: str, ops: tuple = OPS) -> None:
    spec = _spec(kernels_dir)
    for D in (64, 128):
        for B, T in ((16, 1024), (4, 4096), (2, 8192), (1, 8192)):
            H = 16
            x = _tensors(B, H, T, D)
            for causal in ((T, 0), None):
                for op in ops:
                    ms = do_bench_cudagraph(lambda op=op, c=causal, x=x: jit_call.call(
                        spec, op, "fp16", x, (B, H, T, T, D), 1 / math.sqrt(D), causal=c), rep=30)
                    print(f"AB {label} D{D} B{B} T{T} {'causal' if causal else 'full'} {op} "
                          f"{ms:.4f} ms", flush=True)
            del x
            torch.cuda.empty_cache()


if __name__ == "__main__":
    if sys.argv[3:4] == ["causal"]:
        causal_main(sys.argv[1], sys.argv[2], tuple(sys.argv[4:]) or OPS)
    else:
        main(sys.argv[1], sys.argv[2], tuple(sys.argv[3:]) or OPS)

"""Block-config sweep for the forward, backward and JVP kernels at real shapes (JIT, GPU only).

For each op x precision x shape it times a list of candidate (BLOCK_M, BLOCK_N, num_warps,
num_stages) configs with Triton's JIT, arguments assembled by name exactly as the AOT
launchers do (build_tools/jit_call.py), and prints the best ones. Shapes: short sequences
(T=128, ViT-B's T=197, T=512) and a medium and a long one, all D=64. Each candidate is timed
inside a CUDA graph (triton.testing.do_bench_cudagraph): the JIT's host time per launch
(~50 us) exceeds a short-sequence kernel, and would otherwise be timed instead of the kernel.
Precisions: fp16 (bf16 runs the same code on the same tile shapes), fp32 with split-precision
tensor-core products ("tf32x3", the fp32-accurate default) and fp32 with plain TF32 ("tf32",
taken under torch.set_float32_matmul_precision("high")); named only, fp32 in six bfloat16
products ("bf16x6", fp32-accurate, the sm_90 default) over its own candidates (SPLIT_BF16),
the only precision of the one-kernel backward (bwd_fused, dQ by atomic adds: time it next to
bwd_dkdv and bwd_dq, whose sum it replaces).
Configs found here go into kernels/variants.toml.

Phase 1 compiles every candidate in parallel worker processes (filling Triton's cache);
phase 2 times them one after another in this process, so timings never overlap.
Usage: python tune_real.py [op, shape or precision names ...]   (default: every op, shape and
       precision below; a 5th config entry caps registers, maxnreg, as variants.toml may)
       python tune_real.py causal [op, shape or precision names ...]   the same sweep with
       torch's (top-left) causal mask; the TFLOP/s column counts half the scores
       python tune_real.py masked [op, shape or mask kind names ...]   the masked flavour,
       fp16, MASKED_SHAPES, a key-padding (one bias row) and a dense (a bias row per query row)
       float32 mask; a candidate may cap registers (5th entry: maxnreg)
       python tune_real.py min1 [...]   every candidate also compiled with ptxas
       --minnctapersm 1 (variants.toml min_blocks_per_sm; labelled "+min1"), the first (current)
       one also as shipped: before it, ptxas left some fp32 candidates at 32 registers with KBs of
       stack (full-occupancy fallback) and they timed 10-100x slow
       python tune_real.py d80_1k d96_1k d80_256 d96_256 [op names ...]   the split head-dim
       buckets (SHAPES_SPLIT: D = 80 and 96 fill them), 16-bit, over HALF_SPLIT
       python tune_real.py tiers [causal] [op names ...]   each sequence-length tier in
       variants.toml (configs with max_len; sm_90) against its untiered twin's config, at a ladder
       of T (TIER_LADDER, B * T = 8192, H = 16, the bucket's D and, in 128, D = 72): where the tier
       stops leading is its max_len; with causal, torch's causal mask over TIER_LADDER_CAUSAL:
       where it stops leading on causal calls is its causal_len
       AOT_SDPA_KERNELS=<dir> python tune_real.py ...   the same sweep on the kernel sources
       in <dir> (e.g. `git archive <rev> kernels | tar -x -C old`, then old/kernels): an A/B
       of two kernel versions, each in its own process (build_tools/jit_call.py)
"""

from __future__ import annotations

import math
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import torch
from triton.testing import do_bench_cudagraph

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from build_tools import jit_call  # noqa: E402
from build_tools.variants import load  # noqa: E402

SPEC = load(ROOT / "kernels" / "variants.toml")
DEVICE = "cuda"
SHAPES = {"t128": (64, 8, 128, 64), "vit": (32, 12, 197, 64), "t512": (16, 12, 512, 64),
          "mid": (8, 16, 1024, 64), "long": (2, 16, 4096, 64),
          "dit": (32, 12, 256, 64),  # DiT-B/2 at 256^2
          # small grids (name them to sweep them): ViT-B at batch 1 and 4, ViT-S (6 heads)
          "vit_b1": (1, 12, 197, 64), "vit_b4": (4, 12, 197, 64), "vit_s": (32, 6, 197, 64)}
SMALL_GRIDS = ("vit_b1", "vit_b4", "vit_s")
# head dim 128 (name them to sweep them: "d128_1k d128_4k"), with their own candidates
# (HALF_128, FULL_128) compiled at D = 128
SHAPES_128 = {"d128_1k": (16, 16, 1024, 128), "d128_4k": (4, 16, 4096, 128),
              "dit_xl": (32, 16, 256, 72)}  # DiT-XL/2 at 256^2: D = 72 runs in bucket 128
# the split head-dim buckets 80 and 96 (kernels/variants.toml [split_buckets]; name them to sweep
# them), with their own 16-bit candidates (HALF_SPLIT) compiled at D = 80 and 96 (D fills the
# bucket: the JIT hints its strides as multiples of 16, as the AOT fast flavour does)
SHAPES_SPLIT = {"d80_1k": (16, 16, 1024, 80), "d96_1k": (16, 16, 1024, 96),
                "d80_256": (32, 16, 256, 80), "d96_256": (32, 16, 256, 96)}
TORCH_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
PRECISIONS = {"fp16": ("fp16", None), "fp32": ("fp32", "tf32x3"), "tf32": ("fp32", "tf32"),
              # named only: fp32 as six bf16 products (Triton's "bf16x6", ~fp32 accuracy)
              "bf16x6": ("fp32", "bf16x6"),
              # named only: fp32 as three fp16 products of scaled operands (kernels/_common.py
              # mma), over SPLIT_BF16's candidates and FP16X3_MORE's
              "fp16x3": ("fp32", "fp16x3")}
DEFAULT_PRECISIONS = ("fp16", "fp32", "tf32")
HALF = {  # fwd, bwd_dkdv, bwd_dq, jvp, fwd_jvp: the first is the current sm_90 D = 64 config
    # (the forward's: the untiered fast flavour's, registers capped at 128; (64, 64, 4, 2) is its
    # T <= 200 tier)
    "fwd": [(128, 64, 8, 4, 128), (128, 64, 8, 4), (128, 64, 4, 2), (64, 64, 4, 2), (64, 64, 4, 3),
            (128, 128, 8, 3), (64, 128, 4, 3), (128, 32, 4, 3), (64, 32, 4, 2), (128, 64, 8, 3),
            (128, 64, 8, 3, 128), (128, 64, 8, 2), (32, 64, 4, 2), (32, 32, 4, 2)],
    "bwd_dkdv": [(32, 128, 4, 3), (32, 128, 4, 2), (64, 64, 4, 2), (32, 64, 4, 2),
                 (64, 128, 8, 2), (16, 64, 4, 2), (32, 64, 4, 3), (32, 32, 4, 2), (16, 32, 4, 2)],
    "bwd_dq": [(128, 64, 8, 4, 128), (128, 64, 8, 4), (128, 32, 4, 2), (64, 64, 4, 2),
               (64, 32, 4, 2), (128, 64, 8, 2), (64, 64, 4, 3), (32, 64, 4, 2), (32, 32, 4, 2)],
    "fwd_jvp": [(64, 64, 4, 3), (64, 64, 4, 2), (128, 64, 8, 2), (64, 32, 4, 2), (128, 32, 8, 2),
                (128, 64, 8, 3)],
    "jvp": [(64, 64, 4, 3), (64, 64, 4, 2), (128, 64, 8, 2), (64, 32, 4, 2), (128, 32, 8, 2)],
    # dK alone and dV alone (one accumulator each): the backward split in two kernels
    "bwd_dk": [(32, 128, 4, 3), (64, 128, 8, 2), (64, 128, 8, 3), (64, 64, 4, 3), (32, 64, 4, 3),
               (128, 128, 8, 2)],
    "bwd_dv": [(32, 128, 4, 3), (64, 128, 8, 2), (64, 128, 8, 3), (64, 64, 4, 3), (32, 64, 4, 3),
               (128, 128, 8, 2)],
}
HALF_128 = {  # D = 128: the first is the current config (kernels/variants.toml, sm_90)
    "fwd": [(128, 64, 8, 3), (128, 128, 8, 2), (128, 64, 8, 4), (128, 128, 8, 3), (64, 64, 4, 2),
            (128, 32, 8, 3), (64, 128, 4, 2), (64, 64, 4, 3), (64, 128, 4, 3), (64, 32, 4, 3)],
    "bwd_dkdv": [(32, 64, 4, 3), (64, 64, 4, 2), (64, 64, 4, 3), (32, 64, 4, 2), (128, 64, 8, 2),
                 (64, 128, 8, 2), (32, 128, 8, 2), (64, 64, 8, 2), (16, 64, 4, 2)],
    "bwd_dq": [(128, 64, 8, 3), (128, 64, 8, 4), (128, 64, 8, 2), (64, 64, 4, 2), (64, 64, 4, 3),
               (128, 128, 8, 3), (128, 128, 8, 2)],
    "fwd_jvp": [(64, 64, 8, 2), (64, 32, 4, 2), (128, 32, 8, 2), (64, 32, 8, 2), (128, 64, 8, 2),
                (32, 64, 4, 2), (64, 64, 4, 2)],
    "jvp": [(64, 64, 8, 2), (64, 32, 4, 2), (128, 32, 8, 2), (64, 32, 8, 2), (128, 64, 8, 2),
            (32, 64, 4, 2), (64, 64, 4, 2)],
    "bwd_dk": [(64, 64, 4, 2), (64, 128, 8, 2), (64, 128, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3),
               (32, 64, 4, 3), (64, 128, 4, 2), (128, 64, 8, 2)],
    "bwd_dv": [(64, 64, 4, 2), (64, 128, 8, 2), (64, 128, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3),
               (32, 64, 4, 3), (64, 128, 4, 2), (128, 64, 8, 2)],
}
HALF_SPLIT = {  # the split buckets (16-bit only): the first is bucket 80's config
    "fwd": [(128, 64, 4, 3), (128, 64, 4, 2), (128, 64, 8, 3), (64, 64, 4, 2), (128, 32, 4, 3),
            (64, 128, 4, 3)],
    "bwd_dkdv": [(64, 64, 4, 2), (64, 64, 8, 2), (32, 64, 4, 2), (32, 64, 4, 3), (64, 32, 4, 2),
                 (32, 128, 4, 2), (64, 128, 8, 2), (64, 64, 8, 3), (32, 128, 8, 2),
                 (16, 64, 4, 2)],
    "bwd_dq": [(128, 64, 4, 2), (64, 64, 4, 2), (128, 64, 8, 2), (128, 32, 4, 2), (64, 32, 4, 2),
               (128, 64, 8, 3), (64, 64, 4, 3), (128, 128, 8, 2), (128, 32, 8, 2)],
}
FULL = {  # fp32 tiles take twice the shared memory and registers; dK/dV, dQ: the first is the
    # shipped sm_90 D = 64 config
    "fwd": [(64, 32, 4, 2), (64, 64, 4, 2), (128, 64, 8, 2), (128, 32, 8, 2), (64, 64, 4, 3),
            (128, 64, 8, 3), (32, 64, 4, 2)],
    "bwd_dkdv": [(32, 128, 8, 2), (32, 128, 8, 1), (64, 128, 8, 2), (64, 128, 8, 1), (64, 64, 4, 2),
                 (64, 64, 4, 1), (32, 64, 4, 2), (64, 64, 8, 2), (128, 128, 8, 1), (32, 128, 4, 2)],
    "bwd_dq": [(128, 64, 8, 2), (128, 64, 8, 1), (128, 128, 8, 1), (64, 64, 4, 2), (64, 64, 4, 1),
               (128, 32, 8, 2), (64, 128, 8, 2), (64, 32, 4, 2)],
    "fwd_jvp": [(64, 32, 4, 2), (64, 64, 4, 2), (32, 32, 4, 2), (128, 32, 8, 2),
                (64, 32, 4, 3), (128, 64, 8, 2)],
    "jvp": [(64, 32, 4, 2), (64, 64, 4, 2), (32, 32, 4, 2), (128, 32, 8, 2), (64, 32, 4, 3)],
}
FULL_128 = {  # fp32 / TF32 at D = 128: the first is the shipped sm_90 config (the fp32 one; the
    # earlier sweeps: tune_d128_fp32_h200.log)
    "fwd": [(128, 64, 8, 1), (128, 64, 8, 2), (128, 32, 8, 1), (128, 32, 8, 2), (64, 64, 4, 1),
            (64, 64, 4, 2), (64, 32, 4, 2), (128, 128, 8, 1)],
    "bwd_dkdv": [(32, 32, 4, 1), (32, 32, 4, 2), (16, 32, 4, 1), (32, 64, 4, 1), (32, 64, 4, 2),
                 (64, 32, 4, 1), (64, 32, 8, 1), (64, 64, 4, 1), (64, 64, 8, 1), (64, 64, 8, 2),
                 (32, 128, 8, 1), (64, 128, 8, 1), (16, 64, 4, 1)],
    "bwd_dq": [(32, 32, 4, 2), (32, 32, 4, 1), (64, 32, 4, 1), (64, 32, 4, 2), (32, 64, 4, 2),
               (64, 64, 4, 1), (64, 64, 8, 1), (64, 64, 8, 2), (128, 32, 8, 1), (128, 64, 8, 1),
               (128, 64, 8, 2), (64, 128, 8, 1)],
    "fwd_jvp": [(64, 32, 8, 1), (64, 32, 4, 1), (64, 32, 4, 2), (64, 64, 8, 1), (64, 64, 4, 1),
                (32, 32, 4, 1), (128, 32, 8, 1), (32, 64, 4, 1)],
    # dK alone and dV alone: fewer live registers than the fused dK/dV (one accumulator each)
    "bwd_dk": [(32, 32, 4, 1), (64, 32, 8, 1), (32, 64, 4, 1), (64, 64, 8, 1), (64, 64, 4, 1)],
    "bwd_dv": [(32, 32, 4, 1), (64, 32, 8, 1), (32, 64, 4, 1), (64, 64, 8, 1), (64, 64, 4, 1),
               (64, 128, 8, 1)],
    "jvp": [(32, 32, 4, 2), (32, 32, 4, 1), (64, 32, 4, 1), (64, 32, 4, 2), (64, 64, 4, 1),
            (64, 64, 8, 1), (64, 32, 8, 1), (128, 32, 8, 1), (32, 64, 4, 1)],
}
SPLIT_BF16 = {  # fp32 in "bf16x6" products (bfloat16 operand tiles, three per operand) at
    # D = 64: the first is the shipped sm_90 fp32 config when this list was written
    "fwd": [(128, 64, 8, 3), (128, 64, 8, 2), (128, 128, 8, 2), (64, 64, 4, 3), (128, 32, 8, 3),
            (64, 128, 4, 2)],
    "bwd_dkdv": [(32, 128, 8, 2), (32, 128, 8, 1), (64, 128, 8, 2), (32, 64, 4, 2), (64, 64, 4, 2),
                 (64, 128, 8, 1)],
    "bwd_dq": [(128, 64, 8, 2), (128, 64, 8, 1), (128, 128, 8, 2), (64, 64, 4, 1), (128, 32, 8, 2),
               (64, 128, 8, 2)],
    "fwd_jvp": [(128, 64, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2), (128, 32, 8, 2), (64, 64, 8, 2),
                (128, 64, 8, 1)],
    "jvp": [(32, 32, 4, 2), (64, 32, 4, 2), (64, 64, 4, 2), (128, 32, 8, 2), (128, 64, 8, 2),
            (64, 64, 8, 2)],
    # dK alone and dV alone: the first is the fused dK/dV's bf16x6 tile
    "bwd_dk": [(32, 128, 8, 1), (32, 128, 8, 2), (64, 128, 8, 1), (64, 128, 8, 2), (64, 64, 4, 2),
               (32, 64, 4, 2)],
    "bwd_dv": [(32, 128, 8, 1), (32, 128, 8, 2), (64, 128, 8, 1), (64, 128, 8, 2), (64, 64, 4, 2),
               (32, 64, 4, 2)],
    # dK, dV and dQ in one kernel (atomic dQ): the first is the dK/dV kernel's tile
    "bwd_fused": [(32, 128, 8, 1), (32, 128, 8, 2), (64, 128, 8, 1), (64, 64, 4, 1), (32, 64, 4, 1),
                  (64, 64, 8, 1), (16, 128, 8, 1)],
}
FP16X3_MORE = {  # "fp16x3" also tries these (its operand parts take half bf16x6's registers
    # and shared memory: deeper pipelines and larger tiles fit)
    "fwd": [(128, 64, 8, 4), (64, 64, 4, 2), (64, 128, 4, 3)],
    "fwd_jvp": [(64, 64, 4, 3), (128, 64, 8, 3), (64, 32, 4, 3)],
    "jvp": [(64, 64, 4, 3), (128, 64, 8, 3), (64, 32, 4, 3)],
    "bwd_fused": [(64, 64, 4, 2), (32, 64, 4, 2), (64, 128, 8, 2), (32, 128, 4, 1)],
}
SPLIT_BF16_128 = {  # as SPLIT_BF16, D = 128
    "fwd": [(128, 64, 8, 1), (128, 64, 8, 2), (128, 128, 8, 1), (128, 32, 8, 2), (64, 64, 4, 2),
            (64, 128, 8, 2)],
    "bwd_dkdv": [(64, 32, 8, 1), (32, 128, 8, 1), (32, 128, 8, 2), (64, 64, 8, 1), (64, 128, 8, 1),
                 (16, 64, 4, 1), (32, 64, 4, 1)],
    "bwd_dq": [(32, 32, 4, 2), (128, 32, 8, 1), (128, 64, 8, 1), (128, 32, 8, 2), (64, 64, 4, 1),
               (64, 32, 4, 1), (128, 64, 8, 2)],
    "fwd_jvp": [(64, 32, 8, 1), (64, 64, 8, 1), (128, 32, 8, 1), (64, 32, 4, 1), (128, 64, 8, 1),
                (32, 64, 4, 1)],
    "jvp": [(32, 32, 4, 2), (64, 32, 4, 1), (64, 32, 8, 1), (128, 32, 8, 1), (64, 64, 8, 1),
            (32, 64, 4, 1)],
    "bwd_dk": [(32, 128, 8, 1), (64, 32, 8, 1), (64, 128, 8, 1), (64, 64, 8, 1), (32, 64, 4, 1),
               (128, 64, 8, 1)],
    "bwd_dv": [(32, 128, 8, 1), (64, 128, 8, 1), (64, 64, 8, 1), (64, 32, 8, 1), (32, 64, 4, 1),
               (128, 128, 8, 1)],
    "bwd_fused": [(32, 128, 8, 1), (64, 32, 8, 1), (32, 64, 4, 1), (64, 64, 8, 1), (16, 64, 4, 1),
                  (32, 64, 8, 1), (16, 128, 8, 1)],
}
# the masked flavour (fp16): the first is the masked flavour's config (what masked runs now);
# the masked sweep's results: benchmarks/results/tune_masked_h200.log. JIT timings can rank
# configs differently from the AOT cubins (the dK/dV config in variants.toml): check the
# winner with profile_kernels.py on the built extension.
MASKED_SHAPES = {"vit": (32, 12, 197, 64), "bert": (32, 12, 512, 64), "long": (2, 16, 4096, 64)}
MASKED = {
    "fwd": [(64, 64, 4, 2), (128, 64, 8, 4), (128, 64, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3),
            (64, 32, 4, 2), (128, 32, 4, 2)],
    "bwd_dkdv": [(32, 128, 4, 2), (32, 64, 4, 2), (32, 128, 4, 3), (64, 128, 8, 2),
                 (32, 128, 8, 2), (64, 64, 4, 2), (64, 128, 8, 3)],
    "bwd_dq": [(64, 32, 4, 2), (128, 64, 8, 4), (128, 64, 8, 3), (64, 64, 4, 2), (64, 64, 4, 3),
               (128, 32, 4, 2), (128, 64, 4, 2)],
    "fwd_jvp": [(64, 64, 4, 2), (64, 64, 4, 3), (64, 32, 4, 2), (128, 64, 8, 2), (128, 64, 8, 3)],
    "jvp": [(64, 64, 4, 2), (64, 64, 4, 3), (64, 32, 4, 2), (128, 64, 8, 2), (128, 64, 8, 3)],
}
# matmuls of 2*T*M*D flops each, per op (for the TFLOP/s column)
MATMULS = {"fwd": 2, "bwd_dkdv": 4, "bwd_dq": 3, "fwd_jvp": 5, "jvp": 5, "bwd_dk": 3, "bwd_dv": 2,
           "bwd_fused": 5}


def _tensors(shape, dtype):
    """Every kernel's tensors by pointer name: inputs, the forward's stats, the z pre-pass's
    planes, outputs, and the backward-JVP's row vectors and outputs (tdO absent: the HVP)."""
    B, H, T, D = shape
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = {n: torch.randn(B, H, T, D, device=DEVICE, dtype=dtype, generator=g)
         for n in ("Q", "K", "V", "TQ", "TK", "TV", "DO")}
    s = (x["Q"].float() @ x["K"].float().transpose(-1, -2)) / math.sqrt(D)
    m = s.amax(-1)
    stats = torch.stack([m, (s - m[..., None]).exp().sum(-1)])
    out = {n: torch.empty_like(x["Q"]) for n in ("O", "TO", "DQ", "DK", "DV", "HQ", "HK", "HV")}
    # the z pre-pass's two planes: z, then lse2 = m log2(e) + log2(l) (the dK/dV kernel's stats)
    z = torch.stack([torch.randn(B * H, T, device=DEVICE, generator=g),
                     (stats[0] * math.log2(math.e) + stats[1].log2()).reshape(B * H, T)])
    # the backward-JVP's row vectors r and z' (its rows kernel writes z into Zbuf's first plane)
    rows = torch.zeros(2, B * H, T, device=DEVICE)
    return {**x, **out, "TDO": None, "Mstat": stats[0], "Lstat": stats[1], "Zbuf": z,
            "Rbuf": rows[0], "ZDbuf": rows[1]}


def _jobs(ops, d128=False, precs=DEFAULT_PRECISIONS, min1=False, split_buckets=False):
    """(op, precision, dtype, input precision, config, ptxas --minnctapersm or None) per
    candidate; with min1, each with the option and the first (current) also without it."""
    for op in ops:
        for prec, (dtype, ip) in PRECISIONS.items():
            if prec not in precs:
                continue
            half, full, split = ((HALF_128, FULL_128, SPLIT_BF16_128) if d128
                                 else (HALF, FULL, SPLIT_BF16))
            if split_buckets:  # 16-bit only: no float32 variant there
                half, full, split = HALF_SPLIT, {}, {}
                if prec != "fp16" or op not in half:
                    continue
            cfgs = {"fp16": half, "bf16x6": split, "fp16x3": split}.get(prec, full).get(
                op) or full[op]
            if prec == "fp16x3":
                cfgs = [*cfgs, *(c for c in FP16X3_MORE.get(op, []) if c not in cfgs)]
            for i, cfg in enumerate(cfgs):
                if not min1 or i == 0:
                    yield op, prec, dtype, ip, cfg, None
                if min1:
                    yield op, prec, dtype, ip, cfg, 1


def _launch(op, dtype, ip, cfg, tensors, shape, bias=None, causal=False, mb=None):
    B, H, T, D = shape
    bm, bn, w, st, *cap = cfg
    if op == "bwd_fused":  # its dQ is a sum of atomic adds: zeroed first, as _ops.bwd does
        tensors["DQ"].zero_()
    jit_call.call(SPEC, op, dtype, tensors, (B, H, T, T, D), 1 / math.sqrt(D),
                  causal=(T, 0) if causal else None, blocks={"BLOCK_M": bm, "BLOCK_N": bn},
                  num_warps=w, num_stages=st, input_precision=ip, bias=bias,
                  maxnreg=cap[0] if cap else None, min_blocks_per_sm=mb)


def _biases(shape):
    """Kernel views of a key-padding (B, 1, 1, T) and a dense (B, 1, T, T) float32 mask."""
    B, H, T, D = shape
    keep = torch.arange(T, device=DEVICE)[None, :] < torch.tensor(
        [T - (T // 4) * (b % 4) for b in range(B)], device=DEVICE)[:, None]
    kp = torch.zeros(B, T, device=DEVICE).masked_fill(~keep, float("-inf"))
    dense = torch.randn(B, T, T, device=DEVICE)
    return {"key_padding": kp.as_strided((B, H, T), (T, 0, 0)),
            "dense": dense.as_strided((B, H, T), (T * T, 0, T))}


def _key(job):
    """(op, precision, config label) of a job; the label marks --minnctapersm 1 with "+min1"."""
    op, prec, _, _, cfg, mb = job
    return op, prec, f"{cfg}{'+min1' if mb else ''}"


def _precompile(jobs, worker) -> set:
    """Compile every candidate in parallel worker processes (filling Triton's cache); returns
    the (op, precision, config) of those that failed."""
    ctx = torch.multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(8, mp_context=ctx) as pool:
        errors = {_key(j): err for j, err in zip(jobs, pool.map(worker, jobs)) if err}
    for key in sorted(errors):
        print("compile failed:", key, errors[key])
    return set(errors)


def _bench(label, op, cfg, shape, fn, causal=False):
    """Time fn inside a CUDA graph; print and return its ms (None when it fails). TFLOP/s
    counts every score, or (causal) half of them."""
    B, H, T, D = shape
    try:
        ms = do_bench_cudagraph(fn, rep=30)
    except Exception as exc:
        print(f"{label} {op} {cfg}: {type(exc).__name__}"[:200])
        return None
    tf = MATMULS[op] * 2 * B * H * T * T * D / ms / 1e9 / (2 if causal else 1)
    print(f"{label} {op} {cfg}: {ms:.4f} ms {tf:.0f} TFLOP/s", flush=True)
    return ms


def masked_main(names):
    """The masked flavour's candidates (MASKED), fp16; mask kinds and shapes as named (default:
    both kinds, every MASKED_SHAPES entry). Candidates compile in parallel first."""
    ops = [n for n in names if n in MASKED] or list(MASKED)
    kinds = [n for n in names if n in ("key_padding", "dense")] or ["key_padding", "dense"]
    shapes = {n: s for n, s in MASKED_SHAPES.items() if n in names} or MASKED_SHAPES
    jobs = [(op, "fp16", "fp16", None, cfg, None) for op in ops for cfg in MASKED[op]]
    failed = _precompile(jobs, partial(_compile, masked=True))
    best = {}
    for name, shape in shapes.items():
        tensors = _tensors(shape, torch.float16)
        for kind, bias in _biases(shape).items():
            if kind not in kinds:
                continue
            for job in jobs:
                op, prec, dtype, ip, cfg, _ = job
                if _key(job) in failed:
                    continue
                ms = _bench(f"MASKED {name} {kind}", op, cfg, shape, lambda x=tensors: _launch(
                    op, dtype, ip, cfg, x, shape, bias))
                if ms is not None:
                    best.setdefault((name, kind, op), []).append((round(ms, 4), cfg))
        del tensors
        torch.cuda.empty_cache()
    for (name, kind, op), res in best.items():
        cur, res = res[0], sorted(res)
        print(f"BEST {name} {kind} {op} {res[:3]} current {cur} -> x{cur[0] / res[0][0]:.2f}")


def _compile(job, Ds=(64,), masked=False):
    """Worker: compile (and run once) one candidate at tiny shapes with each head dim in Ds
    (with masked, under both mask kinds); the cache is shared."""
    op, prec, dtype, ip, cfg, mb = job
    try:  # Triton specialises ints on divisibility by 16 (and == 1): one size of each kind
        for shape in ((2, 2, T, D) for D in Ds for T in (197, 256)):
            for bias in _biases(shape).values() if masked else (None,):
                _launch(op, dtype, ip, cfg, _tensors(shape, TORCH_DTYPE[dtype]), shape, bias,
                        mb=mb)
        torch.cuda.synchronize()
        return None
    except Exception as exc:  # out of resources etc.
        return f"{op} {prec} {cfg}: {type(exc).__name__} {exc}"[:200]


def main(names):
    ops = [n for n in names if n in MATMULS] or list(MATMULS)
    split_buckets = {n: s for n, s in SHAPES_SPLIT.items() if n in names}
    shapes = split_buckets or {n: s for n, s in SHAPES_128.items() if n in names}
    d128 = bool(shapes) and not split_buckets
    shapes = shapes or {n: s for n, s in SHAPES.items() if n in names} or {
        n: s for n, s in SHAPES.items() if n not in SMALL_GRIDS}
    precs = [n for n in names if n in PRECISIONS] or list(DEFAULT_PRECISIONS)
    causal = "causal" in names
    jobs = list(_jobs(ops, d128, precs, min1="min1" in names, split_buckets=bool(split_buckets)))
    failed = _precompile(jobs, partial(_compile, Ds=tuple({s[3] for s in shapes.values()})))
    best = {}
    for name, shape in shapes.items():
        for prec, (dtype, ip) in PRECISIONS.items():
            if prec not in precs:
                continue
            tensors = _tensors(shape, TORCH_DTYPE[dtype])
            for job in (j for j in jobs if j[1] == prec):
                op, _, _, _, cfg, mb = job
                key = _key(job)
                if key in failed:
                    continue
                label = key[2]
                ms = _bench(f"{name} {prec}{' causal' if causal else ''}", op, label, shape,
                            lambda x=tensors: _launch(op, dtype, ip, cfg, x, shape, causal=causal,
                                                      mb=mb), causal)
                if ms is not None:
                    best.setdefault((name, prec, op), []).append((round(ms, 4), label))
            del tensors
            torch.cuda.empty_cache()
    print("\nBEST (ms, (BLOCK_M, BLOCK_N, num_warps, num_stages)); the first is the current config")
    for (name, prec, op), res in best.items():
        cur = res[0]
        res = sorted(res)
        print(f"BEST {name:5s} {prec} {op:9s} {res[:3]}  current {cur} "
              f"-> x{cur[0] / res[0][0]:.2f}")


TIER_LADDER = (128, 197, 256, 320, 384, 512, 768, 1024, 2048)
TIER_LADDER_CAUSAL = (*TIER_LADDER, 3072, 4096)  # where a causal_len should stop


def _tier_pairs(ops):
    """(op, dtype, input precision, head dim, untiered job cfg + mb, tier cfg + mb, max_len)
    for each sm_90 fast-flavour tier in variants.toml."""
    by_name = {v.name: v for v in SPEC.variants}
    for v in SPEC.variants:
        if not v.max_len or v.arch != 90 or v.flavor != "fast" or (ops and v.op not in ops):
            continue
        if v.dtype not in ("fp16", "fp32"):  # bf16 runs fp16's tiles
            continue
        base = by_name[v.untiered_name]
        cfgs = [(w.block["BLOCK_M"], w.block["BLOCK_N"], w.num_warps, w.num_stages,
                 *([w.maxnreg] if w.maxnreg else [])) for w in (base, v)]
        yield (v.op, v.dtype, v.input_precision, v.head_dim, (cfgs[0], base.min_blocks_per_sm),
               (cfgs[1], v.min_blocks_per_sm), v.max_len)


def _tier_dims(bucket):
    """The head dims a tier is timed at: its bucket, and 72 (DiT-XL/2) in bucket 128."""
    return (72, bucket) if bucket == 128 else (bucket,)


def tiers_main(names):
    ops = [n for n in names if n in MATMULS]
    causal = "causal" in names
    ladder = TIER_LADDER_CAUSAL if causal else TIER_LADDER
    pairs = list(_tier_pairs(ops))
    jobs = [(op, dtype, dtype, ip, cfg, mb) for op, dtype, ip, _, *two, _ in pairs
            for cfg, mb in two]
    Ds = tuple(sorted({d for p in pairs for d in _tier_dims(p[3])}))
    failed = _precompile(jobs, partial(_compile, Ds=Ds))
    for op, dtype, ip, bucket, (c0, m0), (c1, m1), max_len in pairs:
        print(f"\n## {op} {dtype} bucket {bucket}: untiered {c0} mb {m0} against tier "
              f"max_len={max_len} {c1} mb {m1}")
        for D in _tier_dims(bucket):
            for T in ladder:
                shape = (max(1, 8192 // T), 16, T, D)
                x = _tensors(shape, TORCH_DTYPE[dtype])
                ms = []
                for cfg, mb in ((c0, m0), (c1, m1)):
                    if _key((op, dtype, dtype, ip, cfg, mb)) in failed:
                        ms.append(None)
                        continue
                    ms.append(_bench(f"{shape}{' causal' if causal else ''}", op,
                                     f"{cfg}{'+min1' if mb else ''}", shape,
                                     lambda x=x, cfg=cfg, mb=mb: _launch(op, dtype, ip, cfg, x,
                                                                         shape, causal=causal,
                                                                         mb=mb), causal))
                if None not in ms:
                    print(f"TIER {op} D={D} T={T}{' causal' if causal else ''}: untiered/tier = "
                          f"{ms[0] / ms[1]:.3f}{'  (inside max_len)' if T <= max_len else ''}",
                          flush=True)
                del x
                torch.cuda.empty_cache()


if __name__ == "__main__":
    if sys.argv[1:2] == ["masked"]:
        masked_main(sys.argv[2:])
    elif sys.argv[1:2] == ["tiers"]:
        tiers_main(sys.argv[2:])
    else:
        main(sys.argv[1:])

"""Would splitting the head dim pay for head dims between buckets (GPU only, JIT, the probe
that led to kernels/variants.toml [split_buckets])?

When it ran, D = 72 (DiT-XL/2) ran in the bucket-128 kernels (the ragged flavour: tiles of 128
columns, the tail masked), so every product did 128/72 = 1.78x the work. A tile's head dim
must be a power of two in Triton, but a product over D can be two: S = Q[:, :64] K[:, :64]^T
+ Q[:, 64:80] K[:, 64:80]^T, and O's columns two accumulators. This times such a forward
(64 lead columns + a 16/32-column tail masked at D) against the AOT forward ("aot": bucket 128
then, the split buckets since) and torch's best path in one process, over a small tile sweep.
Its key sweep is now the shipped kernel's (sdpa_fwd._fwd_split_inner);
results/probe_split_d_h200.log was taken with this probe's first version (cc491ee), whose own
loop loaded the lead columns without a mask.

    python probe_split_d.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.testing import do_bench_cudagraph

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "kernels"))
from _common import LN2, LOG2E, row_limits  # noqa: E402
from sdpa_fwd import _fwd_split_inner  # noqa: E402

import aot_sdpa  # noqa: E402


@triton.jit
def _fwd_split(Q, K, V, O, Mstat, Lstat, sm_scale, stride_qh, stride_qm, stride_kh, stride_kn,
               stride_vh, stride_vn, stride_oh, stride_om, T, M, D,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
               TAIL_DIM: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    bh = tl.program_id(1).to(tl.int64)
    pid = tl.num_programs(0) - 1 - tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = rows < T
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_t = HEAD_DIM + tl.arange(0, TAIL_DIM)
    d_ok = offs_d < D
    t_ok = offs_t < D
    q_ptr = Q + bh * stride_qh + rows[:, None] * stride_qm
    q = tl.load(q_ptr + offs_d[None, :], mask=m_ok[:, None], other=0.0)
    q_t = tl.load(q_ptr + offs_t[None, :], mask=m_ok[:, None] & t_ok[None, :], other=0.0)
    k_base = K + bh * stride_kh
    v_base = V + bh * stride_vh
    qk_scale = sm_scale * LOG2E
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    acc_t = tl.zeros([BLOCK_M, TAIL_DIM], tl.float32)
    n_full = (M // BLOCK_N) * BLOCK_N
    acc, acc_t, m_i, l_i = _fwd_split_inner(acc, acc_t, m_i, l_i, q, q_t, k_base, v_base,
                                            stride_kn, stride_vn, 0, n_full, M, 0, offs_n, offs_d,
                                            d_ok, offs_t, t_ok, qk_scale, BLOCK_N, False, False,
                                            INPUT_PRECISION)
    if n_full < M:
        lim = row_limits(rows, T, M - 1, M)
        acc, acc_t, m_i, l_i = _fwd_split_inner(acc, acc_t, m_i, l_i, q, q_t, k_base, v_base,
                                                stride_kn, stride_vn, n_full, M, M, lim, offs_n,
                                                offs_d, d_ok, offs_t, t_ok, qk_scale, BLOCK_N,
                                                False, True, INPUT_PRECISION)
    inv = 1.0 / l_i
    o_ptr = O + bh * stride_oh + rows[:, None] * stride_om
    tl.store(o_ptr + offs_d[None, :], (acc * inv[:, None]).to(O.dtype.element_ty),
             mask=m_ok[:, None])
    tl.store(o_ptr + offs_t[None, :], (acc_t * inv[:, None]).to(O.dtype.element_ty),
             mask=m_ok[:, None] & t_ok[None, :])
    tl.store(Mstat + bh * T + rows, m_i * LN2, mask=m_ok)
    tl.store(Lstat + bh * T + rows, l_i, mask=m_ok)


def split_dims(D):
    main = 1 << (D.bit_length() - 1)
    return main, max(16, triton.next_power_of_2(D - main))


def run_split(q, k, v, o, m, l, cfg):
    B, H, T, D = q.shape
    bm, bn, w, st = cfg
    hd, td = split_dims(D)
    grid = (triton.cdiv(T, bm), B * H)
    _fwd_split[grid](q, k, v, o, m, l, 1 / math.sqrt(D), q.stride(1), q.stride(2), k.stride(1),
                     k.stride(2), v.stride(1), v.stride(2), o.stride(1), o.stride(2), T, k.shape[2],
                     D, BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=hd, TAIL_DIM=td,
                     INPUT_PRECISION="ieee", num_warps=w, num_stages=st)


CONFIGS = [(bm, bn, w, st) for bm in (64, 128) for bn in (64, 128) for w in (4, 8)
           for st in (2, 3)]
SHAPES = {"DiT-XL/2": (32, 16, 256, 72), "D72-1k": (16, 16, 1024, 72), "D80-1k": (16, 16, 1024, 80),
          "D96-1k": (16, 16, 1024, 96), "D40-1k": (16, 16, 1024, 40), "SD1-D40-4k": (2, 8, 4096, 40),
          "D96-T256": (32, 16, 256, 96)}


def torch_best(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    out = {}
    for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                     ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel(be):
                torch.nn.functional.scaled_dot_product_attention(q, k, v)
                out[name] = do_bench_cudagraph(
                    lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), rep=30)
        except Exception as exc:
            out[name] = f"{type(exc).__name__}"
    return out


def main():
    torch.manual_seed(0)
    win = None
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, flush=True)
    for name, (B, H, T, D) in SHAPES.items():
        for dtype in (torch.float16, torch.bfloat16):
            q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=dtype) for _ in range(3))
            o = torch.empty_like(q)
            m = torch.empty(B, H, T, device="cuda")
            l = torch.empty_like(m)
            ref = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double())
            aot = do_bench_cudagraph(lambda: aot_sdpa.triton_sdpa_fused(q, k, v), rep=30)
            aot_err = (aot_sdpa.triton_sdpa_fused(q, k, v)[0].double() - ref).abs().max().item()
            tb = torch_best(q, k, v)
            best = min(x for x in tb.values() if isinstance(x, float))
            res = []
            for cfg in CONFIGS if dtype == torch.float16 else [win]:
                try:
                    run_split(q, k, v, o, m, l, cfg)
                    ms = do_bench_cudagraph(lambda cfg=cfg: run_split(q, k, v, o, m, l, cfg),
                                            rep=30)
                except Exception as exc:
                    print(f"  {cfg}: {type(exc).__name__}"[:120])
                    continue
                err = (o.double() - ref).abs().max().item()
                res.append((ms, cfg, err))
            ms, win, err = min(res)
            tbs = " ".join(f"{n} {x:.4f}" if isinstance(x, float) else f"{n} {x}"
                           for n, x in tb.items())
            print(f"{name} {(B, H, T, D)} {str(dtype)[6:]}: split {ms:.4f} ms {win} err {err:.2e}"
                  f" | aot {aot:.4f} err {aot_err:.2e} | {tbs} | split/aot {aot / ms:.3f}x, "
                  f"vs torch best {best / ms:.3f}x (aot {best / aot:.3f}x)", flush=True)
            if dtype == torch.float16:
                top = sorted(res)[:4]
                print("   top:", "; ".join(f"{c} {t:.4f}" for t, c, _ in top), flush=True)


if __name__ == "__main__":
    main()

"""Would the split head-dim buckets pay in the 16-bit backward (GPU only, JIT, a probe: nothing
shipped)?

The forward runs 64 < D <= 96 in the split buckets 80 = 64 + 16 and 96 = 64 + 32
(kernels/variants.toml [split_buckets]); the backward's kernels still run such a D in bucket
128 (1.78x the products of D = 72). This probe writes the two backward kernels split the same
way, unmasked and non-causal only (enough to time them):

    dQ program (a query block):   S = Q K^T, dP = dO V^T as lead + tail products,
                                  P = exp2(S scale log2(e) - lse2), dS = P (dP - z),
                                  dQ_lead += dS K_lead, dQ_tail += dS K_tail
    dK/dV program (a key block):  S^T = K Q^T, dP^T = V dO^T as lead + tail products,
                                  dV_part += P^T dO_part, dK_part += dS^T Q_part

(row stride and D hinted as multiples of 8, as the AOT ragged flavour has them), with
z = rowsum(dO * O) and lse2 = m log2(e) + log2(l) from torch (the shipped z kernel's
work, the same either way), and times them against the shipped AOT backward (sdpa_bwd with o:
z, dK/dV and dQ in bucket 128) and torch's autograd backward (flash, cuDNN), one process: a
small tile sweep per kernel (CUDA graphs, float16; bfloat16 reuses the winners), then the
comparison with CUDA events around each call (_harness.time_ms). The interpreter runs the same
kernels on the CPU (check()).

    python probe_split_bwd.py          # on the GPU
    TRITON_INTERPRET=1 python probe_split_bwd.py check
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "kernels"))
from _common import LOG2E, mma  # noqa: E402
from _split import split_lead  # noqa: E402


@triton.jit
def _split_cols(D, HEAD_DIM: tl.constexpr):
    """The lead columns (split_lead(HEAD_DIM) of them) and the tail's, each with its mask < D."""
    offs_d = tl.arange(0, split_lead(HEAD_DIM))
    offs_t = split_lead(HEAD_DIM) + tl.arange(0, HEAD_DIM - split_lead(HEAD_DIM))
    return offs_d, offs_d < D, offs_t, offs_t < D


@triton.jit
def _load_parts(base, rows, row_ok, offs_d, d_ok, offs_t, t_ok, stride_row):
    """The lead and tail tiles of rows of one head's (rows, D) matrix, zero outside rows and D."""
    ptrs = base + rows[:, None] * stride_row
    lead = tl.load(ptrs + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    tail = tl.load(ptrs + offs_t[None, :], mask=row_ok[:, None] & t_ok[None, :], other=0.0)
    return lead, tail


@triton.jit
def _dot_parts(a, a_t, b, b_t):
    """A B^T over the whole head dim: the lead product plus the tail product (fp32)."""
    return mma(a_t, tl.trans(b_t), mma(a, tl.trans(b), None, "tf32"), "tf32")


@triton.jit
def _store_parts(base, lead, tail, rows, row_ok, offs_d, d_ok, offs_t, t_ok, stride_row):
    """Store a tile's lead and tail columns into rows of one head's (rows, D) matrix."""
    out = base + rows[:, None] * stride_row
    tl.store(out + offs_d[None, :], lead.to(base.dtype.element_ty),
             mask=row_ok[:, None] & d_ok[None, :])
    tl.store(out + offs_t[None, :], tail.to(base.dtype.element_ty),
             mask=row_ok[:, None] & t_ok[None, :])


@triton.jit
def _dq_split(Q, K, V, DO, LSE2, Zr, DQ, sm_scale, stride_h, stride_m, T, M, D,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr):
    # the AOT ragged flavour's hints (the JIT's only cover multiples of 16): rows and D % 8
    stride_m = tl.multiple_of(stride_m, 8)
    D = tl.multiple_of(D, 8)
    LEAD: tl.constexpr = split_lead(HEAD_DIM)
    bh = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    r_ok = rows < T
    offs_d, d_ok, offs_t, t_ok = _split_cols(D, HEAD_DIM)
    q, q_t = _load_parts(Q + bh * stride_h, rows, r_ok, offs_d, d_ok, offs_t, t_ok, stride_m)
    do, do_t = _load_parts(DO + bh * stride_h, rows, r_ok, offs_d, d_ok, offs_t, t_ok, stride_m)
    lse2 = tl.load(LSE2 + bh * T + rows, mask=r_ok, other=0.0)
    z = tl.load(Zr + bh * T + rows, mask=r_ok, other=0.0)
    k_base = K + bh * stride_h
    v_base = V + bh * stride_h
    dq = tl.zeros([BLOCK_M, LEAD], tl.float32)
    dq_t = tl.zeros([BLOCK_M, HEAD_DIM - LEAD], tl.float32)
    qk_scale = sm_scale * LOG2E
    for start_n in range(0, M, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        n_ok = cols < M
        # -- K and V of the key block, lead and tail columns
        k, k_t = _load_parts(k_base, cols, n_ok, offs_d, d_ok, offs_t, t_ok, stride_m)
        v, v_t = _load_parts(v_base, cols, n_ok, offs_d, d_ok, offs_t, t_ok, stride_m)
        # -- S = Q K^T, dP = dO V^T: each the sum of a lead and a tail product
        s = _dot_parts(q, q_t, k, k_t)
        p = tl.math.exp2(s * qk_scale - lse2[:, None])
        p = tl.where(n_ok[None, :], p, 0.0)
        dp = _dot_parts(do, do_t, v, v_t)
        # -- dS = P (dP - z);  dQ += dS K, per part
        ds = (p * (dp - z[:, None])).to(k.dtype)
        dq = mma(ds, k, dq, "tf32")
        dq_t = mma(ds, k_t, dq_t, "tf32")
    _store_parts(DQ + bh * stride_h, dq * sm_scale, dq_t * sm_scale, rows, r_ok, offs_d, d_ok,
                 offs_t, t_ok, stride_m)


@triton.jit
def _dkdv_split(Q, K, V, DO, LSE2, Zr, DK, DV, sm_scale, stride_h, stride_m, T, M, D,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr):
    # the AOT ragged flavour's hints (the JIT's only cover multiples of 16): rows and D % 8
    stride_m = tl.multiple_of(stride_m, 8)
    D = tl.multiple_of(D, 8)
    LEAD: tl.constexpr = split_lead(HEAD_DIM)
    bh = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = cols < M
    offs_d, d_ok, offs_t, t_ok = _split_cols(D, HEAD_DIM)
    k, k_t = _load_parts(K + bh * stride_h, cols, n_ok, offs_d, d_ok, offs_t, t_ok, stride_m)
    v, v_t = _load_parts(V + bh * stride_h, cols, n_ok, offs_d, d_ok, offs_t, t_ok, stride_m)
    q_base = Q + bh * stride_h
    do_base = DO + bh * stride_h
    dk = tl.zeros([BLOCK_N, LEAD], tl.float32)
    dk_t = tl.zeros([BLOCK_N, HEAD_DIM - LEAD], tl.float32)
    dv = tl.zeros([BLOCK_N, LEAD], tl.float32)
    dv_t = tl.zeros([BLOCK_N, HEAD_DIM - LEAD], tl.float32)
    qk_scale = sm_scale * LOG2E
    for start_m in range(0, T, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        r_ok = rows < T
        # -- Q and dO of the query block, lead and tail columns; the rows' lse2 and z
        q, q_t = _load_parts(q_base, rows, r_ok, offs_d, d_ok, offs_t, t_ok, stride_m)
        do, do_t = _load_parts(do_base, rows, r_ok, offs_d, d_ok, offs_t, t_ok, stride_m)
        lse2 = tl.load(LSE2 + bh * T + rows, mask=r_ok, other=float("inf"))
        z = tl.load(Zr + bh * T + rows, mask=r_ok, other=0.0)
        # -- S^T = K Q^T (lead + tail), P^T (0 on padded rows: lse2 = +inf)
        sT = _dot_parts(k, k_t, q, q_t)
        pT = tl.math.exp2(sT * qk_scale - lse2[None, :])
        # -- dV += P^T dO, per part
        pT16 = pT.to(q.dtype)
        dv = mma(pT16, do, dv, "tf32")
        dv_t = mma(pT16, do_t, dv_t, "tf32")
        # -- dP^T = V dO^T (lead + tail);  dS^T = P^T (dP^T - z);  dK += dS^T Q, per part
        dpT = _dot_parts(v, v_t, do, do_t)
        dsT = (pT * (dpT - z[None, :])).to(q.dtype)
        dk = mma(dsT, q, dk, "tf32")
        dk_t = mma(dsT, q_t, dk_t, "tf32")
    _store_parts(DK + bh * stride_h, dk * sm_scale, dk_t * sm_scale, cols, n_ok, offs_d, d_ok,
                 offs_t, t_ok, stride_m)
    _store_parts(DV + bh * stride_h, dv, dv_t, cols, n_ok, offs_d, d_ok, offs_t, t_ok, stride_m)


def bucket_of(D: int) -> int:
    return 80 if D <= 80 else 96


def prepare(q, k, v, do):
    """(o, lse2, z) from torch in float32: the frozen stats and z = rowsum(dO * O)."""
    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    lse = torch.logsumexp(s, -1)
    o = torch.softmax(s, -1) @ v.float()
    z = (do.float() * o.to(q.dtype).float()).sum(-1)
    return o.to(q.dtype), (lse * math.log2(math.e)).contiguous(), z.contiguous()


def split_bwd(q, k, v, do, lse2, z, dq, dk, dv, cfg_q, cfg_kv):
    B, H, T, D = q.shape
    M = k.shape[2]
    scale = 1 / math.sqrt(D)
    hd = bucket_of(D)
    common = (q.stride(1), q.stride(2), T, M, D)
    bm, bn, w, st = cfg_kv
    _dkdv_split[(triton.cdiv(M, bn), B * H)](q, k, v, do, lse2, z, dk, dv, scale, *common,
                                             BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=hd, num_warps=w,
                                             num_stages=st)
    bm, bn, w, st = cfg_q
    _dq_split[(triton.cdiv(T, bm), B * H)](q, k, v, do, lse2, z, dq, scale, *common,
                                           BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=hd, num_warps=w,
                                           num_stages=st)


def check():
    """The kernels against float64 autograd on small awkward shapes (the interpreter)."""
    torch.manual_seed(0)
    for B, H, T, D in ((1, 2, 37, 72), (2, 1, 70, 96), (1, 1, 5, 88)):  # D % 8 == 0: the hints
        q, k, v, do = (torch.randn(B, H, T, D).half() for _ in range(4))
        _, lse2, z = prepare(q, k, v, do)
        dq, dk, dv = (torch.empty_like(q) for _ in range(3))
        split_bwd(q, k, v, do, lse2, z, dq, dk, dv, (32, 16, 4, 1), (16, 32, 4, 1))
        x = [t.double().requires_grad_() for t in (q, k, v)]
        torch.nn.functional.scaled_dot_product_attention(*x).backward(do.double())
        errs = [(a.double() - r.grad).abs().max().item() for a, r in zip((dq, dk, dv), x)]
        print((B, H, T, D), "max |err| dq dk dv:", " ".join(f"{e:.2e}" for e in errs))
        if max(errs) > 2e-2:
            raise SystemExit("mismatch")


def main():
    from triton.testing import do_bench_cudagraph

    import aot_sdpa

    from _harness import time_ms, torch_backend, torch_bwd

    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, flush=True)
    # 2 stages over block sizes and warps, plus the shipped bucket-128 tiles (3 stages)
    sweep = {"dq": [(bm, bn, w, 2) for bm in (64, 128) for bn in (32, 64) for w in (4, 8)]
             + [(128, 64, 8, 3)],
             "dkdv": [(bm, bn, w, 2) for bm in (32, 64) for bn in (64, 128) for w in (4, 8)]
             + [(32, 64, 4, 3)]}
    for B, H, T, D in ((32, 16, 256, 72), (16, 16, 1024, 72), (16, 16, 1024, 96)):
        won = {}  # each kernel's best tile, swept in float16 and reused in bfloat16
        for dtype in (torch.float16, torch.bfloat16):
            q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=dtype) for _ in range(4))
            o, lse2, z = prepare(q, k, v, do)
            m = (lse2 / math.log2(math.e)).contiguous()
            l = torch.ones_like(m)  # m = lse, l = 1: the same P as (m, l)
            dq, dk, dv = (torch.empty_like(q) for _ in range(3))
            time_ms(lambda: aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o))  # warms the GPU up
            ref = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)
            times = {}
            for kind in ("dq", "dkdv"):
                res = []
                for cfg in sweep[kind] if dtype == torch.float16 else [won[kind]]:
                    cq, ckv = (cfg, (32, 64, 4, 2)) if kind == "dq" else ((64, 32, 4, 2), cfg)

                    def one(cq=cq, ckv=ckv):
                        split_bwd(q, k, v, do, lse2, z, dq, dk, dv, cq, ckv)

                    try:
                        one()
                        res.append((do_bench_cudagraph(one, rep=20), cfg))
                    except Exception as exc:  # out of resources
                        print(f"  {kind} {cfg}: {type(exc).__name__}"[:100], flush=True)
                times[kind], won[kind] = min(res)
            # the comparison: each with CUDA events around every call (_harness.time_ms), as
            # the benchmarks time torch's autograd backward
            split_ms = time_ms(lambda: split_bwd(q, k, v, do, lse2, z, dq, dk, dv, won["dq"],
                                                 won["dkdv"]))["ms"]
            aot = time_ms(lambda: aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o))["ms"]
            diff = max((a - r).abs().max().item() for a, r in zip((dq, dk, dv), ref))
            tb = {}
            for name in ("flash", "cudnn"):
                try:
                    with torch_backend(name):
                        tb[name] = f"{time_ms(torch_bwd(q, k, v, do))['ms']:.4f}"
                except Exception as exc:  # a backend that does not run this shape
                    tb[name] = type(exc).__name__
            print(f"{(B, H, T, D)} {str(dtype)[6:]}: split dK/dV + dQ {split_ms:.4f} ms (dq "
                  f"{times['dq']:.4f} {won['dq']}, dkdv {times['dkdv']:.4f} {won['dkdv']}; z not "
                  f"included) | AOT backward (bucket 128, with z) {aot:.4f} | torch's autograd backward: "
                  f"flash {tb['flash']}, cudnn {tb['cudnn']} | max |split - AOT| {diff:.2e}",
                  flush=True)


if __name__ == "__main__":
    check() if sys.argv[1:] == ["check"] else main()

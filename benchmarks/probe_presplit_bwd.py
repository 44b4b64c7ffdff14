"""JIT probe: the float32 one-kernel backward (dK, dV, dQ by atomic adds) in "fp16x3", with Q
and dO split in the loop by every key-block program (as kernels/_common.py mma
presplit=0),
split once by a pre-pass (presplit=1: hi, lo fp16 and 1/s per row
their row scales folded
into P^T's and dS^T's columns, as kernels/sdpa_bwd.py ships it), or in "bf16x6" in the loop
(presplit=2). A stand-alone kernel (no mask, no causal, T a multiple of the blocks, D equal to
HEAD_DIM), GPU only: device time per call (profiler, median of 3, the pre-pass and dQ's
zeroing included) per tile, and the max errors against float64 beside torch's float32 math.

    python probe_presplit_bwd.py [sd,d128,vit,long]
"""
import math
import statistics
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from kernels._common import LOG2E, fp16x3_parts, mma, split_rows  # noqa
from _harness import kernel_ms  # noqa
DEV = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def presplit_kernel(X, XH, XL, IS, T, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr):
    bh = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    off = bh.to(tl.int64) * T * HEAD_DIM + rows[:, None] * HEAD_DIM + offs_d[None, :]
    x = tl.load(X + off)
    hi, lo, ia = split_rows(x)
    tl.store(XH + off, hi)
    tl.store(XL + off, lo)
    tl.store(IS + bh.to(tl.int64) * T + rows, ia)


@triton.jit
def bwd_kernel(Q, K, V, DO, M2, IL, ZB, DK, DV, DQ, QH, QL, DOH, DOL, IQ, IDO, sm_scale, T,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
               PRESPLIT: tl.constexpr, BF16X6: tl.constexpr = False):
    bh = tl.program_id(1).to(tl.int64)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    base = bh * T * HEAD_DIM
    k = tl.load(K + base + offs_n[:, None] * HEAD_DIM + offs_d[None, :])
    v = tl.load(V + base + offs_n[:, None] * HEAD_DIM + offs_d[None, :])
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    qk_scale = sm_scale * LOG2E
    if PRESPLIT:
        k_hi, k_lo, ik = split_rows(k)
        v_hi, v_lo, iv = split_rows(v)
    for start_m in range(0, T, BLOCK_M):
        rows = start_m + offs_m
        m2 = tl.load(M2 + bh * T + rows)
        il = tl.load(IL + bh * T + rows)
        z = tl.load(ZB + bh * T + rows)
        if PRESPLIT:
            tq = base + rows[None, :] * HEAD_DIM + offs_d[:, None]
            td = base + rows[:, None] * HEAD_DIM + offs_d[None, :]
            qT_hi = tl.load(QH + tq)
            qT_lo = tl.load(QL + tq)
            do_hi = tl.load(DOH + td)
            do_lo = tl.load(DOL + td)
            iq = tl.load(IQ + bh * T + rows)
            ido = tl.load(IDO + bh * T + rows)
            s2T = fp16x3_parts(k_hi, k_lo, qT_hi, qT_lo) * (ik[:, None] * iq[None, :]) * qk_scale
            pT = tl.exp2(s2T - m2[None, :]) * il[None, :]
            a_hi, a_lo, ia = split_rows(pT * ido[None, :])
            dv += fp16x3_parts(a_hi, a_lo, do_hi, do_lo) * ia[:, None]
            dpT = fp16x3_parts(v_hi, v_lo, tl.trans(do_hi), tl.trans(do_lo)) * (iv[:, None] * ido[None, :])
            dsT = pT * (dpT - z[None, :])
            a_hi, a_lo, ia = split_rows(dsT * iq[None, :])
            dk += fp16x3_parts(a_hi, a_lo, tl.trans(qT_hi), tl.trans(qT_lo)) * ia[:, None]
            dq = mma(tl.trans(dsT), k, None, "fp16x3") * sm_scale
        else:
            PREC: tl.constexpr = "bf16x6" if PRESPLIT == 0 and BF16X6 else "fp16x3"
            qT = tl.load(Q + base + rows[None, :] * HEAD_DIM + offs_d[:, None])
            do = tl.load(DO + base + rows[:, None] * HEAD_DIM + offs_d[None, :])
            s2T = mma(k, qT, None, PREC) * qk_scale
            pT = tl.exp2(s2T - m2[None, :]) * il[None, :]
            dv = mma(pT, do, dv, PREC)
            dpT = mma(v, tl.trans(do), None, PREC)
            dsT = pT * (dpT - z[None, :])
            dk = mma(dsT, tl.trans(qT), dk, PREC)
            dq = mma(tl.trans(dsT), k, None, PREC) * sm_scale
        tl.atomic_add(DQ + base + rows[:, None] * HEAD_DIM + offs_d[None, :], dq, sem="relaxed")
    tn = base + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DK + tn, dk * sm_scale)
    tl.store(DV + tn, dv)


def run(x, tile, presplit):
    bf = presplit == 2
    presplit = 0 if bf else presplit
    q, k, v, do, m2, il, z = x["q"], x["k"], x["v"], x["do"], x["m2"], x["il"], x["z"]
    B, H, T, D = q.shape
    BM, BN, W, S = tile
    dq = torch.zeros_like(q)
    dk = torch.empty_like(q)
    dv = torch.empty_like(q)
    if presplit:
        qh = torch.empty(q.shape, dtype=torch.float16, device=DEV)
        ql = torch.empty_like(qh)
        dh = torch.empty_like(qh)
        dl = torch.empty_like(qh)
        iq = torch.empty(B, H, T, device=DEV)
        ido = torch.empty_like(iq)
        presplit_kernel[(T // 64, B * H)](q, qh, ql, iq, T, 64, D)
        presplit_kernel[(T // 64, B * H)](do, dh, dl, ido, T, 64, D)
    else:
        qh = ql = dh = dl = q
        iq = ido = m2
    bwd_kernel[(T // BN, B * H)](q, k, v, do, m2, il, z, dk, dv, dq, qh, ql, dh, dl, iq, ido,
                                 x["scale"], T, BM, BN, D, presplit, bf, num_warps=W, num_stages=S)
    return dq, dk, dv


def inputs(B, H, T, D, wide=False):
    g = torch.Generator(device=DEV).manual_seed(0)
    t = {n: torch.randn(B, H, T, D, device=DEV, generator=g) for n in ("q", "k", "v", "do")}
    if wide:
        for n in ("q", "k", "v", "do"):
            t[n] *= 10 ** (4 * torch.rand(B, H, T, 1, device=DEV, generator=g) - 2)
    scale = 1 / math.sqrt(D)
    s = (t["q"].double() @ t["k"].double().transpose(-1, -2)) * scale
    m = s.amax(-1)
    l = torch.exp(s - m[..., None]).sum(-1)
    o = torch.softmax(s, -1) @ t["v"].double()
    t["m2"] = (m * 1.4426950408889634).float()
    t["il"] = (1 / l).float()
    t["z"] = (o * t["do"].double()).sum(-1).float()
    t["scale"] = scale
    return t


def errors(x, outs):
    q, k, v = (x[n].double().requires_grad_() for n in ("q", "k", "v"))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    ref = torch.autograd.grad(sdpa(q, k, v, scale=x["scale"]), (q, k, v), x["do"].double())
    q32, k32, v32 = (x[n].clone().requires_grad_() for n in ("q", "k", "v"))
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        tt = torch.autograd.grad(sdpa(q32, k32, v32, scale=x["scale"]), (q32, k32, v32), x["do"])
    ours = [(a.double() - r).abs().max().item() for a, r in zip(outs, ref)]
    th = [(a.double() - r).abs().max().item() for a, r in zip(tt, ref)]
    return ours, th


if __name__ == "__main__":
    # vit: T = 192, the multiple of 64 nearest ViT's 197 (the kernel has no ragged rows)
    shapes = {"vit": (32, 12, 192, 64), "sd": (2, 8, 4096, 64), "long": (1, 16, 8192, 64),
              "d128": (16, 16, 1024, 128)}
    tiles = [(32, 64, 4, 1), (32, 64, 4, 2), (64, 64, 4, 1), (64, 64, 4, 2), (32, 128, 8, 1),
             (64, 128, 8, 1), (64, 128, 8, 2), (32, 128, 8, 2)]
    which = sys.argv[1].split(",") if len(sys.argv) > 1 else ["sd", "vit"]
    for wide in (False, True):
        x = inputs(2, 3, 256, 64, wide)
        outs = {}
        for ps in (0, 1):
            outs[ps] = run(x, (32, 64, 4, 1), ps)
            o, t = errors(x, outs[ps])
            print(f"errors wide={wide} presplit={ps}: ours dq/dk/dv {[f'{e:.2e}' for e in o]} "
                  f"torch fp32 {[f'{e:.2e}' for e in t]}", flush=True)
        print("  max |A - B| dq/dk/dv",
              [f'{(a - b).abs().max().item():.2e}' for a, b in zip(outs[0], outs[1])],
              "max |A|", [f'{a.abs().max().item():.2e}' for a in outs[0]], flush=True)
    for name in which:
        B, H, T, D = shapes[name]
        x = inputs(B, H, T, D)
        if name == "d128":
            tl_ = [(32, 64, 4, 1), (32, 128, 8, 1), (64, 64, 4, 1), (64, 128, 8, 1), (32, 64, 8, 1)]
        else:
            tl_ = tiles
        for tile in tl_:
            for ps in ((0, 1, 2) if name in ("d128", "sd") else (0, 1)):
                try:
                    ms = [kernel_ms(lambda: run(x, tile, ps)) for _ in range(3)]
                    print(f"{name} {tile} presplit={ps}: {statistics.median(ms):.3f} ms", flush=True)
                except Exception as e:  # noqa
                    print(f"{name} {tile} presplit={ps}: {type(e).__name__} {str(e)[:100]}", flush=True)

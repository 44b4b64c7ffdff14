"""Would a one-kernel 16-bit backward pay if dQ were summed by TMA reduce-adds instead of
element atomics (GPU only, JIT, a probe: nothing shipped)?

Our 16-bit backward runs two kernels (dQ; dK/dV: seven block products per query/key block
pair); cuDNN and FlashAttention-3 run one (five), summing dQ across the key-block programs in
float32. Our one-kernel form with element atomics (`tl.atomic_add`, one red.global per
element) ran at 0.33-0.68x the two kernels (results/probe_fused16_h200.log). On sm_90 a whole
dQ tile can be added by one bulk instruction instead: Triton 3.6's
`tensor_descriptor.atomic_add` lowers to cp.reduce.async.bulk.tensor...add (checked on the CPU
compile). This probe measures that on one minimal kernel (no masks, T = M a multiple of the
tiles, D a power of two, contiguous (B*H*T, D) rows), JIT-compiled two ways from one source:

  atomic  dQ by element atomics (what bwd_fused does)
  tma     dQ by a host TensorDescriptor's atomic_add of the BLOCK_M x D float32 tile (our
          launcher would pass a CUtensorMap built on the host: cuTensorMapEncodeTiled)

Per program (one key block of one head): K_j, V_j loaded once; for each query block i
  S^T = K_j Q_i^T,  P^T = exp2(S^T scale log2(e) - lse2_i)   (lse2 = m log2(e) + log2(l))
  dV_j += P^T dO_i,  dP^T = V_j dO_i^T,  dS^T = P^T (dP^T - z_i)   (z_i = dO_i . O_i)
  dK_j += dS^T Q_i,  dQ_i += scale dS K_j   (float32, summed across the programs)
then dK_j *= scale. Timed next to our AOT backward (`sdpa_bwd(..., o=o)`: dQ forming z from
O, then dK/dV) and torch's flash and cuDNN backward, in one process (`_harness.backlogged_ms`).
The probe's time is given alone (the kernel) and with what a shipped one-kernel path would add
around it: zeroing the float32 dQ, z = rowsum(dO * O) and lse2 (torch ops here; one small
kernel in a real build) and dQ's conversion to 16 bits. FLOPs: 2.5 x the forward's
4 B H T M D (five matmuls). ViT's T = 197 is left out (the minimal kernel has no ragged rows).

    python probe_tma_dq.py
Prints one table; nothing is written to results/ (a probe). Its H200 run, with what it decided
(not built): results/probe_tma_dq_h200.log.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

import aot_sdpa

from _harness import backlogged_ms, table, torch_backend, torch_bwd

LOG2E = 1.4426950408889634  # log2(e): exp(x) == exp2(x * LOG2E)


@triton.jit
def _probe_bwd(Q, K, V, DO, LSE2, Zrow, DK, DV, DQ, dq_desc, sm_scale, T,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
               TMA: tl.constexpr):
    """dK_j, dV_j of one (key block, batch*head) program, and its share of dQ (module
    docstring); Q, K, V, DO, DK, DV are (B*H*T, HEAD_DIM) 16-bit rows, DQ the same in float32
    (zeroed), LSE2 and Zrow (B*H*T,) float32, so row r of head bh is bh*T + r."""
    bh = tl.program_id(1)
    key0 = bh * T + tl.program_id(0) * BLOCK_N
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    # -- this program's K and V tiles (BLOCK_N x HEAD_DIM), loaded once
    k = tl.load(K + (key0 + offs_n)[:, None] * HEAD_DIM + offs_d[None, :])
    v = tl.load(V + (key0 + offs_n)[:, None] * HEAD_DIM + offs_d[None, :])
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    qk_scale = sm_scale * 1.4426950408889634  # log2(e): scores in base 2
    for start_m in range(0, T, BLOCK_M):
        rows = bh * T + start_m + offs_m
        # -- the query block's Q, dO and row stats
        q = tl.load(Q + rows[:, None] * HEAD_DIM + offs_d[None, :])
        do = tl.load(DO + rows[:, None] * HEAD_DIM + offs_d[None, :])
        lse2 = tl.load(LSE2 + rows)
        z = tl.load(Zrow + rows)
        # -- P^T from the frozen stats (BLOCK_N x BLOCK_M), then dV += P^T dO
        pT = tl.math.exp2(tl.dot(k, tl.trans(q)) * qk_scale - lse2[None, :])
        dv = tl.dot(pT.to(do.dtype), do, dv)
        # -- dS^T = P^T (dO V^T - z)^T, then dK += dS^T Q
        dsT = pT * (tl.dot(v, tl.trans(do)) - z[None, :])
        dk = tl.dot(dsT.to(q.dtype), q, dk)
        # -- this key block's share of dQ_i = scale dS K (BLOCK_M x HEAD_DIM, float32)
        dq = tl.dot(tl.trans(dsT).to(k.dtype), k) * sm_scale
        if TMA:
            dq_desc.atomic_add([bh * T + start_m, 0], dq)
        else:
            tl.atomic_add(DQ + rows[:, None] * HEAD_DIM + offs_d[None, :], dq, sem="relaxed")
    out = (key0 + offs_n)[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DK + out, (dk * sm_scale).to(DK.dtype.element_ty))
    tl.store(DV + out, dv.to(DV.dtype.element_ty))


def probe(q, k, v, do, lse2, z, tma: bool, block_m: int, block_n: int, warps: int, stages: int):
    """(kernel alone, whole path) callables for the probe; both return (dq, dk, dv)."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    B, H, T, D = q.shape
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    dq32 = torch.zeros(B, H, T, D, device=q.device, dtype=torch.float32)
    flat = [x.view(B * H * T, D) for x in (q, k, v, do)]
    desc = TensorDescriptor.from_tensor(dq32.view(B * H * T, D), [block_m, D]) if tma else dq32
    grid = (T // block_n, B * H)

    def kernel():
        _probe_bwd[grid](*flat, lse2, z, dk.view(B * H * T, D), dv.view(B * H * T, D),
                         dq32.view(B * H * T, D), desc, D ** -0.5, T, BLOCK_M=block_m,
                         BLOCK_N=block_n, HEAD_DIM=D, TMA=tma, num_warps=warps,
                         num_stages=stages)
        return dq32, dk, dv

    def whole():
        dq32.zero_()
        kernel()
        return dq32.to(q.dtype), dk, dv

    return kernel, whole


def main() -> None:
    shapes = {"DiT-B/2": (32, 12, 256, 64), "t512": (16, 12, 512, 64), "t1k": (8, 16, 1024, 64),
              "t4k": (2, 16, 4096, 64), "D128-1k": (16, 16, 1024, 128)}
    configs = ((32, 128, 4, 3), (64, 128, 8, 2), (64, 64, 4, 2), (128, 64, 8, 2))
    rows = []
    for name, (B, H, T, D) in shapes.items():
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.float16, generator=g)
                       for _ in range(4))
        o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
        flops = 2.5 * 4 * B * H * T * T * D

        def stats(o=o, m=m, l=l, do=do):  # what a one-kernel path computes before it
            return (m * LOG2E + torch.log2(l)).view(-1), (do.float() * o.float()).sum(-1).view(-1)

        lse2, z = stats()
        ref = torch_bwd(*(x.float() for x in (q, k, v, do)))()  # fp32 autograd of torch's SDPA
        impls = {"aot_sdpa": lambda: aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)}
        for backend in ("flash", "cudnn"):
            with torch_backend(backend):
                impls[backend] = torch_bwd(q, k, v, do)
        for tma in (False, True):
            for cfg in configs:
                key = f"{'tma' if tma else 'atomic'} {cfg[0]}x{cfg[1]}/{cfg[2]}/{cfg[3]}"
                kernel, whole = probe(q, k, v, do, lse2, z, tma, *cfg)
                try:
                    got = whole()
                except Exception as e:  # a mode or tile Triton cannot compile here: say so
                    print(f"{name} {key}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
                    continue
                torch.cuda.synchronize()
                # against fp32 autograd: a correct probe differs by 16-bit rounding (~1e-3 of
                # the gradient's scale), a wrong tile or descriptor by O(1)
                err = max(((a.float() - r).abs().max() / r.abs().max()).item()
                          for a, r in zip(got, ref))
                if err > 2e-2:
                    print(f"{name} {key}: relative error {err:.3g}, not timed")
                    continue
                impls[key + " kernel"] = kernel
                impls[key + " +zero,z,lse2,convert"] = lambda whole=whole, stats=stats: (
                    stats(), whole())
        base = None
        for key, fn in impls.items():
            t = backlogged_ms(fn, n=10, reps=7)
            base = base or t["ms"]  # aot_sdpa first
            rows.append({"shape": name, "impl": key, "ms": round(t["ms"], 4),
                         "p10": round(t["p10_ms"], 4), "p90": round(t["p90_ms"], 4),
                         "tflops": round(flops / t["ms"] / 1e9, 1),
                         "vs_aot": round(base / t["ms"], 3)})
        print(table([r for r in rows if r["shape"] == name], list(rows[0])), flush=True)
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()

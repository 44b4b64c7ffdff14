"""Public operators on CUDA tensors: forward, backward, JVP and the FD HVP.

Every function validates its arguments once (see _checks), allocates its outputs, and
launches AOT-compiled kernels on the tensors' device and PyTorch's current stream there.
"""

from __future__ import annotations

import torch

from . import _C
from ._checks import check_attention, check_devices, check_eps, check_like, check_stats
from ._native import OPS

Tensor = torch.Tensor


def _launch(op: str, dtype: int, device: int, ptr_tensors, stride_tensors, sizes,
            scale: float):
    """Launch `op` on `device`; pointers and stride groups are given in the kernel's ABI order."""
    index = OPS[op][0]
    ptrs = [0 if t is None else t.data_ptr() for t in ptr_tensors]
    strides = ()
    for t in stride_tensors:
        strides += t.stride()[:3]
    _C.launch(index, dtype, device, torch._C._cuda_getCurrentRawStream(device), ptrs, strides,
              sizes, scale)


def _stats_pair(q: Tensor, B: int, H: int, T: int) -> tuple[Tensor, Tensor]:
    """m and l as two (B, H, T) float32 views of one allocation."""
    stats = q.new_empty((2, B, H, T), dtype=torch.float32)
    return stats[0], stats[1]


def triton_sdpa_fused(q: Tensor, k: Tensor, v: Tensor, *,
                      scale: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Fused attention forward.

    Args:
        q: (B, H, T, D) CUDA tensor, float16/bfloat16/float32, 1 <= D <= 64, last dim stride 1.
        k, v: (B, H, M, D), same dtype and device, M >= 1.
        scale: score scale; None means 1/sqrt(D).

    Returns:
        o: (B, H, T, D) in q's dtype (and layout, when q is dense).
        m: (B, H, T) float32, m_i = max_j S_ij with S = scale * q k^T.
        l: (B, H, T) float32, l_i = sum_j exp(S_ij - m_i).
    """
    B, H, T, M, D, dt, scale = check_attention(q, k, v, scale)
    dev = check_devices(("q", "k", "v"), (q, k, v))
    o = torch.empty_like(q)
    m, l = _stats_pair(q, B, H, T)
    _launch("fwd", dt, dev, (q, k, v, o, m, l), (q, k, v, o, m), (B, H, T, M, D), scale)
    return o, m, l


def _check_bwd(q, k, v, do, m, l, scale, o=None):
    B, H, T, M, D, dt, scale = check_attention(q, k, v, scale)
    check_like("do", do, q, "q")
    check_stats("m", m, q)
    check_stats("l", l, q)
    if o is None:
        dev = check_devices(("q", "k", "v", "do", "m", "l"), (q, k, v, do, m, l))
    else:
        check_like("o", o, q, "q")
        dev = check_devices(("q", "k", "v", "do", "m", "l", "o"), (q, k, v, do, m, l, o))
    return B, H, T, M, D, dt, scale, dev


def _z(q, k, v, do, m, l, o, sizes, dt, scale, dev) -> Tensor:
    """z_i = sum_j dP_ij P_ij: from dO . O when the forward's o is given, else from the stats."""
    B, H, T = sizes[:3]
    z = q.new_empty((B * H, T), dtype=torch.float32)
    if o is not None:
        _launch("bwd_z_from_o", dt, dev, (o, do, z), (o, do), sizes, scale)
    else:
        _launch("bwd_z_from_stats", dt, dev, (q, k, v, do, m, l, z), (q, k, v, do, m, l), sizes,
                scale)
    return z


def sdpa_bwd(q: Tensor, k: Tensor, v: Tensor, do: Tensor, m: Tensor, l: Tensor, *,
             o: Tensor | None = None,
             scale: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Fused backward from frozen stats: (dq, dk, dv), bitwise deterministic (no atomics).

    P = exp(S - m)/l; dV = P^T dO; dP = dO V^T; z = rowsum(dP * P); dS = P * (dP - z);
    dQ = scale dS K; dK = scale dS^T Q. Passing the forward's ``o`` computes z as dO . O.
    """
    B, H, T, M, D, dt, scale, dev = _check_bwd(q, k, v, do, m, l, scale, o)
    sizes = (B, H, T, M, D)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    z = _z(q, k, v, do, m, l, o, sizes, dt, scale, dev)
    _launch("bwd_dkdv", dt, dev, (q, k, v, do, m, l, z, dk, dv), (q, k, v, do, dk, dv, m, l),
            sizes, scale)
    _launch("bwd_dq", dt, dev, (q, k, v, do, m, l, z, dq), (q, k, v, do, dq, m, l), sizes, scale)
    return dq, dk, dv


def sdpa_bwd_dq(q: Tensor, k: Tensor, v: Tensor, do: Tensor, m: Tensor, l: Tensor, *,
                scale: float | None = None) -> Tensor:
    """dQ = scale * dS K from frozen stats (z recomputed from the stats)."""
    B, H, T, M, D, dt, scale, dev = _check_bwd(q, k, v, do, m, l, scale)
    sizes = (B, H, T, M, D)
    dq = torch.empty_like(q)
    z = _z(q, k, v, do, m, l, None, sizes, dt, scale, dev)
    _launch("bwd_dq", dt, dev, (q, k, v, do, m, l, z, dq), (q, k, v, do, dq, m, l), sizes, scale)
    return dq


def sdpa_bwd_dk(q: Tensor, k: Tensor, v: Tensor, do: Tensor, m: Tensor, l: Tensor, *,
                scale: float | None = None) -> Tensor:
    """dK = scale * dS^T Q from frozen stats (z recomputed from the stats)."""
    B, H, T, M, D, dt, scale, dev = _check_bwd(q, k, v, do, m, l, scale)
    sizes = (B, H, T, M, D)
    dk = torch.empty_like(k)
    z = _z(q, k, v, do, m, l, None, sizes, dt, scale, dev)
    # dK-only mode never touches DV: a null pointer, and dk's strides stand in for dv's
    _launch("bwd_dk", dt, dev, (q, k, v, do, m, l, z, dk, None), (q, k, v, do, dk, dk, m, l),
            sizes, scale)
    return dk


def sdpa_bwd_dv(q: Tensor, k: Tensor, v: Tensor, do: Tensor, m: Tensor, l: Tensor, *,
                scale: float | None = None) -> Tensor:
    """dV = P^T dO from frozen stats (needs no z)."""
    B, H, T, M, D, dt, scale, dev = _check_bwd(q, k, v, do, m, l, scale)
    dv = torch.empty_like(v)
    # dV-only mode never touches Zbuf or DK: null pointers, dv's strides stand in for dk's
    _launch("bwd_dv", dt, dev, (q, k, v, do, m, l, None, None, dv), (q, k, v, do, dv, dv, m, l),
            (B, H, T, M, D), scale)
    return dv


def _check_tangents(q, k, v, tq, tk, tv):
    check_like("dq", tq, q, "q")
    check_like("dk", tk, k, "k")
    check_like("dv", tv, v, "v")


def sdpa_jvp(q: Tensor, k: Tensor, v: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, m: Tensor,
             l: Tensor, *, scale: float | None = None) -> Tensor:
    """Exact JVP of attention with tangents (dq, dk, dv), P from the frozen stats (m, l).

    dS = scale (dq K^T + Q dk^T); dP = P * (dS - rowsum(P dS)); dout = dP V + P dv.
    """
    B, H, T, M, D, dt, scale = check_attention(q, k, v, scale)
    _check_tangents(q, k, v, dq, dk, dv)
    check_stats("m", m, q)
    check_stats("l", l, q)
    dev = check_devices(("q", "k", "v", "dq", "dk", "dv", "m", "l"), (q, k, v, dq, dk, dv, m, l))
    dout = torch.empty_like(q)
    _launch("jvp", dt, dev, (q, k, v, dq, dk, dv, m, l, dout), (q, k, v, dq, dk, dv, dout, m, l),
            (B, H, T, M, D), scale)
    return dout


def sdpa_fwd_jvp(q: Tensor, k: Tensor, v: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, *,
                 scale: float | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Primal and tangent in one fused pass: returns (o, m, l, dout)."""
    B, H, T, M, D, dt, scale = check_attention(q, k, v, scale)
    _check_tangents(q, k, v, dq, dk, dv)
    dev = check_devices(("q", "k", "v", "dq", "dk", "dv"), (q, k, v, dq, dk, dv))
    o, dout = torch.empty_like(q), torch.empty_like(q)
    m, l = _stats_pair(q, B, H, T)
    _launch("fwd_jvp", dt, dev, (q, k, v, dq, dk, dv, o, m, l, dout),
            (q, k, v, dq, dk, dv, o, dout, m), (B, H, T, M, D), scale)
    return o, m, l, dout


def hvp_fd_vjp(q: Tensor, k: Tensor, v: Tensor, do: Tensor, tq: Tensor, tk: Tensor, tv: Tensor,
               *, eps: float = 1e-3,
               scale: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Finite-difference HVP of L = <do, SDPA(q, k, v)> along (tq, tk, tv).

    H t ~= (grad L(x + eps t) - grad L(x - eps t)) / (2 eps), each gradient from the explicit
    VJP with stats recomputed by the forward at the perturbed point. Truncation error is
    O(eps^2), round-off O(u / eps) for the dtype's unit roundoff u: use float32 (see
    docs/phase9_hvp.md).
    """
    check_attention(q, k, v, scale)
    check_like("do", do, q, "q")
    check_like("tq", tq, q, "q")
    check_like("tk", tk, k, "k")
    check_like("tv", tv, v, "v")
    eps = check_eps(eps)
    check_devices(("q", "k", "v", "do", "tq", "tk", "tv"), (q, k, v, do, tq, tk, tv))
    grads = []
    for sign in (1.0, -1.0):
        xq, xk, xv = q + sign * eps * tq, k + sign * eps * tk, v + sign * eps * tv
        o, m, l = triton_sdpa_fused(xq, xk, xv, scale=scale)
        grads.append(sdpa_bwd(xq, xk, xv, do, m, l, o=o, scale=scale))
    inv = 1.0 / (2.0 * eps)
    return tuple((gp - gm) * inv for gp, gm in zip(*grads))

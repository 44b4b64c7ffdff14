"""The seed's math in plain torch (any device, any dtype): the ground truth for tests.

Materialises S (T x M); meant for checking, not for speed. Run it in float64 for a
reference; run it in the kernels' dtype to measure "PyTorch's same-dtype error".
Grouped-query attention: k, v (and their tangents) may have Hkv heads, H % Hkv == 0; query
head h uses key/value head h // (H / Hkv) (torch's enable_gqa); gradients of k, v sum over
the query heads of their group.
Causal (``causal``: False, True / "top_left" or "bottom_right", as the package's API): query i
sees keys j <= i (top-left, torch's is_causal) or j <= i + M - T (bottom-right); P is 0
elsewhere, and a row that sees no key has o = 0, m = -inf, l = 0 and zero derivatives.
Masks (``mask``, keyword): boolean (True = the key takes part) or additive float (added to S;
-inf excludes the key), broadcastable to (B, H, T, M), combinable with ``causal``; not
differentiated (the ground truth the kernels' masked flavour is tested against).
"""

from __future__ import annotations

import math

import torch

from ._checks import check_causal

Tensor = torch.Tensor


def _scale(q: Tensor, scale: float | None) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def visible(T: int, M: int, causal, device=None) -> Tensor | None:
    """(T, M) boolean: query i sees key j; None when every query sees every key."""
    code = check_causal(causal)
    if code == 0:
        return None
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(M, device=device)[None, :]
    return j <= i + (0 if code == 1 else M - T)


def _scores(q: Tensor, k: Tensor, scale, causal, mask=None) -> tuple[Tensor, Tensor | None]:
    """S = scale q k^T (k per query head) plus an additive mask, -inf where the query does not
    see the key (causal, a False boolean mask entry, or a -inf additive one); `seen` is None
    when every query sees every key."""
    s = (q @ k.transpose(-1, -2)) * _scale(q, scale)
    seen = visible(q.shape[-2], k.shape[-2], causal, q.device)
    if mask is not None:
        if mask.dtype == torch.bool:
            allowed = mask
        else:
            mask = mask.detach().to(s.dtype)
            s = s + mask
            allowed = mask != float("-inf")
        seen = allowed if seen is None else seen & allowed
    return (s if seen is None else s.masked_fill(~seen, float("-inf"))), seen


def _per_query_head(q: Tensor, *kv: Tensor):
    """k/v-like tensors repeated to q's heads (grouped-query attention); as is otherwise."""
    H = q.shape[1]
    return [x if x.shape[1] == H else x.repeat_interleave(H // x.shape[1], dim=1) for x in kv]


def _per_kv_head(k: Tensor, *grads: Tensor):
    """Gradients w.r.t. the repeated k/v summed back over each group of query heads."""
    Hkv = k.shape[1]
    return [g if g.shape[1] == Hkv else g.unflatten(1, (Hkv, g.shape[1] // Hkv)).sum(2)
            for g in grads]


def forward(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None, causal=False, *,
            mask: Tensor | None = None):
    """(o, m, l): S = scale q k^T, m = max_j S, l = sum_j exp(S - m), o = exp(S - m) v / l.

    m and l come back in float32 unless the inputs are float64 (then float64).
    """
    k, v = _per_query_head(q, k, v)
    s, seen = _scores(q, k, scale, causal, mask)
    m = s.amax(dim=-1, keepdim=True)
    if seen is not None:  # rows that see no key: exp(S - 0) = 0, l = 0, o = 0
        e = torch.exp(s - torch.where(torch.isinf(m), 0.0, m))
        l = e.sum(dim=-1, keepdim=True)
        o = (e / torch.where(l == 0, 1.0, l)) @ v
    else:
        e = torch.exp(s - m)
        l = e.sum(dim=-1, keepdim=True)
        o = (e / l) @ v
    stat_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return o, m.squeeze(-1).to(stat_dtype), l.squeeze(-1).to(stat_dtype)


def attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None,
              causal=False, *, mask: Tensor | None = None) -> Tensor:
    """softmax(scale q k^T) v, differentiable by torch (for autograd/jvp references)."""
    return forward(q, k, v, scale, causal, mask=mask)[0]


def probs(q: Tensor, k: Tensor, m: Tensor, l: Tensor, scale: float | None = None,
          causal=False, *, mask: Tensor | None = None) -> Tensor:
    """P = exp(S - m) / l from frozen row stats (computed in q's dtype), 0 where unseen."""
    (k,) = _per_query_head(q, k)
    s, seen = _scores(q, k, scale, causal, mask)
    p = torch.exp(s - m.to(s.dtype).unsqueeze(-1)) / l.to(s.dtype).unsqueeze(-1)
    return p if seen is None else torch.where(seen, p, 0.0)


def backward(q: Tensor, k: Tensor, v: Tensor, do: Tensor, m: Tensor, l: Tensor,
             scale: float | None = None, causal=False, *, mask: Tensor | None = None):
    """Seed formulas with frozen stats: returns (dq, dk, dv)."""
    sc = _scale(q, scale)
    k0, (k, v) = k, _per_query_head(q, k, v)
    p = probs(q, k, m, l, scale, causal, mask=mask)
    dv = p.transpose(-1, -2) @ do
    dp = do @ v.transpose(-1, -2)
    z = (dp * p).sum(dim=-1, keepdim=True)
    ds = p * (dp - z)
    return ((ds @ k) * sc, *_per_kv_head(k0, (ds.transpose(-1, -2) @ q) * sc, dv))


def jvp(q: Tensor, k: Tensor, v: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, m: Tensor,
        l: Tensor, scale: float | None = None, causal=False, *,
        mask: Tensor | None = None) -> Tensor:
    """Seed formulas with frozen stats: the exact JVP of attention along (dq, dk, dv)."""
    sc = _scale(q, scale)
    k, v, dk, dv = _per_query_head(q, k, v, dk, dv)
    p = probs(q, k, m, l, scale, causal, mask=mask)
    ds = (dq @ k.transpose(-1, -2) + q @ dk.transpose(-1, -2)) * sc
    ds_c = ds - (ds * p).sum(dim=-1, keepdim=True)
    return (p * ds_c) @ v + p @ dv


def bwd_jvp(q: Tensor, k: Tensor, v: Tensor, do: Tensor, m: Tensor, l: Tensor, tq: Tensor,
            tk: Tensor, tv: Tensor, tdo: Tensor | None = None, *, scale: float | None = None,
            causal=False, mask: Tensor | None = None):
    """Tangent of the backward (dq, dk, dv) along (tq, tk, tv, tdo): forward-over-reverse.

    Frozen stats, explicit formulas (docs/phase9_hvp.md, "Exact HVP"):
        dS. = scale (tq K^T + Q tk^T);  r = rowsum(P dS.);  P. = P (dS. - r)
        dP = dO V^T;  dP. = tdO V^T + dO tv^T;  z = rowsum(P dP);  z. = rowsum(P. dP + P dP.)
        dS = P (dP - z);  dS.. = P. (dP - z) + P (dP. - z.)
        hq = scale (dS.. K + dS tk);  hk = scale (dS..^T Q + dS^T tq);  hv = P.^T dO + P^T tdO
    """
    sc = _scale(q, scale)
    k0, (k, v, tk, tv) = k, _per_query_head(q, k, v, tk, tv)
    p = probs(q, k, m, l, scale, causal, mask=mask)
    sdot = (tq @ k.transpose(-1, -2) + q @ tk.transpose(-1, -2)) * sc
    pdot = p * (sdot - (p * sdot).sum(dim=-1, keepdim=True))
    dp = do @ v.transpose(-1, -2)
    dpdot = do @ tv.transpose(-1, -2)
    if tdo is not None:
        dpdot = dpdot + tdo @ v.transpose(-1, -2)
    z = (p * dp).sum(dim=-1, keepdim=True)
    zdot = (pdot * dp + p * dpdot).sum(dim=-1, keepdim=True)
    ds = p * (dp - z)
    dsdot = pdot * (dp - z) + p * (dpdot - zdot)
    hq = (dsdot @ k + ds @ tk) * sc
    hk = (dsdot.transpose(-1, -2) @ q + ds.transpose(-1, -2) @ tq) * sc
    hv = pdot.transpose(-1, -2) @ do
    if tdo is not None:
        hv = hv + p.transpose(-1, -2) @ tdo
    return (hq, *_per_kv_head(k0, hk, hv))


def sdpa_hvp(q: Tensor, k: Tensor, v: Tensor, do: Tensor, tq: Tensor, tk: Tensor, tv: Tensor, *,
             scale: float | None = None, causal=False, mask: Tensor | None = None):
    """Exact HVP of L = <do, SDPA(q, k, v)> along (tq, tk, tv): returns (hq, hk, hv)."""
    _, m, l = forward(q, k, v, scale, causal, mask=mask)
    return bwd_jvp(q, k, v, do, m, l, tq, tk, tv, scale=scale, causal=causal, mask=mask)


def hvp_fd(q: Tensor, k: Tensor, v: Tensor, do: Tensor, tq: Tensor, tk: Tensor, tv: Tensor,
           eps: float = 1e-3, scale: float | None = None, causal=False):
    """Central difference of the explicit VJP, stats recomputed at each point."""
    grads = []
    for sign in (1.0, -1.0):
        x = (q + sign * eps * tq, k + sign * eps * tk, v + sign * eps * tv)
        _, m, l = forward(*x, scale=scale, causal=causal)
        grads.append(backward(*x, do, m, l, scale=scale, causal=causal))
    return tuple((a - b) / (2 * eps) for a, b in zip(*grads))

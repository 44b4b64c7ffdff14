"""The kernels on plain CUDA tensors: forward, backward, JVP, fused forward+JVP, backward-JVP.

Every function validates its arguments once (see _checks), allocates its outputs, and
launches AOT-compiled kernels on the tensors' device and PyTorch's current stream there.
Tensors are passed to a kernel by its parameter names (the ABI generated at build time), so
no call site depends on the order of the kernel's parameters. These functions are not
differentiable themselves: the public API (_autograd) wraps them in autograd Functions whose
derivative rules call these again.
"""

from __future__ import annotations

import torch

from . import _C
from ._checks import (
    DTYPE_CODE,
    TF32_CODE,
    check_attention,
    check_causal,
    check_devices,
    check_like,
    check_mask,
    check_out,
    check_stats,
)
from ._native import OPS
from ._torch_compat import current_raw_stream

Tensor = torch.Tensor
_OP_INDEX = {name: abi.index for name, abi in OPS.items()}
_BIAS_OPS = frozenset(name for name, abi in OPS.items() if "Bias" in abi.pointers)
_F32 = torch.float32
_FP32_CODE = DTYPE_CODE[_F32]  # fp32-accurate float32 (TF32_CODE: TF32 products)
_SPLIT_PAD = 8  # halves after hi and lo in a split row: kernels/_common.py SPLIT_PAD
# The forward's host fast path (csrc/aot_fastpath.cpp): (o, m, l) or o for the common call
# (one dtype and CUDA device, as many key/value heads as query heads, no mask, unit last
# strides), checked by the same rules as check_attention / check_devices; None for anything
# else, which then takes the checks below (they raise the errors that name the rule).
_fwd_fast = _C._fwd_fast


def _launch(op: str, dtype: int, device: int, sizes: tuple, scale: float, *, has_tdo: int = 0,
            causal: tuple[int, int] | None = None, bias: Tensor | None = None,
            **tensors: Tensor | None) -> None:
    """Launch `op` with its pointers named as the kernel's parameters (None: a null pointer,
    whose stride triple is zeros). `sizes` = (Z, H, T, M, D); `causal` = (Q_LEN, DIAG) from
    _causal, None for no causal mask (every row sees every key: Q_LEN = T, DIAG = M - 1);
    `bias`: the attention mask as _bias_view gives it (ops with a Bias pointer); the HAS_O
    flag is 1 when a tensor named O is given (the dQ kernel then forms z from it). The
    extension reads each tensor's data_ptr() and stride() by the op's generated ABI, and
    raises TypeError unless the names are exactly the op's pointers."""
    ints = (*sizes, has_tdo, *(causal or (sizes[2], sizes[3] - 1)), int(bias is not None),
            int(tensors.get("O") is not None))
    if op in _BIAS_OPS:
        tensors["Bias"] = bias
    _C.launch_named(_OP_INDEX[op], dtype, device, current_raw_stream(device), tensors, ints,
                    scale)


def bias_from_mask(mask: Tensor | None) -> Tensor | None:
    """An attention mask (checked by _checks.check_mask) as the kernels' additive bias: a 4-D
    float32 tensor, its broadcast dims of size 1, keys contiguous; True -> 0, False -> -inf
    for a boolean mask. No copy for a float32 mask with contiguous keys; otherwise one, the
    size of the mask's distinct values (a stride-0 dim is not materialised)."""
    if mask is None:
        return None
    b = mask if mask.dim() == 4 else mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
    shape, stride = b.shape, b.stride()
    if 0 in stride:  # broadcast (stride-0) dims: their first slice only (a view)
        b = b.as_strided([1 if st == 0 else n for n, st in zip(shape, stride)], stride)
    if b.dtype == torch.bool:  # log(1) = 0, log(0) = -inf: one elementwise launch (the host
        b = torch.log(b)  # side of torch.where(b, 0.0, -inf) measured 29-33 us on the H200's
    if b.dtype != _F32:  # host, log 9-10 us; log's result is the default dtype)
        b = b.to(_F32)
    if b.stride(-1) != 1 and b.shape[-1] > 1:
        b = b.contiguous()
    return b


def _bias_view(bias: Tensor | None, q: Tensor, k: Tensor) -> Tensor | None:
    """The kernels' view of a bias (bias_from_mask) on the (Z, H, rows) grid they run: a 3-D
    strided tensor whose stride()[:3] are its (batch, head, query-row) strides (0 where it
    broadcasts: a dim of size 1), keys contiguous. With grouped-query heads the G query heads
    of a key/value head are stacked along the rows (_fold): the row stride stays one number
    when the bias's head stride is T times its row stride (a dense or a key-only mask, or
    T = 1); otherwise its heads and rows are materialised (one copy, (b0, H, T, M))."""
    if bias is None:
        return None
    check_mask(bias, q, k, "bias")
    n, s = bias.shape, bias.stride()
    if bias.dtype is not _F32 or len(n) != 4 or (s[3] != 1 and n[3] > 1):
        raise ValueError("bias must be a 4-D float32 tensor with contiguous keys "
                         "(aot_sdpa._ops.bias_from_mask)")
    B, H, T = q.shape[0], q.shape[1], q.shape[2]
    Hkv, M = k.shape[1], k.shape[2]
    if n[3] == 1 and M > 1:  # one value for every key: the kernels read keys contiguously,
        bias = bias.expand(n[0], n[1], n[2], M).contiguous()  # so spell them out
        n, s = bias.shape, bias.stride()
    sz, sh, st = (s[0] if n[0] > 1 else 0), (s[1] if n[1] > 1 else 0), (s[2] if n[2] > 1 else 0)
    if Hkv == H:
        return bias.as_strided((B, H, T), (sz, sh, st))
    G = H // Hkv
    if sh != T * st and T > 1:  # heads and rows materialised: (b0, H, T, M), contiguous
        bias = bias.expand(n[0], H, T, M).contiguous()
        sz, sh, st = (bias.stride(0) if n[0] > 1 else 0), T * M, M
    return bias.as_strided((B, Hkv, G * T), (sz, G * sh, st if T > 1 else sh))


def _causal(code: int, T: int, M: int) -> tuple[int, int] | None:
    """The kernels' (Q_LEN, DIAG) for causal code `code` (_checks.check_causal) at T queries
    per head and M keys: row r sees keys j <= r mod T + DIAG, DIAG = 0 (top-left) or M - T
    (bottom-right). Q_LEN is the unfolded T, so grouped-query rows find their position."""
    if not code:
        return None
    return T, (0 if check_causal(code) == 1 else M - T)


def _row_stat(q: Tensor, B: int, H: int, T: int) -> Tensor:
    """One contiguous (B, H, T) float32 tensor (empty_strided: the cheapest allocation; on the
    H200's host 2.5 us against 4.4-4.8 for torch.empty / new_empty, and one (2, B, H, T)
    allocation split by unbind 8 us against 5 for two of these)."""
    return torch.empty_strided((B, H, T), (H * T, T, 1), dtype=_F32, device=q.device)


def _stats_pair(q: Tensor, B: int, H: int, T: int) -> tuple[Tensor, Tensor]:
    """m and l: two contiguous (B, H, T) tensors, laid out alike (the forward writes both with
    one stride triple, "s")."""
    return _row_stat(q, B, H, T), _row_stat(q, B, H, T)


def _fold(x: Tensor | None, Hkv: int) -> Tensor | None:
    """Grouped-query attention as plain attention: (B, H, T, ...) -> (B, Hkv, (H/Hkv)*T, ...),
    the query heads of one key/value head stacked along the rows (query head h uses key/value
    head h // (H/Hkv), as torch's enable_gqa). Every row only reads its own key/value head and
    dK, dV sum over all the rows of a group, so the kernels run unchanged and the group sum is
    as deterministic as any backward. A view when the layout allows (e.g. a contiguous q),
    else a copy; k and v are never copied."""
    if x is None:
        return None
    B, H = x.shape[:2]
    return x.reshape(B, Hkv, (H // Hkv) * x.shape[2], *x.shape[3:])


def empty_like_q(q: Tensor, k: Tensor) -> Tensor:
    """An empty tensor laid out as the ops lay out an output shaped like q: empty_like(q), or
    with grouped-query heads empty_like of the folded q seen back as (B, H, T, D). (The custom
    operators' fake implementations predict the real outputs' strides with it.)"""
    if k.shape[1] == q.shape[1]:
        return torch.empty_like(q)
    return torch.empty_like(_fold(q, k.shape[1])).view(q.shape)


def _grouping(sizes: tuple, k: Tensor, *xs: Tensor | None):
    """Kernel sizes and query-like / row-stat tensors for a call: folded (_fold) when k has
    fewer heads than q, as they are otherwise."""
    B, H, T, M, D = sizes
    Hkv = k.shape[1]
    if Hkv == H:
        return sizes, xs
    return (B, Hkv, (H // Hkv) * T, M, D), tuple(_fold(x, Hkv) for x in xs)


def _devices(names: tuple, tensors: tuple, bias: Tensor | None) -> int:
    """check_devices, the bias (if any) included."""
    if bias is None:
        return check_devices(names, tensors)
    return check_devices((*names, "mask"), (*tensors, bias))


def fwd(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None, causal: int = 0,
        bias: Tensor | None = None, out: tuple[Tensor, Tensor, Tensor] | None = None):
    """(o, m, l); `out`: the caller's (o, m, l) to write instead of new tensors
    (_checks.check_out's rules)."""
    if bias is None:  # the common call, checked, allocated and launched in one C call
        res = _fwd_fast(q, k, v, scale, causal, True, out)
        if res is not None:
            return res
    B, H, T, M, D, dt, scale = check_attention(q, k, v, scale)
    if out is not None:
        out = check_out(out, q, k, v, bias)
        dev = _devices(("q", "k", "v", "out[0]", "out[1]", "out[2]"), (q, k, v, *out), bias)
    else:
        dev = _devices(("q", "k", "v"), (q, k, v), bias)
    ci, bv = _causal(causal, T, M), _bias_view(bias, q, k)
    if k.shape[1] != H:  # grouped-query attention
        Hkv = k.shape[1]
        sizes, (qf,) = _grouping((B, H, T, M, D), k, q)
        if out is not None:  # the caller's tensors folded as q is (views: check_out)
            o, m, l = out
            _fwd(qf, k, v, sizes, dt, scale, dev, ci, bv, (
                o.view(qf.shape), m.view(B, Hkv, sizes[2]), l.view(B, Hkv, sizes[2])))
            return o, m, l
        o, m, l = _fwd(qf, k, v, sizes, dt, scale, dev, ci, bv)
        return o.view(q.shape), m.view(B, H, T), l.view(B, H, T)
    return _fwd(q, k, v, (B, H, T, M, D), dt, scale, dev, ci, bv, out)


def _fwd(q, k, v, sizes, dt, scale, dev, ci, bv, out=None):
    if out is None:
        o = torch.empty_like(q)
        m, l = _stats_pair(q, *sizes[:3])
    else:
        o, m, l = out
    _launch("fwd", dt, dev, sizes, scale, causal=ci, bias=bv, Q=q, K=k, V=v, O=o, Mstat=m,
            Lstat=l)
    return o, m, l


def fwd_fast_out(q: Tensor, k: Tensor, v: Tensor, scale: float | None,
                 causal: int) -> Tensor | None:
    """fwd_out through the C fast path alone: o, or None when it does not take the call (the
    caller then goes its checked way, which names what is wrong)."""
    return _fwd_fast(q, k, v, scale, causal, False, None)


def fwd_out(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None,
            causal: int = 0, bias: Tensor | None = None) -> Tensor:
    """The forward's output alone (inference through the drop-in). Nobody reads its stats, so
    the kernel writes m and then l into one scratch (the forward only stores them, at its end):
    the device's scratch on the C fast path (csrc/aot_fastpath.cpp), else one (B, H, T) tensor,
    one allocation per call fewer than fwd()."""
    o = fwd_fast_out(q, k, v, scale, causal) if bias is None else None
    if o is not None:
        return o
    B, H, T, M, D, dt, scale = check_attention(q, k, v, scale)
    dev = _devices(("q", "k", "v"), (q, k, v), bias)
    ci, bv = _causal(causal, T, M), _bias_view(bias, q, k)
    if k.shape[1] != H:  # grouped-query attention: the forward on folded rows
        sizes, (qf,) = _grouping((B, H, T, M, D), k, q)
        return _fwd(qf, k, v, sizes, dt, scale, dev, ci, bv)[0].view(q.shape)
    o = torch.empty_like(q)
    s = _row_stat(q, B, H, T)
    _launch("fwd", dt, dev, (B, H, T, M, D), scale, causal=ci, bias=bv, Q=q, K=k, V=v, O=o,
            Mstat=s, Lstat=s)
    return o


def check_bwd_args(q, k, v, do, m, l, scale, o=None, tangents=()):
    """Every rule of the backward family's arguments but the device rule (the custom
    operators' fake implementations check these too). `tangents`: (name, tensor, primal,
    primal's name), each checked like its primal. Returns ((B, H, T, M, D), dtype code, scale)."""
    B, H, T, M, D, dt, scale = check_attention(q, k, v, scale)
    check_like("do", do, q, "q")
    check_stats("m", m, q)
    check_stats("l", l, q)
    if o is not None:
        check_like("o", o, q, "q")
    for name, t, ref, ref_name in tangents:
        check_like(name, t, ref, ref_name)
    return (B, H, T, M, D), dt, scale


def _check_bwd(q, k, v, do, m, l, scale, o=None, tangents=(), bias=None):
    """check_bwd_args, then the device rule; returns its result, the device and the bias's
    kernel view (_bias_view)."""
    sizes, dt, scale = check_bwd_args(q, k, v, do, m, l, scale, o, tangents)
    dev = _devices(("q", "k", "v", "do", "m", "l", "o", *(n for n, *_ in tangents)),
                   (q, k, v, do, m, l, o, *(t for _, t, *_ in tangents)), bias)
    return sizes, dt, scale, dev, _bias_view(bias, q, k)


def _zbuf(q, sizes) -> Tensor:
    """The backward's row buffer (uninitialised): z_i = sum_j dP_ij P_ij, then, for 16-bit
    data, the rows' base-2 log-sum-exp lse2_i = m_i log2(e) + log2(l_i), which the 16-bit
    dK/dV kernels read for their stats (float32's read m and l: no second plane)."""
    Z, H, T = sizes[:3]
    planes = 1 if q.dtype == _F32 else 2  # the kernels' own test: Q's element type
    return _row_stat(q, planes * Z, H, T)  # (planes*Z, H, T) contiguous: z, then lse2


def _z(q, k, v, do, m, l, o, sizes, dt, scale, dev, ci, bv, split=None) -> Tensor:
    """_zbuf filled by the z pre-pass: z from dO . O when the forward's o is given, else from
    the stats; `split` (_split_rows) filled too when given (by bwd_z_from_o, which then runs
    without o where z came from the stats)."""
    z = _zbuf(q, sizes)
    if o is None:
        _launch("bwd_z_from_stats", dt, dev, sizes, scale, causal=ci, bias=bv, Q=q, K=k, V=v,
                DO=do, Mstat=m, Lstat=l, Zbuf=z)
    if o is not None or split is not None:
        _launch("bwd_z_from_o", dt, dev, sizes, scale, O=o, DO=do, Q=q, Mstat=m, Lstat=l,
                Zbuf=z, Split=split)
    return z


def bwd(q, k, v, do, m, l, o=None, scale=None, causal=0, bias=None):
    sizes, dt, scale, dev, bv = _check_bwd(q, k, v, do, m, l, scale, o, bias=bias)
    shape, ci = q.shape, _causal(causal, *sizes[2:4])
    sizes, (q, do, m, l, o) = _grouping(sizes, k, q, do, m, l, o)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    fused = bv is None and fused_bwd(dt, sizes[4], dev)  # dQ added up by the dK/dV programs
    split = _split_rows(q, sizes, dev) if fused else None  # Q, dO split by the pre-pass
    # given o, the dQ kernel forms z (and lse2) itself and writes them for dK/dV, so it runs
    # first and no pre-pass does (HAS_O); bwd_fused has no dQ kernel: the pre-pass runs
    z = (_zbuf(q, sizes) if o is not None and not fused
         else _z(q, k, v, do, m, l, o, sizes, dt, scale, dev, ci, bv, split))
    common = dict(Q=q, K=k, V=v, DO=do, Mstat=m, Lstat=l, Zbuf=z)
    if fused:
        _launch("bwd_fused", dt, dev, sizes, scale, causal=ci, DK=dk, DV=dv, DQ=dq.zero_(),
                Split=split, **common)
    else:
        _launch("bwd_dq", dt, dev, sizes, scale, causal=ci, bias=bv, DQ=dq, O=o, **common)
        _launch("bwd_dkdv", dt, dev, sizes, scale, causal=ci, bias=bv, DK=dk, DV=dv, **common)
    return (dq if sizes[1] == shape[1] else dq.view(shape)), dk, dv


def bwd_dq(q, k, v, do, m, l, scale=None, causal=0, bias=None):
    sizes, dt, scale, dev, bv = _check_bwd(q, k, v, do, m, l, scale, bias=bias)
    shape, ci = q.shape, _causal(causal, *sizes[2:4])
    sizes, (q, do, m, l) = _grouping(sizes, k, q, do, m, l)
    dq = torch.empty_like(q)
    z = _z(q, k, v, do, m, l, None, sizes, dt, scale, dev, ci, bv)
    _launch("bwd_dq", dt, dev, sizes, scale, causal=ci, bias=bv, Q=q, K=k, V=v, DO=do, O=None,
            Mstat=m, Lstat=l, Zbuf=z, DQ=dq)
    return dq if sizes[1] == shape[1] else dq.view(shape)


def bwd_dk(q, k, v, do, m, l, scale=None, causal=0, bias=None):
    sizes, dt, scale, dev, bv = _check_bwd(q, k, v, do, m, l, scale, bias=bias)
    ci = _causal(causal, *sizes[2:4])
    sizes, (q, do, m, l) = _grouping(sizes, k, q, do, m, l)
    dk = torch.empty_like(k)
    z = _z(q, k, v, do, m, l, None, sizes, dt, scale, dev, ci, bv)
    # dK-only mode (COMPUTE_DV = 0) never touches DV: a null pointer; with a mask the dK/dV
    # op (no masked dK-only variant is compiled), its dV discarded
    op, dv = ("bwd_dk", None) if bv is None else ("bwd_dkdv", torch.empty_like(v))
    _launch(op, dt, dev, sizes, scale, causal=ci, bias=bv, Q=q, K=k, V=v, DO=do, Mstat=m,
            Lstat=l, Zbuf=z, DK=dk, DV=dv)
    return dk


def bwd_dv(q, k, v, do, m, l, scale=None, causal=0, bias=None):
    sizes, dt, scale, dev, bv = _check_bwd(q, k, v, do, m, l, scale, bias=bias)
    ci = _causal(causal, *sizes[2:4])
    sizes, (q, do, m, l) = _grouping(sizes, k, q, do, m, l)
    dv = torch.empty_like(v)
    # dV-only mode (COMPUTE_DK = 0) never touches Zbuf or DK: null pointers; with a mask the
    # dK/dV op (no masked dV-only variant is compiled), its dK discarded
    op, z, dk = ("bwd_dv", None, None) if bv is None else (
        "bwd_dkdv", _z(q, k, v, do, m, l, None, sizes, dt, scale, dev, ci, bv), torch.empty_like(k))
    _launch(op, dt, dev, sizes, scale, causal=ci, bias=bv, Q=q, K=k, V=v, DO=do, Mstat=m,
            Lstat=l, Zbuf=z, DK=dk, DV=dv)
    return dv


def check_tangents(q, k, v, tq, tk, tv):
    """The JVP's tangents (named dq, dk, dv in the public API) shaped like their primals."""
    check_like("dq", tq, q, "q")
    check_like("dk", tk, k, "k")
    check_like("dv", tv, v, "v")


def check_jvp_args(q, k, v, tq, tk, tv, m, l, scale):
    """Every rule of the JVP's arguments but the device rule; check_attention's result."""
    checked = check_attention(q, k, v, scale)
    check_tangents(q, k, v, tq, tk, tv)
    check_stats("m", m, q)
    check_stats("l", l, q)
    return checked


def bwd_jvp_tangents(q, k, v, tq, tk, tv, tdo):
    """The backward-JVP's tangents in check_bwd_args' form (tdo absent: not listed)."""
    tangents = (("tq", tq, q, "q"), ("tk", tk, k, "k"), ("tv", tv, v, "v"))
    return tangents if tdo is None else (*tangents, ("tdo", tdo, q, "q"))


def jvp(q, k, v, tq, tk, tv, m, l, scale=None, causal=0, bias=None):
    B, H, T, M, D, dt, scale = check_jvp_args(q, k, v, tq, tk, tv, m, l, scale)
    dev = _devices(("q", "k", "v", "dq", "dk", "dv", "m", "l"), (q, k, v, tq, tk, tv, m, l),
                   bias)
    shape, bv = q.shape, _bias_view(bias, q, k)
    sizes, (q, tq, m, l) = _grouping((B, H, T, M, D), k, q, tq, m, l)
    to = torch.empty_like(q)
    _launch("jvp", dt, dev, sizes, scale, causal=_causal(causal, T, M), bias=bv, Q=q, K=k, V=v, TQ=tq,
            TK=tk, TV=tv, Mstat=m, Lstat=l, TO=to)
    return to if sizes[1] == H else to.view(shape)


def fwd_jvp(q, k, v, tq, tk, tv, scale=None, causal=0, bias=None):
    return _fwd_jvp(q, k, v, tq, tk, tv, scale, causal, bias, False)


def fwd_jvp_out(q, k, v, tq, tk, tv, scale=None, causal=0, bias=None):
    """(o, to) alone (the drop-in under forward-mode AD): nobody reads the stats, so the
    kernel writes m and then l into one scratch (B, H, T) tensor, as fwd_out (the forward+JVP
    kernel only stores them, at its end): one allocation per call fewer than fwd_jvp()."""
    o, _, _, to = _fwd_jvp(q, k, v, tq, tk, tv, scale, causal, bias, True)
    return o, to


_SERVED: dict[int, list[dict]] = {}  # device index -> the inventory rows whose cubins run on it


def _served(device: int) -> list[dict]:
    """The kernel inventory's float32 rows (fp32-accurate and TF32) whose cubins run on
    `device` (its compute capability in their `serves`), read once per device."""
    rows = _SERVED.get(device)
    if rows is None:
        major, minor = torch.cuda.get_device_capability(device)
        rows = [r for r in _C.inventory() if r["dtype"] == "float32"
                and 10 * major + minor in r["serves"]]
        _SERVED[device] = rows
    return rows


_FUSED_BUCKETS: dict[int, tuple] = {}  # device index -> (float32 buckets, bwd_fused's)


def _fused_buckets(device: int) -> tuple:
    """The float32 backward's head-dim buckets on `device` (bwd_dkdv's, ascending: a call runs in
    the smallest that holds its D), those of them with a bwd_fused variant there (none:
    sm_80, or a build without it) and those whose bwd_fused variants all run "fp16x3" (they
    read Q and dO split by the pre-pass: _split_rows)."""
    b = _FUSED_BUCKETS.get(device)
    if b is None:
        rows = _served(device)
        fused = frozenset(r["head_dim"] for r in rows if r["op"] == "bwd_fused")
        b = (sorted({r["head_dim"] for r in rows if r["op"] == "bwd_dkdv"}), fused,
             frozenset(h for h in fused if all(r["input_precision"] == "fp16x3" for r in rows
                                                if r["op"] == "bwd_fused" and r["head_dim"] == h)))
        _FUSED_BUCKETS[device] = b
    return b


def _fused_bucket(D: int, device: int) -> int | None:
    """The head-dim bucket a float32 backward with head dim D runs in on `device` (the smallest
    that holds D) where bwd_fused has it there, else None."""
    buckets, fused, _ = _fused_buckets(device)
    bucket = next((b for b in buckets if b >= D), None)
    return bucket if bucket in fused else None


def presplit_bucket(D: int, device: int) -> int:
    """For a fused_bwd call with head dim D: its bucket where bwd_fused runs "fp16x3" products
    on `device` (reading Q and dO split by the pre-pass: _split_rows), else 0."""
    bucket = _fused_bucket(D, device)
    return bucket if bucket in _fused_buckets(device)[2] else 0


def _split_rows(q: Tensor, sizes: tuple, device: int) -> Tensor | None:
    """The buffer of Q's and dO's split rows that bwd_fused reads in "fp16x3" (uninitialised;
    the z pre-pass fills it: kernels/sdpa_bwd.py _sdpa_bwd_z_from_o_kernel): (2, Z*H*T) rows
    of 2 * bucket + 8 halves (hi, lo, 1/s as float32, padding); None where the call's bucket
    runs bwd_fused in other products (nothing split). Asked for fused_bwd calls only."""
    Z, H, T, _, D = sizes
    bucket = presplit_bucket(D, device)
    if not bucket:
        return None
    return torch.empty(2 * Z * H * T * (2 * bucket + _SPLIT_PAD), dtype=torch.float16,
                       device=q.device)


def fused_bwd(dt: int, D: int, device: int) -> bool:
    """Whether an unmasked backward runs the one-kernel dK/dV/dQ (bwd_fused: dQ by float32
    atomic adds, five block products per block pair against the two kernels' seven) instead
    of the dK/dV and dQ kernels: fp32-accurate float32 whose head-dim bucket has it on
    `device` (sm_90, where that backward is bound by its split products), and only while
    torch.are_deterministic_algorithms_enabled() is False: its dQ sums run in the order the
    programs reach them, so dQ is not bitwise repeatable (dK, dV are), as torch's own float32
    backward (the efficient backend's) is not."""
    if dt != _FP32_CODE or torch.are_deterministic_algorithms_enabled():
        return False
    return _fused_bucket(D, device) is not None


_FP32_PRECISION: dict[int, str] = {}  # device index -> its float32 variants' product precision


def fp32_precision(device: int) -> str:
    """The product precision of the fp32-accurate forward+JVP variants that run on `device`
    (the first such row of the kernel inventory, read once per device; "" when none serves
    it): "tf32x3" on sm_80; on sm_90 "bf16x6" or "fp16x3", per bucket and flavour
    (variants.toml [ops.fwd_jvp] fp16x3); of these only "tf32x3" splits the whole 128 bucket
    (split_fwd_jvp; sm_90 splits D = 128 alone, by fp16x3_d128)."""
    p = _FP32_PRECISION.get(device)
    if p is None:
        p = next((r["input_precision"] for r in _served(device) if r["op"] == "fwd_jvp"
                  and r["input_precision"] != "tf32"), "")
        _FP32_PRECISION[device] = p
    return p


_FP16X3_D128: dict[int, bool] = {}  # device index -> fp16x3_d128(device)


def fp16x3_d128(device: int) -> bool:
    """Whether `device` runs the fp32-accurate forward's fast flavour and the JVP kernel at
    D = 128 in "fp16x3" products (sm_90: variants.toml [ops.fwd], [ops.jvp]), read once per
    device from the kernel inventory."""
    f = _FP16X3_D128.get(device)
    if f is None:
        prec = {(r["op"], r["flavor"]): r["input_precision"] for r in _served(device)
                if r["head_dim"] == 128 and not r["max_len"] and r["input_precision"] != "tf32"}
        f = prec.get(("fwd", "fast")) == prec.get(("jvp", "fast")) == "fp16x3"
        _FP16X3_D128[device] = f
    return f


def split_fwd_jvp(dt: int, D: int, device: int, masked: bool = False) -> bool:
    """Whether the forward+JVP runs as the forward kernel, then the JVP kernel on its stats,
    instead of the fused kernel: where that was measured faster (H200,
    benchmarks/results/fwd_jvp_split.csv): fp32-accurate float32 in the 128 head-dim bucket
    where `device` runs "tf32x3" products (fp32_precision: sm_80; asked only for such calls)
    (D = 72: 1.13x, D = 128: 1.19-1.22x; the fused kernel's two BLOCK_M x 128 fp32
    accumulators and split operands spill), fp32-accurate float32 at D = 128 where the forward
    and the JVP kernel run "fp16x3" products and the fused kernel "bf16x6" (sm_90,
    fp16x3_d128: 1.21-1.24x, results/ab_split_d128_h200.log; unmasked only: the masked
    flavours of both kernels stay "bf16x6", where the fused kernel is faster) and TF32 at D = 128
    (1.48-1.50x). In "bf16x6" products alone the fused kernel is 1.49-1.52x faster (sm_90
    below D = 128, where the forward runs bf16x6 and the split with the fp16x3 JVP kernel is
    not measured yet); TF32 at D = 72, whose calls run the general
    (scalar-load) kernels, is 2x faster fused; D <= 64 is fused-faster for all (0.67-0.98x
    split)."""
    if dt == TF32_CODE:
        return D == 128
    return dt == _FP32_CODE and D > 64 and (fp32_precision(device) == "tf32x3" or (
        D == 128 and not masked and fp16x3_d128(device)))


def _fwd_jvp(q, k, v, tq, tk, tv, scale, causal, bias, scratch_stats: bool):
    B, H, T, M, D, dt, scale = check_attention(q, k, v, scale)
    check_tangents(q, k, v, tq, tk, tv)
    dev = _devices(("q", "k", "v", "dq", "dk", "dv"), (q, k, v, tq, tk, tv), bias)
    shape, bv, ci = q.shape, _bias_view(bias, q, k), _causal(causal, T, M)
    sizes, (q, tq) = _grouping((B, H, T, M, D), k, q, tq)
    o, to = torch.empty_like(q), torch.empty_like(q)
    split = split_fwd_jvp(dt, D, dev, bv is not None)
    if scratch_stats and not split:  # the JVP kernel of a split call reads m and l
        m = l = _row_stat(q, *sizes[:3])
    else:
        m, l = _stats_pair(q, *sizes[:3])
    tensors = dict(Q=q, K=k, V=v, Mstat=m, Lstat=l)
    if split:
        _launch("fwd", dt, dev, sizes, scale, causal=ci, bias=bv, O=o, **tensors)
        _launch("jvp", dt, dev, sizes, scale, causal=ci, bias=bv, TQ=tq, TK=tk, TV=tv, TO=to,
                **tensors)
    else:
        _launch("fwd_jvp", dt, dev, sizes, scale, causal=ci, bias=bv, TQ=tq, TK=tk, TV=tv, O=o,
                TO=to, **tensors)
    if sizes[1] == H:
        return o, m, l, to
    return o.view(shape), m.view(B, H, T), l.view(B, H, T), to.view(shape)


def bwd_jvp(q, k, v, do, m, l, tq, tk, tv, tdo=None, scale=None, causal=0, bias=None):
    """(hq, hk, hv): tangent of the backward along (tq, tk, tv, tdo); docs/phase9_hvp.md."""
    sizes, dt, scale, dev, bv = _check_bwd(q, k, v, do, m, l, scale,
                                           tangents=bwd_jvp_tangents(q, k, v, tq, tk, tv, tdo),
                                           bias=bias)
    shape, ci = q.shape, _causal(causal, *sizes[2:4])
    sizes, (q, do, m, l, tq, tdo) = _grouping(sizes, k, q, do, m, l, tq, tdo)
    hq, hk, hv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    r, z, zd = (_row_stat(q, *sizes[:3]) for _ in range(3))
    common = dict(Q=q, K=k, V=v, TQ=tq, TK=tk, TV=tv, DO=do, TDO=tdo, Mstat=m, Lstat=l, Rbuf=r,
                  Zbuf=z, ZDbuf=zd)
    flag = int(tdo is not None)
    _launch("bwd_jvp_rows", dt, dev, sizes, scale, has_tdo=flag, causal=ci, bias=bv, **common)
    _launch("bwd_jvp_dkdv", dt, dev, sizes, scale, has_tdo=flag, causal=ci, bias=bv, HK=hk,
            HV=hv, **common)
    _launch("bwd_jvp_dq", dt, dev, sizes, scale, has_tdo=flag, causal=ci, bias=bv, HQ=hq,
            **common)
    return (hq if sizes[1] == shape[1] else hq.view(shape)), hk, hv

"""Contract checks at the API boundary: each violation raises a ValueError or TypeError that
names the argument and the rule. Nothing here launches anything or copies a tensor."""

from __future__ import annotations

import math
import numbers

import torch

DTYPE_CODE = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}
TF32_CODE = 3  # float32 data whose products may use TF32 (build_tools/render.py DTYPE_CODE)
MAX_HEAD_DIM = 256
# float32 (fp32-accurate or TF32) is compiled up to D = 128: its D = 256 tiles do not fit the
# shared memory of sm_80/86/89 and spill tens of KB per thread on sm_90 (kernels/variants.toml)
MAX_HEAD_DIM_FP32 = 128
_INT32_MAX = 2**31 - 1
# T and M: the kernels index rows in int32 as pid * BLOCK + i (BLOCK <= 1024), and their loop
# counters step past the last row by one block, so both stay below 2**31 with this margin.
MAX_SEQ_LEN = 2**31 - 1024


def _tensor(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _rank4(name: str, x: torch.Tensor, layout: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} must have rank 4 {layout}, got shape {tuple(x.shape)}")


def _unit_last_stride(name: str, x: torch.Tensor) -> None:
    if x.stride(-1) != 1 and x.shape[-1] > 1:
        raise ValueError(f"{name} must have stride 1 in its last (head) dimension, got strides "
                         f"{tuple(x.stride())}; pass a tensor whose last dim is contiguous")


def check_scale(scale, head_dim: int) -> float:
    """None -> 1/sqrt(D); otherwise a finite real number (bool rejected)."""
    if scale is None:
        return 1.0 / math.sqrt(head_dim) if head_dim > 0 else 1.0
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {type(scale).__name__}")
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return scale


#: the kernels' causal codes: 0 none, 1 top-left (torch's is_causal: query i sees keys j <= i),
#: 2 bottom-right (FlashAttention's: j <= i + M - T)
CAUSAL_NAMES = {"top_left": 1, "bottom_right": 2}


def check_causal(causal) -> int:
    """False/None: no mask; True or "top_left": query i sees keys j <= i (torch's is_causal);
    "bottom_right": keys j <= i + M - T (the last query sees every key; with T > M the first
    T - M queries see none: their output is 0). The codes 0/1/2 themselves are accepted too."""
    if causal is None or causal is False:
        return 0
    if causal is True:
        return 1
    if isinstance(causal, str):
        if causal not in CAUSAL_NAMES:
            raise ValueError(f"causal must be False, True, 'top_left' or 'bottom_right', got "
                             f"{causal!r}")
        return CAUSAL_NAMES[causal]
    if isinstance(causal, int) and 0 <= causal <= 2:
        return int(causal)
    raise TypeError(f"causal must be a bool or 'top_left' / 'bottom_right', got "
                    f"{type(causal).__name__}")


def dtype_code(dtype: torch.dtype) -> int:
    """The kernels' dtype code; float32 honours torch.get_float32_matmul_precision(): "highest"
    keeps fp32-accurate products, "high" and "medium" allow TF32 (as torch's matmuls do)."""
    code = DTYPE_CODE[dtype]
    if code == 2 and torch.get_float32_matmul_precision() != "highest":
        return TF32_CODE
    return code


def check_devices(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> int:
    """All tensors on the first one's device, and that a CUDA device; returns its index.
    Optional arguments may be None (absent): they are skipped.

    Called last by every op, so every other rule is checkable on a machine without a GPU.
    """
    first = tensors[0]
    if first.is_cuda:  # the common case: every tensor on one CUDA device
        dev = first.get_device()
        for x in tensors:
            if x is not None and not (x.is_cuda and x.get_device() == dev):
                break
        else:
            return dev
    dev = first.get_device()  # -1 for CPU (and meta) tensors
    for name, x in zip(names[1:], tensors[1:]):
        if x is None:
            continue
        if x.get_device() != dev or x.device.type != tensors[0].device.type:
            raise ValueError(f"{name} is on {x.device} but {names[0]} is on {tensors[0].device}: "
                             "all tensors must be on one CUDA device")
    if dev < 0 or not tensors[0].is_cuda:
        raise ValueError(f"{names[0]} is on {tensors[0].device}; aot_sdpa kernels need CUDA "
                         "tensors")
    return dev


_F32 = torch.float32
_DEFAULT_SCALE = [1.0] + [1.0 / math.sqrt(d) for d in range(1, MAX_HEAD_DIM + 1)]


def check_attention(q, k, v, scale, names=("q", "k", "v")):
    """Validate q (B,H,T,D), k and v (B,Hkv,M,D), H % Hkv == 0, except their device (see
    check_devices).

    Returns (B, H, T, M, D, dtype_code, scale): dtype_code as dtype_code() gives it."""
    # fast path: accept the common case with as few attribute reads as possible; anything it
    # does not accept goes through the rule-by-rule checks below, which raise or accept
    if isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor):
        qs, ks, vs = q.shape, k.shape, v.shape
        dtype = q.dtype
        if (len(qs) == 4 and len(ks) == 4 and qs[0] == ks[0] and qs[1] == ks[1]
                and qs[3] == ks[3] and ks == vs and dtype in DTYPE_CODE and k.dtype is dtype
                and v.dtype is dtype):
            B, H, T, D = qs
            M = ks[2]
            if (1 <= D <= (MAX_HEAD_DIM_FP32 if dtype is _F32 else MAX_HEAD_DIM)
                    and 1 <= M <= MAX_SEQ_LEN and T <= MAX_SEQ_LEN
                    and B * H <= _INT32_MAX and q.stride(3) == 1 and k.stride(3) == 1
                    and v.stride(3) == 1):
                sc = _DEFAULT_SCALE[D] if scale is None else check_scale(scale, D)
                return B, H, T, M, D, dtype_code(dtype), sc
    return _check_attention_rules(q, k, v, scale, names)


def _check_attention_rules(q, k, v, scale, names):
    nq, nk, nv = names
    for name, x in ((nq, q), (nk, k), (nv, v)):
        _tensor(name, x)
    dtype = q.dtype
    if dtype not in DTYPE_CODE:
        raise TypeError(f"{nq} has dtype {dtype}; supported dtypes are float16, bfloat16 "
                        "and float32")
    if k.dtype != dtype or v.dtype != dtype:
        name, x = (nk, k) if k.dtype != dtype else (nv, v)
        raise TypeError(f"{name} has dtype {x.dtype} but {nq} has {dtype}: "
                        f"{nq}, {nk} and {nv} must share one dtype")
    qs, ks, vs = q.shape, k.shape, v.shape
    if len(qs) != 4 or len(ks) != 4 or len(vs) != 4:
        _rank4(nq, q, "(B, H, T, D)")
        _rank4(nk, k, "(B, H, M, D)")
        _rank4(nv, v, "(B, H, M, D)")
    B, H, T, D = qs
    M = ks[2]
    if ks[0] != B:
        raise ValueError(f"{nk} has batch {ks[0]} but {nq} has {B}: batch sizes must match")
    if ks[1] != H and (ks[1] == 0 or H % ks[1] != 0):
        raise ValueError(f"{nk} has {ks[1]} heads but {nq} has {H}: the query heads must be a "
                         "multiple of the key/value heads (grouped-query attention: query head "
                         "h uses key/value head h // (H / Hkv))")
    if ks[3] != D:
        raise ValueError(f"{nk} has head dim {ks[3]} but {nq} has {D}: they must match")
    if vs[:3] != ks[:3]:
        raise ValueError(f"{nv} has (B, H, M) = {tuple(vs[:3])} but {nk} has "
                         f"{tuple(ks[:3])}: they must match")
    if vs[3] != D:
        raise ValueError(f"{nv} has head dim Dv={vs[3]} but D={D}: Dv == D is required")
    if not 1 <= D <= MAX_HEAD_DIM:
        raise ValueError(f"head dim D={D} of {nq} must satisfy 1 <= D <= {MAX_HEAD_DIM}")
    if dtype == torch.float32 and D > MAX_HEAD_DIM_FP32:
        raise NotImplementedError(
            f"head dim D={D} with float32 is not supported: float32 kernels are compiled for "
            f"D <= {MAX_HEAD_DIM_FP32} (their D={MAX_HEAD_DIM} tiles do not fit the GPU's shared "
            "memory); use bfloat16/float16 for this head dim")
    if M == 0:
        raise ValueError(f"{nk} and {nv} have M=0 keys: attention needs M >= 1")
    if B * H > _INT32_MAX or T > MAX_SEQ_LEN or M > MAX_SEQ_LEN:
        raise ValueError(f"sizes B*H={B * H}, T={T}, M={M}: B*H must be below 2**31 and "
                         f"T, M at most {MAX_SEQ_LEN} (2**31 - 1024)")
    if ks[1] != H and (H // ks[1]) * T > MAX_SEQ_LEN:  # the kernels see (H/Hkv)*T rows
        raise ValueError(f"grouped-query sizes H/Hkv={H // ks[1]}, T={T}: (H/Hkv)*T must be at "
                         f"most {MAX_SEQ_LEN} (2**31 - 1024)")
    if (q.stride(3) != 1 or k.stride(3) != 1 or v.stride(3) != 1) and D > 1:
        for name, x in ((nq, q), (nk, k), (nv, v)):
            _unit_last_stride(name, x)
    return B, H, T, M, D, dtype_code(q.dtype), check_scale(scale, D)


def check_like(name: str, x, ref: torch.Tensor, ref_name: str) -> torch.Tensor:
    """x must match ref's shape and dtype, with a unit last stride (device: check_devices)."""
    x = _tensor(name, x)
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but {ref_name} has {ref.dtype}: they must match")
    if x.shape != ref.shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)} but must be shaped like {ref_name} "
                         f"{tuple(ref.shape)}")
    _unit_last_stride(name, x)
    return x


def check_stats(name: str, x, q: torch.Tensor) -> torch.Tensor:
    """Row stats: float32 (B, H, T) (device: check_devices)."""
    x = _tensor(name, x)
    if x.dtype != torch.float32:
        raise TypeError(f"{name} must be float32 row stats, got {x.dtype}")
    if x.shape != q.shape[:3]:
        raise ValueError(f"{name} must have shape (B, H, T) = {tuple(q.shape[:3])}, got "
                         f"{tuple(x.shape)}")
    return x


def _span(x: torch.Tensor) -> tuple[int, int]:
    """The bytes [first, last) a strided tensor can touch ((0, 0) when it has none)."""
    if x.numel() == 0:
        return 0, 0
    extent = sum((n - 1) * abs(st) for n, st in zip(x.shape, x.stride()))
    return x.data_ptr(), x.data_ptr() + (extent + 1) * x.element_size()


def check_out(out, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward's `out` = (o, m, l): o shaped and typed like q with a unit last stride, m
    and l float32 (B, H, T) with equal strides (the kernel writes both with one stride triple),
    not requiring grad, none of them overlapping q, k, v, the mask or each other (their spans
    of memory, so interleaved views are refused too), and with grouped-query heads each
    viewable as the kernels' folded rows (B, Hkv, (H/Hkv) T, ...). Device: check_devices."""
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise TypeError(f"out must be a tuple (o, m, l) of three tensors, got "
                        f"{type(out).__name__}" + (f" of length {len(out)}"
                                                   if isinstance(out, (tuple, list)) else ""))
    o, m, l = (_tensor(f"out[{i}]", x) for i, x in enumerate(out))
    check_like("out[0] (o)", o, q, "q")
    for name, x in (("out[1] (m)", m), ("out[2] (l)", l)):
        check_stats(name, x, q)
    if m.stride() != l.stride():
        raise ValueError(f"out[1] (m) has strides {m.stride()} but out[2] (l) has {l.stride()}: "
                         "they must match (the kernel writes both with one stride triple)")
    for i, x in enumerate((o, m, l)):
        if x.requires_grad and torch.is_grad_enabled():
            raise ValueError(f"out[{i}] requires grad: out= tensors take no part in autograd "
                             "(as torch's out= functions); pass a tensor that does not")
    written = [("out[0]", o), ("out[1]", m), ("out[2]", l)]
    read = [("q", q), ("k", k), ("v", v)] + ([("mask", bias)] if bias is not None else [])
    spans = {name: _span(x) for name, x in written + read}
    for i, (name, _) in enumerate(written):
        for other, _ in written[i + 1:] + read:
            (a0, a1), (b0, b1) = spans[name], spans[other]
            if a0 < b1 and b0 < a1:
                why = ("the forward writes both" if other.startswith("out") else
                       "the forward writes out while it reads its inputs")
                raise ValueError(f"{name} overlaps {other} in memory: {why}, so they must not "
                                 "share memory")
    Hkv = k.shape[1]
    if Hkv != q.shape[1]:
        B, H, T = q.shape[:3]
        try:
            o.view(B, Hkv, (H // Hkv) * T, q.shape[3])
            m.view(B, Hkv, (H // Hkv) * T)
            l.view(B, Hkv, (H // Hkv) * T)
        except RuntimeError:
            raise ValueError("with grouped-query heads, out's tensors must be viewable as the "
                             "kernels' rows (B, Hkv, (H/Hkv)*T, ...) without a copy (e.g. "
                             "contiguous)") from None
    return o, m, l


_MASK_DTYPES = frozenset((torch.bool, *DTYPE_CODE))


def check_mask(mask, q: torch.Tensor, k: torch.Tensor, name: str = "mask") -> None:
    """An attention mask: None, or a bool (True = the key takes part) or float16/bfloat16/
    float32 (added to the scores; -inf = masked) tensor of at most 4 dims, broadcastable to
    (B, H, T, M) (dims of size 1, or stride 0, repeat), not requiring grad (no gradient is
    computed for it). Device: check_devices."""
    if mask is None:
        return
    # fast path: a 4-D mask of an accepted dtype that broadcasts, with one comparison per dim
    # (a masked call checks its mask twice: the public argument, then the kernels' bias)
    if isinstance(mask, torch.Tensor) and mask.dtype in _MASK_DTYPES and not mask.requires_grad:
        s = mask.shape
        if len(s) == 4:
            qs = q.shape
            if ((s[3] == 1 or s[3] == k.shape[2]) and (s[2] == 1 or s[2] == qs[2])
                    and (s[1] == 1 or s[1] == qs[1]) and (s[0] == 1 or s[0] == qs[0])):
                return
    _check_mask_rules(mask, q, k, name)


def _check_mask_rules(mask, q: torch.Tensor, k: torch.Tensor, name: str) -> None:
    mask = _tensor(name, mask)
    if mask.dtype not in _MASK_DTYPES:
        raise TypeError(f"{name} must be bool (True = the key takes part) or float16/bfloat16/"
                        f"float32 (added to the scores), got {mask.dtype}")
    if mask.requires_grad:
        raise ValueError(f"{name} requires grad: aot_sdpa computes no gradient for the mask; "
                         f"pass {name}.detach()")
    full = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    if mask.dim() > 4 or any(n not in (1, f) for n, f in zip(mask.shape[::-1], full[::-1])):
        raise ValueError(f"{name} of shape {tuple(mask.shape)} does not broadcast to (B, H, T, M) "
                         f"= {full}")


def check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    eps = float(eps)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be finite and > 0, got {eps}")
    return eps

"""Every private PyTorch API aot_sdpa uses, in one place, each with a fallback or a clear error.

Tested with PyTorch 2.11 (GPU) and 2.13 (CPU); pyproject.toml declares that range.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD

_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def current_raw_stream(device: int) -> int:
    """The handle of PyTorch's current CUDA stream on `device` (0.1 µs through the private
    call; the public fallback costs ~4 µs)."""
    if _raw_stream is not None:
        return _raw_stream(device)
    return torch.cuda.current_stream(device).cuda_stream


_functorch = getattr(torch._C, "_functorch", None)
_peek = getattr(_functorch, "peek_interpreter_stack", None)


def functorch_active() -> bool:
    """Whether a torch.func transform (grad, jvp, vjp, vmap, ...) is running: only then can
    a tensor be functorch-wrapped. Without the private probe, answers True (callers then take
    the path that handles transforms)."""
    return True if _peek is None else _peek() is not None


_unpack_dual_op = getattr(torch, "_unpack_dual", None)
_make_dual_op = getattr(torch, "_make_dual", None)


def unpack_dual(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(primal, tangent) of x at the current forward-AD level: fwAD.unpack_dual's op called
    directly (1 us instead of 4 us through its Python wrapper)."""
    level = getattr(fwAD, "_current_level", None)
    if _unpack_dual_op is None or level is None:
        d = fwAD.unpack_dual(x)
        return d.primal, d.tangent
    if level < 0:
        return x, None
    return _unpack_dual_op(x, level=level)


def make_dual(primal: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
    """fwAD.make_dual at the current level for floating-point outputs the caller created
    (the op directly, without the wrapper's checks, which such outputs always pass)."""
    level = getattr(fwAD, "_current_level", None)
    if _make_dual_op is None or level is None or level < 0:
        return fwAD.make_dual(primal, tangent)
    return _make_dual_op(primal, tangent, level=level)


def forward_ad_active() -> bool:
    """Whether a torch.autograd.forward_ad dual level is open (then tensors may carry
    tangents). Without the private level counter, answers True: callers then unpack duals."""
    level = getattr(fwAD, "_current_level", None)
    return True if level is None else level >= 0


try:  # torch.func internals for the fused jvp path (present in 2.11 through 2.13)
    from torch._C._functorch import CJvpInterpreterPtr as _CJvp
    from torch._C._functorch import TransformType as _TransformType
    from torch._C._functorch import _unwrap_for_grad
    from torch._C._functorch import pop_dynamic_layer_stack as _pop_layer
    from torch._C._functorch import push_dynamic_layer_stack as _push_layer
except ImportError:  # pragma: no cover - a torch without them takes the generic path
    _CJvp = _TransformType = _unwrap_for_grad = _pop_layer = _push_layer = None
_is_fwd_grad = getattr(torch._C, "_is_fwd_grad_enabled", None)
_set_fwd_grad = getattr(torch._C, "_set_fwd_grad_enabled", None)


class JvpLevel:
    """The innermost torch.func.jvp transform: `level()` and `lower()`, which runs a `with`
    block one level below, as torch's JvpInterpreter.lower() (torch/_functorch/pyfunctorch.py:
    forward grad off where the jvp found it off, then the transform popped off the stack and
    pushed back after). Built on the C interpreter directly: coercing it to torch's Python
    interpreter object cost 3.4 us per call and its lower() 1.8 us (CPU)."""

    __slots__ = ("_cdata", "_saved", "_fwd_off")

    def __init__(self, cdata) -> None:
        self._cdata = cdata

    def level(self) -> int:
        return self._cdata.level()

    def lower(self) -> JvpLevel:
        return self

    def __enter__(self) -> None:
        self._fwd_off = None  # else: the forward-grad mode to restore
        if not _CJvp(self._cdata).prevFwdGradMode():
            self._fwd_off = _is_fwd_grad()
            _set_fwd_grad(False)
        try:
            self._saved = _pop_layer()
        except BaseException:  # nothing popped (and __exit__ will not run): restore the mode
            if self._fwd_off is not None:
                _set_fwd_grad(self._fwd_off)
            raise

    def __exit__(self, *exc) -> None:
        _push_layer(self._saved)
        if self._fwd_off is not None:
            _set_fwd_grad(self._fwd_off)


def innermost_jvp_level() -> JvpLevel | None:
    """The torch.func.jvp transform when it is the innermost running one, else None.

    With it, `unwrap_jvp_dual` peels one jvp level off a tensor and `lower()` runs code at
    the level below (as torch's own rule for autograd.Function does). None without the
    private APIs: callers then take the autograd.Function path."""
    if _peek is None or _pop_layer is None or _set_fwd_grad is None:
        return None
    cdata = _peek()
    if cdata is None or cdata.key() != _TransformType.Jvp:
        return None
    return JvpLevel(cdata)


def unwrap_jvp_dual(x: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(primal, tangent) of `x` at jvp level `level`, both unwrapped to the level below."""
    primal, tangent = unpack_dual(x)
    tangent = None if tangent is None else _unwrap_for_grad(tangent, level)
    return _unwrap_for_grad(primal, level), tangent


_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)


def compiling() -> bool:
    """Whether torch.compile (dynamo) or torch.export is tracing the caller: the public ops
    then call their torch.library custom operators (_library.py) instead of the
    autograd.Functions, which dynamo cannot trace (custom jvp rules)."""
    return _is_compiling is not None and _is_compiling()


_grad_enabled = torch.is_grad_enabled


def plain_call(q, k, v) -> bool:
    """Whether (q, k, v) are plain tensors (the exact type) in an eager call no derivative can
    pass through: nothing requiring grad with grad mode on, no torch.func transform, no
    forward-AD dual level, no torch.compile tracing. The public forwards then go straight to
    the kernels' fast path (the same answer as the routing's step by step, in ~1 us less)."""
    tensor = torch.Tensor
    return (type(q) is tensor and type(k) is tensor and type(v) is tensor
            and not (_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))
            and (_peek is not None and _peek() is None)
            and getattr(fwAD, "_current_level", 0) < 0 and not compiling())

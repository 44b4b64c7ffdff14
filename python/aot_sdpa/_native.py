"""The compiled extension and the kernel ABI it was built with (no Triton involved)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from . import _C

if TYPE_CHECKING:
    import torch

CudaError = _C.CudaError
NoKernelError = _C.NoKernelError


@dataclasses.dataclass(frozen=True)
class OpAbi:
    """One op's kernel ABI, generated at build time from the kernel's parameter names."""

    index: int
    pointers: tuple[str, ...]       # pointer parameters in ABI order
    stride_owners: tuple[str, ...]  # the pointer whose tensor supplies each (z, h, row) triple
    grid: str                       # "T": axis 0 tiles query rows; "M": keys


OPS: dict[str, OpAbi] = {
    d["name"]: OpAbi(i, tuple(d["pointers"].split(",")),
                     tuple(d["stride_owners"].split(",")) if d["stride_owners"] else (),
                     d["grid"])
    for i, d in enumerate(_C.ops())
}
#: the ints every launch passes, in order: Z, H, T, M, D, HAS_TDO, Q_LEN, DIAG, HAS_BIAS, HAS_O
INT_NAMES: tuple[str, ...] = tuple(_C.int_names())


def kernel_inventory() -> list[dict]:
    """One dict per compiled variant: name, op, dtype, head_dim (bucket), arch, serves (compute
    capabilities it runs on), flavor (general, fast, masked, masked_fast, ragged,
    padding_fast), max_len (0: any sequence length; else a sequence-length tier, run in place
    of its untiered twin when max(T, M) <= max_len), tail_len (0: none; else the tier also
    runs for max(T, M) <= tail_len where the twin's last block of grid rows would be at most
    half full), causal_len (0: none; else causal calls run the tier where max(T, M)
    per head <= causal_len), grid_len (0: none; else the tier also runs for max(T, M) <=
    grid_len where the twin's grid would leave at least a quarter of the slots of its waves
    idle, the device's multiprocessors times the twin's occupancy), narrow (0: none; else the
    tier runs only where its inner loop ends 1..narrow rows past a whole block: a narrow-tail
    tier, named "..._t<max_len>n<narrow>", which wins over a tier of the same max_len),
    block_m, block_n, num_warps, num_stages,
    shared_bytes, cubin_bytes, input_precision, and where its cubin lies: image (the
    compressed image of its op and arch, unpacked on first use) and image_offset."""
    return _C.inventory()


def built_archs() -> list[str]:
    return [f"sm_{a}" for a in _C.archs()]


def warmup(device: int | str | torch.device | None = None) -> int:
    """Load every kernel that can run on `device` (default: the current CUDA device).

    Kernels are otherwise loaded on their first call (both alignment flavours of the called
    variant at once). Call this before capturing a CUDA graph that uses ops or dtypes not yet
    called on that device: loading a module is not allowed during capture. Returns the number
    of kernels loaded (already loaded ones included).
    """
    import torch

    d = torch.device("cuda", device) if isinstance(device, int) else torch.device(device or "cuda")
    if d.type != "cuda":
        raise ValueError(f"device must be a CUDA device, got {d}")
    return _C.load_all(torch.cuda.current_device() if d.index is None else d.index)

"""The compiled extension and the op table it was built with (no Triton involved)."""

from __future__ import annotations

from . import _C

CudaError = _C.CudaError
NoKernelError = _C.NoKernelError

#: op name -> (index, pointer names in ABI order, number of strides)
OPS: dict[str, tuple[int, tuple[str, ...], int]] = {
    d["name"]: (i, tuple(d["pointers"].split(",")), d["n_strides"]) for i, d in enumerate(_C.ops())
}


def kernel_inventory() -> list[dict]:
    """One dict per compiled variant: op, dtype, head_dim (bucket), arch, flavor, block_m,
    block_n, num_warps, num_stages, shared_bytes, cubin_bytes."""
    return _C.inventory()


def built_archs() -> list[str]:
    return [f"sm_{a}" for a in _C.archs()]

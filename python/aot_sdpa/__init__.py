"""aot_sdpa: scaled-dot-product attention with explicit derivatives, as AOT-compiled Triton kernels.

Importing this package never imports Triton and never compiles anything: the kernels were
compiled when the wheel was built.
"""

from . import reference
from ._autograd import scaled_dot_product_attention
from ._native import CudaError, NoKernelError, built_archs, kernel_inventory
from ._ops import (
    hvp_fd_vjp,
    sdpa_bwd,
    sdpa_bwd_dk,
    sdpa_bwd_dq,
    sdpa_bwd_dv,
    sdpa_fwd_jvp,
    sdpa_jvp,
    triton_sdpa_fused,
)
from ._version import __version__

__all__ = [
    "CudaError",
    "NoKernelError",
    "__version__",
    "built_archs",
    "hvp_fd_vjp",
    "kernel_inventory",
    "reference",
    "scaled_dot_product_attention",
    "sdpa_bwd",
    "sdpa_bwd_dk",
    "sdpa_bwd_dq",
    "sdpa_bwd_dv",
    "sdpa_fwd_jvp",
    "sdpa_jvp",
    "triton_sdpa_fused",
]

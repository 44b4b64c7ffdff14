"""aot_sdpa: scaled-dot-product attention with explicit derivatives, as AOT-compiled Triton kernels.

Importing this package never imports Triton and never compiles anything: the kernels were
compiled when the wheel was built.
"""

from . import reference
from ._autograd import (
    hvp_fd_vjp,
    scaled_dot_product_attention,
    sdpa_bwd,
    sdpa_bwd_dk,
    sdpa_bwd_dq,
    sdpa_bwd_dv,
    sdpa_bwd_jvp,
    sdpa_fwd_jvp,
    sdpa_hvp,
    sdpa_jvp,
    triton_sdpa_fused,
)
from ._native import CudaError, NoKernelError, built_archs, kernel_inventory, warmup
from ._route import SdpaRoute, use_for_torch_sdpa
from ._version import __version__

__all__ = [
    "CudaError",
    "NoKernelError",
    "SdpaRoute",
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
    "sdpa_bwd_jvp",
    "sdpa_fwd_jvp",
    "sdpa_hvp",
    "sdpa_jvp",
    "triton_sdpa_fused",
    "use_for_torch_sdpa",
    "warmup",
]

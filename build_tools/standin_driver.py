"""A stand-in Triton driver so kernels compile on a machine with no GPU and no CUDA toolkit.

Triton 3.6 asks the active driver for the compile target (its AOT ``--target`` flag builds a
GPUTarget from strings and is broken), and the code it emits asks the driver for C type names.
This driver answers both and refuses everything that would need a device.
"""

from __future__ import annotations

from triton.backends.compiler import GPUTarget
from triton.backends.driver import GPUDriver
from triton.backends.nvidia.driver import ty_to_cpp


class StandinCudaDriver(GPUDriver):
    """Reports a fixed CUDA target; any attempt to touch a device raises."""

    def __init__(self, arch: int):
        self._target = GPUTarget("cuda", arch, 32)

    @staticmethod
    def is_active() -> bool:
        return False

    def get_current_target(self) -> GPUTarget:
        return self._target

    def map_python_to_cpp_type(self, ty: str) -> str:
        return ty_to_cpp(ty)

    def _no_device(self, *args, **kwargs):
        raise RuntimeError("build_tools: the stand-in driver has no device (compile only)")

    get_active_torch_device = _no_device
    get_device_interface = _no_device
    get_benchmarker = _no_device
    get_empty_cache_for_benchmark = _no_device
    clear_cache = _no_device
    get_current_device = _no_device
    set_current_device = _no_device
    get_current_stream = _no_device


def activate(arch: int) -> GPUTarget:
    """Make a stand-in for ``arch`` (e.g. 90) Triton's active driver; return its target."""
    import triton

    driver = StandinCudaDriver(arch)
    triton.runtime.driver.set_active(driver)
    return driver.get_current_target()

"""Header locations for the extension build: pybind11 and Triton's bundled cuda.h (no CUDA toolkit)."""

from pathlib import Path


def include_dirs() -> list[str]:
    import pybind11
    import triton

    cuda_include = Path(triton.__file__).parent / "backends" / "nvidia" / "include"
    if not (cuda_include / "cuda.h").exists():
        raise RuntimeError(f"Triton's bundled cuda.h not found under {cuda_include}")
    return [pybind11.get_include(), str(cuda_include)]

"""The launch ABI as the cubins and the generated launchers see it, for checks on a CPU.

A launcher hands cuLaunchKernel one pointer per kernel parameter; if its list and the
cubin's parameters disagree (a parameter Triton dropped as a constant, a reordered one, a
wrong width), the kernel reads garbage and nothing fails. The cubin records each parameter's
ordinal and size (EIATTR_KPARAM_INFO, printed by the cuobjdump that Triton bundles); the
generated source gives each launcher's list and the field types behind it.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import tempfile
from pathlib import Path

# the C types of the generated argument structs (build_tools/templates/op.c.in) -> bytes
C_SIZES = {"CUdeviceptr": 8, "int64_t": 8, "int32_t": 4, "float": 4}
SCRATCH = ("global_scratch", "profile_scratch")  # CUdeviceptr each, appended by every launcher


def cuobjdump() -> Path | None:
    """Triton's bundled cuobjdump (None when Triton is not installed)."""
    spec = importlib.util.find_spec("triton")
    if spec is None or not spec.submodule_search_locations:
        return None
    tool = Path(spec.submodule_search_locations[0]) / "backends" / "nvidia" / "bin" / "cuobjdump"
    return tool if tool.exists() else None


def _dump(cubin: bytes, tool: Path, flag: str) -> str:
    """cuobjdump's output for the cubin with `flag` (-elf, -sass)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([str(tool), flag, f.name], capture_output=True, text=True,
                              check=True).stdout


def cubin_param_sizes(cubin: bytes, tool: Path) -> list[int]:
    """The kernel's parameter sizes in bytes, by ordinal (the cubin holds one kernel)."""
    out = _dump(cubin, tool, "-elf")
    params = {int(o, 16): int(s, 16) for o, s in
              re.findall(r"Ordinal\s*:\s*(0x[0-9a-f]+)\s+Offset\s*:\s*0x[0-9a-f]+\s+"
                         r"Size\s*:\s*(0x[0-9a-f]+)", out)}
    if sorted(params) != list(range(len(params))):
        raise ValueError(f"cubin parameter ordinals are not 0..n-1: {sorted(params)}")
    return [params[i] for i in range(len(params))]


def cubin_sass(cubin: bytes, tool: Path) -> str:
    """The cubin's SASS, as cuobjdump -sass prints it."""
    return _dump(cubin, tool, "-sass")


def scalar_16bit_global_accesses(sass: str) -> int:
    """Global loads and stores of one 16-bit element (LDG/STG .U16/.S16): how a kernel that
    knows nothing of its operands' alignment moves fp16/bf16 data; vectorised code uses .128
    (or cp.async, LDGSTS) instead."""
    return len(re.findall(r"\b(?:LDG|STG)\.E\.[US]16\b", sass))


def mma_instructions(sass: str) -> int:
    """Tensor-core instructions (HMMA, sm_90's HGMMA) in the SASS: each sweep over key (or
    query) blocks compiles its products once, so this counts a kernel's sweeps."""
    return len(re.findall(r"\b(?:HMMA|HGMMA)\.", sass))


def launcher_param_sizes(source: str) -> dict[int, tuple[str, list[int]]]:
    """{variant index: (variant name, the sizes of the parameters its launcher passes)} from
    the generated aot_kernels.cpp."""
    fields = {}
    for body, op in re.findall(r"typedef struct \{\n(.*?)\n\} aot_(\w+)_args_t;", source,
                               re.S):
        fields[op] = {n: C_SIZES[t] for t, n in re.findall(r"^\s+(\w+) (\w+);$", body, re.M)}
    out = {}
    for i, name, op, plist in re.findall(
            r"/\* \[(\d+)\] (\w+):.*?aot_(\w+)_args_t a;.*?void\* params\[\] = \{(.*?)\};",
            source, re.S):
        sizes = []
        for p in (s.strip() for s in plist.split(",")):
            sizes.append(8 if p.lstrip("&") in SCRATCH else fields[op][p[len("&a."):]])
        out[int(i)] = (name, sizes)
    return out

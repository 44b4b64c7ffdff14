"""Call a kernel of kernels/ through Triton itself (JIT on a GPU, or the interpreter on the CPU)
with its arguments assembled by parameter name, exactly as the generated launchers and the
dispatcher do. For the interpreter tests and the block-config sweeps; never used at run time.
AOT_SDPA_KERNELS=<dir> reads the kernel sources from another directory (say an older tree's
kernels/, to A/B two versions of a kernel in one device session, one process each; the
variants and their configs still come from kernels/variants.toml).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from pathlib import Path

from build_tools.compile_variant import classify_params
from build_tools.variants import Spec, ptxas_options

KERNELS = Path(os.environ.get("AOT_SDPA_KERNELS")
               or Path(__file__).resolve().parent.parent / "kernels").resolve()
_modules: dict = {}


def kernel(spec: Spec, op: str):
    """The @triton.jit function of `op` (JIT or interpreted, as TRITON_INTERPRET says)."""
    source, name = spec.ops[op]["source"], spec.ops[op]["kernel"]
    if source not in _modules:
        if str(KERNELS) not in sys.path:
            sys.path.insert(0, str(KERNELS))
        m = importlib.util.spec_from_file_location("jit_" + Path(source).stem, KERNELS / source)
        mod = importlib.util.module_from_spec(m)
        m.loader.exec_module(mod)
        _modules[source] = mod
    fn = getattr(_modules[source], name)
    # as compiled ahead of time: the sizes are plain i32, never the JIT's constant 1 (Z = 1
    # would reach `Z.to(...)` as a Python int and fail to compile)
    for p in getattr(fn, "params", ()):
        if p.name in spec.abi["i32_scalars"]:
            p.do_not_specialize = True
    return fn


def config_knobs(spec: Spec, v) -> dict:
    """The constexprs variant `v`'s config sets over its op's (its tile's knobs, e.g. TWO_PASS)."""
    of_op = spec.ops[v.op].get("constexprs", {})
    return {k: c for k, c in v.constexprs if of_op.get(k) != c}


def variant(spec: Spec, op: str, dtype: str, D: int, masked: bool = False):
    """The variant whose blocks, knobs and precision `call` runs: the general (masked: the
    masked) sm_90 flavour of the smallest head-dim bucket that holds D, as dispatched (None:
    there is none)."""
    flavor = "masked" if masked else "general"
    return min((v for v in spec.variants if v.op == op and v.dtype == dtype and v.head_dim >= D
                and v.arch == 90 and v.flavor == flavor), key=lambda v: v.head_dim, default=None)


def call(spec: Spec, op: str, dtype: str, tensors: dict, sizes: tuple, scale: float, *,
         has_tdo: int = 0, causal: tuple[int, int] | None = None, bias=None,
         blocks: dict | None = None, masked_level: int = 2,
         num_warps: int | None = None, num_stages: int | None = None,
         input_precision: str | None = None, maxnreg: int | None = None,
         min_blocks_per_sm: int | None = None, tails: dict | None = None,
         knobs: dict | None = None):
    """Launch `op` on `tensors` (pointer name -> tensor or None) with the general flavour's
    constexprs, blocks, warps, stages, register cap and ptxas --minnctapersm (or the given
    blocks/warps/stages/cap/min_blocks_per_sm);
    returns Triton's compiled kernel (its n_regs, n_spills), which the AOT launcher does not.
    `causal`: (Q_LEN, DIAG) as aot_sdpa._ops._causal gives them, None for no causal mask;
    `bias`: the attention mask as aot_sdpa._ops._bias_view gives it (kernels with a Bias);
    `masked_level`: the kernels' MASKED with a mask (Variant.masked: 2, the hinted flavours'
    code, with the key-padding sweeps; 1, one masked sweep for any mask); `tails`: narrow
    ragged tails (variants.TAIL_OF) added to the blocks, those of the kernel's parameters;
    `knobs`: other constexpr parameters of the kernel (e.g. TWO_PASS), set over the op's. The
    variant's own config knobs (config_knobs) come only with its own tile (blocks None): given
    other blocks, a caller passes the knobs it means.
    """
    import torch
    import triton

    Z, H, T, M, D = sizes
    v = variant(spec, op, dtype, D, bias is not None)
    if v is None:
        raise ValueError(f"no sm_90 {op} {dtype} variant for D = {D}"
                         f"{' with a mask' if bias is not None else ''}")
    bucket = v.head_dim
    fn = kernel(spec, op)
    params = inspect.signature(getattr(fn, "fn", fn)).parameters.values()
    every = [p.name for p in params]
    runtime = [p.name for p in params if "constexpr" not in str(p.annotation)]
    ints = dict(zip(spec.abi["i32_scalars"],
                    (*sizes, has_tdo, *(causal or (T, M - 1)), int(bias is not None),
                     int(tensors.get("O") is not None))))
    if "Bias" in runtime:
        tensors = {**tensors, "Bias": bias}
    device = next(t.device for t in tensors.values() if t is not None)
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    args, axis = [], {}
    for p in classify_params(runtime, spec.abi, dtype, "general"):
        if p["kind"] == "ptr":
            t = tensors[p["name"]]
            if t is None:  # a pointer the kernel never reads, of the parameter's type
                t = torch.zeros(1, dtype=torch_dtype[p["ty"][1:]], device=device)
            args.append(t)
        elif p["kind"] == "stride":
            t = tensors[p["owner"]]
            i = axis.get(p["owner"], 0)
            axis[p["owner"]] = i + 1
            args.append(0 if t is None else t.stride(i % 3))
        elif p["kind"] == "size":
            args.append(ints[p["name"]])
        else:
            args.append(scale)
    block = {**(dict(v.blocks) if blocks is None else blocks), **(tails or {})}
    extent, step = (T, block["BLOCK_M"]) if v.grid == "T" else (M, block["BLOCK_N"])
    gy = min(Z * H, 65535)
    grid = (triton.cdiv(extent, step), gy, triton.cdiv(Z * H, gy))
    own = dict(v.constexprs) if blocks is None else dict(spec.ops[op].get("constexprs", {}))
    constexprs = {**own, **block, "HEAD_DIM": bucket, "EVEN_D": D == bucket,
                  "MASKED": 0 if bias is None else masked_level,
                  "INPUT_PRECISION": input_precision or v.input_precision, **(knobs or {})}
    constexprs = {k: val for k, val in constexprs.items() if k in every}
    if num_warps is None:  # the variant's own launch options, as its cubin was compiled
        launch = {"num_warps": v.num_warps, "num_stages": v.num_stages}
        if v.maxnreg is not None:
            launch["maxnreg"] = v.maxnreg
        min_blocks_per_sm = v.min_blocks_per_sm
    else:
        launch = {"num_warps": num_warps, "num_stages": num_stages}
        if maxnreg is not None:
            launch["maxnreg"] = maxnreg
    launch.update(ptxas_options(min_blocks_per_sm))  # as compile_variant passes it
    return fn[grid](*args, **constexprs, **launch)

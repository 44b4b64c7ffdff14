"""Compile one variant to a cubin with Triton's AOT path (ASTSource -> triton.compile).

This is the same path as ``triton.tools.compile`` (signature with divisibility hints,
constexprs fixed, scratch checks), driven from Python so we can (a) target an explicit arch
through a stand-in driver on a GPU-less machine and (b) render our own launcher instead of
Triton's stock C template. Results are cached on disk, keyed by kernel source, variant,
Triton version and arch.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import io
import json
import re
import sys
from pathlib import Path

from build_tools.variants import (
    DTYPE_TRITON,
    EVEN_D_FLAVORS,
    FAST_FLAVORS,
    MASKED_FLAVORS,
    STRIDE_DIVISIBILITY,
    Variant,
    ptxas_options,
)

# Shared memory a block may opt into, per compute capability (CUDA programming guide, "Compute
# Capabilities" table). A cubin must fit the smallest limit among the devices it serves.
MAX_SHARED_BYTES = {80: 163 * 1024, 86: 99 * 1024, 87: 163 * 1024, 89: 99 * 1024,
                    90: 227 * 1024}


def shared_limit(serves) -> int:
    unknown = [cc for cc in serves if cc not in MAX_SHARED_BYTES]
    if unknown:
        raise ValueError(f"no shared-memory limit known for compute capabilities {unknown}")
    return min(MAX_SHARED_BYTES[cc] for cc in serves)


def _is_pointer(name: str, abi: dict) -> bool:
    return not (name in abi["i32_scalars"] or name in abi["fp32_scalars"]
                or name.startswith("stride_"))


def stride_owner(name: str, pointers: list[str], abi: dict) -> str:
    """The pointer whose tensor supplies stride `name` (stride_<prefix><axis>)."""
    prefix = name[len("stride_"):-1]
    owner = abi.get("stride_owners", {}).get(prefix)
    if owner is None:
        owner = next((p for p in pointers if p.lower() == prefix), None)
    if owner is None or owner not in pointers:
        raise ValueError(f"stride parameter {name!r}: no pointer parameter owns prefix {prefix!r} "
                         f"(pointers: {pointers}; see [abi] stride_owners)")
    return owner


def constant(p: dict) -> int | None:
    """The value a parameter is compiled as ([abi] unit_strides: 1, zero_strides: 0), or None
    for a kernel parameter."""
    return 1 if p.get("unit") else 0 if p.get("zero") else None


def is_constant(p: dict) -> bool:
    return constant(p) is not None


def wide_rows(abi: dict, op: str, dtype: str, head_dim: int) -> bool:
    """Whether [abi] wide_row_strides keeps this variant's row strides int64 (no narrowing)."""
    return any(op in w.get("ops", [op]) and dtype in w.get("dtypes", [dtype])
               and head_dim in w.get("head_dims", [head_dim])
               for w in abi.get("wide_row_strides", ()))


def classify_params(param_names: list[str], abi: dict, dtype: str, flavor: str,
                    narrow: bool = True) -> list[dict]:
    """Return, for each non-constexpr kernel parameter, its Triton type and C role.

    Strides come in (z, h, row) triples and carry the name of the pointer that owns them.
    """
    fast = flavor in FAST_FLAVORS
    div = STRIDE_DIVISIBILITY.get(flavor, 16)  # of hinted strides (and, ragged, of D)
    pointers = [n for n in param_names if _is_pointer(n, abi)]
    out = []
    for name in param_names:
        if name in abi["i32_scalars"]:
            # ragged: the head dim a multiple of 8 keeps the tail mask 8-wide (vector loads)
            hint = fast and name == "D" and flavor not in EVEN_D_FLAVORS
            out.append({"name": name, "ty": "i32", "kind": "size", "hint": hint, "div": div})
        elif name in abi["fp32_scalars"]:
            out.append({"name": name, "ty": "fp32", "kind": "scale", "hint": False})
        elif name.startswith("stride_"):
            prefix = name[len("stride_"):-1]
            hint = fast and prefix not in abi["unaligned_stride_prefixes"]
            # [abi] unit_strides: in the fast flavours compiled as the constant 1 (and the
            # dispatcher's fast condition requires it), as Triton's JIT specialises an int of 1
            unit = fast and name in abi.get("unit_strides", ())
            # [abi] zero_strides: in padding_fast compiled as the constant 0 (the mask's row
            # stride: a key-padding mask only, so the dense mask's code is compiled out)
            zero = flavor == "padding_fast" and name in abi.get("zero_strides", ())
            out.append({"name": name, "ty": "i64", "kind": "stride",
                        "hint": hint and not unit and not zero, "div": div, "unit": unit,
                        "zero": zero, "owner": stride_owner(name, pointers, abi)})
        elif name in abi["fp32_pointers"]:
            out.append({"name": name, "ty": "*fp32", "kind": "ptr", "hint": False})
        elif name in abi.get("fp16_pointers", ()):
            # our own scratch (torch allocations: 16-byte aligned), hinted as the data pointers
            # are: unhinted, the split rows' loads did not vectorise (bwd_fused)
            out.append({"name": name, "ty": "*fp16", "kind": "ptr", "hint": fast, "div": 16})
        else:
            # data pointers: 16-byte aligned (the divisibility of an address is in bytes)
            out.append({"name": name, "ty": "*" + DTYPE_TRITON[dtype], "kind": "ptr", "hint": fast,
                        "div": 16})
    strides = [p for p in out if p["kind"] == "stride"]
    for i in range(0, len(strides), 3):
        triple = strides[i:i + 3]
        if len(triple) != 3 or len({p["owner"] for p in triple}) != 1:
            raise ValueError(f"strides must come in (z, h, row) triples of one tensor, got "
                             f"{[p['name'] for p in triple]}")
        # [abi] narrow_row_strides: a data tensor's row stride is int32 in the fast flavours
        # (the dispatcher's fast condition requires every row offset to fit), as Triton's JIT
        # types an int below 2**31; the batch and head strides stay int64
        row = triple[2]
        if fast and narrow and abi.get("narrow_row_strides") and row["hint"]:
            row.update(ty="i32", narrow=True)
    return out


# [abi] keys of the fast flavours
FAST_ONLY_ABI = ("unit_strides", "narrow_row_strides", "zero_strides", "wide_row_strides")


def code_only(text: str) -> str:
    """A kernel source as far as its cubins depend on it: the syntax tree, without docstrings
    (comments and layout never reach the tree; line info is off, so line numbers do not reach
    the cubin either). An edit of comments or docstrings alone keeps every cache key. Written
    back as source (ast.unparse), not as ast.dump, whose text changes with the Python version
    (3.12 added FunctionDef.type_params): a cache filled under one Python hits under another
    (the device's 3.12 build re-compiled all 834 variants of a carried 3.11 cache)."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def kernel_modules(kernels_dir: Path, source: str) -> list[str]:
    """The files of kernels_dir that a kernel source's cubins depend on: itself, _common.py and
    every module of the folder it imports, transitively (``from _split import ...``); modules
    from elsewhere (triton) are not in the folder and not followed."""
    seen: set[str] = set()
    todo = [source, "_common.py"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse((kernels_dir / name).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                mods = [node.module]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            todo += [f"{m}.py" for m in mods if (kernels_dir / f"{m}.py").is_file()]
    return sorted(seen)


def source_digest(kernels_dir: Path, source: str) -> str:
    h = hashlib.sha256()
    for name in kernel_modules(kernels_dir, source):
        h.update(name.encode())
        h.update(code_only((kernels_dir / name).read_text()).encode())
    return h.hexdigest()


def cache_key(kernels_dir: Path, v: Variant, abi: dict, triton_version: str) -> str:
    h = hashlib.sha256()
    h.update(source_digest(kernels_dir, v.source).encode())
    h.update(json.dumps(v.as_json(), sort_keys=True).encode())
    # [abi] unit_strides and narrow_row_strides only change the fast flavours' cubins: only
    # their keys include them
    h.update(json.dumps({k: a for k, a in abi.items() if k not in FAST_ONLY_ABI},
                        sort_keys=True).encode())
    if v.flavor in FAST_FLAVORS and abi.get("unit_strides"):
        h.update(json.dumps(sorted(abi["unit_strides"])).encode())
    if v.flavor in FAST_FLAVORS and abi.get("narrow_row_strides"):
        h.update(b"narrow_row_strides")
        if wide_rows(abi, v.op, v.dtype, v.head_dim):
            h.update(b"wide_row_strides")
    if v.flavor == "padding_fast" and abi.get("zero_strides"):
        h.update(json.dumps({"zero": sorted(abi["zero_strides"])}).encode())
    h.update(f"triton={triton_version};arch={v.arch};lineinfo=off".encode())
    return h.hexdigest()[:24]


def ptxas_usage(log: str) -> dict:
    """Registers per thread and stack bytes per thread from ptxas -v's report ({} without one)."""
    regs = re.search(r"Used (\d+) registers", log)
    stack = re.search(r"(\d+) bytes stack frame", log)
    return {"registers": int(regs[1]), "stack_bytes": int(stack[1]) if stack else 0} if regs else {}


def occupancy_fallback(usage: dict) -> bool:
    """Whether ptxas planned the kernel for full occupancy and spilled it: <= 32 registers with
    >= 1 KB of stack (ptxas 12.8 does this to some kernels it cannot fit in 255 registers; 3-13
    KB of local-memory traffic per thread, the fp32 D=128 HVP ~30x slower on the H200). The
    variant's [ops.*] min_blocks_per_sm entry (ptxas --minnctapersm 1) avoids it."""
    return bool(usage) and usage["registers"] <= 32 and usage["stack_bytes"] >= 1024


def _load_kernel(kernels_dir: Path, source: str, kernel: str):
    if str(kernels_dir) not in sys.path:
        sys.path.insert(0, str(kernels_dir))
    mod_name = "aot_sdpa_kernels_" + Path(source).stem
    mod = sys.modules.get(mod_name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(mod_name, kernels_dir / source)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod
        spec.loader.exec_module(mod)
    return getattr(mod, kernel)


def compile_variant(kernels_dir: str, v: Variant, abi: dict, out_dir: str) -> dict:
    """Compile ``v`` into ``out_dir`` (kernel.cubin + meta.json); return the metadata."""
    import triton

    from build_tools.standin_driver import activate

    kernels_dir = Path(kernels_dir)
    out = Path(out_dir)
    target = activate(v.arch)
    fn = _load_kernel(kernels_dir, v.source, v.kernel)
    constexprs = dict(v.blocks)
    constexprs.update(dict(v.constexprs))
    constexprs["HEAD_DIM"] = v.head_dim
    constexprs["EVEN_D"] = v.flavor in EVEN_D_FLAVORS
    constexprs["MASKED"] = v.masked
    constexprs["INPUT_PRECISION"] = v.input_precision
    names = [p.name for p in fn.params]
    if v.flavor in MASKED_FLAVORS and "MASKED" not in names:
        raise ValueError(f"{v.name}: the masked flavour needs a MASKED parameter in {v.kernel}")
    unknown = [n for n in list(dict(v.blocks)) + list(dict(v.constexprs)) if n not in names]
    if unknown:
        raise ValueError(f"{v.name}: variants.toml sets {unknown}, not parameters of {v.kernel}")
    # the precision switch only exists in kernels that multiply
    constexprs = {n: c for n, c in constexprs.items() if n in names}
    # options a kernel defaults (its narrow tails: TAIL_N, TAIL_M 0, off) where a config is silent
    constexprs.update({p.name: p.default for p in fn.params
                       if p.is_constexpr and p.has_default and p.name not in constexprs})
    missing = [p.name for p in fn.params if p.is_constexpr and p.name not in constexprs]
    if missing:
        raise ValueError(f"{v.name}: constexpr parameters without a value: {missing}")
    runtime = [p.name for p in fn.params if not p.is_constexpr]
    params = classify_params(runtime, abi, v.dtype, v.flavor,
                             narrow=not wide_rows(abi, v.op, v.dtype, v.head_dim))
    signature = {n: "constexpr" for n in names}
    signature.update({p["name"]: p["ty"] for p in params if not is_constant(p)})
    constexprs.update({p["name"]: constant(p) for p in params if is_constant(p)})  # no parameter
    attrs = {(names.index(p["name"]),): [["tt.divisibility", p["div"]]] for p in params
             if p["hint"]}
    src = triton.compiler.ASTSource(fn=fn, constexprs=constexprs, signature=signature,
                                    attrs=attrs)
    backend = triton.compiler.make_backend(target)
    opts = {"num_warps": v.num_warps, "num_stages": v.num_stages}
    if v.maxnreg is not None:  # a register cap, e.g. to keep two 8-warp blocks per SM
        opts["maxnreg"] = v.maxnreg
    opts.update(ptxas_options(v.min_blocks_per_sm))  # kernels/variants.toml: min_blocks_per_sm
    options = backend.parse_options(opts)
    report = io.StringIO()
    # Triton's knobs for this compile only (scoped: a caller's later JIT compiles keep theirs)
    with triton.knobs.compilation.scope(), triton.knobs.nvidia.scope(), \
            contextlib.redirect_stdout(report):
        # No line info in shipped cubins: it triples their size (145 KB -> 45 KB, fwd fp16 d64).
        triton.knobs.compilation.disable_line_info = True
        # ptxas runs every time (our cache is the build's cache) and prints its -v report,
        # read here for the registers and stack each cubin uses
        triton.knobs.compilation.always_compile = True
        triton.knobs.nvidia.dump_ptxas_log = True
        cc = triton.compile(src, target=target, options=options.__dict__)
    usage = ptxas_usage(report.getvalue())
    if occupancy_fallback(usage):
        raise RuntimeError(f"{v.name}: ptxas gave it {usage['registers']} registers and "
                           f"{usage['stack_bytes']} bytes of stack per thread (its full-occupancy "
                           f"fallback); add it to [ops.{v.op}] min_blocks_per_sm in "
                           "kernels/variants.toml")
    md = cc.metadata
    # Our launcher passes null scratch pointers: a kernel that needs scratch cannot ship.
    if getattr(md, "global_scratch_size", 0) > 0 or getattr(md, "profile_scratch_size", 0) > 0:
        raise RuntimeError(f"{v.name}: kernel needs global/profile scratch memory "
                           f"({md.global_scratch_size}/{md.profile_scratch_size} bytes); "
                           "AOT launchers do not provide it")
    limit = shared_limit(v.serves)
    if md.shared > limit:
        raise RuntimeError(f"{v.name}: needs {md.shared} bytes of shared memory; the devices it "
                           f"serves (compute capabilities {list(v.serves)}) allow {limit}")
    cubin = cc.asm["cubin"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernel.cubin").write_bytes(cubin)
    meta = {
        "variant": v.as_json(), "kernel_name": md.name, "shared": int(md.shared),
        "num_warps": int(md.num_warps), "num_stages": int(md.num_stages),
        "cubin_bytes": len(cubin), "params": params, "triton_version": triton.__version__,
        **usage,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return meta

"""Render the generated C sources (launchers + dispatch table) from build_tools/templates/."""

from __future__ import annotations

from pathlib import Path
from string import Template

from build_tools.compile_variant import classify_params, is_constant
from build_tools.variants import cubin_key

TEMPLATES = Path(__file__).parent / "templates"
DTYPE_CODE = {"fp16": 0, "bf16": 1, "fp32": 2, "tf32": 3}  # python/aot_sdpa/_checks.py
FLAVOR_CODE = {"general": 0, "fast": 1, "masked": 2, "masked_fast": 3,
               "ragged": 4, "padding_fast": 5}  # aot_runtime.h aot_variant.flavor
C_TYPE = {"ptr": "CUdeviceptr", "stride": "int64_t", "size": "int32_t", "scale": "float"}


def _tpl(name: str) -> Template:
    return Template((TEMPLATES / name).read_text())


def _sources(params: list[dict], abi: dict) -> list[str]:
    """The C expression each parameter is filled from (aot_call_t c)."""
    out, n = [], {"ptr": 0, "stride": 0}
    for p in params:
        if p["kind"] in n:
            out.append(f"c->{p['kind']}s[{n[p['kind']]}]")
            n[p["kind"]] += 1
        elif p["kind"] == "size":
            out.append(f"c->ints[{abi['i32_scalars'].index(p['name'])}]")
        else:
            out.append("c->scale")
    return out


def _conditions(params: list[dict], abi: dict) -> str:
    """The C condition a call must meet to run a hinted flavour classified as `params`:
    every hint holds (pointers 16-byte aligned, strides and D divisible as promised), unit
    strides are 1 and narrow row strides fit int32 (padding_fast's zero strides: the
    dispatcher checks the mask's row stride itself)."""
    terms = []
    t, m = (abi["i32_scalars"].index(n) for n in ("T", "M"))
    for p, src in zip(params, _sources(params, abi)):
        if p["hint"]:
            terms.append(f"{src} % {p['div']}{'u' if p['kind'] == 'ptr' else ''} == 0")
        if p.get("unit"):  # compiled as the constant 1
            terms.append(f"{src} == 1")
        if p.get("narrow"):  # int32: every row offset must fit
            terms.append(f"aot_rows_fit_i32({src}, c->ints[{t}], c->ints[{m}])")
    return " &&\n           ".join(terms) or "1"


def _op_block(op_index: int, op: str, table: dict, params: list[dict], ragged: list[dict],
              abi: dict) -> dict:
    """`params`: the op's fast classification (its args struct: every parameter, and an int32
    copy of each narrow row stride); `ragged`: its ragged classification (the condition)."""
    fields, fills = [], []
    for p, src in zip(params, _sources(params, abi)):
        fields.append(f"    {C_TYPE[p['kind']]} {p['name']};")
        if p.get("narrow"):  # the fast flavours' int32 copy
            fields.append(f"    int32_t {p['name']}_i32;")
            fills.append(f"    a->{p['name']}_i32 = (int32_t){src};")
        fills.append(f"    a->{p['name']} = {src};")
    ptr_names = ",".join(p["name"] for p in params if p["kind"] == "ptr")
    # one owner per (z, h, row) stride triple: the pointer whose tensor supplies the strides
    owners = ",".join([p["owner"] for p in params if p["kind"] == "stride"][::3])
    code = _tpl("op.c.in").substitute(
        op=op, kernel=table["kernel"], fields="\n".join(fields), fills="\n".join(fills),
        fast_expr=_conditions(params, abi), ragged_expr=_conditions(ragged, abi),
    )
    n_ptr = sum(p["kind"] == "ptr" for p in params)
    n_stride = sum(p["kind"] == "stride" for p in params)
    entry = (f'    {{"{op}", \'{table["grid"]}\', {n_ptr}, {n_stride}, "{ptr_names}", "{owners}", '
             f"aot_{op}_fast_ok, aot_{op}_ragged_ok}},  /* {op_index} */")
    return {"code": code, "entry": entry, "params": params}


def _embed_path(path: Path) -> str:
    path = str(Path(path).resolve())
    if any(ch in path for ch in '"\\\n'):
        raise ValueError(f"file path cannot be embedded with .incbin: {path!r}")
    return path


def render(spec, metas: list[dict], images: list[dict], placement: list[tuple]) -> str:
    """Return the generated C source for all compiled variants; `images` and `placement` are
    build_tools.pack.pack_images' result (where each variant's cubin lies)."""
    op_names = list(spec.ops)
    op_blocks = {}
    for meta in metas:
        op = meta["variant"]["op"]
        if op not in op_blocks:
            # the hinted flavours' classifications carry the conditions the dispatcher checks
            names, dt = [p["name"] for p in meta["params"]], meta["variant"]["dtype"]
            op_blocks[op] = _op_block(op_names.index(op), op, spec.ops[op],
                                      classify_params(names, spec.abi, dt, "fast"),
                                      classify_params(names, spec.abi, dt, "ragged"), spec.abi)
    ops_used = [op for op in op_names if op in op_blocks]
    variant_code, table = [], []
    tpl = _tpl("variant.c.in")
    # each meta's Variant (by cubin_key, unique: variants.load): dispatch only, not in the
    # metas, are each tier's tail_len, causal_len, grid_len and narrow (and so its name,
    # "_t<max_len>n<narrow>")
    of_key = {cubin_key(v.as_json()): v for v in spec.variants}
    for i, (meta, (image, offset, size, _)) in enumerate(zip(metas, placement)):
        v = meta["variant"]
        var = of_key[cubin_key(v)]
        variant_code.append(tpl.substitute(
            i=i, op=v["op"], name=var.name,
            image=image, image_name=images[image]["name"], offset=offset, size=size,
            kernel_name=meta["kernel_name"], shared=meta["shared"],
            num_warps=meta["num_warps"],
            # the parameters this variant was compiled with (its own classification: a unit
            # or zero stride is a constant of a hinted flavour's cubin, not a parameter; a
            # narrow row stride is passed as its int32 copy)
            params=", ".join(f"&a.{p['name']}{'_i32' if p.get('narrow') else ''}"
                             for p in meta["params"] if not is_constant(p)),
        ))
        blocks = v["blocks"]
        tail, causal, grid, narrow = (var.tail_len or 0, var.causal_len or 0, var.grid_len or 0,
                                      var.narrow or 0)
        table.append(
            f'    {{{ops_used.index(v["op"])}, "{v["dtype"]}", {DTYPE_CODE[v["dtype"]]}, '
            f'{v["head_dim"]}, {v["arch"]}, {FLAVOR_CODE[v["flavor"]]}, {v.get("max_len") or 0}, '
            f'{tail}, {causal}, {grid}, {narrow}, '
            f'{blocks.get("BLOCK_M", 0)}, {blocks.get("BLOCK_N", 0)}, {meta["num_warps"]}, '
            f'{meta["num_stages"]}, {meta["shared"]}u, {meta["cubin_bytes"]}u, '
            f'"{v["input_precision"]}", aot_launch_{i}, &aot_kernel_{i}}},')
    serves = [f"    {{{a}, {cc}}}," for a in spec.archs for cc in spec.serves[a]]
    packed = [f'AOT_INCBIN(aot_packed_{g}, "{_embed_path(im["path"])}")' for g, im in enumerate(images)]
    image_table = [f'    {{"{im["name"]}", aot_packed_{g}, {im["packed_bytes"]}u, {im["raw_bytes"]}u, '
                   f'nullptr}},' for g, im in enumerate(images)]
    source = _tpl("aot_kernels.c.in").substitute(
        packed="\n".join(packed), image_table="\n".join(image_table),
        ops="\n".join(op_blocks[op]["code"] for op in ops_used),
        variants="\n".join(variant_code),
        op_table="\n".join(op_blocks[op]["entry"] for op in ops_used),
        variant_table="\n".join(table),
        archs=", ".join(str(a) for a in spec.archs),
        n_archs=len(spec.archs),
        serves="\n".join(serves),
        int_names=", ".join(f'"{n}"' for n in spec.abi["i32_scalars"]),
    )
    return source

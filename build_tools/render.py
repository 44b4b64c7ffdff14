"""Render the generated C sources (launchers + dispatch table) from build_tools/templates/."""

from __future__ import annotations

from pathlib import Path
from string import Template

from build_tools.compile_variant import classify_params

TEMPLATES = Path(__file__).parent / "templates"
DTYPE_CODE = {"fp16": 0, "bf16": 1, "fp32": 2, "tf32": 3}  # python/aot_sdpa/_checks.py
FLAVOR_CODE = {"general": 0, "fast": 1, "masked": 2, "masked_fast": 3}  # aot_runtime.h aot_variant.flavor
C_TYPE = {"ptr": "CUdeviceptr", "stride": "int64_t", "size": "int32_t", "scale": "float"}


def _tpl(name: str) -> Template:
    return Template((TEMPLATES / name).read_text())


def _op_block(op_index: int, op: str, table: dict, params: list[dict], abi: dict) -> dict:
    fields, fills, fast_terms = [], [], []
    n_ptr = n_stride = 0
    for p in params:
        fields.append(f"    {C_TYPE[p['kind']]} {p['name']};")
        if p["kind"] == "ptr":
            src = f"c->ptrs[{n_ptr}]"
            if p["hint"]:
                fast_terms.append(f"{src} % 16u == 0")
            n_ptr += 1
        elif p["kind"] == "stride":
            src = f"c->strides[{n_stride}]"
            if p["hint"]:
                fast_terms.append(f"{src} % 16 == 0")
            if p.get("unit"):  # compiled as the constant 1 in the fast flavours
                fast_terms.append(f"{src} == 1")
            if p.get("narrow"):  # int32 in the fast flavours: every row offset must fit
                t, m = (abi["i32_scalars"].index(n) for n in ("T", "M"))
                fast_terms.append(f"aot_rows_fit_i32({src}, c->ints[{t}], c->ints[{m}])")
                fields.append(f"    int32_t {p['name']}_i32;")
                fills.append(f"    a->{p['name']}_i32 = (int32_t){src};")
            n_stride += 1
        elif p["kind"] == "size":
            src = f"c->ints[{abi['i32_scalars'].index(p['name'])}]"
        else:
            src = "c->scale"
        fills.append(f"    a->{p['name']} = {src};")
    ptr_names = ",".join(p["name"] for p in params if p["kind"] == "ptr")
    # one owner per (z, h, row) stride triple: the pointer whose tensor supplies the strides
    owners = ",".join([p["owner"] for p in params if p["kind"] == "stride"][::3])
    code = _tpl("op.c.in").substitute(
        op=op, kernel=table["kernel"], fields="\n".join(fields), fills="\n".join(fills),
        fast_expr=" &&\n           ".join(fast_terms) or "1",
    )
    entry = (f'    {{"{op}", \'{table["grid"]}\', {n_ptr}, {n_stride}, "{ptr_names}", "{owners}", '
             f"aot_{op}_fast_ok}},  /* {op_index} */")
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
            # the fast flavour's classification carries the alignment hints the dispatcher checks
            params = classify_params([p["name"] for p in meta["params"]], spec.abi,
                                     meta["variant"]["dtype"], "fast")
            op_blocks[op] = _op_block(op_names.index(op), op, spec.ops[op], params, spec.abi)
    ops_used = [op for op in op_names if op in op_blocks]
    variant_code, table = [], []
    tpl = _tpl("variant.c.in")
    for i, (meta, (image, offset, size, _)) in enumerate(zip(metas, placement)):
        v = meta["variant"]
        variant_code.append(tpl.substitute(
            i=i, op=v["op"], name=f"{v['op']}_{v['dtype']}_d{v['head_dim']}_{v['flavor']}_sm{v['arch']}",
            image=image, image_name=images[image]["name"], offset=offset, size=size,
            kernel_name=meta["kernel_name"], shared=meta["shared"],
            num_warps=meta["num_warps"],
            # the parameters this variant was compiled with (its own classification: a unit
            # stride is a constant of a fast flavour's cubin, not a parameter; a narrow row
            # stride is passed as its int32 copy)
            params=", ".join(f"&a.{p['name']}{'_i32' if p.get('narrow') else ''}"
                             for p in meta["params"] if not p.get("unit")),
        ))
        blocks = v["blocks"]
        table.append(
            f'    {{{ops_used.index(v["op"])}, "{v["dtype"]}", {DTYPE_CODE[v["dtype"]]}, '
            f'{v["head_dim"]}, {v["arch"]}, {FLAVOR_CODE[v["flavor"]]}, '
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

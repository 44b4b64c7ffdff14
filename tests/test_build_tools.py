"""Build tools (need Triton, which the test extras install): variant expansion, cache key,
parameter classification and stride owners, shared-memory limits per served arch, scratch
rejection, rendered launchers."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

import aot_sdpa

triton = pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from build_tools import variants as variants_mod  # noqa: E402
from build_tools.compile_variant import (  # noqa: E402
    cache_key,
    classify_params,
    code_only,
    constant,
    occupancy_fallback,
    ptxas_usage,
    wide_rows,
)


def _spec():
    return variants_mod.load(ROOT / "kernels" / "variants.toml")


def test_variants_expand_to_the_inventory_count():
    assert len(_spec().variants) == len(aot_sdpa.kernel_inventory())


def test_cache_key_tracks_source_variant_and_version(tmp_path):
    spec = _spec()
    v = spec.variants[0]
    kdir = tmp_path / "kernels"
    kdir.mkdir()
    for f in (ROOT / "kernels").glob("*.py"):
        (kdir / f.name).write_text(f.read_text())
    base = cache_key(kdir, v, spec.abi, "3.6.0")
    assert base == cache_key(kdir, v, spec.abi, "3.6.0")
    assert base != cache_key(kdir, v, spec.abi, "3.5.0")
    assert base != cache_key(kdir, spec.variants[1], spec.abi, "3.6.0")
    # comments, blank lines and docstrings do not reach the cubin: the key stays
    src = (kdir / v.source).read_text()
    first_doc = src.index('"""', src.index("@triton.jit"))
    (kdir / v.source).write_text(src[:first_doc + 3] + "Reworded. " + src[first_doc + 3:]
                                 + "\n\n# a comment\n")
    assert base == cache_key(kdir, v, spec.abi, "3.6.0")
    (kdir / "_common.py").write_text("# a comment\n" + (kdir / "_common.py").read_text())
    assert base == cache_key(kdir, v, spec.abi, "3.6.0")
    # code does
    (kdir / v.source).write_text(src + "\nX = 1\n")
    assert base != cache_key(kdir, v, spec.abi, "3.6.0")
    (kdir / v.source).write_text(src)
    (kdir / "_common.py").write_text((kdir / "_common.py").read_text() + "\nX = 1\n")
    assert base != cache_key(kdir, v, spec.abi, "3.6.0")


def test_cache_key_follows_the_kernel_modules_a_source_imports(tmp_path):
    """A helper module of kernels/ that an op's source imports (sdpa_fwd.py and sdpa_bwd.py:
    _split.py) is part of that op's key; an op that does not import it keeps its key when it
    changes (the JVP's cubins do not depend on _split.py)."""
    from build_tools.compile_variant import kernel_modules

    spec = _spec()
    kdir = tmp_path / "kernels"
    kdir.mkdir()
    for f in (ROOT / "kernels").glob("*.py"):
        (kdir / f.name).write_text(f.read_text())
    assert kernel_modules(kdir, "sdpa_bwd.py") == ["_common.py", "_split.py", "sdpa_bwd.py"]
    assert kernel_modules(kdir, "sdpa_jvp.py") == ["_common.py", "sdpa_jvp.py"]
    fwd = next(v for v in spec.variants if v.source == "sdpa_fwd.py")
    jvp = next(v for v in spec.variants if v.source == "sdpa_jvp.py")
    before = [cache_key(kdir, v, spec.abi, "3.6.0") for v in (fwd, jvp)]
    (kdir / "_split.py").write_text((kdir / "_split.py").read_text() + "\nX = 1\n")
    after = [cache_key(kdir, v, spec.abi, "3.6.0") for v in (fwd, jvp)]
    assert after[0] != before[0] and after[1] == before[1]


def test_cache_key_text_is_python_source_not_a_tree_dump():
    """The hashed text is the docstring-free source (ast.unparse), a fixed point of itself,
    with no node field names: ast.dump's text gains fields with new Python versions (3.12:
    FunctionDef.type_params), which changed every key between this machine's 3.11 and the
    device's 3.12, and a carried cache re-compiled everything there."""
    import ast

    for f in sorted((ROOT / "kernels").glob("*.py")):
        text = code_only(f.read_text())
        compile(text, f.name, "exec")  # plain source
        assert code_only(text) == text, f.name
        assert "type_params" not in text and "FunctionDef(" not in text, f.name
        for node in ast.walk(ast.parse(text)):  # no docstrings left
            if isinstance(node, (ast.Module, ast.FunctionDef)) and node.body:
                first = node.body[0]
                assert not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                            and isinstance(first.value.value, str)), (f.name, ast.unparse(first))


def test_masked_levels_follow_the_flavour_and_padding_sweeps():
    """The kernels' MASKED per variant: 0 unmasked; 2 (key padding's own sweeps) in the hinted
    masked flavours and, where [padding_sweeps] says, in the masked one; 1 (one masked sweep)
    in the masked flavour elsewhere. The cache key follows the level."""
    import dataclasses

    spec = _spec()
    where = tomllib.loads((ROOT / "kernels" / "variants.toml").read_text())["padding_sweeps"]
    levels = set()
    for v in spec.variants:
        if v.flavor in ("masked_fast", "padding_fast"):
            assert v.masked == 2, v.name
        elif v.flavor == "masked":
            swept = v.arch in where["archs"] and v.dtype in where["dtypes"]
            assert v.masked == (2 if swept else 1), v.name
        else:
            assert v.masked == 0, v.name
        levels.add((v.flavor, v.masked))
    assert {("masked", 1), ("masked", 2)} <= levels
    v = next(v for v in spec.variants if v.masked == 2)
    assert cache_key(ROOT / "kernels", v, spec.abi, "3.6.0") != \
        cache_key(ROOT / "kernels", dataclasses.replace(v, masked=1), spec.abi, "3.6.0")


def test_param_classification_hints_only_data_tensors():
    abi = _spec().abi
    names = ["Q", "Mstat", "sm_scale", "stride_qz", "stride_qh", "stride_qm", "stride_mz",
             "stride_mh", "stride_mm", "T"]
    fast = {p["name"]: p for p in classify_params(names, abi, "fp16", "fast")}
    general = classify_params(names, abi, "fp16", "general")
    assert fast["Q"]["ty"] == "*fp16" and fast["Q"]["hint"]
    assert fast["Mstat"]["ty"] == "*fp32" and not fast["Mstat"]["hint"]
    # the one-kernel backward's split rows are fp16 whatever the call's dtype, and hinted
    # 16-byte aligned (our own allocation) in the fast flavours only, as the data pointers
    split = classify_params(["Split"], abi, "fp32", "fast")[0]
    assert split["ty"] == "*fp16" and split["hint"] and split["div"] == 16
    assert not classify_params(["Split"], abi, "fp32", "general")[0]["hint"]
    assert fast["stride_qz"]["ty"] == "i64" and fast["stride_qz"]["hint"]
    assert not fast["stride_mz"]["hint"] and fast["T"]["ty"] == "i32"
    assert not any(p["hint"] for p in general)
    # [abi] unit_strides (the stats' row stride): a constant 1 in the fast flavours only
    assert "stride_mm" in abi["unit_strides"]
    assert fast["stride_mm"]["unit"] and not fast["stride_mz"]["unit"]
    assert not any(p.get("unit") for p in general)
    # [abi] narrow_row_strides: a data tensor's row stride is int32 in the fast flavours only;
    # its batch/head strides and the stats' strides keep int64
    assert abi["narrow_row_strides"]
    assert fast["stride_qm"]["ty"] == "i32" and fast["stride_qm"]["narrow"]
    assert fast["stride_qh"]["ty"] == "i64" and not fast["stride_qh"].get("narrow")
    assert not fast["stride_mz"].get("narrow") and not fast["stride_mm"].get("narrow")
    assert all(p["ty"] != "i32" for p in general if p["kind"] == "stride")
    plain = classify_params(names, {**abi, "narrow_row_strides": False}, "fp16", "fast")
    assert all(p["ty"] == "i64" for p in plain if p["kind"] == "stride")
    # ragged: fast's hints with strides and D promised divisible by 8 (fast: 16, D unhinted)
    names_d = names + ["D"]
    ragged = {p["name"]: p for p in classify_params(names_d, abi, "fp16", "ragged")}
    fast_d = {p["name"]: p for p in classify_params(names_d, abi, "fp16", "fast")}
    assert ragged["Q"]["hint"] and ragged["Q"]["div"] == 16  # an address: 16 bytes
    assert ragged["stride_qz"]["hint"] and ragged["stride_qz"]["div"] == 8
    assert fast_d["stride_qz"]["div"] == 16
    assert ragged["D"]["hint"] and ragged["D"]["div"] == 8 and not fast_d["D"]["hint"]
    assert not ragged["T"]["hint"] and ragged["stride_mm"]["unit"]
    assert ragged["stride_qm"]["narrow"] and ragged["stride_qm"]["ty"] == "i32"
    # [abi] zero_strides (the mask's row stride): a constant 0 in padding_fast only (key
    # padding; its dense-mask code compiled out), a parameter everywhere else
    assert "stride_biasm" in abi["zero_strides"]
    names_b = names + ["Bias", "stride_biasz", "stride_biash", "stride_biasm"]
    by_flavor = {f: {p["name"]: p for p in classify_params(names_b, abi, "fp16", f)}
                 for f in ("general", "fast", "masked", "masked_fast", "ragged", "padding_fast")}
    for f, params in by_flavor.items():
        assert params["stride_biasm"]["zero"] == (f == "padding_fast"), f
        assert not params["stride_biash"]["zero"] and not params["stride_biasm"]["hint"]
    assert constant(by_flavor["padding_fast"]["stride_biasm"]) == 0
    assert constant(by_flavor["masked_fast"]["stride_biasm"]) is None
    assert constant(by_flavor["fast"]["stride_mm"]) == 1
    assert constant(by_flavor["fast"]["stride_biasm"]) is None


def test_wide_row_strides_keep_int64_where_the_table_says():
    """[abi] wide_row_strides: the listed (ops, dtypes, head dims) keep int64 row strides in
    their fast flavours (fp32 forward and backward at D = 128: fewer spills); everything else
    narrows."""
    abi = _spec().abi
    assert wide_rows(abi, "bwd_dq", "fp32", 128) and wide_rows(abi, "bwd_dkdv", "fp32", 128)
    assert not wide_rows(abi, "bwd_dq", "fp16", 128) and not wide_rows(abi, "bwd_dq", "fp32", 64)
    assert wide_rows(abi, "fwd", "fp32", 128) and not wide_rows(abi, "jvp", "fp32", 128)
    assert not wide_rows(abi, "fwd", "tf32", 128)
    names = ["Q", "stride_qz", "stride_qh", "stride_qm"]
    wide = {p["name"]: p for p in classify_params(names, abi, "fp32", "fast", narrow=False)}
    assert wide["stride_qm"]["ty"] == "i64" and not wide["stride_qm"].get("narrow")
    assert wide["stride_qm"]["hint"]  # still hinted: only the int32 copy goes
    spec = _spec()
    v = next(v for v in spec.variants if (v.op, v.dtype, v.head_dim, v.flavor) ==
             ("bwd_dq", "fp32", 128, "fast"))
    plain = {**abi, "wide_row_strides": []}
    kdir = ROOT / "kernels"
    assert cache_key(kdir, v, abi, "3.6.0") != cache_key(kdir, v, plain, "3.6.0")
    u = next(u for u in spec.variants if (u.op, u.dtype, u.head_dim, u.flavor) ==
             ("bwd_dq", "fp16", 128, "fast"))
    assert cache_key(kdir, u, abi, "3.6.0") == cache_key(kdir, u, plain, "3.6.0")


def test_ragged_flavour_where_the_table_says_with_fast_configs(tmp_path):
    """[ragged] limits the ragged flavour's archs/dtypes/buckets (the split buckets' ragged
    variants come from [split_buckets]); it takes fast's configs."""
    spec = _spec()
    split = tomllib.loads((ROOT / "kernels" / "variants.toml").read_text())["split_buckets"]
    ragged = [v for v in spec.variants if v.flavor == "ragged"
              and v.head_dim not in split["buckets"]]
    assert ragged and {v.arch for v in ragged} == {90}
    assert {v.dtype for v in ragged} == {"fp16", "bf16", "fp32"}
    assert {v.head_dim for v in ragged} == {64, 128, 256}
    for v in (v for v in ragged if not v.max_len):  # (a tier's config names its flavours)
        fast = next(f for f in spec.variants if (f.op, f.dtype, f.head_dim, f.arch, f.flavor,
                                                 f.max_len)
                    == (v.op, v.dtype, v.head_dim, v.arch, "fast", None))
        assert (v.blocks, v.num_warps, v.num_stages, v.maxnreg) == (
            fast.blocks, fast.num_warps, fast.num_stages, fast.maxnreg)


def test_split_buckets_where_the_table_says_with_their_own_checks(tmp_path):
    """[split_buckets] adds head-dim buckets that are not powers of two (80, 96) to the ops,
    archs and dtypes it names, in its unmasked flavours only (fast and ragged taking fast's
    configs, as in any bucket); a bucket that is not a power of two plus a power-of-two tail
    >= 16, or a masked flavour there, is refused by name."""
    spec = _spec()
    split = [v for v in spec.variants if v.head_dim & (v.head_dim - 1)]
    assert {v.head_dim for v in split} == {80, 96}
    assert {(v.op, v.arch, v.dtype, v.flavor) for v in split} == {
        (op, 90, dt, f) for op in ("fwd", "bwd_dq", "bwd_dkdv") for dt in ("fp16", "bf16")
        for f in ("general", "fast", "ragged")}
    assert all(v.max_len is None and v.masked == 0 for v in split)
    # a call with a mask there runs bucket 128's masked flavours, which still exist
    for op in ("fwd", "bwd_dq", "bwd_dkdv"):
        assert {(v.dtype, v.flavor) for v in spec.variants if v.op == op and v.head_dim == 128
                and v.arch == 90 and v.flavor in ("masked", "masked_fast")} >= {
            (dt, f) for dt in ("fp16", "bf16") for f in ("masked", "masked_fast")}, op
    text = (ROOT / "kernels" / "variants.toml").read_text()
    assert "buckets = [80, 96]\n" in text and 'flavors = ["general", "fast", "ragged"]\n' in text
    path = tmp_path / "variants.toml"
    for bucket in (72, 65, 127):  # tails 8, 1, 63
        path.write_text(text.replace("buckets = [80, 96]\n", f"buckets = [{bucket}]\n", 1))
        with pytest.raises(ValueError, match=f"bucket {bucket} is not a power of two plus"):
            variants_mod.load(path)
    path.write_text(text.replace('flavors = ["general", "fast", "ragged"]\n',
                                 'flavors = ["general", "masked"]\n', 1))
    with pytest.raises(ValueError, match=r"\[split_buckets\] flavors \['masked'\]"):
        variants_mod.load(path)


def test_masked_fast_where_the_table_says_and_second_order_fast_on_sm90_only():
    """[masked_fast] limits masked_fast to sm_90 (the first-order ops there, every tensor dtype
    and bucket); the second-order ops' no_hints leave their fast flavour out on sm_80. On sm_80
    a masked call then runs masked and an HVP call general (test_abi checks the dispatch)."""
    spec = _spec()
    masked_fast = [v for v in spec.variants if v.flavor == "masked_fast"]
    assert masked_fast and {v.arch for v in masked_fast} == {90}
    assert {v.op for v in masked_fast} == {"fwd", "bwd_dkdv", "bwd_dq", "jvp", "fwd_jvp"}
    masked = {(v.op, v.dtype, v.head_dim) for v in spec.variants
              if v.flavor == "masked" and v.arch == 80}
    assert {(v.op, v.dtype, v.head_dim) for v in masked_fast} <= masked  # the sm_80 fallback
    second = {"bwd_jvp_dq", "bwd_jvp_dkdv"}
    fast = {(v.op, v.arch) for v in spec.variants if v.op in second and v.flavor == "fast"}
    assert fast == {(op, 90) for op in second}
    assert {(v.op, v.arch) for v in spec.variants if v.op in second and v.flavor == "general"} \
        == {(op, a) for op in second for a in (80, 90)}


def test_min_blocks_per_sm_where_the_op_tables_say_and_only_there():
    """An op's min_blocks_per_sm where-tables (flavors included) give those variants ptxas
    --minnctapersm 1; every other variant leaves it unset and out of its cache key's JSON."""
    spec = _spec()
    by_name = {v.name: v for v in spec.variants}
    marked = {v.name for v in spec.variants if v.min_blocks_per_sm is not None}
    assert {by_name[n].min_blocks_per_sm for n in marked} == {1}
    # the fp32 D=128 HVP's dK/dV on sm_90, every flavour; on sm_80 the table names two
    assert {f"bwd_jvp_dkdv_fp32_d128_{f}_sm90" for f in ("general", "fast", "masked")} <= marked
    assert "bwd_jvp_dkdv_fp32_d128_fast_sm80" not in marked
    assert {"fwd_fp16_d256_general_sm80", "fwd_fp16_d256_masked_sm80"} <= marked
    assert not {"fwd_fp16_d256_fast_sm80", "fwd_fp16_d256_general_sm90"} & marked
    # 34 when found; 29 since sm_80 compiles no masked_fast and no second-order fast flavour
    # (four sm_80 float32 masked_fast variants and the float32 D=128 backward-JVP dQ fast one);
    # a sequence-length tier's config may ask for it too
    assert len({n for n in marked if not by_name[n].max_len}) == 29
    v = by_name["fwd_fp16_d64_fast_sm90"]
    assert "min_blocks_per_sm" not in v.as_json()
    assert by_name["bwd_jvp_dkdv_fp32_d128_fast_sm90"].as_json()["min_blocks_per_sm"] == 1


def test_sequence_length_tiers_come_from_configs_with_max_len(tmp_path):
    """A config with max_len adds, for each variant it covers, a tier "<name>_t<max_len>" with
    that config (its own min_blocks_per_sm included), beside the untiered variant, which the
    configs without max_len decide; untiered variants keep max_len out of their cache key's
    JSON. Out-of-range lengths are refused."""
    spec = _spec()
    by_name = {v.name: v for v in spec.variants}
    tiers = [v for v in spec.variants if v.max_len]
    assert tiers and all(v.name.endswith(f"_t{v.max_len}" + (f"n{v.narrow}" if v.narrow else ""))
                         for v in tiers)
    for v in tiers:
        base = by_name[v.untiered_name]
        assert base.max_len is None and "max_len" not in base.as_json()
        assert (base.op, base.dtype, base.head_dim, base.flavor, base.arch, base.masked) == (
            v.op, v.dtype, v.head_dim, v.flavor, v.arch, v.masked)
        assert v.as_json()["max_len"] == v.max_len
        assert (v.blocks, v.num_warps, v.num_stages) != (base.blocks, base.num_warps,
                                                        base.num_stages)
    for name, stages, tail in (("fwd_fp16_d64_fast_sm90_t200", 2, {"TAIL_N": 16}),
                               ("fwd_fp16_d64_fast_sm90_t768", 3, {})):
        fwd = by_name[name]  # two tiers of one variant, each with its own config
        assert (fwd.block, fwd.num_warps, fwd.num_stages, fwd.maxnreg) == (
            {"BLOCK_M": 64, "BLOCK_N": 64, **tail}, 4, stages, None)
    assert by_name["fwd_fp16_d64_fast_sm90"].block == {"BLOCK_M": 128, "BLOCK_N": 64}
    # a tier of its own flavours only (ragged and padding_fast take fast's configs, but not
    # its tiers), with its own min_blocks_per_sm
    text = (ROOT / "kernels" / "variants.toml").read_text()
    tier = ('[[ops.bwd_dq.configs]]\nmax_len = 128\narch = 90\ndtypes = ["fp16"]\n'
            'head_dims = [64]\nflavors = ["fast", "masked"]\nBLOCK_M = 64\nBLOCK_N = 64\n'
            'num_warps = 4\nnum_stages = 2\nmin_blocks_per_sm = 1\n')
    path = tmp_path / "variants.toml"
    path.write_text(text.replace("[[ops.bwd_dq.configs]]\n", tier + "[[ops.bwd_dq.configs]]\n", 1))
    got = {v.name: v for v in variants_mod.load(path).variants}
    assert set(got) - set(by_name) == {"bwd_dq_fp16_d64_fast_sm90_t128",
                                       "bwd_dq_fp16_d64_masked_sm90_t128"}
    t = got["bwd_dq_fp16_d64_fast_sm90_t128"]
    assert (t.block, t.min_blocks_per_sm) == ({"BLOCK_M": 64, "BLOCK_N": 64}, 1)
    assert got["bwd_dq_fp16_d64_masked_sm90_t128"].masked == by_name[
        "bwd_dq_fp16_d64_masked_sm90"].masked
    assert all(got[n] == v for n, v in by_name.items())
    assert by_name["bwd_dq_fp16_d64_fast_sm90"].min_blocks_per_sm is None
    for bad in (0, 1 << 20):
        path.write_text(text.replace("[[ops.bwd_dq.configs]]\n", tier.replace("128", str(bad)) +
                                     "[[ops.bwd_dq.configs]]\n", 1))
        with pytest.raises(ValueError, match="max_len"):
            variants_mod.load(path)
    path.write_text(text.replace("[[ops.bwd_dq.configs]]\n", tier.replace(
        'flavors = ["fast", "masked"]\n', "") + "[[ops.bwd_dq.configs]]\n", 1))
    with pytest.raises(ValueError, match="max_len but no flavors"):
        variants_mod.load(path)


def test_a_tiers_tail_and_causal_len_are_dispatch_only_and_checked(tmp_path):
    """tail_len (how far past max_len a tier may run where the untiered tile's last block would
    be at most half full), causal_len (how far it runs for causal calls) and grid_len (how far
    for small grids) reach the tier's Variant but not its cache key's JSON, so adding or moving
    them recompiles nothing; each must sit on a tier, above its max_len, at most
    MAX_TIER_LEN."""
    spec = _spec()
    by_name = {v.name: v for v in spec.variants}
    t = by_name["fwd_fp16_d64_fast_sm90_t768"]
    assert (t.max_len, t.tail_len, t.causal_len) == (768, 1152, 8192)
    assert "tail_len" not in t.as_json() and "causal_len" not in t.as_json()
    assert by_name["fwd_fp16_d64_fast_sm90_t200"].causal_len is None
    assert by_name["fwd_fp16_d64_fast_sm90"].tail_len is None
    g = by_name["bwd_dkdv_bf16_d64_fast_sm90_t64"]
    assert (g.max_len, g.causal_len, g.grid_len) == (64, 1024, 512)
    assert "grid_len" not in g.as_json() and t.grid_len is None
    assert all(v.tail_len is None and v.causal_len is None and v.grid_len is None
               for v in spec.variants if v.max_len is None)
    text = (ROOT / "kernels" / "variants.toml").read_text()
    path = tmp_path / "variants.toml"
    tier = "max_len = 768\ntail_len = 1152\ncausal_len = 8192"
    dkdv_tier = "max_len = 64\ncausal_len = 1024\ngrid_len = 512\nflavors = [\"fast\"]\narch = 90\n" + (
        "dtypes = [\"fp16\", \"bf16\"]\nhead_dims = [64]\nBLOCK_M = 32")
    for old, new, key in (
            ("tail_len = 1152", "tail_len = 768", "tail_len"),
            (tier, "tail_len = 1152\ncausal_len = 8192", "tail_len"),
            (tier, tier.replace("causal_len = 8192", "causal_len = 700"), "causal_len"),
            (tier, tier.replace("causal_len = 8192",
                                f"causal_len = {variants_mod.MAX_TIER_LEN + 1}"), "causal_len"),
            (tier, "causal_len = 8192", "causal_len"),
            (dkdv_tier, dkdv_tier.replace("grid_len = 512", "grid_len = 64"), "grid_len"),
            (dkdv_tier, dkdv_tier.replace("max_len = 64\ncausal_len = 1024\n", ""), "grid_len")):
        assert text.count(old) == 1
        path.write_text(text.replace(old, new))
        with pytest.raises(ValueError, match=key):
            variants_mod.load(path)


def test_narrow_tails_are_compile_inputs_and_narrow_only_is_dispatch_only(tmp_path):
    """A config's TAIL_N / TAIL_M (a narrow ragged tail) is one of its blocks, so it is a
    compile input (in the cache key's JSON) and a constexpr of the kernel; it must be a power
    of two >= 16 below its block. narrow_only (the tier runs only where that tail sweeps) is
    dispatch only (Variant.narrow, out of the JSON) and needs a tier with one narrow tail."""
    spec = _spec()
    by_name = {v.name: v for v in spec.variants}
    for name, key in (("bwd_dq_fp16_d64_fast_sm90_t200n16", "TAIL_N"),
                      ("bwd_dkdv_bf16_d64_fast_sm90_t200n16", "TAIL_M"),
                      ("bwd_dq_bf16_d64_fast_sm90_t64n16", "TAIL_N"),
                      ("bwd_dkdv_fp16_d64_fast_sm90_t64n16", "TAIL_M")):
        v = by_name[name]
        assert v.block[key] == 16 and v.as_json()["blocks"][key] == 16
        assert v.narrow == 16 and "narrow" not in v.as_json()
        # beside the tier of the same max_len without the tail (t64: the same tile)
        twin = by_name.get(name[:-3])
        assert twin is None or (twin.narrow is None and key not in twin.block
                                and twin.block == {k: b for k, b in v.block.items() if k != key})
    fwd = by_name["fwd_fp16_d64_fast_sm90_t200"]
    assert (fwd.block["TAIL_N"], fwd.narrow) == (16, None)  # the tier's own tile: every call
    assert all(v.narrow is None for v in spec.variants if v.max_len is None)
    text = (ROOT / "kernels" / "variants.toml").read_text()
    path = tmp_path / "variants.toml"
    dq_tier = "BLOCK_M = 128\nBLOCK_N = 64\nTAIL_N = 16\n"
    dkdv_t64 = ('max_len = 64\ncausal_len = 1024\ngrid_len = 512\nflavors = ["fast"]\narch = 90\n'
                'dtypes = ["fp16", "bf16"]\nhead_dims = [64]\nBLOCK_M = 32\nBLOCK_N = 64\n')
    assert text.count(dq_tier) == 1 and text.count("narrow_only = true\n") == 4
    assert text.count(dkdv_t64) == 1
    for old, new, key in ((dq_tier, dq_tier.replace("16", "8"), "TAIL_N"),
                          (dq_tier, dq_tier.replace("16", "24"), "TAIL_N"),
                          (dq_tier, dq_tier.replace("16", "64"), "TAIL_N"),
                          (dq_tier, dq_tier.replace("TAIL_N = 16\n", ""), "narrow_only"),
                          ("max_len = 200\nnarrow_only", "narrow_only", "narrow_only"),
                          # dK/dV's t64 with the tail of its narrow twin: one cubin twice
                          (dkdv_t64, dkdv_t64 + "TAIL_M = 16\n", "the same cubin")):
        path.write_text(text.replace(old, new, 1))
        with pytest.raises(ValueError, match=key):
            variants_mod.load(path)


# ptxas -v reports (ptxas 12.8, sm_80, the fp32 D=64 dK/dV kernel without and with
# --minnctapersm 1, and a small kernel)
FALLBACK = """ptxas info    : Compiling entry function '_sdpa_bwd_dkdv_kernel' for 'sm_80'
ptxas info    : Function properties for _sdpa_bwd_dkdv_kernel
    6336 bytes stack frame, 26592 bytes spill stores, 35944 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 6336 bytes cumulative stack size, 688 bytes cmem[0]
"""
ONE_BLOCK = FALLBACK.replace("6336", "1680").replace("Used 32", "Used 255")
SMALL = FALLBACK.replace("6336", "0").replace("26592", "0").replace("35944", "0")


def test_ptxas_report_is_read_and_its_occupancy_fallback_recognised():
    assert ptxas_usage(FALLBACK) == {"registers": 32, "stack_bytes": 6336}
    assert ptxas_usage(ONE_BLOCK) == {"registers": 255, "stack_bytes": 1680}
    assert ptxas_usage("") == {}
    assert occupancy_fallback(ptxas_usage(FALLBACK))
    assert not occupancy_fallback(ptxas_usage(ONE_BLOCK))
    assert not occupancy_fallback(ptxas_usage(SMALL))  # few registers, no stack: fine
    assert not occupancy_fallback({})  # no report (nothing to judge)


def test_in_tree_build_has_no_cubin_in_the_occupancy_fallback():
    """Every cubin whose ptxas report the build recorded (build/gen/inventory.json) is out of
    the fallback (the build refuses one; this reads what it recorded)."""
    import json

    built = ROOT / "build" / "gen" / "inventory.json"
    if not built.exists():
        pytest.skip("not an in-tree build (no build/gen/inventory.json)")
    rows = [r for r in json.loads(built.read_text()) if r.get("registers") is not None]
    if not rows:
        pytest.skip("no ptxas report recorded (every cubin came from an older cache)")
    bad = [(r["op"], r["dtype"], r["head_dim"], r["flavor"], r["arch"]) for r in rows
           if occupancy_fallback(r)]
    assert not bad


@pytest.mark.parametrize("change", [{"unit_strides": ["stride_mm"]},
                                    {"narrow_row_strides": False}])
def test_cache_key_tracks_fast_only_abi_keys_only_for_fast_flavours(change):
    spec = _spec()
    fast = next(v for v in spec.variants if v.flavor == "fast")
    general = next(v for v in spec.variants if v.flavor == "general")
    other = {**spec.abi, **change}
    assert cache_key(ROOT / "kernels", fast, spec.abi, "3.6.0") != \
        cache_key(ROOT / "kernels", fast, other, "3.6.0")
    assert cache_key(ROOT / "kernels", general, spec.abi, "3.6.0") == \
        cache_key(ROOT / "kernels", general, other, "3.6.0")


def test_strides_are_owned_by_named_pointers():
    abi = _spec().abi
    names = ["Q", "DO", "Mstat", "Lstat", "stride_qz", "stride_qh", "stride_qm", "stride_doz",
             "stride_doh", "stride_dom", "stride_sz", "stride_sh", "stride_sm", "Z"]
    owners = [p["owner"] for p in classify_params(names, abi, "fp16", "general")
              if p["kind"] == "stride"]
    assert owners == ["Q"] * 3 + ["DO"] * 3 + ["Mstat"] * 3
    with pytest.raises(ValueError, match="no pointer parameter owns prefix 'x'"):
        classify_params(["Q", "stride_xz", "stride_xh", "stride_xm"], abi, "fp16", "general")
    with pytest.raises(ValueError, match="triples"):
        classify_params(["Q", "K", "stride_qz", "stride_qh", "stride_kz"], abi, "fp16", "general")


def test_shared_memory_limit_is_the_smallest_among_served_devices():
    from build_tools.compile_variant import shared_limit

    spec = _spec()
    assert spec.serves == {90: [90], 80: [80, 86, 87, 89]}
    assert shared_limit(spec.serves[80]) == 99 * 1024  # sm_86 / sm_89
    assert shared_limit(spec.serves[90]) == 227 * 1024
    with pytest.raises(ValueError, match="no shared-memory limit"):
        shared_limit([75])


def test_fp32_may_not_ask_for_plain_tf32(tmp_path):
    text = (ROOT / "kernels" / "variants.toml").read_text()
    assert "[ops.fwd]\n" in text
    path = tmp_path / "variants.toml"
    path.write_text(text.replace("[ops.fwd]\n", '[ops.fwd]\ninput_precision = { fp32 = "tf32" }\n'))
    with pytest.raises(ValueError, match="fp32-accurate"):
        variants_mod.load(path)
    path.write_text(text.replace("[ops.bwd_z_from_o]\n", "[ops.bwd_z_from_o]\nextra_dtypes = [\"fp8\"]\n"))
    with pytest.raises(ValueError, match="extra_dtypes"):
        variants_mod.load(path)


def test_fp32_defaults_to_split_precision_and_tf32_is_opt_in(tmp_path):
    """float32 variants are fp32-accurate in their arch's split precision (variants.toml
    fp32_precision: "bf16x6" on sm_90, "tf32x3" on sm_80) unless the op names its own, or its
    fp16x3 where-table covers the variant (then "fp16x3"); plain TF32 only in the opt-in
    "tf32" variants, and a table asking for it is refused."""
    spec = variants_mod.load(ROOT / "kernels" / "variants.toml")
    prec = {}
    for v in spec.variants:
        covered = any(variants_mod._covers(e, v.arch, v.dtype, v.head_dim, v.flavor)
                      for e in spec.ops[v.op].get("fp16x3", []))
        prec.setdefault((v.op, v.dtype, v.arch, covered), set()).add(v.input_precision)
    own = {op for op, t in spec.ops.items() if "fp32" in t.get("input_precision", {})}
    for (op, dt, arch, covered), ps in prec.items():
        if dt == "fp32":
            want = "fp16x3" if covered else spec.ops[op]["input_precision"]["fp32"] if (
                op in own) else ("bf16x6" if arch == 90 else "tf32x3")
            assert ps == {want}, (op, arch, ps)
        elif dt == "tf32":
            assert ps == {"tf32"}, (op, arch, ps)
    # fp16x3 where measured faster (variants.toml, results/probe_fp16x3_h200.log): sm_90 only,
    # the forward, the JVPs and the one-kernel backward, buckets 32 and 64; in bucket 128 the
    # forward's fast flavour (D = 128; D = 72 lost), the JVP's unmasked ones and the one-kernel
    # backward's (on Q and dO split by its pre-pass: results/probe_presplit_bwd_h200.log; the
    # fused forward+JVP lost there once compiled ahead of time)
    fp16x3 = {(v.op, v.arch, v.head_dim, v.flavor) for v in spec.variants
              if v.input_precision == "fp16x3"}
    assert {op for op, *_ in fp16x3} == {"fwd", "fwd_jvp", "jvp", "bwd_fused", "bwd_z_from_o"}
    # the one-kernel backward's pre-pass splits Q and dO exactly where bwd_fused reads them
    # split (its "fp16x3" variants; kernels/sdpa_bwd.py): one table must not drift from the other
    assert ({t[1:] for t in fp16x3 if t[0] == "bwd_z_from_o"}
            == {t[1:] for t in fp16x3 if t[0] == "bwd_fused"})
    assert {arch for _, arch, *_ in fp16x3} == {90}
    assert {hd for _, _, hd, _ in fp16x3} == {32, 64, 128}
    assert {t for t in fp16x3 if t[2] == 128} == {("fwd", 90, 128, "fast")} | {
        (op, 90, 128, f) for op in ("jvp", "bwd_fused", "bwd_z_from_o")
        for f in ("general", "fast", "ragged")}
    assert ("bwd_fused", 90, 64, "ragged") in fp16x3 and ("fwd", 90, 64, "masked") in fp16x3
    assert {"fwd", "bwd_dkdv", "bwd_dq", "jvp", "fwd_jvp"}.isdisjoint(own)
    assert "bwd_jvp_rows" in own  # faster in tf32x3 (variants.toml [ops.bwd_jvp_dkdv])
    tf32_ops = {op for op, dt, *_ in prec if dt == "tf32"}
    assert "fwd" in tf32_ops and "bwd_jvp_rows" not in tf32_ops
    text = (ROOT / "kernels" / "variants.toml").read_text()
    path = tmp_path / "variants.toml"
    old = 'fp32_precision = { 90 = "bf16x6", 80 = "tf32x3" }'
    assert text.count(old) == 1
    path.write_text(text.replace(old, 'fp32_precision = { 90 = "tf32", 80 = "tf32x3" }'))
    with pytest.raises(ValueError, match="fp32-accurate"):
        variants_mod.load(path)
    # fp16x3 is computed by _common.mma: never arch-wide (the HVP kernels call tl.dot), never
    # an op's input_precision, and its where-table is for float32 only
    path.write_text(text.replace(old, 'fp32_precision = { 90 = "fp16x3", 80 = "tf32x3" }'))
    with pytest.raises(ValueError, match="fp16x3 only"):
        variants_mod.load(path)
    path.write_text(text.replace("[ops.fwd]\n", '[ops.fwd]\ninput_precision = { fp32 = "fp16x3" }\n'))
    with pytest.raises(ValueError, match="where-table"):
        variants_mod.load(path)
    path.write_text(text.replace("[ops.bwd_dkdv]\n",
                                 '[ops.bwd_dkdv]\nfp16x3 = [{ dtypes = ["fp16"] }]\n'))
    with pytest.raises(ValueError, match="fp16x3"):
        variants_mod.load(path)
    # an op whose kernel calls tl.dot itself (the HVP's) cannot take it
    path.write_text(text.replace("[ops.bwd_jvp_rows]\n",
                                 "[ops.bwd_jvp_rows]\nfp16x3 = [{ archs = [90] }]\n"))
    with pytest.raises(ValueError, match="calls tl.dot"):
        variants_mod.load(path)


def test_kernel_needing_scratch_is_rejected(tmp_path):
    """A kernel whose compile needs global scratch memory must fail the build."""
    src = tmp_path / "scratchy.py"
    src.write_text(textwrap.dedent('''
        import triton
        import triton.language as tl

        @triton.jit
        def k(X, N, BLOCK: tl.constexpr):
            desc = tl.make_tensor_descriptor(X, shape=[N], strides=[1], block_shape=[BLOCK])
            desc.store([0], desc.load([0]) + 1)
    '''))
    (tmp_path / "_common.py").write_text("")
    from build_tools.compile_variant import compile_variant
    from build_tools.variants import Variant

    v = Variant(op="t", source="scratchy.py", kernel="k", grid="T", dtype="fp32", head_dim=16,
                arch=90, serves=(90,), input_precision="ieee", flavor="general",
                blocks=(("BLOCK", 64),), constexprs=(), num_warps=4, num_stages=1)
    abi = {"fp32_pointers": [], "i32_scalars": ["N"], "fp32_scalars": [],
           "unaligned_stride_prefixes": []}
    with pytest.raises((RuntimeError, ValueError), match="scratch"):
        compile_variant(str(tmp_path), v, abi, str(tmp_path / "out"))


def test_rendered_launchers_match_the_abi(tmp_path):
    """The generated C++ packs every kernel parameter in order and checks exactly the hinted
    (fast-flavour) pointers and strides before choosing the fast variant."""
    from build_tools.compile_variant import classify_params
    from build_tools.pack import pack_images
    from build_tools.render import render

    spec = _spec()
    names = ["Q", "K", "Mstat", "sm_scale", "stride_qz", "stride_qh", "stride_qm", "stride_kz",
             "stride_kh", "stride_kn", "stride_mz", "stride_mh", "stride_mm", "Z", "T", "D",
             "HAS_TDO"]
    variants = [v for v in spec.variants if v.op == "fwd"][:2]  # general + fast of one dtype/D
    metas = []
    for v in variants:
        metas.append({"variant": v.as_json(), "kernel_name": v.kernel, "shared": 1024,
                      "num_warps": v.num_warps, "num_stages": v.num_stages, "cubin_bytes": 4,
                      "params": classify_params(names, spec.abi, v.dtype, v.flavor)})
    cubins = []
    for i, _ in enumerate(variants):
        p = tmp_path / f"k{i}.cubin"
        p.write_bytes(bytes([i + 1]) * (5 + i))
        cubins.append(p)
    images, placement = pack_images(metas, cubins, tmp_path / "images")
    src = render(spec, metas, images, placement)
    # argument struct and packing in the kernel's parameter order, scratch pointers last
    assert "void* params[] = {&a.Q, &a.K, &a.Mstat, &a.sm_scale, &a.stride_qz, &a.stride_qh, " \
           "&a.stride_qm, &a.stride_kz, &a.stride_kh, &a.stride_kn, &a.stride_mz, " \
           "&a.stride_mh, &a.stride_mm, &a.Z, &a.T, &a.D, &a.HAS_TDO, &global_scratch, " \
           "&profile_scratch};" in src
    # ints come from the (Z, H, T, M, D, HAS_TDO) array by name
    assert "a->T = c->ints[2];" in src and "a->D = c->ints[4];" in src
    assert "a->HAS_TDO = c->ints[5];" in src
    # the op table names the pointers and the owner of each stride triple
    assert '"Q,K,Mstat", "Q,K,Mstat"' in src
    # fast check: data pointers Q, K and their strides; never the stats pointer or stride
    fast = src[src.index("static int aot_fwd_fast_ok"):].split("}", 1)[0]
    assert "c->ptrs[0] % 16u == 0" in fast and "c->ptrs[1] % 16u == 0" in fast
    assert "c->ptrs[2]" not in fast
    assert all(f"c->strides[{i}] % 16 == 0" in fast for i in range(6))
    assert "c->strides[6]" not in fast and "c->strides[7]" not in fast
    # the stats' row stride (a unit stride): the fast condition requires 1, and the fast
    # variant's launcher does not pass it (its cubin has it as a constant)
    assert "c->strides[8] == 1" in fast
    launchers = src.split("static CUresult aot_launch_")[1:]
    assert "&a.stride_mm," in launchers[0] and "&a.stride_mm," not in launchers[1]
    # the data tensors' row strides (narrow): the fast condition requires every row offset to
    # fit int32 (rows up to max(T, M): ints 2, 3), the fast launcher passes the int32 copy
    assert "aot_rows_fit_i32(c->strides[2], c->ints[2], c->ints[3])" in fast
    assert "aot_rows_fit_i32(c->strides[5], c->ints[2], c->ints[3])" in fast
    assert "aot_rows_fit_i32(c->strides[8]" not in fast and "aot_rows_fit_i32(c->strides[1]" \
        not in fast
    assert "int32_t stride_qm_i32;" in src and "a->stride_qm_i32 = (int32_t)c->strides[2];" in src
    # the ragged condition: fast's, with strides and D (ints[4]) % 8
    ragged = src[src.index("static int aot_fwd_ragged_ok"):].split("}", 1)[0]
    assert "c->ptrs[0] % 16u == 0" in ragged and "c->ptrs[2]" not in ragged
    assert all(f"c->strides[{i}] % 8 == 0" in ragged for i in (0, 1, 3, 4))
    assert "c->ints[4] % 8 == 0" in ragged and "c->ints[4]" not in fast
    assert "c->strides[8] == 1" in ragged
    assert "aot_rows_fit_i32(c->strides[2], c->ints[2], c->ints[3])" in ragged
    assert "aot_fwd_fast_ok, aot_fwd_ragged_ok}" in src
    assert "&a.stride_qm," in launchers[0] and "&a.stride_qm_i32," in launchers[1]
    assert [v.flavor for v in variants] == ["general", "fast"]
    # both variants' cubins are in one embedded image (same op and arch), the second at the
    # next 16-byte boundary; the image table records its packed and unpacked sizes
    assert src.count("AOT_INCBIN(aot_packed_") == 1
    assert str(images[0]["path"].resolve()) in src
    assert [pl[:3] for pl in placement] == [(0, 0, 5), (0, 16, 6)]
    assert "{&aot_images[0], 0u, " in src and "{&aot_images[0], 16u, " in src
    assert "bytes [0, +5) of image" in src and "bytes [16, +6) of image" in src
    assert (f'{{"{images[0]["name"]}", aot_packed_0, {images[0]["packed_bytes"]}u, 22u, '
            f'nullptr}},') in src


def test_pack_images_round_trip_and_cache(tmp_path):
    """Cubins are grouped per (op, arch) into xz streams that unpack to the cubins at their
    offsets; an unchanged group is not recompressed, a changed one replaces its stale file."""
    import hashlib
    import lzma

    from build_tools.pack import pack_images

    metas = [{"variant": {"op": op, "arch": arch}} for op, arch in
             [("fwd", 90), ("fwd", 90), ("fwd", 80), ("bwd_dq", 90)]]
    cubins = []
    for i in range(len(metas)):
        p = tmp_path / f"k{i}.cubin"
        p.write_bytes(bytes(range(i, i + 40 + 7 * i)))
        cubins.append(p)
    out = tmp_path / "images"
    images, placement = pack_images(metas, cubins, out)
    assert [im["name"] for im in images] == ["fwd_sm90", "fwd_sm80", "bwd_dq_sm90"]
    for i, (g, off, size, sha) in enumerate(placement):
        raw = lzma.decompress(images[g]["path"].read_bytes())
        assert len(raw) == images[g]["raw_bytes"] and off % 16 == 0
        assert raw[off:off + size] == cubins[i].read_bytes()
        assert sha == hashlib.sha256(cubins[i].read_bytes()).hexdigest()
    stamp = {im["name"]: im["path"].stat().st_mtime_ns for im in images}
    cubins[2].write_bytes(b"changed")
    images2, _ = pack_images(metas, cubins, out)
    assert images2[0]["path"] == images[0]["path"]  # unchanged group: same file, not rewritten
    assert images2[0]["path"].stat().st_mtime_ns == stamp["fwd_sm90"]
    assert images2[1]["path"] != images[1]["path"] and not images[1]["path"].exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(im["path"].name for im in images2)


def test_release_reads_auditwheel_tag():
    """build_tools/release.py takes the tag from `auditwheel show`'s wrapped text."""
    from build_tools.release import TAG

    shown = ('aot_sdpa-0.1.0-cp311-cp311-manylinux_2_34_x86_64.whl is consistent\n'
             'with the following platform tag: "manylinux_2_34_x86_64".\n')
    assert TAG.search(shown).group(1) == "manylinux_2_34_x86_64"
    assert TAG.search("is consistent with the following platform tag: \"linux_x86_64\"")


def test_jit_call_reads_another_kernel_tree_when_asked(tmp_path):
    """The sweeps' A/B switch: AOT_SDPA_KERNELS points jit_call at other kernel sources."""
    code = "from build_tools import jit_call; print(jit_call.KERNELS)"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AOT_SDPA_KERNELS": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == str(tmp_path.resolve())
    env.pop("AOT_SDPA_KERNELS")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == str((ROOT / "kernels").resolve())


@pytest.fixture
def jit_launches(monkeypatch):
    """jit_call's launches, recorded instead of run: each launch's keyword arguments (its
    constexprs and compile options), the JIT function's signature kept."""
    from build_tools import jit_call

    launched = []

    class Recorder:
        def __init__(self, fn):
            self.fn = fn.fn

        def __getitem__(self, grid):
            return lambda *args, **kw: launched.append(kw)

    real = jit_call.kernel
    monkeypatch.setattr(jit_call, "kernel", lambda spec, op: Recorder(real(spec, op)))
    return launched


def test_jit_call_launches_with_the_variants_ptxas_option(jit_launches):
    """jit_call launches a variant with the compile options its AOT cubin got: a
    min_blocks_per_sm variant (sm_90 float32 D = 128 backward-JVP dK/dV) with ptxas
    --minnctapersm 1, another without, and an explicit override with it (the sweeps)."""
    import torch

    from build_tools import jit_call
    from build_tools.variants import ptxas_options

    spec = _spec()
    names = aot_sdpa._native.OPS["bwd_jvp_dkdv"].pointers
    x = {n: torch.zeros(1, 1, 16, 128) for n in names}
    x.update(Bias=None, TDO=None, Rbuf=torch.zeros(1, 16), Zbuf=torch.zeros(1, 16),
             ZDbuf=torch.zeros(1, 16))
    jit_call.call(spec, "bwd_jvp_dkdv", "fp32", x, (1, 1, 16, 16, 128), 1.0)
    jit_call.call(spec, "bwd_jvp_dkdv", "fp32", x, (1, 1, 16, 16, 64), 1.0)
    jit_call.call(spec, "bwd_jvp_dkdv", "fp32", x, (1, 1, 16, 16, 64), 1.0,
                  blocks={"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1,
                  min_blocks_per_sm=1)
    assert ptxas_options(None) == {}
    assert jit_launches[0]["ptx_options"] == ptxas_options(1)["ptx_options"] == "--minnctapersm 1"
    assert "ptx_options" not in jit_launches[1]
    assert jit_launches[2]["ptx_options"] == "--minnctapersm 1"


def test_a_config_sets_kernel_constexprs_over_the_ops():
    """A config's `constexprs` (per-tile kernel knobs: TWO_PASS, HEAD_CHUNK) join the op
    table's and are a compile input (the cache key's JSON): bucket 256's 16-bit sm_90 dK/dV
    tiles sweep twice, the other variants of the op keep the single sweep; the 16-bit sm_90
    fast and ragged dQ and dK/dV tiles of buckets 128 and 256 deal causal programs out by
    chunks of 8 heads, every other backward variant keeps the per-head order."""
    spec = _spec()
    dkdv = [v for v in spec.variants if v.op == "bwd_dkdv"]
    two = {(v.dtype, v.head_dim, v.flavor, v.arch) for v in dkdv
           if dict(v.constexprs).get("TWO_PASS") == 1}
    assert two == {(dt, 256, fl, 90) for dt in ("fp16", "bf16")
                   for fl in ("fast", "ragged", "general")}
    for v in dkdv:
        c = dict(v.constexprs)
        assert c["COMPUTE_DK"] == 1 and c["COMPUTE_DV"] == 1
    chunked = {(v.op, v.dtype, v.head_dim, v.flavor, v.arch, v.max_len): dict(v.constexprs)
               for v in spec.variants if "HEAD_CHUNK" in dict(v.constexprs)}
    assert set(chunked) == {(op, dt, d, fl, 90, None) for op in ("bwd_dq", "bwd_dkdv")
                            for dt in ("fp16", "bf16") for d in (128, 256)
                            for fl in ("fast", "ragged")}
    assert {c["HEAD_CHUNK"] for c in chunked.values()} == {8}
    for v in spec.variants:  # every knob a compile input
        if v.op in ("bwd_dq", "bwd_dkdv"):
            assert v.as_json()["constexprs"] == dict(v.constexprs)


def test_jit_call_takes_a_configs_knobs_only_with_its_tile(jit_launches):
    """jit_call.call runs a variant's config knobs (bucket 256's TWO_PASS) with that variant's
    own tile; given other blocks (a sweep's candidate) only the op's constexprs and the knobs
    passed, so a candidate tile is timed as the caller names it."""
    import torch

    from build_tools import jit_call

    spec = _spec()
    general = next(v for v in spec.variants if v.name == "bwd_dkdv_fp16_d256_general_sm90")
    assert jit_call.config_knobs(spec, general) == {"TWO_PASS": 1}
    masked = next(v for v in spec.variants if v.name == "bwd_dkdv_fp16_d256_masked_sm90")
    assert jit_call.config_knobs(spec, masked) == {}
    names = aot_sdpa._native.OPS["bwd_dkdv"].pointers
    x = {n: torch.zeros(1, 1, 16, 256) for n in names}
    x.update(Bias=None, Zbuf=torch.zeros(2, 16))
    tile = {"BLOCK_M": 64, "BLOCK_N": 64}
    jit_call.call(spec, "bwd_dkdv", "fp16", x, (1, 1, 16, 16, 256), 1.0)
    jit_call.call(spec, "bwd_dkdv", "fp16", x, (1, 1, 16, 16, 256), 1.0, blocks=tile,
                  num_warps=8, num_stages=2)
    jit_call.call(spec, "bwd_dkdv", "fp16", x, (1, 1, 16, 16, 256), 1.0, blocks=tile,
                  num_warps=8, num_stages=2, knobs={"TWO_PASS": 1})
    assert [kw.get("TWO_PASS") for kw in jit_launches] == [1, None, 1]
    assert all(kw["COMPUTE_DK"] == 1 and kw["COMPUTE_DV"] == 1 for kw in jit_launches)

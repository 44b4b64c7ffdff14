"""Build inventory and packaging (CPU, no Triton needed): every variant present, the archs
each cubin serves, import without Triton, the driver-less error, the dispatcher's errors."""

import itertools
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import aot_sdpa
from build_tools.variants import load

from _helpers import idle_grid

ROOT = Path(__file__).resolve().parent.parent
DTYPES = {"float16", "bfloat16", "float32"}
BUCKETS = {32, 64, 128, 256}
# float32 (and its TF32 variants) stops at D = 128 (kernels/variants.toml [bucket_dtypes]);
# the Python checks refuse above it by name (_checks.MAX_HEAD_DIM_FP32)
FP32_BUCKETS = {32, 64, 128}
ARCHS = {"sm_90", "sm_80"}
# ops compiled for every dtype, bucket and arch (bwd_fused and bwd_z_from_o: FUSED)
OPS = {"fwd", "bwd_z_from_stats", "bwd_dkdv", "bwd_dk", "bwd_dv", "bwd_dq",
       "jvp", "fwd_jvp", "bwd_jvp_rows", "bwd_jvp_dq", "bwd_jvp_dkdv"}
FAST_OPS = {"fwd", "bwd_dkdv", "bwd_dq", "jvp", "fwd_jvp", "bwd_jvp_dq", "bwd_jvp_dkdv"}
# ops that read an attention mask (every op but z from dO . O; dK-only / dV-only calls with a
# mask run bwd_dkdv): a masked flavour for each dtype but TF32
MASKED_OPS = {"fwd", "bwd_z_from_stats", "bwd_dkdv", "bwd_dq", "jvp", "fwd_jvp",
              "bwd_jvp_rows", "bwd_jvp_dq", "bwd_jvp_dkdv"}
# masked ops with a fast masked flavour too (aligned, head dim == bucket): the first-order ones,
# on sm_90 (kernels/variants.toml [masked_fast])
MASKED_FAST_OPS = {"fwd", "bwd_dkdv", "bwd_dq", "jvp", "fwd_jvp"}
# ops with a ragged flavour (aligned, head dim below its bucket, strides and D % 8): sm_90, the
# tensor dtypes, buckets 64..256 (kernels/variants.toml [ragged])
RAGGED_OPS = {"fwd", "bwd_dkdv", "bwd_dq", "jvp", "fwd_jvp"}
RAGGED_BUCKETS = {64, 128, 256}
# ops with a plain-TF32 float32 variant too (torch.get_float32_matmul_precision() != "highest")
TF32_OPS = {"fwd", "bwd_z_from_stats", "bwd_dkdv", "bwd_dk", "bwd_dv", "bwd_dq", "jvp",
            "fwd_jvp"}
# the ops' no_hints in kernels/variants.toml: (op, dtype, bucket, arch) without a ragged
# flavour (the sm_90 float32 forward at 128: D < 128 runs general, faster there; D = 128 runs
# fast, in fp16x3), and (op, arch) without fast and ragged (the second-order ops on sm_80:
# compile time)
UNRAGGED = {("fwd", "float32", 128, "sm_90")}
UNHINTED_ARCH = {("bwd_jvp_dq", "sm_80"), ("bwd_jvp_dkdv", "sm_80")}
# ops compiled for buckets 64-256 only (D <= 32 runs in the 64 bucket): variants.toml head_dims
SECOND_ORDER_OPS = {"bwd_jvp_rows", "bwd_jvp_dq", "bwd_jvp_dkdv"}
# opt-in shared memory per compute capability (CUDA programming guide)
SMEM = {80: 163 * 1024, 86: 99 * 1024, 87: 163 * 1024, 89: 99 * 1024, 90: 227 * 1024}


# sequence-length tiers (kernels/variants.toml configs' max_len), all on sm_90: the 16-bit
# forward's fast flavour up to 200 (bucket 64: ViT) and 768 (bucket 64: DiT-B/2, BERT), and 200
# (bucket 128), its ragged one in bucket 128 up to 128; the 16-bit bucket-64 dQ and dK/dV's
# fast flavour up to 64 (and causal calls up to 1024); the float32 one-kernel backward has none
# since its fp16x3 products (its T <= 200 tile is its untiered one: variants.toml); the float32
# forward+JVP's fast flavour in bucket 64 up to 256 (ViT, DiT-B/2)
# (op, dtype, bucket, arch, flavour, max_len, narrow): dQ's and dK/dV's T <= 64 tiers (which
# also serve causal calls and idle grids), their tiles with a narrow tail, and the untiered
# tiles with one up to T = 200
TIERS = {("fwd", dt, b, "sm_90", f, n, 0) for dt in ("float16", "bfloat16")
         for b, f, n in ((64, "fast", 200), (64, "fast", 768), (128, "fast", 200),
                         (128, "fast", 2048), (128, "ragged", 128))} | {
    (op, dt, 64, "sm_90", "fast", n, narrow) for op in ("bwd_dq", "bwd_dkdv")
    for n, narrow in ((64, 0), (64, 16), (200, 16)) for dt in ("float16", "bfloat16")} | {
    # the float32 one-kernel backward at D <= 64: 32x64/4/1 up to T = 512, 64x64/4/1 past it
    ("bwd_fused", "float32", 64, "sm_90", f, 512, 0) for f in ("fast", "ragged")} | {
    ("fwd_jvp", "float32", 64, "sm_90", "fast", 256, 0)}
# the one-kernel float32 backward (dQ by atomic adds): sm_90, fp32-accurate float32 only,
# buckets 64 and 128, unmasked flavours ([ops.bwd_fused]; _ops.fused_bwd runs it), and its z
# pre-pass from O, needed nowhere else (the dQ kernel forms z from O: HAS_O)
FUSED = {(op, "float32", b, "sm_90", f) for op in ("bwd_fused", "bwd_z_from_o") for b in (64, 128)
         for f in ("general", "fast", "ragged")}


def test_inventory_has_every_op_dtype_bucket_arch():
    inv = aot_sdpa.kernel_inventory()
    have = {(r["op"], r["dtype"] if r["input_precision"] != "tf32" or r["dtype"] != "float32"
             else "tf32", r["head_dim"], r["arch"], r["flavor"]) for r in inv if not r["max_len"]}
    tiers = [(r["op"], r["dtype"], r["head_dim"], r["arch"], r["flavor"], r["max_len"],
              r["narrow"]) for r in inv if r["max_len"]]
    assert set(tiers) == TIERS and len(tiers) == len(TIERS)
    for op in OPS:
        for dt in DTYPES | ({"tf32"} if op in TF32_OPS else set()):
            for d in (FP32_BUCKETS if dt in ("float32", "tf32") else BUCKETS):
                for arch in ARCHS:
                    if op in SECOND_ORDER_OPS and d == 32:
                        assert not {r for r in have if r[:4] == (op, dt, d, arch)}
                        continue
                    assert (op, dt, d, arch, "general") in have
                    hintable = (op, arch) not in UNHINTED_ARCH
                    if op in FAST_OPS:
                        assert ((op, dt, d, arch, "fast") in have) == hintable
                    assert ((op, dt, d, arch, "masked") in have) == (op in MASKED_OPS
                                                                      and dt != "tf32")
                    assert ((op, dt, d, arch, "masked_fast") in have) == (
                        op in MASKED_FAST_OPS and dt != "tf32" and arch == "sm_90")
                    assert ((op, dt, d, arch, "ragged") in have) == (
                        op in RAGGED_OPS and dt != "tf32" and arch == "sm_90"
                        and d in RAGGED_BUCKETS and hintable
                        and (op, dt, d, arch) not in UNRAGGED)
    assert {r[0] for r in have if r[1] == "tf32"} == TF32_OPS
    assert {r for r in have if r[0] in ("bwd_fused", "bwd_z_from_o")} == FUSED
    assert {r[0] for r in have} == OPS | {"bwd_fused", "bwd_z_from_o"}
    # padding_fast (key-padding masks only): where [padding_fast] says, the masked_fast ops
    assert {r for r in have if r[4] == "padding_fast"} == {
        (op, dt, 64, "sm_90", "padding_fast") for op in MASKED_FAST_OPS
        for dt in ("float16", "bfloat16")}
    assert len(inv) == len(have) + len(tiers), "duplicate variants"
    from aot_sdpa._checks import MAX_HEAD_DIM, MAX_HEAD_DIM_FP32

    assert max(r["head_dim"] for r in inv) == MAX_HEAD_DIM
    assert max(r["head_dim"] for r in inv if r["dtype"] == "float32") == MAX_HEAD_DIM_FP32
    for r in inv:
        assert r["cubin_bytes"] > 1000 and r["num_warps"] in (1, 2, 4, 8)
        assert r["num_stages"] >= 1 and r["shared_bytes"] >= 0
        assert r["block_m"] > 0 or r["block_n"] > 0
        # every device a cubin serves allows its shared memory (sm_80 code runs on 8.6/8.9)
        assert r["serves"] == ([90] if r["arch"] == "sm_90" else [80, 86, 87, 89])
        assert all(r["shared_bytes"] <= SMEM[cc] for cc in r["serves"]), r
        # fp32 variants are fp32-accurate (split-precision 3xTF32 or 6xBF16, or IEEE products)
        # except the TF32 ones, of which each op has at most one per bucket/arch/flavour
        # (counted above)
        if r["dtype"] == "float32":
            assert r["input_precision"] in ("ieee", "tf32x3", "bf16x6", "fp16x3", "tf32"), r
    assert sorted(aot_sdpa.built_archs()) == sorted(ARCHS)


def test_embedded_images_unpack_to_the_built_cubins():
    """The extension's compressed images (one xz stream per (op, arch)) unpack, without a
    driver, to exactly the cubins the build compiled (sha256 recorded in build/gen)."""
    import hashlib
    import json

    from aot_sdpa import _C

    built = ROOT / "build" / "gen" / "inventory.json"
    if not built.exists():
        pytest.skip("not an in-tree build (no build/gen/inventory.json)")
    recorded = {r["name"]: r for r in json.loads(built.read_text())}
    short = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}
    images = {im["name"]: im for im in _C.images()}
    # one image per op and arch; compressed well below the cubins' size
    assert len(images) == len({(r["op"], r["arch"]) for r in aot_sdpa.kernel_inventory()})
    assert sum(im["packed_bytes"] for im in images.values()) < \
        0.25 * sum(im["raw_bytes"] for im in images.values())
    raw = {name: _C._unpacked_image(name) for name in images}
    assert all(len(raw[n]) == im["raw_bytes"] for n, im in images.items())
    assert all(im["unpacked"] for im in _C.images())
    for r in aot_sdpa.kernel_inventory():
        dtype = short[r["dtype"]]
        if dtype == "fp32" and r["input_precision"] == "tf32":
            dtype = "tf32"
        key = (r["op"], dtype, r["head_dim"], r["flavor"], int(r["arch"][3:]), r["max_len"])
        assert key == tuple(recorded[r["name"]].get(k) or 0 for k in (
            "op", "dtype", "head_dim", "flavor", "arch", "max_len")), r
        cubin = raw[r["image"]][r["image_offset"]:r["image_offset"] + r["cubin_bytes"]]
        assert cubin[:4] == b"\x7fELF", r
        assert hashlib.sha256(cubin).hexdigest() == recorded[r["name"]]["cubin_sha256"], r
    with pytest.raises(ValueError, match="no kernel image named"):
        _C._unpacked_image("no_such_op_sm90")


def test_launchers_pass_exactly_the_cubins_parameters():
    """Every generated launcher's parameter list (sizes in order, the two scratch pointers
    included) equals its cubin's parameters (EIATTR_KPARAM_INFO via Triton's cuobjdump): a
    parameter Triton compiled away or a wrong width would make the kernel read garbage on the
    GPU without any error. One variant per (op, flavour, arch): the list does not depend on
    the dtype or head dim."""
    from aot_sdpa import _C
    from build_tools.cubin_abi import cubin_param_sizes, cuobjdump, launcher_param_sizes

    source = ROOT / "build" / "gen" / "aot_kernels.cpp"
    tool = cuobjdump()
    if not source.exists() or tool is None:
        pytest.skip("needs an in-tree build (build/gen) and Triton's cuobjdump")
    launchers = launcher_param_sizes(source.read_text())
    inv = _C.inventory()
    assert sorted(launchers) == list(range(len(inv)))
    raw, seen = {}, set()
    for i, r in enumerate(inv):
        key = (r["op"], r["flavor"], r["arch"])
        if key in seen:
            continue
        seen.add(key)
        if r["image"] not in raw:
            raw[r["image"]] = _C._unpacked_image(r["image"])
        cubin = raw[r["image"]][r["image_offset"]:r["image_offset"] + r["cubin_bytes"]]
        name, sizes = launchers[i]
        assert cubin_param_sizes(cubin, tool) == sizes, name
    assert len(seen) >= 2 * len({r["op"] for r in inv})


def test_hinted_16bit_cubins_move_data_in_vectors():
    """The point of the fast, masked_fast and ragged flavours: their 16-bit cubins load and
    store fp16/bf16 data in 16-byte vectors (or cp.async), never one element at a time as the
    general flavour does (sm_90 fp16 D=128 forward: 192 lone LDG.E.U16; the ragged flavour
    needs the hint on D for this). A hint lost in the build would pass every GPU correctness
    test and only show as a 2-7x slower kernel (results/ragged.csv); this catches it on the
    CPU. fp16 at buckets 64 and 128 (bf16 compiles the same loads), every op and arch."""
    from concurrent.futures import ThreadPoolExecutor

    from aot_sdpa import _C
    from build_tools.cubin_abi import cubin_sass, cuobjdump, scalar_16bit_global_accesses

    tool = cuobjdump()
    if tool is None:
        pytest.skip("needs Triton's cuobjdump")
    inv = _C.inventory()
    raw = {}

    def cubin(r):
        if r["image"] not in raw:
            raw[r["image"]] = _C._unpacked_image(r["image"])
        return raw[r["image"]][r["image_offset"]:r["image_offset"] + r["cubin_bytes"]]

    def name(r):
        return f"{r['op']}_fp16_d{r['head_dim']}_{r['flavor']}_{r['arch']}"

    hinted = [r for r in inv if r["flavor"] in ("fast", "masked_fast", "ragged")
              and r["dtype"] == "float16" and r["head_dim"] in (64, 128)]
    assert {r["flavor"] for r in hinted} == {"fast", "masked_fast", "ragged"}
    general = next(r for r in inv if name(r) == "fwd_fp16_d128_general_sm_90")
    jobs = [(name(r), cubin(r)) for r in [general, *hinted]]
    with ThreadPoolExecutor(4) as pool:
        counts = dict(zip([n for n, _ in jobs], pool.map(
            lambda job: scalar_16bit_global_accesses(cubin_sass(job[1], tool)), jobs)))
    assert counts.pop(name(general)) > 100  # the detector sees the general flavour's loads
    assert {n: c for n, c in counts.items() if c} == {}


def test_mask_code_per_flavour():
    """The masked flavour (the fallback: unaligned data, a head dim below its bucket) compiles
    key padding's own sweeps where [padding_sweeps] says (sm_90 16-bit: MASKED 2, as
    masked_fast) and one masked sweep for any mask elsewhere (MASKED 1). A sweep is counted by
    its tensor-core instructions, in fp16 D = 64 cubins, against masked_fast's of the same
    arch (same tiles, MASKED 2): equal on sm_90. sm_80 compiles no MASKED 2 code to compare
    with (no masked_fast or padding_fast there, kernels/variants.toml [masked_fast]): its
    masked flavour has one sweep for any mask, the level test_build_tools checks
    (test_masked_levels_follow_the_flavour_and_padding_sweeps)."""
    from aot_sdpa import _C
    from build_tools.cubin_abi import cubin_sass, cuobjdump, mma_instructions

    tool = cuobjdump()
    if tool is None:
        pytest.skip("needs Triton's cuobjdump")
    inv = {(r["op"], r["flavor"], r["arch"]): r for r in _C.inventory()
           if r["dtype"] == "float16" and r["head_dim"] == 64}
    raw = {}

    def mma(op, flavor, arch):
        r = inv[(op, flavor, arch)]
        if r["image"] not in raw:
            raw[r["image"]] = _C._unpacked_image(r["image"])
        cubin = raw[r["image"]][r["image_offset"]:r["image_offset"] + r["cubin_bytes"]]
        return mma_instructions(cubin_sass(cubin, tool))

    for op in sorted(MASKED_FAST_OPS):
        assert 0 < mma(op, "masked", "sm_90") == mma(op, "masked_fast", "sm_90"), op


class _Index:
    """The inventory as the rule below looks it up: each (op, arch, flavour, dtype)'s head
    dims (buckets), each untiered name's family (its tiers too) and each op's grid axis."""

    def __init__(self, inv):
        from aot_sdpa import _C

        self.buckets, self.family = defaultdict(set), defaultdict(list)
        for r in inv:
            self.buckets[(r["op"], r["arch"], r["flavor"], _short(r))].add(r["head_dim"])
            self.family[_name(r)].append(r)
        self.grid = {o["name"]: o["grid"] for o in _C.ops()}


def _expected_choice(idx, op, code, D, arch, fast_ok, masked, ragged_ok=False, padding=False,
                     rows=None, extent=None, causal_rows=0, bh=None, sms=132, inner=None,
                     blocks_per_sm=2):
    """The dispatcher's rule, from the inventory (an _Index): the smallest bucket >= D of the general (with
    a mask: masked) flavour; a TF32 call (code 3) without such a TF32 variant takes fp32's;
    the fast (masked_fast) one of that bucket runs when the call qualifies and D fills it,
    without a mask the ragged one when it qualifies and D is below the bucket; else that
    hinted one is the sibling. With a key-padding mask (padding) the bucket's padding_fast
    runs before masked_fast, on the same conditions; the masked flavour not run is the
    second sibling. Each of the three is then its sequence-length tier for `rows` (max(T, M);
    None: a long sequence, untiered), `extent` grid rows (None: rows), `causal_rows` (0:
    not causal; else max(T, M) per head), `bh` grid heads (None: a large grid) on `sms`
    multiprocessors running `blocks_per_sm` untiered programs each and the `inner` rows a
    program's loop sweeps (None: rows). (run, sibling, sibling2); None when nothing matches."""
    choice = _untiered_choice(idx, op, code, D, arch, fast_ok, masked, ragged_ok, padding)
    return None if choice is None else tuple(
        _tier(idx, n, rows, extent, causal_rows, bh, sms, inner, blocks_per_sm) for n in choice)


def _narrow_ok(idx, r, inner):
    """A tier with a narrow tail (narrow > 0) only where the inner loop's rows end 1..narrow
    past a whole block of its own (BLOCK_N; BLOCK_M for an op whose grid tiles the keys)."""
    block = r["block_n"] if idx.grid[r["op"]] == "T" else r["block_m"]
    return not r["narrow"] or 0 < inner % block <= r["narrow"]


def _tier_name(name, r):
    """The name of tier entry r of untiered variant `name`: "_t<max_len>", "n<narrow>" added
    for a narrow-tail tier."""
    return f"{name}_t{r['max_len']}" + (f"n{r['narrow']}" if r["narrow"] else "")


def _tier(idx, name, rows, extent=None, causal_rows=0, bh=None, sms=132, inner=None,
          blocks_per_sm=2):
    """The variant `name`'s tier for a call of max(T, M) = rows whose grid tiles `extent` rows
    (None: rows) on `bh` grid heads (None: a large grid) and whose programs' loop sweeps
    `inner` rows (None: rows): among the inventory entries of its family (op, dtype, bucket,
    arch, flavour) that _narrow_ok allows and that cover the call (max_len >= rows or, for a
    causal call, causal_len >= causal_rows, its max(T, M) per head, or grid_len >= rows where
    the untiered grid, bh * ceil(extent / block) programs, leaves at least a quarter of its
    waves' slots idle, `sms` * `blocks_per_sm` at once), the one with the smallest max_len
    (on a tie the narrow-tail one), named by _tier_name; else,
    where the untiered one's last block of those rows (BLOCK_M; BLOCK_N for an op whose grid
    tiles the keys) would be at most half full, the tier with the smallest tail_len >= rows;
    else `name` itself (None stays None)."""
    if name is None or rows is None:
        return name
    family = idx.family[name]
    base = next(r for r in family if not r["max_len"])
    block = base["block_m"] if idx.grid[base["op"]] == "T" else base["block_n"]
    extent = rows if extent is None else extent
    inner = rows if inner is None else inner
    idle = bh is not None and idle_grid(bh * -(-extent // block), sms * blocks_per_sm)
    family = [r for r in family if _narrow_ok(idx, r, inner)]
    cover = [r for r in family
             if r["max_len"] and (r["max_len"] >= rows
                                  or 0 < causal_rows <= r["causal_len"]
                                  or (idle and r["grid_len"] >= rows))]
    if cover:
        return _tier_name(name, min(cover, key=lambda r: (r["max_len"], -r["narrow"])))
    reach = [r for r in family if r["max_len"] and r["tail_len"] >= rows]
    if not reach:  # most families: no tier reaches this far
        return name
    tail = extent % block
    if 0 < tail <= block // 2:
        return _tier_name(name, min(reach, key=lambda r: r["tail_len"]))
    return name


def _name(r):
    """An inventory entry's untiered name."""
    return f"{r['op']}_{_short(r)}_d{r['head_dim']}_{r['flavor']}_{r['arch'].replace('_', '')}"


def _untiered_choice(idx, op, code, D, arch, fast_ok, masked, ragged_ok, padding):
    names = {0: "fp16", 1: "bf16", 2: "fp32", 3: "tf32"}
    base, fast = ("masked", "masked_fast") if masked else ("general", "fast")

    def of(dt, flavor):
        return idx.buckets.get((op, f"sm_{arch}", flavor, dt), set())
    dt = names[code]
    buckets = [b for b in of(dt, base) if b >= D]
    if not buckets and dt == "tf32":
        dt = "fp32"
        buckets = [b for b in of(dt, base) if b >= D]
    if not buckets:
        return None
    b = min(buckets)
    gen = f"{op}_{dt}_d{b}_{base}_sm{arch}"
    if not masked and D < b:
        rv = f"{op}_{dt}_d{b}_ragged_sm{arch}" if b in of(dt, "ragged") else None
        return (rv, gen, None) if ragged_ok and rv else (gen, rv, None)
    fv = f"{op}_{dt}_d{b}_{fast}_sm{arch}" if b in of(dt, fast) else None
    pv = (f"{op}_{dt}_d{b}_padding_fast_sm{arch}" if masked and b in of(dt, "padding_fast")
          else None)
    if padding and pv and fast_ok and D == b:
        return (pv, gen, fv)
    return (fv, gen, pv) if fast_ok and fv and D == b else (gen, fv, pv)


# the sequence-length tiers of kernels/variants.toml (read once)
_TIERS = [v for v in load(ROOT / "kernels" / "variants.toml").variants if v.max_len]


# the max(T, M) the dispatcher test tries for an op with tiers: a short sequence and each tier's
# edges (of every op: those of the others must leave it alone) and one past them: max_len;
# tail_len (past max_len, where the tail rule decides), with lengths that leave the untiered
# tile's last block half full, fuller and whole (320, 352, 384); causal_len, with a length
# between tail and it (1500); under max_len = 200, lengths with and without a narrow tail (197,
# 128: narrow_only)
_ENDS = {n for v in _TIERS for n in (v.max_len, v.tail_len, v.causal_len) if n}
TIER_LENS = tuple(sorted({1, 128, 197, 320, 352, 384, 1500} | _ENDS | {n + 1 for n in _ENDS}))


def _short(r):
    dt = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}[r["dtype"]]
    return "tf32" if dt == "fp32" and r["input_precision"] == "tf32" else dt


def test_dispatcher_choices_without_a_driver():
    """The dispatcher's variant choice for every op x dtype (incl. TF32 mode) x head dim
    (1..256, bucket edges and between) x alignment x mask, for each compute capability the
    wheel serves, at a long and a short sequence (and, for an op with sequence-length tiers,
    at each tier's edge and one past it), equals the rule stated on the inventory; where
    nothing matches (float32 above 128, dK-only with a mask) or the device is not served it
    raises NoKernelError naming what is missing. Decided by compute capability: no driver
    needed."""
    from aot_sdpa import _C

    inv = aot_sdpa.kernel_inventory()
    ops = [o["name"] for o in _C.ops()]
    tiered = {r["op"] for r in inv if r["max_len"]}
    idx = _Index(inv)
    n = 0
    for cc, arch in ((90, 90), (80, 80), (86, 80), (89, 80)):
        for i, op in enumerate(ops):
            for code in range(4):
                for D in (1, 8, 32, 33, 40, 64, 65, 72, 80, 88, 96, 128, 129, 200, 256):
                    for fast_ok, ragged_ok, masked, padding in itertools.product(
                            (False, True), repeat=4):
                        # the sequence lengths: a long one (the hook's default) and a short
                        # one; for an op with tiers, also each tier's edge and just past it,
                        # without and with a causal mask
                        lens = TIER_LENS if op in tiered else (1,)
                        for rows, causal in itertools.product(
                                (None, *lens), (False, True) if op in tiered else (False,)):
                            c_rows = rows if causal and rows else 0  # T = M, no grouping
                            want = _expected_choice(idx, op, code, D, arch, fast_ok, masked,
                                                    ragged_ok, padding, rows, causal_rows=c_rows)
                            args = (i, code, D, cc, fast_ok, masked, ragged_ok, padding)
                            kw = ({} if rows is None else {"rows": rows}) | {"causal_rows": c_rows}
                            if want is None:
                                with pytest.raises(aot_sdpa.NoKernelError, match=f"no '{op}'"):
                                    _C._select_for_cc(*args, **kw)
                            else:
                                assert _C._select_for_cc(*args, **kw) == want
                            n += 1
    per_op = 4 * 4 * 15 * 16  # CCs x dtype codes x head dims x the four flags
    assert n == per_op * (2 * (len(ops) - len(tiered)) + 2 * len(tiered) * (1 + len(TIER_LENS)))
    assert tiered == {"fwd", "bwd_dq", "bwd_dkdv", "bwd_fused", "fwd_jvp"}
    # spot checks of the rule itself
    fwd = ops.index("fwd")
    # 16-bit on sm_90: 64 < D <= 96 runs in the split buckets 80 and 96 ([split_buckets])
    assert _C._select_for_cc(fwd, 0, 72, 90, True, False)[0] == "fwd_fp16_d80_general_sm90"
    assert _C._select_for_cc(fwd, 0, 72, 90, False, False, True) == (
        "fwd_fp16_d80_ragged_sm90", "fwd_fp16_d80_general_sm90", None)
    assert _C._select_for_cc(fwd, 1, 80, 90, True, False)[0] == "fwd_bf16_d80_fast_sm90"
    assert _C._select_for_cc(fwd, 0, 88, 90, False, False, True)[0] == "fwd_fp16_d96_ragged_sm90"
    assert _C._select_for_cc(fwd, 0, 96, 90, True, False)[0] == "fwd_fp16_d96_fast_sm90"
    assert _C._select_for_cc(fwd, 0, 97, 90, False, False, True)[0] == "fwd_fp16_d128_ragged_sm90"
    assert _C._select_for_cc(fwd, 2, 72, 90, False, False, True)[0] == (
        "fwd_fp32_d128_general_sm90")  # float32: no split bucket
    # the backward's dQ and dK/dV kernels too; dK-only calls stay in 128 (and the float32
    # z pre-pass: no float32 split bucket)
    assert _C._select_for_cc(ops.index("bwd_dkdv"), 0, 72, 90, False, False, True)[0] == (
        "bwd_dkdv_fp16_d80_ragged_sm90")
    assert _C._select_for_cc(ops.index("bwd_dq"), 1, 96, 90, True, False)[0] == (
        "bwd_dq_bf16_d96_fast_sm90")
    assert _C._select_for_cc(ops.index("bwd_z_from_o"), 2, 72, 90, False, False, True)[0] == (
        "bwd_z_from_o_fp32_d128_ragged_sm90")
    assert _C._select_for_cc(ops.index("bwd_dk"), 0, 72, 90, False, False, True)[0] == (
        "bwd_dk_fp16_d128_general_sm90")
    assert _C._select_for_cc(ops.index("jvp"), 0, 72, 90, False, False, True)[0] == (
        "jvp_fp16_d128_ragged_sm90")  # nor for the other ops
    assert _C._select_for_cc(fwd, 3, 72, 90, False, False, True) == (
        "fwd_tf32_d128_general_sm90", None, None)  # TF32 mode: its general one (no TF32 ragged)
    assert _C._select_for_cc(fwd, 0, 72, 80, False, False, True) == (
        "fwd_fp16_d128_general_sm80", None, None)  # no ragged flavour for sm_80
    assert _C._select_for_cc(fwd, 0, 72, 90, False, True, True)[0] == (
        "fwd_fp16_d128_masked_sm90")  # with a mask: never ragged
    assert _C._select_for_cc(fwd, 0, 64, 90, True, True) == (
        "fwd_fp16_d64_masked_fast_sm90", "fwd_fp16_d64_masked_sm90",
        "fwd_fp16_d64_padding_fast_sm90")
    assert _C._select_for_cc(fwd, 0, 64, 90, True, True, padding=True) == (
        "fwd_fp16_d64_padding_fast_sm90", "fwd_fp16_d64_masked_sm90",
        "fwd_fp16_d64_masked_fast_sm90")
    # the 16-bit D = 64 forward's fast flavour has tiers for max(T, M) <= 200 and <= 768 on
    # sm_90 (the smallest max_len that covers the call)
    assert _C._select_for_cc(fwd, 1, 64, 90, True, False, rows=200) == (
        "fwd_bf16_d64_fast_sm90_t200", "fwd_bf16_d64_general_sm90", None)
    for rows in (201, 768):
        assert _C._select_for_cc(fwd, 1, 64, 90, True, False, rows=rows) == (
            "fwd_bf16_d64_fast_sm90_t768", "fwd_bf16_d64_general_sm90", None), rows
    # ... and past it, up to tail_len = 1152, where the 128-row tile's last block would be at
    # most half full (the grid's rows: T; `extent`, else rows)
    assert _C._select_for_cc(fwd, 1, 64, 90, True, False, rows=769)[0] == (
        "fwd_bf16_d64_fast_sm90_t768")  # 769 = 6 * 128 + 1
    assert _C._select_for_cc(fwd, 1, 64, 90, True, False, rows=1088)[0] == (
        "fwd_bf16_d64_fast_sm90_t768")  # 8 * 128 + 64: half full
    for rows, extent in ((864, -1), (896, -1), (1153, -1), (800, 768)):  # fuller, whole, past
        assert _C._select_for_cc(fwd, 1, 64, 90, True, False, rows=rows, extent=extent)[0] == (
            "fwd_bf16_d64_fast_sm90"), (rows, extent)  # tail_len; T = 768 with M = 800
    assert _C._select_for_cc(fwd, 1, 64, 90, True, False, rows=800, extent=769)[0] == (
        "fwd_bf16_d64_fast_sm90_t768")  # T = 769 with M = 800
    # causal calls run that tier up to its causal_len = 8192 whatever the tail (the shorter
    # one still below 200), non-causal ones of those lengths the untiered tile
    for rows in (1024, 1500, 8192):
        assert _C._select_for_cc(fwd, 1, 64, 90, True, False, rows=rows,
                                 causal_rows=rows)[0] == "fwd_bf16_d64_fast_sm90_t768", rows
        assert _C._select_for_cc(fwd, 1, 64, 90, True, False, rows=rows)[0] == (
            "fwd_bf16_d64_fast_sm90"), rows
    assert _C._select_for_cc(fwd, 1, 64, 90, True, False, rows=8193, causal_rows=8193)[0] == (
        "fwd_bf16_d64_fast_sm90")
    # causal_len counts per head: T = 4096 in groups of 4 query heads is 16384 grid rows
    assert _C._select_for_cc(fwd, 1, 64, 90, True, False, rows=16384, causal_rows=4096)[0] == (
        "fwd_bf16_d64_fast_sm90_t768")
    assert _C._select_for_cc(fwd, 1, 64, 90, True, False, rows=197, causal_rows=197)[0] == (
        "fwd_bf16_d64_fast_sm90_t200")
    # bucket 128: T <= 200 the two-stage tier, up to 2048 the three-stage one, which causal
    # calls run up to its causal_len = 8192; past those, the untiered tile
    for rows, causal, want in ((200, 200, "_t200"), (201, 0, "_t2048"), (2048, 0, "_t2048"),
                               (2049, 0, ""), (8192, 8192, "_t2048"), (8193, 8193, ""),
                               (16384, 4096, "_t2048")):
        assert _C._select_for_cc(fwd, 0, 128, 90, True, False, rows=rows, causal_rows=causal,
                                 bh=256, blocks_per_sm=1)[0] == f"fwd_fp16_d128_fast_sm90{want}", (
            rows, causal)
    assert _C._select_for_cc(fwd, 1, 64, 90, False, False, rows=64)[0] == (
        "fwd_bf16_d64_general_sm90")  # no general tier
    assert _C._select_for_cc(fwd, 1, 64, 90, True, True, rows=64)[0] == (
        "fwd_bf16_d64_masked_fast_sm90")  # nor a masked one
    assert _C._select_for_cc(fwd, 3, 64, 90, True, False, rows=64)[0] == (
        "fwd_tf32_d64_fast_sm90")  # nor a TF32 one
    assert _C._select_for_cc(fwd, 1, 64, 80, True, False, rows=64)[0] == (
        "fwd_bf16_d64_fast_sm80")  # nor on sm_80
    with pytest.raises(aot_sdpa.NoKernelError, match="for float32 with head dim 200"):
        _C._select_for_cc(fwd, 2, 200, 90, True, False)
    with pytest.raises(aot_sdpa.NoKernelError, match="'bwd_dk' kernel with a mask"):
        _C._select_for_cc(ops.index("bwd_dk"), 0, 64, 90, True, True)
    with pytest.raises(aot_sdpa.NoKernelError, match="a device is sm_75; this build has kernels"):
        _C._select_for_cc(fwd, 0, 64, 75, True, False)
    with pytest.raises(ValueError, match="unknown op index"):
        _C._select_for_cc(len(ops), 0, 64, 90, True, False)


def test_idle_grid_rule_without_a_driver():
    """A tier with grid_len also runs where max(T, M) <= grid_len and the untiered grid,
    bh * ceil(extent / block) programs with sms * blocks_per_sm running at once, would leave at
    least a quarter of the slots of its waves idle, for every tiered op, dtype and flag set,
    at grid sizes around that edge (one to three waves) for 132 and 114 multiprocessors (H100
    SXM / PCIe) running one or two programs each, with and without grouped heads' folded rows;
    the same rule as the inventory states. The rule reaches the 16-bit D = 64 dQ and dK/dV
    tiers."""
    from aot_sdpa import _C

    inv = aot_sdpa.kernel_inventory()
    ops = [o["name"] for o in _C.ops()]
    tiered = sorted({r["op"] for r in inv if r["max_len"]})
    assert {r["op"] for r in inv if r["grid_len"]} == {"bwd_dq", "bwd_dkdv"}
    idx = _Index(inv)
    n = hits = 0
    for sms, blocks in itertools.product((132, 114), (1, 2)):
        slots = sms * blocks
        # grid heads at the edge for one or two programs per head, one to three waves
        edges = {e + d for per_head in (1, 2) for w in (1, 2, 3)
                 for e in (3 * w * slots // 4 // per_head,) for d in (0, 1)}
        for op in tiered:
            for code, D, (fast_ok, masked) in itertools.product(
                    range(4), (40, 64, 128), ((True, False), (False, False), (True, True))):
                for rows, extent in ((64, 64), (65, 65), (197, 197), (512, 512), (513, 513),
                                     (200, 800)):  # T = 800 folded rows of M = 200 keys
                    for bh in sorted({1, sms, *edges}):
                        kw = {"rows": rows, "extent": extent, "bh": bh, "sms": sms,
                              "blocks_per_sm": blocks}
                        want = _expected_choice(idx, op, code, D, 90, fast_ok, masked, **kw)
                        args = (ops.index(op), code, D, 90, fast_ok, masked)
                        n += 1
                        if want is None:  # e.g. bwd_fused: float32 only
                            with pytest.raises(aot_sdpa.NoKernelError, match=f"no '{op}'"):
                                _C._select_for_cc(*args, **kw)
                            continue
                        assert _C._select_for_cc(*args, **kw) == want, (op, code, D, *args, kw)
                        hits += want[0] != _expected_choice(idx, op, code, D, 90, fast_ok,
                                                            masked, rows=rows, extent=extent)[0]
    assert n > 2 * 2 * len(tiered) * 4 * 3 * 3 * 6 * 8 and hits > 0
    assert idle_grid(24, 264) and idle_grid(384, 264) and idle_grid(396, 264)
    assert not any(idle_grid(p, 264) for p in (256, 397, 512, 640, 768))
    dq, dkdv = ops.index("bwd_dq"), ops.index("bwd_dkdv")
    # T = 197 (both loops end 5 rows past a whole block): ViT-B at batch 1 / 6 (24 / 144
    # untiered programs: 9% / 55% of one wave of 264) and ViT-S (32 x 6 heads: 384 programs,
    # 73% of two waves) run the grid_len tiers' tiles with the narrow tail; ViT-B at batch 32
    # (768: 97% of three), 128 heads (256: 97% of one) and the default large grid the untiered
    # tiles with it; past grid_len = 512 the untiered tiles; T = 128 (no tail) the grid_len
    # tiers themselves
    for op, name in ((dq, "bwd_dq_fp16_d64_fast_sm90"), (dkdv, "bwd_dkdv_fp16_d64_fast_sm90")):
        def run(op=op, **kw):
            return _C._select_for_cc(op, 0, 64, 90, True, False, **kw)[0]
        for bh in (12, 72, 192):
            assert run(rows=197, bh=bh) == name + "_t64n16", bh
        for bh in (384, 128):
            assert run(rows=197, bh=bh) == name + "_t200n16", bh
        assert run(rows=197) == name + "_t200n16"
        assert run(rows=513, bh=1) == name
        assert run(rows=128, bh=12) == name + "_t64"
        # one program per multiprocessor: ViT-S's 384 fill 97% of three waves of 132
        assert run(rows=197, bh=192, blocks_per_sm=1) == name + "_t200n16"
    with pytest.raises(ValueError, match="sms, blocks_per_sm >= 1"):
        _C._select_for_cc(dq, 0, 64, 90, True, False, rows=197, bh=12, blocks_per_sm=0)
    # the device's own count comes from the driver (test_breadth_gpu.py); a name is checked first
    with pytest.raises(ValueError, match="no variant named 'bwd_dq_fp16_d64_fast_sm91'"):
        _C._blocks_per_sm("bwd_dq_fp16_d64_fast_sm91", 0)


def test_narrow_tiers_run_only_where_their_tail_is_narrow_without_a_driver():
    """The 16-bit D = 64 dQ and dK/dV tiers with a narrow tail (narrow_only) run where they
    cover a call only where the inner loop (dQ: the M keys; dK/dV: the T query rows) ends
    1..16 rows past a whole block of theirs (64 keys; 32 rows); elsewhere the untiered twin, and
    the T <= 64 tier where it covers the call. Of the two that cover T <= 64, the narrow one
    (the same tile with the tail) wins. The mirror of the rule agrees at every inner length
    from 1 to 200."""
    from aot_sdpa import _C

    inv = aot_sdpa.kernel_inventory()
    assert {(r["op"], r["max_len"], r["narrow"]) for r in inv if r["narrow"]} == {
        ("bwd_dq", 200, 16), ("bwd_dkdv", 200, 16), ("bwd_dq", 64, 16), ("bwd_dkdv", 64, 16)}
    ops = [o["name"] for o in _C.ops()]
    idx = _Index(inv)
    for op, block, name in (("bwd_dq", 64, "bwd_dq_fp16_d64_fast_sm90"),
                            ("bwd_dkdv", 32, "bwd_dkdv_fp16_d64_fast_sm90")):
        i = ops.index(op)
        for inner, tier in ((197, True), (192, False), (block * 3 + 16, True),
                            (block * 3 + 17, False), (128, False), (65, True)):
            assert _C._select_for_cc(i, 0, 64, 90, True, False, rows=200, extent=200,
                                     inner=inner)[0] == name + ("_t200n16" if tier else ""), inner
        assert _C._select_for_cc(i, 0, 64, 90, True, False, rows=64, inner=64)[0] == name + "_t64"
        narrow48 = 0 < 48 % block <= 16  # dK/dV: 16 rows past 32; dQ: 48 keys, no whole block
        assert _C._select_for_cc(i, 0, 64, 90, True, False, rows=48, inner=48)[0] == (
            name + ("_t64n16" if narrow48 else "_t64"))
        assert _C._select_for_cc(i, 0, 64, 90, True, False, rows=201, inner=197)[0] == name
        for inner in range(1, 201):
            for code in (0, 1):
                for rows in (64, 200):
                    kw = {"rows": rows, "extent": 150, "inner": inner}
                    assert _C._select_for_cc(i, code, 64, 90, True, False, **kw) == (
                        _expected_choice(idx, op, code, 64, 90, True, False, **kw))


def test_tier_rows_hook_swaps_and_refuses_negatives():
    """_C._tier_rows (benchmarks/ab_tiers.py's hook) returns the previous setting, 0 (each
    call's own max(T, M)) by default, and refuses a negative length."""
    from aot_sdpa import _C

    assert _C._tier_rows(1) == 0
    try:
        assert _C._tier_rows(2**31 - 1) == 1
        with pytest.raises(ValueError, match="rows >= 0"):
            _C._tier_rows(-1)
    finally:
        assert _C._tier_rows(0) == 2**31 - 1


def test_unpacking_without_lzma_is_a_named_error():
    """A Python without its lzma module cannot unpack the kernels: the first use raises
    CudaError naming the image and the missing module (no crash, no garbage image)."""
    code = ("import sys; sys.modules['lzma'] = None\n"
            "import aot_sdpa\nfrom aot_sdpa import _C\n"
            "try:\n    _C._unpacked_image('fwd_sm90')\n"
            "except aot_sdpa.CudaError as e:\n    print('raised:', e)\n"
            "print('unpacked:', [im['unpacked'] for im in _C.images() if im['name'] == 'fwd_sm90'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "raised: aot_sdpa: unpacking the kernels of 'fwd_sm90'" in out.stdout, out.stdout
    assert "lzma" in out.stdout and "unpacked: [False]" in out.stdout


def test_op_abi_is_generated_with_stride_owners():
    from aot_sdpa._native import INT_NAMES
    from aot_sdpa._native import OPS as abi

    assert set(abi) == OPS | {"bwd_fused", "bwd_z_from_o"}
    assert INT_NAMES == ("Z", "H", "T", "M", "D", "HAS_TDO", "Q_LEN", "DIAG", "HAS_BIAS", "HAS_O")
    assert abi["fwd"].pointers == ("Q", "K", "V", "Bias", "O", "Mstat", "Lstat")
    assert abi["fwd"].stride_owners == ("Q", "K", "V", "O", "Mstat", "Bias")
    # dQ takes the forward's O (null without it; HAS_O) and forms z itself
    assert abi["bwd_dq"].pointers == ("Q", "K", "V", "DO", "O", "Bias", "Mstat", "Lstat", "Zbuf",
                                      "DQ")
    assert abi["bwd_dkdv"].stride_owners == ("Q", "K", "V", "DO", "DK", "DV", "Mstat", "Lstat",
                                             "Bias")
    # every op that computes scores takes the attention mask but the one-kernel backward
    # (masked calls run the two kernels); z from dO . O does not
    assert {n for n, a in abi.items() if "Bias" not in a.pointers} == {"bwd_z_from_o", "bwd_fused"}
    # ... and, in "fp16x3", Q's and dO's rows split by its pre-pass (Split: no strides)
    assert abi["bwd_fused"].pointers == ("Q", "K", "V", "DO", "Mstat", "Lstat", "Zbuf", "DK", "DV",
                                         "DQ", "Split")
    assert abi["bwd_z_from_o"].pointers == ("O", "DO", "Q", "Mstat", "Lstat", "Zbuf", "Split")
    assert "Split" not in abi["bwd_fused"].stride_owners + abi["bwd_z_from_o"].stride_owners
    for a in abi.values():
        assert set(a.stride_owners) <= set(a.pointers)


def test_import_does_not_import_triton():
    code = "import sys, aot_sdpa; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_m_prints_inventory():
    out = subprocess.run([sys.executable, "-m", "aot_sdpa"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "kernel variants" in out.stdout and "fwd_jvp" in out.stdout


def test_launch_without_driver_raises_cuda_error():
    if not aot_sdpa._C.driver_error():
        pytest.skip("a CUDA driver is present; this checks the driver-less machine")
    from aot_sdpa._native import OPS as abi

    for call in (lambda: aot_sdpa._C.launch(abi["fwd"].index, 0, 0, 0, [0] * 7, [0] * 18,
                                            (1, 1, 1, 1, 16, 0, 1, 0, 0, 1), 1.0),
                 lambda: aot_sdpa._C.device_arch(0), lambda: aot_sdpa._C.load_all(0)):
        with pytest.raises(aot_sdpa.CudaError, match="libcuda"):
            call()


def test_launch_rejects_wrong_arity():
    from aot_sdpa._native import OPS as abi

    with pytest.raises(ValueError, match="takes 7 pointers and 18 strides"):
        aot_sdpa._C.launch(abi["fwd"].index, 0, 0, 0, [0] * 6, [0] * 18, (1, 1, 1, 1, 16, 0, 1, 0, 0, 1),
                           1.0)


def test_no_process_exit_in_native_code():
    for path in (ROOT / "csrc").glob("*"):
        text = path.read_text()
        for word in ("exit(", "abort(", "assert("):
            assert word not in text, f"{path.name} contains {word}"

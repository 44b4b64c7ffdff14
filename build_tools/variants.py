"""Read kernels/variants.toml and expand it into the list of variants to compile."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import tomllib

# "tf32" is not a tensor dtype: it is float32 data whose products may use plain TF32, the
# variant taken when torch.get_float32_matmul_precision() is "high" or "medium" (ops that list
# it in `extra_dtypes`; the others run their fp32-accurate variant in that mode).
DTYPE_TRITON = {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32", "tf32": "fp32"}
# fp32 must be fp32-accurate: tensor-core products in split precision, whose sum carries fp32
# accuracy: "tf32x3" (three TF32 products) or "bf16x6" (six bfloat16 products), per arch as
# variants.toml's `fp32_precision` says (default "tf32x3"), or IEEE products where an op asks
# with `input_precision = { fp32 = "ieee" }`, or "fp16x3" (three fp16 products of scaled
# operands, kernels/_common.py mma) where an op's `fp16x3` where-table covers the variant;
# never plain TF32. 16-bit inputs ignore the setting.
INPUT_PRECISION = {"fp16": "tf32", "bf16": "tf32", "fp32": "tf32x3", "tf32": "tf32"}
FP32_ACCURATE = {"ieee", "tf32x3", "bf16x6", "fp16x3"}
# "fp16x3" is computed by _common.mma, not by tl.dot: only for ops whose every product goes
# through mma, and only where a `fp16x3` where-table names it (never an arch-wide default)
MMA_ONLY = {"fp16x3"}
EXTRA_DTYPES = {"tf32"}
BLOCK_KEYS = ("BLOCK_M", "BLOCK_N", "TAIL_M", "TAIL_N")
# a narrow ragged tail (the kernels' TAIL_N in the forward and dQ, TAIL_M in dK/dV; unset: 0,
# off): a ragged tail of at most TAIL_N keys (TAIL_M query rows) is swept as one block of that
# many instead of a whole BLOCK_N (BLOCK_M) one; a power of two >= 16 (a 16-bit product's
# least inner size) below its block
TAIL_OF = {"TAIL_N": "BLOCK_N", "TAIL_M": "BLOCK_M"}
# general: any head dim <= bucket, any strides; fast: head dim == bucket, aligned (hints);
# masked: as general, reading the attention mask (kernels' MASKED); masked_fast: masked with
# fast's conditions and hints; padding_fast: masked_fast for key-padding masks only ([abi]
# zero_strides); ragged: fast's alignment with a head dim below the bucket (tail columns
# masked; strides and D multiples of 8); kernels/variants.toml
FLAVORS = ("general", "fast", "masked", "masked_fast", "ragged", "padding_fast")
# hinted (aligned data, divisibility hints, [abi] unit_strides and narrow_row_strides)
FAST_FLAVORS = {"fast", "masked_fast", "ragged", "padding_fast"}
EVEN_D_FLAVORS = {"fast", "masked_fast", "padding_fast"}  # head dim == bucket (no tail mask)
MASKED_FLAVORS = {"masked", "masked_fast", "padding_fast"}  # read the attention mask (MASKED)
# the kernels' MASKED (Variant.masked): 0 no mask; 1 one masked sweep for any mask (a
# key-padding mask is its row-stride-0 case); 2 as 1, and key-padding masks take their own
# sweeps (_common.padding_sweeps, dK/dV's zero-bias path, the second-order kernels' bias
# vector). 2 in the hinted masked flavours; the masked flavour (the fallback) takes 2 where
# variants.toml [padding_sweeps] says, else 1 (the key-padding code cost its cubins 2-3.5x the
# compile time)
HINTED_MASKED_LEVEL = 2
# the unmasked hinted flavours an op's `no_hints` entries leave out (those calls run general;
# an entry's `flavors`, if given, narrows it to those of them)
UNHINTABLE = ("fast", "ragged")
# flavours compiled only where a table of that name says (archs, dtypes, head_dims)
LIMITED_FLAVORS = ("ragged", "padding_fast", "masked_fast")
# the divisibility (in elements) the hinted flavours promise of data strides (and, ragged, of
# D): 16 as Triton's JIT; 8 for ragged, the least that keeps 16-byte vector loads of 16-bit
# rows whose head dim is a multiple of 8 (D = 40, 72, 80, 96, ...)
STRIDE_DIVISIBILITY = {"fast": 16, "masked_fast": 16, "padding_fast": 16, "ragged": 8}
MAX_BLOCK = 1024  # python/aot_sdpa/_checks.py MAX_SEQ_LEN leaves this margin below 2**31
# the longest sequence a tier may cover (configs' max_len): short sequences are what tiers are
# for, and the dispatcher compares max(T, M) with it as int32
MAX_TIER_LEN = 1 << 16


def cubin_key(v: dict) -> str:
    """What a variant compiles, as one string: its JSON (Variant.as_json) with sorted keys.
    Two variants with one key would compile the same cubin (load refuses that), so render.py
    finds each compiled cubin's Variant by it."""
    return json.dumps(v, sort_keys=True)


def variant_name(v: dict) -> str:
    """A variant's name from its fields (Variant.as_json or asdict): op, dtype, bucket,
    flavour, arch and, for a sequence-length tier, "_t<max_len>", with "n<narrow>" for one that
    runs only where it sweeps a narrow tail (narrow_only: a tier of the same max_len beside the
    one without a tail)."""
    tier = f"_t{v['max_len']}" if v.get("max_len") else ""
    tier += f"n{v['narrow']}" if tier and v.get("narrow") else ""
    return f"{v['op']}_{v['dtype']}_d{v['head_dim']}_{v['flavor']}_sm{v['arch']}{tier}"


@dataclasses.dataclass(frozen=True)
class Variant:
    op: str
    source: str
    kernel: str
    grid: str
    dtype: str
    head_dim: int
    arch: int
    serves: tuple[int, ...]  # compute capabilities whose devices run this cubin
    input_precision: str     # tl.dot input_precision (fp32: FP32_ACCURATE; tf32: "tf32")
    flavor: str
    blocks: tuple[tuple[str, int], ...]
    constexprs: tuple[tuple[str, int], ...]
    num_warps: int
    num_stages: int
    maxnreg: int | None = None  # ptxas register cap per thread (None: ptxas decides)
    masked: int = 0  # the kernels' MASKED (see HINTED_MASKED_LEVEL)
    # ptxas --minnctapersm: the blocks per SM its register allocation may plan for (None:
    # ptxas decides; see the op tables' min_blocks_per_sm in kernels/variants.toml)
    min_blocks_per_sm: int | None = None
    # a sequence-length tier: the dispatcher runs this variant for calls with max(T, M) <=
    # max_len in place of its untiered twin (the same op, dtype, bucket, flavour and arch:
    # None), see the configs' max_len in kernels/variants.toml
    max_len: int | None = None
    # a tier's reach past max_len, up to max(T, M) <= tail_len: there the dispatcher runs it
    # only when the untiered tile's last block of the grid's rows would be at most half full
    # (0 < rows mod block <= block / 2; block: BLOCK_M, or BLOCK_N where the grid tiles the
    # keys); see the configs' tail_len. Dispatch only: not a compile input, so not in as_json
    # (the cache key)
    tail_len: int | None = None
    # a tier's reach for causal calls (the first query row sees fewer than all M keys): where
    # max(T, M) per head (T before grouped heads are folded) <= causal_len the dispatcher runs
    # it for them whatever the tail (its smaller tile wastes less work on the diagonal
    # blocks); see the configs' causal_len. Dispatch only, like tail_len
    causal_len: int | None = None
    # a tier's reach for grids that leave waves idle: where max(T, M) <= grid_len and the
    # untiered twin's grid would leave at least a quarter of the slots of its waves idle (its
    # grid heads times blocks against the device's multiprocessors times the twin's occupancy,
    # read at run time) the dispatcher runs it (its smaller tile's extra programs fill them);
    # see the configs' grid_len. Dispatch only, like tail_len
    grid_len: int | None = None
    # a tier with a narrow tail (TAIL_N / TAIL_M) that runs only where it sweeps one (a
    # config's narrow_only): for calls whose inner loop (the keys of a query-side op, the
    # query rows of a key-side one) ends 1..narrow rows past a whole block of this tier's
    # (BLOCK_N, or BLOCK_M where the grid tiles the keys); the tail's size, else None.
    # Dispatch only, like tail_len
    narrow: int | None = None

    @property
    def name(self) -> str:
        return variant_name(vars(self))

    @property
    def untiered_name(self) -> str:
        """The name of the untiered variant of this one's family (its own name when untiered)."""
        return variant_name({**vars(self), "max_len": None, "narrow": None})

    @property
    def block(self) -> dict[str, int]:
        return dict(self.blocks)

    def as_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["blocks"] = dict(self.blocks)
        d["constexprs"] = dict(self.constexprs)
        d["serves"] = list(self.serves)
        for key in ("min_blocks_per_sm", "max_len"):  # unset: left out, so the cache keys
            if d[key] is None:  # of every other variant stayed
                del d[key]
        del d["tail_len"], d["causal_len"], d["grid_len"], d["narrow"]  # how the dispatcher
        # picks it, not how it compiles
        return d


@dataclasses.dataclass(frozen=True)
class Spec:
    variants: list[Variant]
    abi: dict
    ops: dict  # op name -> op table (source, kernel, grid, ...)
    archs: list[int]
    serves: dict[int, list[int]]  # compiled arch -> compute capabilities it runs on


def ptxas_options(min_blocks_per_sm: int | None) -> dict:
    """The Triton compile option that hands a variant's min_blocks_per_sm to ptxas
    (--minnctapersm), {} when unset: the AOT build and the JIT sweeps (jit_call) pass the same."""
    if min_blocks_per_sm is None:
        return {}
    return {"ptx_options": f"--minnctapersm {min_blocks_per_sm}"}


def _covers(entry: dict, arch: int, dtype: str, head_dim: int, flavor: str | None = None) -> bool:
    """Whether a where-table (archs, dtypes, head_dims and, where a flavour is given, flavors;
    a key left out takes every value) covers this arch, dtype, bucket (and flavour)."""
    return (arch in entry.get("archs", [arch]) and dtype in entry.get("dtypes", [dtype])
            and head_dim in entry.get("head_dims", [head_dim])
            and (flavor is None or flavor in entry.get("flavors", [flavor])))


def check_split_table(split: dict) -> None:
    """[split_buckets], checked once: each bucket must be a power of two plus a power-of-two
    tail >= 16 (the kernels' split_lead), and its flavours unmasked ones (the split kernels
    have no mask)."""
    for bucket in (int(b) for b in split.get("buckets", [])):
        lead = 1 << (bucket.bit_length() - 1)
        tail = bucket - lead
        if tail < 16 or tail & (tail - 1):
            raise ValueError(f"variants.toml: [split_buckets] bucket {bucket} is not a power of "
                             "two plus a power-of-two tail >= 16")
    bad = [f for f in split.get("flavors", []) if f in MASKED_FLAVORS or f not in FLAVORS]
    if bad:
        raise ValueError(f"variants.toml: [split_buckets] flavors {bad}: the split kernels "
                         "have no mask; known unmasked flavours: general, fast, ragged")


def split_buckets(split: dict, op: str, arch: int, dtype: str) -> list[int]:
    """The [split_buckets] buckets compiled for this op, arch and dtype (none where the table
    leaves them out); their flavours are the table's `flavors`."""
    if op not in split.get("ops", []) or not _covers(split, arch, dtype, 0):
        return []
    return [int(b) for b in split.get("buckets", [])]


def _pick_config(op: str, configs: list[dict], arch: int, dtype: str, head_dim: int,
                 flavor: str, max_len: int | None = None,
                 narrow_only: bool = False) -> dict | None:
    """The first config whose arch, dtypes, head_dims and flavors (each optional) all match,
    among those without a max_len (the untiered variant; none: an error) or, given max_len,
    those of that sequence-length tier (with narrow_only as given: a tier with a narrow tail
    may share its max_len with one without; none: None, no variant of that tier).
    masked_fast takes the masked flavour's configs unless a config names it (they were tuned
    on kernels with its hints: benchmarks/tune_real.py masked); ragged and padding_fast take
    fast's (ragged: the same tiles and loads, with a tail mask; padding_fast: its sweeps of
    zero-bias key blocks are fast's, measured faster there in every op but the forward); a
    tier's configs take only the flavours they name."""
    like = {"masked_fast": "masked", "ragged": "fast", "padding_fast": "fast"}.get(flavor)
    if max_len is not None:
        like = None  # a tier's configs name each flavour they tier
    for cfg in configs:
        flavors = cfg.get("flavors", [flavor])
        if (cfg.get("max_len") == max_len and cfg.get("narrow_only", False) == narrow_only
                and cfg.get("arch", arch) == arch
                and dtype in cfg.get("dtypes", [dtype]) and head_dim in cfg.get("head_dims", [head_dim])
                and (flavor in flavors or like in flavors)):
            return cfg
    if max_len is not None:
        return None
    raise ValueError(f"variants.toml: op {op!r} has no config for arch {arch} dtype {dtype} "
                     f"head dim {head_dim} flavor {flavor}")


def _variant(op: str, table: dict, cfg: dict, where: tuple[int, str, int], flavor: str,
             masked: int, serves: dict[int, list[int]], max_len: int | None,
             fp32_precision: dict[int, str]) -> Variant:
    """One variant of `op` at `where` (arch, dtype, bucket) compiled with `cfg`. A config's own
    min_blocks_per_sm (a sequence-length tier's tile measured with it) overrides the op's
    where-table; the op's input_precision overrides the arch's fp32_precision, and its fp16x3
    where-table both, for the fp32 variants it covers."""
    arch, dtype, head_dim = where
    blocks = tuple((k, int(cfg[k])) for k in BLOCK_KEYS if k in cfg)
    if any(b > MAX_BLOCK for _, b in blocks):
        raise ValueError(f"variants.toml: op {op!r} block {blocks} exceeds {MAX_BLOCK} (the "
                         "runtime's sequence-length bound assumes it)")
    for tail, block in TAIL_OF.items():
        n = cfg.get(tail)
        if n is not None and (n < 16 or n & (n - 1) or n >= cfg.get(block, 0)):
            raise ValueError(f"variants.toml: op {op!r} {tail} = {n}: a power of two >= 16 "
                             f"below {block} ({cfg.get(block)})")
    mb = 1 if any(_covers(e, *where, flavor) for e in table.get("min_blocks_per_sm", [])) else None
    precision = table.get("input_precision", {}).get(dtype, fp32_precision.get(
        arch, INPUT_PRECISION[dtype]) if dtype == "fp32" else INPUT_PRECISION[dtype])
    if dtype == "fp32" and any(_covers(e, *where, flavor) for e in table.get("fp16x3", [])):
        precision = "fp16x3"
    if "min_blocks_per_sm" in cfg:
        mb = int(cfg["min_blocks_per_sm"])
    return Variant(
        op=op, source=table["source"], kernel=table["kernel"], grid=table["grid"], dtype=dtype,
        head_dim=head_dim, arch=arch, serves=tuple(serves[arch]), flavor=flavor, blocks=blocks,
        input_precision=precision,
        # the op's constexprs, then the config's own (a kernel knob set per tile, e.g. TWO_PASS)
        constexprs=tuple(sorted({**table.get("constexprs", {}),
                                 **cfg.get("constexprs", {})}.items())),
        num_warps=int(cfg["num_warps"]), num_stages=int(cfg["num_stages"]),
        maxnreg=int(cfg["maxnreg"]) if "maxnreg" in cfg else None, masked=masked,
        min_blocks_per_sm=mb, max_len=max_len,
        tail_len=int(cfg["tail_len"]) if "tail_len" in cfg else None,
        causal_len=int(cfg["causal_len"]) if "causal_len" in cfg else None,
        grid_len=int(cfg["grid_len"]) if "grid_len" in cfg else None,
        narrow=_narrow(cfg))


def _narrow(cfg: dict) -> int | None:
    """A config's narrow_only: its tier's narrow tail size (load checked that it has exactly
    one of TAIL_N, TAIL_M), else None."""
    if not cfg.get("narrow_only", False):
        return None
    return next(int(cfg[t]) for t in TAIL_OF if t in cfg)


def _kernel_source(path: Path, source: str) -> str:
    """A kernel source's text: next to the variants.toml read, else in the repository's
    kernels/ (a test's edited copy of variants.toml lives elsewhere)."""
    src = Path(path).parent / source
    if not src.is_file():
        src = Path(__file__).resolve().parent.parent / "kernels" / source
    return src.read_text()


def load(path: Path, only_ops: set[str] | None = None) -> Spec:
    data = tomllib.loads(Path(path).read_text())
    serves = {int(a): [int(c) for c in ccs] for a, ccs in data["serves"].items()}
    missing = [a for a in data["archs"] if a not in serves]
    if missing:
        raise ValueError(f"variants.toml: [serves] has no entry for archs {missing}")
    fp32_precision = {int(a): p for a, p in data.get("fp32_precision", {}).items()}
    if not set(fp32_precision.values()) <= FP32_ACCURATE - MMA_ONLY:
        raise ValueError(f"variants.toml: fp32_precision {fp32_precision}; fp32 must stay "
                         f"fp32-accurate ({sorted(FP32_ACCURATE - MMA_ONLY)}; fp16x3 only "
                         "through an op's fp16x3 where-table)")
    bucket_dtypes = {int(b): list(d) for b, d in data.get("bucket_dtypes", {}).items()}
    limits = {f: data.get(f, {}) for f in LIMITED_FLAVORS}  # where those are compiled
    split = data.get("split_buckets", {})  # head-dim buckets that are not powers of two
    check_split_table(split)
    sweeps = data.get("padding_sweeps", {})  # where the masked flavour has MASKED = 2 (none
    # without the table)
    variants = []
    for op, table in data["ops"].items():
        bad = {d: p for d, p in table.get("input_precision", {}).items()
               if d == "fp32" and p not in FP32_ACCURATE - MMA_ONLY}
        if bad:
            raise ValueError(f"variants.toml: op {op!r} asks for {bad}; fp32 must stay "
                             f"fp32-accurate ({sorted(FP32_ACCURATE - MMA_ONLY)}; fp16x3 "
                             "through the op's fp16x3 where-table)")
        if any(set(e.get("dtypes", ["fp32"])) != {"fp32"} for e in table.get("fp16x3", [])):
            raise ValueError(f"variants.toml: op {op!r} fp16x3 {table['fp16x3']}: a float32 "
                             "product precision (dtypes, if given, must be [\"fp32\"])")
        if table.get("fp16x3") and "tl.dot(" in _kernel_source(path, table["source"]):
            raise ValueError(f"variants.toml: op {op!r} fp16x3: {table['source']} calls tl.dot "
                             "itself; fp16x3 products exist only in _common.mma")
        extra = table.get("extra_dtypes", [])
        if not set(extra) <= EXTRA_DTYPES:
            raise ValueError(f"variants.toml: op {op!r} extra_dtypes {extra}; known: "
                             f"{sorted(EXTRA_DTYPES)}")
        if only_ops is not None and op not in only_ops:
            continue
        # (max_len, narrow_only): one variant each per family
        tiers = sorted({(int(c["max_len"]), bool(c.get("narrow_only", False)))
                        for c in table["configs"] if "max_len" in c})
        if any(t <= 0 or t > MAX_TIER_LEN for t, _ in tiers):
            raise ValueError(f"variants.toml: op {op!r} max_len {[t for t, _ in tiers]}: each "
                             f"must be in 1..{MAX_TIER_LEN}")
        for c in table["configs"]:
            for reach in ("tail_len", "causal_len", "grid_len"):
                if reach in c and ("max_len" not in c
                                   or not int(c["max_len"]) < int(c[reach]) <= MAX_TIER_LEN):
                    raise ValueError(f"variants.toml: op {op!r} {reach} {c[reach]}: only on a "
                                     f"tier (max_len), above its max_len, at most {MAX_TIER_LEN}")
        if any(c.get("narrow_only", False) and ("max_len" not in c or
                                                sum(t in c for t in TAIL_OF) != 1)
               for c in table["configs"]):
            raise ValueError(f"variants.toml: op {op!r} narrow_only: only on a tier (max_len) "
                             f"with one narrow tail ({' or '.join(TAIL_OF)})")
        if any("max_len" in c and "flavors" not in c for c in table["configs"]):
            raise ValueError(f"variants.toml: op {op!r} has a config with max_len but no "
                             "flavors: a sequence-length tier names the flavours it tiers")
        # an op's own `archs` / `dtypes` narrow the tables' (ops compiled where they pay only)
        for arch in table.get("archs", data["archs"]):
            for dtype in table.get("dtypes", [*data["dtypes"], *extra]):
                for head_dim in [*table.get("head_dims", data["head_dim_buckets"]),
                                 *split_buckets(split, op, int(arch), dtype)]:
                    if DTYPE_TRITON[dtype] not in bucket_dtypes.get(int(head_dim), [
                            DTYPE_TRITON[dtype]]):
                        continue  # a bucket compiled for some dtypes only ([bucket_dtypes])
                    is_split = int(head_dim) in split.get("buckets", [])
                    for flavor in table["flavors"]:
                        if flavor not in FLAVORS:
                            raise ValueError(f"variants.toml: op {op!r} flavor {flavor!r}; "
                                             f"known: {FLAVORS}")
                        if flavor in MASKED_FLAVORS and dtype in EXTRA_DTYPES:
                            continue  # masked TF32 calls run the fp32-accurate masked variant
                        where = (int(arch), dtype, int(head_dim))
                        if is_split:
                            if flavor not in split["flavors"]:
                                continue  # [split_buckets] flavors (never a masked one)
                        elif not _covers(limits.get(flavor, {}), *where):
                            continue  # [ragged], [padding_fast]: compiled where they pay
                        if flavor in UNHINTABLE and any(_covers(u, *where, flavor)
                                                        for u in table.get("no_hints", [])):
                            continue  # the op's no_hints: the general flavour runs faster
                        masked = 0
                        if flavor in MASKED_FLAVORS:
                            masked = HINTED_MASKED_LEVEL if flavor != "masked" or (
                                sweeps and _covers(sweeps, *where)) else 1
                        # the untiered variant, then one per sequence-length tier whose
                        # configs cover this one
                        for max_len, narrow_only in [(None, False), *tiers]:
                            cfg = _pick_config(op, table["configs"], arch, dtype, int(head_dim),
                                               flavor, max_len, narrow_only)
                            if cfg is None:
                                continue
                            variants.append(_variant(op, table, cfg, where, flavor, masked,
                                                     serves, max_len, fp32_precision))
    # names are unique by construction (one config per family and (max_len, narrow_only), the
    # narrow tail in the name); cubins need not be
    compiled = Counter(cubin_key(v.as_json()) for v in variants)
    if max(compiled.values(), default=1) > 1:  # render.py finds each cubin's variant by it
        raise ValueError("variants.toml: two tiers of one family compile the same cubin (a "
                         "narrow_only tier needs a tile or tail of its own)")
    return Spec(variants=variants, abi=data["abi"], ops=data["ops"], archs=list(data["archs"]),
                serves=serves)

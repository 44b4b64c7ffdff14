"""Causal attention, attention masks and head dims up to 256 on the GPU: every op (forward,
backward, JVP, fused forward+JVP, backward-JVP) against the fp64 reference with the project's
rule, on awkward shapes; causal T != M both ways (top-left as torch's is_causal, bottom-right
with rows that see no key when T > M); causal with grouped-query heads; masks (key padding,
additive, dense boolean, with causal, with grouped heads; rows whose keys are all masked);
the drop-in's attn_mask vs torch's math backend; float32 above D = 128 refused by name;
causal skips the blocks above the diagonal (measured)."""

from __future__ import annotations

import time

import pytest
import torch

import aot_sdpa
from aot_sdpa import reference

from _helpers import RULE_DTYPES, assert_within, idle_grid, operands

pytestmark = pytest.mark.gpu

def _ops(x, m, l, impl, causal, mask=None):
    q, k, v, do, tq, tk, tv = x
    c, mk = causal, mask
    if impl == "aot":
        return {"fwd": (aot_sdpa.triton_sdpa_fused(q, k, v, causal=c, mask=mk)[0],),
                "bwd": aot_sdpa.sdpa_bwd(q, k, v, do, m, l, causal=c, mask=mk),
                "jvp": (aot_sdpa.sdpa_jvp(q, k, v, tq, tk, tv, m, l, causal=c, mask=mk),),
                "fwd_jvp": (aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv, causal=c, mask=mk)[3],),
                "bwd_jvp": aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv, causal=c,
                                                 mask=mk)}
    return {"fwd": (reference.forward(q, k, v, causal=c, mask=mk)[0],),
            "bwd": reference.backward(q, k, v, do, m, l, causal=c, mask=mk),
            "jvp": (reference.jvp(q, k, v, tq, tk, tv, m, l, causal=c, mask=mk),),
            "fwd_jvp": (reference.jvp(q, k, v, tq, tk, tv,
                                      *reference.forward(q, k, v, causal=c, mask=mk)[1:],
                                      causal=c, mask=mk),),
            "bwd_jvp": reference.bwd_jvp(q, k, v, do, m, l, tq, tk, tv, causal=c, mask=mk)}


def _padded(t: torch.Tensor) -> torch.Tensor:
    """t's values in a view whose rows are D + 4 elements apart: a row stride that is no
    multiple of 8, so no hinted flavour (fast: % 16, ragged: % 8) may take the call."""
    out = torch.full((*t.shape[:-1], t.shape[-1] + 4), float("nan"), dtype=t.dtype,
                     device=t.device)[..., :t.shape[-1]]
    out.copy_(t)
    return out


def _check_every_op(B, H, Hkv, T, M, D, dtype, factor, atol, causal, seed, mask=None,
                    padded=False):
    x = operands(B, H, Hkv, T, M, D, dtype, seed)
    if padded:
        x = [_padded(t) for t in x]
    x64 = [t.double() for t in x]
    _, m64, l64 = reference.forward(*x64[:3], causal=causal, mask=mask)
    ref = _ops(x64, m64, l64, "ref", causal, mask)
    ours = _ops(x, m64.float(), l64.float(), "aot", causal, mask)
    same = _ops(x, m64.float(), l64.float(), "torch", causal, mask)
    for op in ref:
        f = 3.0 if op == "bwd_jvp" and dtype != torch.float32 else factor
        if dtype == torch.float32 and D == 1:
            # float32 products are split-precision (3xTF32: 22-bit operands, 4x IEEE's rounding
            # per product; 6xBF16 on sm_90, ~24 bits); with D = 1 a score is one product,
            # nothing accumulates, and torch's IEEE error is near zero (measured on the H200 in
            # 3xTF32: dK 3.8e-6 vs torch's 2.4e-7)
            f = 8.0
        # atol relative to the op's largest output: an output can be exactly 0 by cancellation
        # (dQ of a row that sees one key: dS = P (dP - z) = 0), where torch's error is 0 too
        # and only the gradients' own magnitude gives rounding a scale
        mag = 1 + max(r.abs().max().item() for r in ref[op])
        tol = atol
        if dtype == torch.float32 and min(T, M) == 1 and causal:
            # a row that sees one key: the exact hQ is 0, a cancellation of terms of size
            # |dO||tV| ~ 10 that torch's IEEE products cancel exactly and 3xTF32's 22-bit
            # operands leave at ~6e-6 (measured on the H200: bwd_jvp hQ 5.7e-6)
            tol = 1e-5
        for i, (a, r, s) in enumerate(zip(ours[op], ref[op], same[op])):
            assert a.shape == r.shape
            assert_within(f"{op}[{i}]", a, r, s, f, tol * mag)
    # the forward's own stats: m = -inf exactly on rows that see no key, l = 0 there
    _, m, l = aot_sdpa.triton_sdpa_fused(*x[:3], causal=causal, mask=mask)
    assert torch.equal(torch.isinf(m), torch.isinf(m64))
    assert torch.equal(l == 0, l64 == 0)


@pytest.mark.parametrize("dtype,factor,atol", RULE_DTYPES, ids=lambda x: str(x))
@pytest.mark.parametrize("causal", [True, "bottom_right"])
@pytest.mark.parametrize("T,M,D", [(1, 3, 8), (3, 1, 8), (113, 203, 40), (203, 113, 40),
                                   (1023, 1024, 64), (1024, 1023, 72), (2048, 2048, 128)])
def test_every_op_causal_matches_fp64(dtype, factor, atol, causal, T, M, D):
    B, H = (1, 2) if T * M > 1_000_000 else (2, 3)
    _check_every_op(B, H, H, T, M, D, dtype, factor, atol, causal, seed=T + 7 * M)


@pytest.mark.parametrize("dtype,factor,atol", RULE_DTYPES, ids=lambda x: str(x))
@pytest.mark.parametrize("Hkv", [1, 2])
@pytest.mark.parametrize("causal", [True, "bottom_right"])
def test_every_op_causal_grouped_query_matches_fp64(dtype, factor, atol, Hkv, causal):
    _check_every_op(1, 8, Hkv, 333, 257, 64, dtype, factor, atol, causal, seed=Hkv)


@pytest.mark.parametrize("dtype,factor,atol", RULE_DTYPES[:2], ids=lambda x: str(x))
@pytest.mark.parametrize("D", [128, 256])
@pytest.mark.parametrize("causal,T,M,Hkv", [(True, 600, 600, 4), ("bottom_right", 600, 450, 2)])
def test_causal_backward_by_chunks_of_heads_matches_fp64(dtype, factor, atol, D, causal, T, M,
                                                         Hkv):
    """Buckets 128 and 256's sm_90 16-bit dQ and dK/dV kernels deal causal programs out
    heaviest first over chunks of 8 heads (kernels/variants.toml HEAD_CHUNK): 12 heads (a
    whole chunk, then a short one of 4) of several blocks each, and grouped heads folded
    (6 heads of 1200 rows) with bottom-right T > M."""
    _check_every_op(3, 4, Hkv, T, M, D, dtype, factor, atol, causal, seed=D + M)


@pytest.mark.parametrize("dtype,factor,atol", RULE_DTYPES, ids=lambda x: str(x))
@pytest.mark.parametrize("D", [1, 8, 40, 72, 96, 128, 200, 256])
@pytest.mark.parametrize("T,M", [(113, 203), (1024, 1023)])
def test_every_op_head_dims_matches_fp64(dtype, factor, atol, D, T, M):
    if dtype == torch.float32 and D > 128:
        q, k, v = operands(1, 2, 2, T, M, D, dtype, 0)[:3]
        with pytest.raises(NotImplementedError, match=f"head dim D={D} with float32"):
            aot_sdpa.triton_sdpa_fused(q, k, v)
        return
    _check_every_op(1, 3, 3, T, M, D, dtype, factor, atol, False, seed=D + T)


@pytest.mark.parametrize("dtype,factor,atol", RULE_DTYPES[:2], ids=lambda x: str(x))
@pytest.mark.parametrize("causal,padded", [(True, False), ("bottom_right", False), (False, True)])
def test_every_op_bucket_256_tiles_matches_fp64(dtype, factor, atol, causal, padded):
    """Bucket 256's sm_90 tiles (timed on the H200: a 128-row forward and dQ, 64x64 dK/dV;
    the general flavour's 128x64, 64x32, 32x64) under a causal mask with T != M and grouped
    heads, and the general flavour at D = 256 itself (rows D + 4 apart). float32 stops at 128."""
    _check_every_op(1, 2, 1, 333, 257, 256, dtype, factor, atol, causal, seed=5, padded=padded)


@pytest.mark.parametrize("dtype,factor,atol,D", [
    (*rule, D) for rule in RULE_DTYPES for D in (40, 72, 96, 200)
    if rule[0] != torch.float32 or D <= 128], ids=lambda x: str(x))  # fp32 stops at 128
def test_every_op_ragged_head_dims_general_flavour_matches_fp64(dtype, factor, atol, D):
    """Head dims below their bucket run the ragged flavour when aligned (the test above,
    contiguous tensors) and the general one otherwise: here every operand's rows are D + 4
    apart (NaN between them), which neither hinted flavour accepts."""
    _check_every_op(1, 3, 3, 113, 203, D, dtype, factor, atol, False, seed=D, padded=True)


@pytest.mark.parametrize("dtype,factor,atol", RULE_DTYPES[:2], ids=lambda x: str(x))
@pytest.mark.parametrize("D", [65, 72, 80, 88, 96])
@pytest.mark.parametrize("T,M,Hkv,causal,padded", [
    (197, 197, 3, False, False), (113, 203, 1, True, False), (1023, 1024, 3, "bottom_right", False),
    (203, 113, 3, "bottom_right", False), (256, 256, 3, False, True)])
def test_split_head_dim_buckets_match_fp64(dtype, factor, atol, D, T, M, Hkv, causal, padded):
    """The 16-bit forward, dQ and dK/dV kernels with 64 < D <= 96 run in the split buckets 80
    and 96 on sm_90 (kernels/variants.toml [split_buckets]: a 64-column lead plus a 16/32-column
    tail): fast when D fills the bucket, ragged when D % 8 == 0, general otherwise (D = 65, or
    rows D + 4 apart); the dispatcher's choice for these very tensors, then o, m and l against
    the fp64 reference with the project's rule, with causal both ways (rows that see no key)
    and multi-query heads, and every op of the call (the backward's in the split buckets, the
    others in 128) on the same operands."""
    from aot_sdpa import _C

    x = operands(2, 3, Hkv, T, M, D, dtype, seed=D + T)
    if padded:
        x = [_padded(t) for t in x]
    q, k, v = x[:3]
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v, causal=causal)
    # what the dispatcher runs for these tensors (the grouped heads folded into the rows, as
    # _ops does: k, v's head stride 0 for the folded call is not what decides the flavour)
    ops = [o_["name"] for o_ in _C.ops()]
    fwd = ops.index("fwd")
    code = 0 if dtype == torch.float16 else 1
    ints = [2, 3, T, M, D, 0, T, M - 1, 0, 1]  # ... HAS_BIAS, HAS_O (aot_sdpa._native.INT_NAMES)
    named = {"Q": q, "K": k, "V": v, "Bias": None, "O": o, "Mstat": m, "Lstat": l}
    fast_ok, ragged_ok = (_C._fast_ok(fwd, named, ints, ragged=r) for r in (False, True))
    assert (fast_ok, ragged_ok) == (not padded and D % 16 == 0, not padded and D % 8 == 0)
    run = _C._select(fwd, code, D, torch.cuda.current_device(), fast_ok, False,
                     ragged_ok=ragged_ok, rows=max(T, M), extent=T)[0]
    bucket = 80 if D <= 80 else 96
    flavor = "fast" if fast_ok and D == bucket else "ragged" if ragged_ok and D < bucket else "general"
    if torch.cuda.get_device_capability() == (9, 0):
        assert run == f"fwd_{('fp16', 'bf16')[code]}_d{bucket}_{flavor}_sm90", run
        # the backward's dQ (query rows) and dK/dV (keys) kernels: the same bucket and flavour
        for op, rows in (("bwd_dq", T), ("bwd_dkdv", M)):
            bwd = _C._select(ops.index(op), code, D, torch.cuda.current_device(), fast_ok,
                             False, ragged_ok=ragged_ok, rows=max(T, M), extent=rows)[0]
            assert bwd == f"{op}_{('fp16', 'bf16')[code]}_d{bucket}_{flavor}_sm90", bwd
    x64 = [t.double() for t in x]
    o64, m64, l64 = reference.forward(*x64[:3], causal=causal)
    o16, m16, l16 = reference.forward(*x[:3], causal=causal)  # torch in the input dtype
    assert torch.equal(torch.isinf(m), torch.isinf(m64)) and torch.equal(l == 0, l64 == 0)
    seen = ~torch.isinf(m64)
    assert_within("o", o, o64, o16, factor, atol)
    assert_within("m", m[seen], m64[seen], m16[seen], factor,
                  atol * (1 + m64[seen].abs().max().item()))
    assert_within("l", l / l64.max(), l64 / l64.max(), l16 / l64.max(), factor, atol)
    # every op on the same shapes (the backward's dQ and dK/dV in the split buckets)
    _check_every_op(1, 3, Hkv, T, M, D, dtype, factor, atol, causal, seed=D, padded=padded)


@pytest.mark.parametrize("dtype,factor,atol", RULE_DTYPES[:2], ids=lambda x: str(x))
@pytest.mark.parametrize("T,M,causal,padded", [
    (200, 200, False, False), (201, 200, True, False), (768, 768, False, False),
    (768, 768, True, False), (768, 768, False, True), (769, 768, False, False),
    (768, 769, True, False), (31, 768, True, False), (832, 832, True, False),
    (896, 896, False, False), (1153, 1152, False, False), (1500, 1500, True, False),
    (1500, 1200, True, False), (64, 64, False, False), (64, 63, True, False),
    (65, 64, False, False), (1024, 1000, True, False), (1025, 1025, True, False),
    (197, 197, False, False), (201, 197, False, False), (160, 160, False, False),
    (77, 144, False, False), (48, 40, False, False), (40, 48, True, False)])
def test_every_op_at_the_sequence_length_tier_edge_matches_fp64(dtype, factor, atol, T, M,
                                                                causal, padded):
    """The 16-bit D = 64 fast flavour runs its sequence-length tiers (their own tiles,
    kernels/variants.toml max_len) on sm_90. The forward: max_len = 200, then 768, which also
    runs up to its tail_len = 1152 where the untiered tile's last block of query rows would be
    at most half full (0 < T mod 128 <= 64), and for causal calls (M > 1: the first row sees
    fewer than all keys) up to its causal_len = 8192. dQ and dK/dV: max_len = 64, causal_len =
    1024, then max_len = 200 (the untiered tiles with a narrow ragged tail, TAIL_N / TAIL_M),
    and the 64 tier's tile with the narrow tail up to 64 (not causal_len), each of the narrow
    ones only where the loop ends in such a tail (narrow_only: dQ M mod 64, dK/dV T mod 32 in
    1..16), winning over the 64 tier. Else the untiered variants: both sides of each edge,
    causal too, and padded rows (general: no tier), every op against the fp64 reference with
    the project's rule."""
    from aot_sdpa import _C

    names = [o["name"] for o in _C.ops()]
    code = 0 if dtype == torch.float16 else 1
    rows = max(T, M)
    causal_rows = rows if causal and M > 1 else 0
    sm90 = not padded and torch.cuda.get_device_capability() == (9, 0)
    tiers = {"fwd": "t200" if rows <= 200 else "t768" if rows <= 768 or (
                 rows <= 1152 and 0 < T % 128 <= 64) or (causal_rows and rows <= 8192) else ""}
    for op, narrow in (("bwd_dq", 0 < M % 64 <= 16), ("bwd_dkdv", 0 < T % 32 <= 16)):
        tiers[op] = ("t64n16" if rows <= 64 and narrow else
                     "t64" if rows <= 64 or (causal_rows and rows <= 1024) else
                     "t200n16" if rows <= 200 and narrow else "")
    flavor = "general" if padded else "fast"
    for op, tier in tiers.items():
        run = _C._select(names.index(op), code, 64, torch.cuda.current_device(), not padded,
                         False, rows=rows, extent=M if op == "bwd_dkdv" else T,
                         causal_rows=causal_rows, inner=T if op == "bwd_dkdv" else M)[0]
        assert run.startswith(f"{op}_{('fp16', 'bf16')[code]}_d64_{flavor}_sm"), run
        # "90_t200n16" -> "t200n16"
        assert run.split("_sm", 1)[1].partition("_")[2] == (tier if sm90 else ""), run
    _check_every_op(2, 3, 3, T, M, 64, dtype, factor, atol, causal, seed=T + M, padded=padded)


@pytest.mark.parametrize("dtype,factor,atol", RULE_DTYPES[:2], ids=lambda x: str(x))
@pytest.mark.parametrize("B,H,Hkv,T,M,causal", [
    (1, 12, 12, 197, 197, False), (4, 12, 12, 197, 197, False), (1, 4, 4, 512, 512, False),
    (1, 4, 4, 513, 513, False), (1, 8, 2, 100, 300, False), (2, 8, 2, 150, 200, False),
    (1, 6, 6, 100, 450, "bottom_right"), (66, 1, 1, 197, 197, False),
    (67, 1, 1, 197, 197, False), (12, 12, 12, 197, 197, False), (32, 6, 6, 197, 197, False),
    (1, 128, 128, 197, 197, False), (1, 198, 198, 197, 197, False),
    (1, 199, 199, 197, 197, False), (1, 4, 4, 200, 197, True)])
def test_idle_grid_tier_rule_matches_fp64(dtype, factor, atol, B, H, Hkv, T, M, causal):
    """dQ and dK/dV also run their tiers (grid_len = 512) where max(T, M) <= 512 (T: the
    kernels' rows, grouped heads folded in) and the untiered tile's grid, B * Hkv *
    ceil(rows / 128) programs, would leave at least a quarter of the slots of its waves idle
    (this device's multiprocessors times the untiered variant's occupancy, the driver's):
    ViT-B at batch 1, 4 and 12, ViT-S (32 x 6 heads), on the H200 (264 slots) 396 programs
    but not 398 nor 256; past 512; causal calls up to causal_len. Where the loop ends in a
    narrow tail (dQ: M mod 64, dK/dV: the rows mod 32 in 1..16) the tier's tile with that tail
    runs (t64n16), else the tier (t64); where no tier covers, the T <= 200 narrow tier or the
    untiered tile. The dispatcher's choice for these grids, then every op against the fp64
    reference with the project's rule."""
    from aot_sdpa import _C

    names = [o["name"] for o in _C.ops()]
    code = 0 if dtype == torch.float16 else 1
    device = torch.cuda.current_device()
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    sm90 = torch.cuda.get_device_capability() == (9, 0)
    rows_q = (H // Hkv) * T  # the kernels' query rows: grouped heads folded in
    rows = max(rows_q, M)
    causal_rows = max(T, M) if causal else 0  # every case here: the first row sees fewer keys
    for op, extent, narrow in (("bwd_dq", rows_q, 0 < M % 64 <= 16),
                               ("bwd_dkdv", M, 0 < rows_q % 32 <= 16)):
        untiered = f"{op}_{('fp16', 'bf16')[code]}_d64_fast_sm90"
        blocks = _C._blocks_per_sm(untiered, device) if sm90 else 1
        assert blocks >= 1, (untiered, blocks)
        # both untiered tiles are 128 rows / keys
        idle = idle_grid(B * Hkv * -(-extent // 128), sms * blocks) and rows <= 512
        tier = ("" if not sm90 else "t64n16" if narrow and (rows <= 64 or idle) else
                "t64" if rows <= 64 or idle or 0 < causal_rows <= 1024 else
                "t200n16" if narrow and rows <= 200 else "")
        run = _C._select(names.index(op), code, 64, device, True, False, rows=rows,
                         extent=extent, causal_rows=causal_rows, bh=B * Hkv, inner=(
                             M if op == "bwd_dq" else rows_q))[0]
        assert run.split("_sm", 1)[1].partition("_")[2] == tier, (run, op, idle, blocks)
    _check_every_op(B, H, Hkv, T, M, 64, dtype, factor, atol, causal, seed=T + M + B)


# (op, dtype, bucket, flavour, arch, max_len, narrow) of each tier, and the block its loop
# sweeps the inner rows by (a narrow tier runs only where they end 1..narrow past one)
_GRID = {o["name"]: o["grid"] for o in aot_sdpa._C.ops()}  # 'T': query rows; 'M': keys
_INNER_BLOCK = {(r["op"], r["dtype"], r["head_dim"], r["flavor"], r["arch"], r["max_len"],
                 r["narrow"]): r["block_n"] if _GRID[r["op"]] == "T" else r["block_m"]
                for r in aot_sdpa.kernel_inventory() if r["max_len"]}
_TIERS = sorted(_INNER_BLOCK)
_RULES = {str(dt).split(".")[-1]: (dt, f, a) for dt, f, a in RULE_DTYPES}


@pytest.mark.parametrize("tier", _TIERS, ids=lambda t: "_".join(map(str, t)))
def test_every_sequence_length_tier_runs_and_matches_fp64(tier):
    """Each tier the wheel carries, at T = M = min(197, max_len) or, where a shorter tier of
    the same family covers that, one past the shorter tier's max_len (inside this tier); a
    narrow-tail tier at the longest such T whose inner rows end in its narrow tail: the
    dispatcher picks it (aligned data; a head dim below the bucket for a ragged tier) and every
    op of the call matches the fp64 reference with the project's rule."""
    from aot_sdpa import _C

    op, dtype_name, bucket, flavor, arch, max_len, narrow = tier
    cc = torch.cuda.get_device_capability()
    if arch != f"sm_{cc[0]}{cc[1]}":
        pytest.skip(f"a tier of {arch}")
    dtype, factor, atol = _RULES[dtype_name]
    # a head dim below the bucket for a ragged tier (above 96: the 16-bit forward's 72 and 88
    # run in its split buckets 80 and 96, which have no tier)
    D = {64: 40, 128: 104}[bucket] if flavor == "ragged" else bucket
    code = {"float16": 0, "bfloat16": 1, "float32": 2}[dtype_name]
    i = [o["name"] for o in _C.ops()].index(op)
    shorter = [t[5] for t in _TIERS if t[:5] == tier[:5] and t[5] < max_len]
    T = max(shorter) + 1 if shorter and max(shorter) >= min(197, max_len) else min(197, max_len)
    if narrow:
        block = _INNER_BLOCK[tier]
        T = max(t for t in range(max(shorter, default=0) + 1, min(197, max_len) + 1)
                if 0 < t % block <= narrow)
    run = _C._select(i, code, D, torch.cuda.current_device(), True, False, ragged_ok=True,
                     rows=T)[0]
    assert run.endswith(f"_{flavor}_sm{arch[3:]}_t{max_len}" + (f"n{narrow}" if narrow else "")), run
    _check_every_op(2, 3, 3, T, T, D, dtype, factor, atol, False, seed=bucket)


@pytest.mark.parametrize("D", [64, 128])  # 128: programs dealt out by chunks of heads
def test_causal_grouped_query_backward_is_bitwise_deterministic(D):
    q, k, v, do, *_ = operands(2, 8, 2, 1000, 1000, D, torch.bfloat16, seed=5)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v, causal=True)
    first = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o, causal=True)
    for _ in range(3):
        again = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o, causal=True)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("T,M,Hkv", [(197, 197, 8), (100, 300, 8), (300, 100, 2)])
def test_dropin_is_causal_matches_torch(dtype, T, M, Hkv):
    """torch's own is_causal (top-left), forward and backward, GQA through enable_gqa."""
    q, k, v, do, *_ = operands(2, 8, Hkv, T, M, 64, dtype, seed=T)
    xs = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = [t.double().requires_grad_() for t in (q, k, v)]
    o = aot_sdpa.scaled_dot_product_attention(*xs, is_causal=True, enable_gqa=Hkv != 8)
    o.backward(do)
    r = torch.nn.functional.scaled_dot_product_attention(*ref, is_causal=True,
                                                         enable_gqa=Hkv != 8)
    r.backward(do.double())
    tol = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}[dtype]
    assert (o.double() - r).abs().max().item() < tol * r.abs().max().item()
    for a, b in zip(xs, ref):
        assert (a.grad.double() - b.grad).abs().max().item() < tol * (
            1e-3 + b.grad.abs().max().item())


def _median_ms(fn, reps=20):
    """Median device time of one call of fn. Each call is queued behind a GPU sleep that
    outlasts the host's enqueueing (benchmarks/_harness.backlogged_ms), so the host's time is
    not in it: with the GPU idle at the start event it was (on 2026-12-01 a leased host's
    ~0.25 ms took the causal backward's ratio at T = 8192 to 1.48x once, 1.5x+ on re-runs)."""
    fn()
    torch.cuda.synchronize()
    w = time.perf_counter()
    fn()
    host_s = time.perf_counter() - w  # at least the host's enqueue time for one call
    torch.cuda.synchronize()
    cycles = int(min(4 * host_s + 1e-3, 0.1) * 2e9)  # ~2 GHz SM clock
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(cycles)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def test_causal_skips_the_blocks_above_the_diagonal():
    """At T = M = 8192 causal attention does half the work: the forward and the backward must
    run at least 1.5x faster than without the mask (masked-but-computed blocks would not)."""
    q, k, v, do, *_ = operands(1, 16, 16, 8192, 8192, 64, torch.bfloat16, seed=1)
    fwd, bwd = {}, {}
    for causal in (False, True):
        o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v, causal=causal)
        fwd[causal] = _median_ms(lambda c=causal: aot_sdpa.triton_sdpa_fused(q, k, v, causal=c))
        bwd[causal] = _median_ms(lambda c=causal, o=o, m=m, l=l: aot_sdpa.sdpa_bwd(
            q, k, v, do, m, l, o=o, causal=c))
    assert fwd[False] / fwd[True] >= 1.5, fwd
    assert bwd[False] / bwd[True] >= 1.5, bwd


def _mask(kind, B, H, T, M, dtype, seed):
    """key_padding: bool (B, 1, 1, M), batch b keeps its first M - 5 b keys (the last batch
    none: rows that see no key); additive: (1, H, T, M) in q's dtype (torch's rule), N(0, 1)
    with about a quarter -inf; dense: bool (B, H, T, M)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    if kind == "key_padding":
        lens = torch.tensor([max(M - 5 * b, 0) for b in range(B)], device="cuda")
        keep = torch.arange(M, device="cuda")[None, :] < lens[:, None]
        keep[-1] = False
        return keep[:, None, None, :]
    if kind == "additive":
        a = torch.randn(1, H, T, M, device="cuda", generator=g)
        a = a.masked_fill(torch.rand(1, H, T, M, device="cuda", generator=g) < 0.25,
                          float("-inf"))
        return a.to(dtype)
    return torch.rand(B, H, T, M, device="cuda", generator=g) > 0.5


@pytest.mark.parametrize("dtype,factor,atol", RULE_DTYPES, ids=lambda x: str(x))
@pytest.mark.parametrize("kind,causal", [("key_padding", False), ("additive", False),
                                         ("dense", False), ("additive", "bottom_right"),
                                         ("key_padding", True)])
@pytest.mark.parametrize("T,M,D", [(1, 3, 8), (113, 203, 40), (1023, 1024, 64),
                                   (203, 113, 128)])
def test_every_op_masked_matches_fp64(dtype, factor, atol, kind, causal, T, M, D):
    B, H = 2, 3
    mask = _mask(kind, B, H, T, M, dtype, seed=T + M)
    _check_every_op(B, H, H, T, M, D, dtype, factor, atol, causal, seed=T + 3 * M, mask=mask)


def _padding_patterns(kind, M, dtype, seed):
    """(5, 1, 1, M) key padding of five batches: every key kept; right padding that ends
    inside a key block (keeps 0.6 M keys: a plain sweep, one biased block, the rest dropped);
    left padding (the first 0.4 M masked); holes anywhere (about a third masked); every key
    masked. bool, or float with N(0, 1) where kept (no plain sweep) and -inf elsewhere."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    j = torch.arange(M, device="cuda")
    keep = torch.stack([j >= 0, j < round(0.6 * M) + 1, j >= round(0.4 * M),
                        torch.rand(M, device="cuda", generator=g) > 0.35, j < 0])
    if kind == "bool":
        return keep[:, None, None, :]
    b = torch.randn(5, M, device="cuda", generator=g).masked_fill(~keep, float("-inf"))
    return b.to(dtype)[:, None, None, :]


@pytest.mark.parametrize("dtype,factor,atol", RULE_DTYPES, ids=lambda x: str(x))
@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T,M,D", [(197, 197, 64), (300, 1100, 64), (129, 515, 128)])
def test_every_op_key_padding_patterns_match_fp64(dtype, factor, atol, kind, causal, T, M, D):
    """Key padding as batches of real inputs have it, in every op: the sweeps split a padded
    row into blocks run without the mask, biased blocks and dropped ones (padding_sweeps), and
    dK/dV zero a block's masked keys after an unmasked sweep (0 / -inf biases only)."""
    mask = _padding_patterns(kind, M, dtype, seed=M)
    _check_every_op(5, 2, 2, T, M, D, dtype, factor, atol, causal, seed=T + M, mask=mask)


@pytest.mark.parametrize("dtype,factor,atol", RULE_DTYPES, ids=lambda x: str(x))
@pytest.mark.parametrize("Hkv", [1, 2])
@pytest.mark.parametrize("shape", ["rows", "dense"])
def test_every_op_masked_grouped_query_matches_fp64(dtype, factor, atol, Hkv, shape):
    """(B, 1, T, M): the kernels' grouped-row view materialises its heads; (B, H, T, M)
    dense: a view (the head stride is T times the row stride)."""
    B, H, T, M = 2, 8, 257, 333
    g = torch.Generator(device="cuda").manual_seed(Hkv)
    mask = torch.rand(B, 1 if shape == "rows" else H, T, M, device="cuda", generator=g) > 0.4
    _check_every_op(B, H, Hkv, T, M, 64, dtype, factor, atol, False, seed=Hkv, mask=mask)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("kind", ["key_padding", "additive"])
def test_dropin_attn_mask_matches_torch_math(dtype, kind):
    """The drop-in's attn_mask vs torch's math backend with the same mask (fp64, forward and
    backward; key padding keeps a key for every row: torch gives NaN on fully masked rows)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    B, H, T, M = 3, 4, 197, 211
    q, k, v, do, *_ = operands(B, H, H, T, M, 64, dtype, seed=11)
    mask = _mask(kind, B, H, T, M, dtype, seed=3)
    if kind == "key_padding":
        mask[-1] = True
    xs = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = [t.double().requires_grad_() for t in (q, k, v)]
    o = aot_sdpa.scaled_dot_product_attention(*xs, attn_mask=mask)
    o.backward(do)
    with sdpa_kernel(SDPBackend.MATH):
        r = torch.nn.functional.scaled_dot_product_attention(
            *ref, attn_mask=mask if mask.dtype == torch.bool else mask.double())
    r.backward(do.double())
    tol = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}[dtype]
    for a, b in ((o, r), *((x.grad, y.grad) for x, y in zip(xs, ref))):
        assert (a.double() - b).abs().max().item() < tol * (1 + b.abs().max().item())


def test_masked_rows_get_zero_outputs_and_gradients():
    """A batch whose keys are all masked: o = 0, m = -inf, l = 0, and zero dQ, dK, dV."""
    q, k, v, do, *_ = operands(2, 2, 2, 64, 80, 64, torch.float16, seed=2)
    mask = torch.ones(2, 1, 1, 80, dtype=torch.bool, device="cuda")
    mask[1] = False
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v, mask=mask)
    assert torch.all(o[1] == 0) and torch.all(torch.isneginf(m[1])) and torch.all(l[1] == 0)
    assert torch.isfinite(m[0]).all() and (l[0] > 0).all()
    for g in aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o, mask=mask):
        assert torch.all(g[1] == 0) and g[0].abs().max() > 0


def test_masked_float32_in_tf32_mode_runs_the_fp32_accurate_masked_kernels():
    """No TF32 masked variant is compiled: under torch's "high" matmul precision a masked
    float32 call falls back to the fp32-accurate masked kernels (the dispatcher's fallback),
    so its error stays at the fp32 rule's level, with a mask of each kind."""
    B, H, T, M = 2, 3, 113, 203
    x = operands(B, H, H, T, M, 64, torch.float32, seed=9)
    x64 = [t.double() for t in x]
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        for kind in ("key_padding", "additive"):
            mask = _mask(kind, B, H, T, M, torch.float32, seed=4)
            _, m64, l64 = reference.forward(*x64[:3], mask=mask)
            ref = _ops(x64, m64, l64, "ref", False, mask)
            ours = _ops(x, m64.float(), l64.float(), "aot", False, mask)
            for op in ref:
                for a, r in zip(ours[op], ref[op]):
                    # TF32 products would be ~1e-3 off; fp32-accurate ones ~1e-6
                    assert (a.double() - r).abs().max().item() < 1e-4 * (1 + r.abs().max().item())
    finally:
        torch.set_float32_matmul_precision(prev)


def test_masked_calls_run_the_fast_masked_kernels_when_they_qualify():
    """With a mask the dispatcher runs masked_fast for aligned calls whose head dim fills its
    bucket (padding_fast for a key-padding mask where it is compiled), the masked (general)
    one otherwise, and loads the others as siblings; the ops without a masked_fast flavour
    run masked. Every dtype: TF32 mode runs fp32's."""
    from aot_sdpa import _C

    ops = [o["name"] for o in _C.ops()]
    with_fast = {r["op"] for r in aot_sdpa.kernel_inventory() if r["flavor"] == "masked_fast"}
    assert with_fast == {"fwd", "bwd_dkdv", "bwd_dq", "jvp", "fwd_jvp"}
    dev = torch.cuda.current_device()
    for i, op in enumerate(ops):
        if op == "bwd_z_from_o":  # reads no scores: never given a mask
            continue
        if op == "bwd_fused":  # float32 only (TF32 mode falls back to it), unmasked only
            for code in (0, 1):
                with pytest.raises(aot_sdpa.NoKernelError, match="no 'bwd_fused'"):
                    _C._select(i, code, 64, dev, True, False)
            for code in (2, 3):
                assert _C._select(i, code, 64, dev, True, False)[0] == "bwd_fused_fp32_d64_fast_sm90"
                with pytest.raises(aot_sdpa.NoKernelError, match="with a mask"):
                    _C._select(i, code, 64, dev, True, True)
            continue
        for code, dt in enumerate(("fp16", "bf16", "fp32", "fp32")):
            # without a mask: never a masked kernel
            assert "masked" not in _C._select(i, code, 64, dev, True, False)[0]
            if op in ("bwd_dk", "bwd_dv"):  # masked dK-only / dV-only calls run dK/dV
                with pytest.raises(aot_sdpa.NoKernelError, match="with a mask"):
                    _C._select(i, code, 64, dev, True, True)
                continue
            run, sib, _ = _C._select(i, code, 64, dev, True, True)
            if op in with_fast:
                assert run.startswith(f"{op}_{dt}_d64_masked_fast_sm"), (op, run)
                assert sib.startswith(f"{op}_{dt}_d64_masked_sm"), (op, sib)
                # a key-padding mask: padding_fast where compiled (sm_90 16-bit), else as above
                run_p = _C._select(i, code, 64, dev, True, True, padding=True)[0]
                want = "padding_fast" if code < 2 and "_sm90" in run else "masked_fast"
                assert run_p.startswith(f"{op}_{dt}_d64_{want}_sm"), (op, run_p)
                assert _C._select(i, code, 40, dev, True, True)[0].startswith(
                    f"{op}_{dt}_d64_masked_sm")
                assert _C._select(i, code, 64, dev, False, True)[0].startswith(
                    f"{op}_{dt}_d64_masked_sm")
            else:
                assert run.startswith(f"{op}_{dt}_d64_masked_sm") and sib is None, (op, run)

"""Run every public op through Triton's interpreter on the CPU (TRITON_INTERPRET=1).

Used by tests/test_kernels_interpreter.py in a subprocess (the interpreter must be chosen
before Triton is imported). The public functions run unchanged except for the launch: instead
of the compiled cubin, `_ops._launch` runs the same Triton source in the interpreter, with the
block sizes of kernels/variants.toml and the arguments assembled by parameter name exactly as
the generated launchers do. Prints one JSON object: check name -> [max error, allowance].

    python tests/_interpret_ops.py [fp32] [fp16] [fp16x3]   only the checks of the dtypes named
    (fp16 with the split head-dim buckets' cases; default fp32 and fp16), so that the test can
    run the two halves side by side in two processes; fp16x3: float32 checks whose launches run
    "fp16x3" products where sm_90 ships them (tests/test_fp16x3.py)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aot_sdpa  # noqa: E402
from aot_sdpa import _ops, reference  # noqa: E402
from build_tools import jit_call  # noqa: E402
from build_tools.variants import load  # noqa: E402

SPEC = load(ROOT / "kernels" / "variants.toml")
# the kernels' MASKED for a call with a mask: 2, the code of masked_fast and padding_fast (with
# the key-padding sweeps); _check_all(level=1) runs the masked flavour's single masked sweep
MASKED_LEVEL = {"level": 2}
# whether float32 backwards run the one-kernel dK/dV/dQ (bwd_fused; on the GPU _ops.fused_bwd
# asks the inventory): _check_all runs them both ways
FUSED = {"on": False}
# narrow ragged tails (build_tools/variants.py TAIL_OF) added to every launch whose kernel
# takes them, while on: the general flavours' blocks with a 16-key / 16-row tail block
TAILS = {"on": False}
# the dK/dV kernel's TWO_PASS (a dV sweep, then a dK sweep; the bucket-256 sm_90 16-bit tiles
# ship it) on every unmasked dK/dV launch, while on
TWO_PASS = {"on": False}
# the backward's HEAD_CHUNK (causal 16-bit dQ and dK/dV programs dealt out heaviest first
# over chunks of that many heads: kernels/sdpa_bwd.py ordered_program) on every dQ and dK/dV
# launch (the ops that ship it; not the dK-only and dV-only ones), while nonzero
HEAD_CHUNK = {"n": 0}
# float32 products in "fp16x3" (kernels/_common.py mma) where the dispatched sm_90 variant
# ships them (variants.toml fp16x3 where-tables), while on; elsewhere, and while off, IEEE
FP16X3 = {"on": False}
DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def interpreted_launch(op, dtype, device, sizes, scale, *, has_tdo=0, causal=None, bias=None,
                       **tensors):
    """What the generated launcher and the dispatcher do, in the interpreter (the general
    flavour's blocks, MASKED at MASKED_LEVEL, fp32 products in IEEE: the interpreter computes
    dots in NumPy)."""
    Z, H, T, M, _ = sizes
    if Z * H == 0 or (T if SPEC.ops[op]["grid"] == "T" else M) == 0:
        return  # the dispatcher launches nothing for an empty problem
    jit_call.call(SPEC, op, ("fp16", "bf16", "fp32")[dtype], tensors, sizes, scale,
                  has_tdo=has_tdo, causal=causal, bias=bias,
                  input_precision=_precision(op, dtype, sizes[4], bias),
                  masked_level=MASKED_LEVEL["level"],
                  tails={"TAIL_N": 16, "TAIL_M": 16} if TAILS["on"] else None,
                  knobs=_knobs(op, bias))


def _precision(op, dtype, D, bias) -> str:
    """The products of an interpreted launch: "ieee", or, with FP16X3 on, "fp16x3" where the
    sm_90 float32 variant that jit_call runs has it: the general or masked flavour of the
    smallest bucket >= D, or, unmasked at D == that bucket (whose EVEN_D code the launch then
    runs), the fast one (the interpreter has no "bf16x6")."""
    if FP16X3["on"] and dtype == 2:
        v = jit_call.variant(SPEC, op, "fp32", D, bias is not None)
        if v is not None and bias is None and v.head_dim == D:
            v = next((f for f in SPEC.variants if (f.op, f.dtype, f.head_dim, f.arch, f.flavor)
                      == (op, "fp32", D, 90, "fast") and f.max_len is None), v)
        if v is not None and v.input_precision == "fp16x3":
            return "fp16x3"
    return "ieee"


def _presplit_bucket(D, device) -> int:
    """_ops.presplit_bucket as the interpreted launches run bwd_fused (_precision): its
    general variant's bucket where that runs "fp16x3", else 0."""
    v = jit_call.variant(SPEC, "bwd_fused", "fp32", D, False)
    return v.head_dim if v is not None and _precision("bwd_fused", 2, D, None) == "fp16x3" else 0


def _knobs(op, bias) -> dict | None:
    """The kernel constexprs that TWO_PASS and HEAD_CHUNK switch on for this launch."""
    knobs = {}
    if TWO_PASS["on"] and op == "bwd_dkdv" and bias is None:
        knobs["TWO_PASS"] = 1
    if HEAD_CHUNK["n"] and op in ("bwd_dq", "bwd_dkdv"):
        knobs["HEAD_CHUNK"] = HEAD_CHUNK["n"]
    return knobs or None


def _err(x, ref):
    return (x.double() - ref.double()).abs().max().item()


def _check_all(out, dtype, atol, shape, g, Hkv=None, bthd=False, causal=False, mask=None,
               level=2, tails=False, two_pass=False, head_chunk=0):
    """Every public op on one problem; appends [our error, allowance] per output to `out`.
    Hkv: fewer key/value heads (grouped-query attention); bthd: the query-like tensors as
    (B, T, H, D) buffers seen as (B, H, T, D) (strided views); causal, mask: as the API's
    (mask: a function of (B, H, T, M) returning it); level: the kernels' MASKED with a mask;
    tails: with narrow ragged tails (TAILS); two_pass: dK/dV by TWO_PASS, and only the
    forward and the backward checked; head_chunk: the backward's HEAD_CHUNK (HEAD_CHUNK)."""
    B, H, T, M, D = shape
    Hkv = H if Hkv is None else Hkv

    def make(h, n, query_like):
        if bthd and query_like:
            return torch.randn(B, n, h, D, generator=g).to(dtype).transpose(1, 2)
        return torch.randn(B, h, n, D, generator=g).to(dtype)

    x = [make(h, n, h == H and n == T) for h, n in
         ((H, T), (Hkv, M), (Hkv, M), (H, T), (H, T), (Hkv, M), (Hkv, M), (H, T))]
    x64 = [t.double() for t in x]
    mk = None if mask is None else mask(B, H, T, M)
    MASKED_LEVEL["level"] = level
    tag = (f"{DTYPES[dtype]} B{B} H{H} Hkv{Hkv} T{T} M{M} D{D}{' bthd' if bthd else ''}"
           f"{' causal=' + str(causal) if causal else ''}"
           f"{'' if mk is None else f' mask{tuple(mk.shape)}:{str(mk.dtype)[6:]}'}"
           f"{' MASKED=1' if level == 1 and mk is not None else ''}{' tails' if tails else ''}"
           f"{' two_pass' if two_pass else ''}{f' chunk{head_chunk}' if head_chunk else ''}"
           f"{' fp16x3' if FP16X3['on'] else ''}")
    TAILS["on"], HEAD_CHUNK["n"] = tails, head_chunk
    c = causal
    _, m64, l64 = reference.forward(*x64[:3], causal=c, mask=mk)
    same_stats = reference.forward(*x[:3], causal=c, mask=mk)[1:]

    def check(name, ours, formula):
        """formula(args, m, l) in fp64 (the reference) and in the input dtype (torch)."""
        ref, same = formula(x64, m64, l64), formula(x, *same_stats)
        for i, (a, r, s_) in enumerate(zip(ours, ref, same)):
            allow = 2 * _err(s_, r) + atol * (1 + r.abs().max().item())
            out[f"{name}[{i}] {tag}"] = [_err(a, r), allow]

    def bwd(a, m_, l_):
        return reference.backward(*a[:4], m_, l_, causal=c, mask=mk)

    def jvp(a, m_, l_):
        return (reference.jvp(*a[:3], *a[4:7], m_, l_, causal=c, mask=mk),)

    def finite(t):  # rows that see no key have m = -inf: compare where finite (and the set
        return torch.where(torch.isinf(t), 0.0, t)  # of such rows, below)

    q, k, v, do, tq, tk, tv, tdo = x
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v, causal=c, mask=mk)
    same_rows = torch.equal(torch.isinf(m), torch.isinf(m64))
    if mk is not None:  # a control: the mask changes the result (the checks above see it)
        unmasked = reference.forward(*x64[:3], causal=c)[0]
        out[f"mask changes o (-error vs unmasked) {tag}"] = [-_err(o, unmasked), -0.05]
    out[f"fwd m=-inf rows {tag}"] = [0.0 if same_rows else float("inf"), 0.0]
    check("fwd", (o, finite(m), l / l.max()),
          lambda a, m_, l_: (reference.forward(*a[:3], causal=c, mask=mk)[0], finite(m_), l_ / l_.max()))
    TWO_PASS["on"] = two_pass
    check("bwd(o)", aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o, causal=c, mask=mk), bwd)
    check("bwd(stats)", aot_sdpa.sdpa_bwd(q, k, v, do, m, l, causal=c, mask=mk), bwd)
    TWO_PASS["on"] = False
    if two_pass:
        return
    if dtype == torch.float32 and mk is None:  # the one-kernel backward (atomic dQ) as well
        FUSED["on"] = True
        check("bwd_fused(o)", aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o, causal=c), bwd)
        check("bwd_fused(stats)", aot_sdpa.sdpa_bwd(q, k, v, do, m, l, causal=c), bwd)
        FUSED["on"] = False
    for i, fn in enumerate((aot_sdpa.sdpa_bwd_dq, aot_sdpa.sdpa_bwd_dk, aot_sdpa.sdpa_bwd_dv)):
        check(fn.__name__, (fn(q, k, v, do, m, l, causal=c, mask=mk),),
              lambda a, m_, l_, i=i: (bwd(a, m_, l_)[i],))
    check("jvp", (aot_sdpa.sdpa_jvp(q, k, v, tq, tk, tv, m, l, causal=c, mask=mk),), jvp)
    fo, _, _, ft = aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv, causal=c, mask=mk)
    check("fwd_jvp", (fo, ft),
          lambda a, m_, l_: (reference.forward(*a[:3], causal=c, mask=mk)[0], jvp(a, m_, l_)[0]))
    check("bwd_jvp", aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv, causal=c, mask=mk),
          lambda a, m_, l_: reference.bwd_jvp(*a[:4], m_, l_, *a[4:7], causal=c, mask=mk))
    check("bwd_jvp+tdo", aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv, tdo, causal=c, mask=mk),
          lambda a, m_, l_: reference.bwd_jvp(*a[:4], m_, l_, *a[4:7], a[7], causal=c, mask=mk))


def _key_padding(B, H, T, M):
    """(B, 1, 1, M): batch b keeps its first M - 7 b keys; the last batch keeps none."""
    keep = torch.arange(M)[None, :] < torch.tensor([M - 7 * b for b in range(B)])[:, None]
    keep[-1] = False
    return keep[:, None, None, :]


def _random_padding(g):
    """(B, 1, 1, M) bool with holes anywhere (about a third of the keys masked, also inside
    whole key blocks) and the last batch fully masked."""
    def make(B, H, T, M):
        keep = torch.rand(B, 1, 1, M, generator=g) > 0.35
        keep[-1] = False
        return keep
    return make


def _end_padding(B, H, T, M):
    """(3, 1, 1, M) bool, whole key blocks masked at the ends: batch 0 padded on the left
    (keeps keys >= M / 2), batch 1 on the right (keeps the first M / 4), batch 2 on both
    sides (keeps [M / 4, M / 2)) (the sweeps drop such blocks: live_key_blocks)."""
    j = torch.arange(M)[None, :]
    lo = torch.tensor([M // 2, 0, M // 4])[:, None]
    hi = torch.tensor([M, M // 4, M // 2])[:, None]
    return ((j >= lo) & (j < hi))[:, None, None, :]


def _additive(g, shape):
    """A float mask: N(0, 1) values, about a quarter of them -inf."""
    b = torch.randn(*shape, generator=g)
    return b.masked_fill(torch.rand(*shape, generator=g) < 0.25, float("-inf"))


def _check_nonfinite(out):
    """float32 inputs with infinities, in the products of float32 (a +-inf operand enters
    only fp16x3's hi * hi product: _common.fp16x3_dot): a key coordinate of -inf against
    positive queries gives scores of -inf, probabilities of exactly 0, and an output as finite
    as float64's, within the rule (plain and causal; D 16 and 64, the forward's per-key K
    scales either way, its keys then holding an infinite max); a +inf one gives float64's
    NaN rows (softmax of +inf), position for position ("mismatches" against 0 allowed)."""
    g = torch.Generator().manual_seed(11)
    for D, causal in ((16, False), (64, True)):
        B, H, T, M = 1, 2, 37, 45
        q = torch.randn(B, H, T, D, generator=g).abs() + 0.1  # positive rows
        k, v = torch.randn(B, H, M, D, generator=g), torch.randn(B, H, M, D, generator=g)
        k[:, :, 3, 0] = float("-inf")
        k[:, 1, 40, D - 1] = float("-inf")
        tag = f"fp32 B{B} H{H} T{T} M{M} D{D}{' causal' if causal else ''} fp16x3"
        ref = reference.forward(q.double(), k.double(), v.double(), causal=causal)[0]
        same = reference.forward(q, k, v, causal=causal)[0]
        ours = aot_sdpa.triton_sdpa_fused(q, k, v, causal=causal)[0]
        out[f"fwd -inf key {tag}"] = [_err(ours, ref),
                                      2 * _err(same, ref) + 5e-7 * (1 + ref.abs().max().item())]
        k[:, 0, 5, 1] = float("inf")
        ref = reference.forward(q.double(), k.double(), v.double(), causal=causal)[0]
        ours = aot_sdpa.triton_sdpa_fused(q, k, v, causal=causal)[0]
        finite = torch.isfinite(ref)
        bad = (torch.isnan(ours) != torch.isnan(ref)) | (finite & ((ours.double() - ref).abs()
                                                                   > 1e-5 * (1 + ref.abs())))
        out[f"fwd +inf key mismatches {tag}"] = [float(bad.sum()), 0.0]


def _check_wide(out):
    """float32 on sizes that only scaling keeps in fp16's range, each head-dim column of an
    output against its own allowance, relative to that column (2x torch's float32 error on it
    + 5e-7 of its largest value: the rule's atol without its floor of 1, which would pass any
    column far below one), plain, causal and with key padding. The forward: keys' rows span
    10**-6 .. 10**6 (past _common.K_ONE_SPAN: K per key and tile) and within 2**6 of each
    other (K in one scale per program), V's columns 10**-12 .. 10**12 (one scale per column
    and program, _common.sweep_scales). The forward+JVP (per-tile scales): a tangent in V
    alone, 1e-9 of V's size, its columns spread on their own (tO = P tV must keep its own
    precision), and tangents in all three, 1e-9 of the primals (K unspread, so that no row is
    one-hot: there tO = A / l - (r / l) O cancels, a limit of the one-pass formulation
    whatever the products' precision); the JVP kernel from the forward's stats on the same
    cases but causal (K in one scale per program for "all", per key for "tv"). Its own
    generator: the inputs do not depend on the checks before it."""
    g = torch.Generator().manual_seed(7)
    B, H, T, M, D = 2, 2, 70, 150, 64

    def spread(*shape):
        return 10.0 ** (12 * torch.rand(*shape, generator=g) - 6)

    def randn(h, n, scale=1.0):
        return scale * torch.randn(B, h, n, D, generator=g)

    q, k, v = randn(H, T), randn(H, M) * spread(B, H, M, 1), randn(H, M) * spread(1, 1, 1, D) ** 2
    tv = randn(H, M, 1e-9) * spread(1, 1, 1, D) ** 2
    k1 = randn(H, M)
    # keys within 2**6 of each other: rows scaled by 2**[-2, 2] (maxima of 64 normals
    # vary less than 2x between keys here)
    k_one = k1 * 2.0 ** (4 * torch.rand(B, H, M, 1, generator=g) - 2)
    jvp_cases = {"tv": (q, k, v, 0 * q, 0 * k, tv),
                 "all": (q, k1, v, randn(H, T, 1e-9), randn(H, M, 1e-9), tv)}

    def columns(ours, ref, same, what, tag):
        errs = (ours.double() - ref).abs().amax(dim=(0, 1, 2))
        allow = 2 * (same.double() - ref).abs().amax(dim=(0, 1, 2)) + 5e-7 * ref.abs().amax(
            dim=(0, 1, 2))
        worst = int(torch.argmax(errs / allow))  # the worst column against its allowance
        out[f"{what} wide column {worst} {tag}"] = [errs[worst].item(), allow[worst].item()]

    def jvp(a, causal, mk):
        m_, l_ = reference.forward(*a[:3], causal=causal, mask=mk)[1:]
        return reference.jvp(*a, m_, l_, causal=causal, mask=mk)

    for causal, mk in ((False, None), (True, None), (False, _key_padding(B, H, T, M))):
        tag = (f"fp32 B{B} H{H} T{T} M{M} D{D}{' causal' if causal else ''}"
               f"{'' if mk is None else ' mask'} fp16x3")
        ref = reference.forward(q.double(), k.double(), v.double(), causal=causal, mask=mk)[0]
        same = reference.forward(q, k, v, causal=causal, mask=mk)[0]
        columns(aot_sdpa.triton_sdpa_fused(q, k, v, causal=causal, mask=mk)[0], ref, same,
                "fwd", tag)
        ref = reference.forward(q.double(), k_one.double(), v.double(), causal=causal, mask=mk)[0]
        same = reference.forward(q, k_one, v, causal=causal, mask=mk)[0]
        columns(aot_sdpa.triton_sdpa_fused(q, k_one, v, causal=causal, mask=mk)[0], ref, same,
                "fwd k_one", tag)
        for name, x in jvp_cases.items():
            x64 = tuple(t.double() for t in x)
            ref, same = jvp(x64, causal, mk), jvp(x, causal, mk)
            _, m_, l_, ft = aot_sdpa.sdpa_fwd_jvp(*x, causal=causal, mask=mk)
            columns(ft, ref, same, f"fwd_jvp[1] {name}", tag)
            # the JVP kernel from the forward's stats: K in one scale per program where its
            # keys allow ("all": K unspread), else per key ("tv": K spread 10**+-6). Not
            # causal: causal row 0 sees one key, where tO = A - r O cancels dS V against
            # itself (V's columns up to 10**12, tV's ~10**-9 of them) and P recomputed from
            # the stats of another kernel is 1 only to an ulp, not exactly as in the fused
            # kernel's e = exp2(0): "all" measured 1.29x its allowance on one column with the
            # per-tile kernel of 0a9e61d as with this one (the same bits)
            if not causal:
                columns(aot_sdpa.sdpa_jvp(*x, m_, l_, causal=causal, mask=mk), ref, same,
                        f"jvp {name}", tag)


def main(names):
    """Each check: [our max error vs fp64, the allowance]; the allowance is the project's rule,
    2 x the error of the same formulas in torch in the input dtype + atol (atol relative to
    the reference's magnitude: 5e-7 fp32, 2e-4 fp16). Only the dtypes in `names` ("fp32",
    "fp16").

    fp32's atol was 2e-7 until CI's CPU (AVX2, no AVX-512) failed dK at (1, 2, 37, 45, 16):
    the interpreter's dots and exp2 run in NumPy, whose SIMD kernels (and OpenBLAS's sgemm
    kernel) are picked by the CPU, so our float32 error moves with the machine while torch's
    does not (that dK: 3.4e-7 / 4.9e-7 / 1.20e-6 with OpenBLAS's Sandybridge / SkylakeX /
    Haswell kernels, allowance 1.16e-6). 5e-7 x (1 + |ref|) is the GPU tests' 1e-6 for a
    reference of order one, about 4 ulp."""
    _ops._launch = interpreted_launch
    _ops.check_devices = lambda names, tensors: 0
    _ops.fp32_precision = lambda device: "ieee"  # no GPU to ask; the products interpreted_launch runs
    # a float32 forward+JVP at D = 128 splits (forward, then JVP) where sm_90 runs both in
    # fp16x3: while FP16X3 is on, as there
    _ops.fp16x3_d128 = lambda device: FP16X3["on"]
    _ops.fused_bwd = lambda dt, D, device: FUSED["on"]
    _ops.presplit_bucket = _presplit_bucket
    out = {}
    g = torch.Generator().manual_seed(0)
    for dtype, atol in ((torch.float32, 5e-7), (torch.float16, 2e-4)):
        if DTYPES[dtype] not in names:
            continue
        for shape in ((1, 2, 37, 45, 16), (2, 1, 20, 70, 13)):  # (B, H, T, M, D)
            _check_all(out, dtype, atol, shape, g)
        # grouped-query (2 key/value heads for 4 query heads) and multi-query attention, the
        # latter with strided (B, T, H, D) query-like views (folded by a copy)
        _check_all(out, dtype, atol, (2, 4, 9, 13, 16), g, Hkv=2)
        _check_all(out, dtype, atol, (1, 3, 7, 11, 8), g, Hkv=1, bthd=True)
        # causal: several key blocks (skipped, diagonal, full) per query block and the reverse,
        # T < M and T > M; bottom-right with T > M has rows that see no key; grouped + causal
        # (query rows folded: each finds its position as row mod T)
        _check_all(out, dtype, atol, (1, 2, 150, 170, 16), g, causal=True)
        _check_all(out, dtype, atol, (1, 1, 140, 60, 8), g, causal="bottom_right")
        _check_all(out, dtype, atol, (1, 4, 75, 75, 16), g, Hkv=2, causal=True)
        # attention masks: key padding (bool, (B, 1, 1, M), batch 1 with every key masked:
        # rows that see no key), additive (1, H, T, M) with -inf entries + causal, and with
        # grouped heads a (B, 1, T, M) bool mask (materialised per head) and a dense one
        _check_all(out, dtype, atol, (2, 2, 37, 70, 16), g, mask=_key_padding)
        _check_all(out, dtype, atol, (1, 2, 90, 80, 16), g, causal="bottom_right",
                   mask=lambda B, H, T, M: _additive(g, (1, H, T, M)))
        _check_all(out, dtype, atol, (2, 4, 9, 13, 16), g, Hkv=2,
                   mask=lambda B, H, T, M: torch.rand(B, 1, T, M, generator=g) > 0.3)
        _check_all(out, dtype, atol, (1, 4, 9, 70, 8), g, Hkv=1, bthd=True,
                   mask=lambda B, H, T, M: torch.rand(B, H, T, M, generator=g) > 0.5)
        # key padding over several whole key blocks (the padding sweep without per-score
        # limits) with holes anywhere and a fully masked batch, alone and with causal (its
        # diagonal tail through the masked sweep)
        _check_all(out, dtype, atol, (2, 2, 150, 200, 16), g, mask=_random_padding(g))
        _check_all(out, dtype, atol, (2, 1, 150, 200, 16), g, causal=True, mask=_random_padding(g))
        # padding on the left, the right and both, over whole key blocks (dropped, not swept),
        # alone and with causal (left padding + causal: a batched decoder)
        _check_all(out, dtype, atol, (3, 2, 70, 260, 16), g, mask=_end_padding)
        _check_all(out, dtype, atol, (3, 1, 100, 260, 16), g, causal="bottom_right",
                   mask=_end_padding)
        # additive key padding ((B, 1, 1, M) float, finite values besides -inf: the dK/dV
        # sweep that adds the bias, not the one for 0/-inf biases), alone and with causal
        _check_all(out, dtype, atol, (2, 2, 150, 200, 16), g,
                   mask=lambda B, H, T, M: _additive(g, (B, 1, 1, M)))
        _check_all(out, dtype, atol, (2, 1, 150, 200, 16), g, causal=True,
                   mask=lambda B, H, T, M: _additive(g, (B, 1, 1, M)))
        # key padding through the masked flavour's single masked sweep (MASKED 1: the fallback
        # and the second-order ops' only mask code), bool with holes and float, with causal
        _check_all(out, dtype, atol, (2, 1, 100, 150, 16), g, causal=True, mask=_random_padding(g),
                   level=1)
        _check_all(out, dtype, atol, (2, 1, 70, 130, 16), g,
                   mask=lambda B, H, T, M: _additive(g, (B, 1, 1, M)), level=1)
        # one value for every key of a row ((B, 1, T, 1): some rows see no key at all)
        _check_all(out, dtype, atol, (2, 2, 21, 40, 16), g,
                   mask=lambda B, H, T, M: _additive(g, (B, 1, T, 1)))
        # narrow ragged tails (TAILS): M = 70 leaves 6 keys past a 64-key block, T = 37 5 rows
        # past a 32-row one; alone, with key padding, with causal (diagonal tails wider than
        # the narrow block take the whole one) and with grouped heads (folded rows)
        _check_all(out, dtype, atol, (2, 2, 37, 70, 16), g, tails=True)
        _check_all(out, dtype, atol, (2, 2, 37, 70, 16), g, mask=_key_padding, tails=True)
        _check_all(out, dtype, atol, (1, 2, 69, 70, 16), g, causal=True, tails=True)
        _check_all(out, dtype, atol, (2, 4, 9, 13, 16), g, Hkv=2, tails=True)
        # dK/dV by TWO_PASS: ragged rows and keys, causal over several blocks, grouped + causal
        _check_all(out, dtype, atol, (2, 2, 37, 70, 16), g, two_pass=True)
        _check_all(out, dtype, atol, (1, 2, 150, 170, 16), g, causal=True, two_pass=True)
        _check_all(out, dtype, atol, (1, 4, 75, 75, 16), g, Hkv=2, causal=True, two_pass=True)
        # causal dQ and dK/dV programs dealt out by chunks of heads (HEAD_CHUNK; 16-bit only:
        # float32 keeps the per-head order): 5 heads in chunks of 2 (the last one short),
        # grouped heads (4 folded heads, chunks of 3) with TWO_PASS, bottom-right with T > M
        # (rows and a key block seen by nothing), and no causal mask (the order unchanged)
        if dtype != torch.float32:
            _check_all(out, dtype, atol, (1, 5, 150, 170, 16), g, causal=True, head_chunk=2)
            _check_all(out, dtype, atol, (2, 4, 75, 75, 16), g, Hkv=2, causal="bottom_right",
                       two_pass=True, head_chunk=3)
            _check_all(out, dtype, atol, (1, 3, 130, 40, 16), g, causal="bottom_right",
                       head_chunk=2)
            _check_all(out, dtype, atol, (2, 3, 70, 90, 16), g, head_chunk=4)
    # the split head-dim buckets ([split_buckets]: the 16-bit forward, dQ and dK/dV in
    # 80 = 64 + 16 and 96 = 64 + 32; the other ops in 128): a tail cut at D (72), a whole one
    # (96) with multi-query heads and bottom-right causal with T > M (rows that see no key),
    # and causal over several blocks each way (the unmasked sweeps of whole blocks as well)
    # float32 in "fp16x3" products where sm_90 ships them (D <= 64: the forward, the JVPs and
    # the one-kernel backward; D = 128: the forward; the other ops stay IEEE): ragged T, M and
    # D, the full buckets 64 and 128
    # (the one-kernel backward runs there, both ways), causal over several blocks, grouped
    # heads, a key-padding mask (the masked flavours) and a dense one; the forward on sizes
    # spanning many decades (_check_wide)
    if "fp16x3" in names:
        FP16X3["on"] = True
        f32 = (torch.float32, 5e-7)
        _check_all(out, *f32, (1, 2, 37, 45, 16), g)
        _check_all(out, *f32, (1, 2, 40, 70, 64), g)
        _check_all(out, *f32, (1, 2, 150, 170, 40), g, causal=True)
        _check_all(out, *f32, (1, 2, 37, 70, 128), g)  # the bucket-128 forward (fast: D = 128)
        _check_all(out, *f32, (2, 4, 9, 13, 16), g, Hkv=2)
        _check_all(out, *f32, (2, 2, 37, 70, 16), g, mask=_key_padding)
        _check_all(out, *f32, (1, 2, 90, 80, 16), g, causal="bottom_right",
                   mask=lambda B, H, T, M: _additive(g, (1, H, T, M)))
        _check_wide(out)
        _check_nonfinite(out)
        FP16X3["on"] = False
    if "fp16" in names:
        _check_all(out, torch.float16, 2e-4, (1, 2, 37, 45, 72), g)
        _check_all(out, torch.float16, 2e-4, (1, 2, 70, 50, 96), g, Hkv=1, causal="bottom_right")
        _check_all(out, torch.float16, 2e-4, (1, 1, 200, 150, 80), g, causal=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:] or ["fp32", "fp16"])

"""The kernel ABI is generated once (from the kernels' parameter names) and every call site
passes tensors by those names: for every op, each pointer is the tensor of that name and each
stride triple comes from its owner. Runs on the CPU by recording the launches."""

from __future__ import annotations

import pytest
import torch

import aot_sdpa
from aot_sdpa import _ops
from aot_sdpa._native import INT_NAMES, OPS


class _Recorder:
    """Records what the extension would launch: the pointers and strides come from the
    extension's own packing by name (_C._pack_named, the code launch_named runs)."""

    def __init__(self):
        self.calls = []
        self.tensors = []  # the tensors each call passed, by name
        self.fused = False  # what _ops.fused_bwd answers (on the GPU: the inventory decides)
        self.presplit = 0  # what _ops.presplit_bucket answers (likewise)

    def launch_named(self, index, dtype, device, stream, tensors, ints, scale):
        name = next(n for n, a in OPS.items() if a.index == index)
        ptrs, strides = aot_sdpa._C._pack_named(index, tensors)
        self.calls.append((name, list(ptrs), list(strides), tuple(ints), scale))
        self.tensors.append((name, dict(tensors)))


@pytest.fixture
def recorder(monkeypatch):
    rec = _Recorder()
    monkeypatch.setattr(_ops, "_C", rec)
    monkeypatch.setattr(_ops, "check_devices", lambda names, tensors: 0)
    monkeypatch.setattr(_ops, "current_raw_stream", lambda device: 0)
    monkeypatch.setattr(_ops, "fused_bwd", lambda dt, D, device: rec.fused)
    monkeypatch.setattr(_ops, "presplit_bucket", lambda D, device: rec.presplit)
    return rec


def _t(*shape, dtype=torch.float16, transpose=False):
    if transpose:  # a (B, T, H, D) buffer seen as (B, H, T, D): strides differ per axis
        B, H, T, D = shape
        return torch.randn(B, T, H, D).to(dtype).transpose(1, 2)
    return torch.randn(*shape).to(dtype)


def _check(rec, expected: dict[str, dict[str, torch.Tensor | None]]):
    """expected: op -> {pointer name: tensor or None} for the op's last launch."""
    last = {}
    for name, ptrs, strides, ints, _ in rec.calls:
        abi = OPS[name]
        assert len(ptrs) == len(abi.pointers) and len(strides) == 3 * len(abi.stride_owners)
        assert len(ints) == len(INT_NAMES)
        last[name] = (dict(zip(abi.pointers, ptrs)), strides)
    assert set(expected) <= set(last), f"ops not launched: {set(expected) - set(last)}"
    for name, want in expected.items():
        named, strides = last[name]
        for pname, t in want.items():
            assert named[pname] == (0 if t is None else t.data_ptr()), (name, pname)
        for i, owner in enumerate(OPS[name].stride_owners):
            if owner in want:
                t = want[owner]
                trip = strides[3 * i:3 * i + 3]
                assert trip == ([0, 0, 0] if t is None else list(t.stride()[:3])), (name, owner)


def test_every_op_gets_its_tensors_by_name(recorder):
    B, H, T, M, D = 2, 3, 5, 7, 16
    q, do, tq, tdo = (_t(B, H, T, D, transpose=True) for _ in range(4))
    k, v, tk, tv = (_t(B, H, M, D) for _ in range(4))
    m, l = torch.randn(B, H, T), torch.rand(B, H, T) + 1
    o, mo, lo = aot_sdpa.triton_sdpa_fused(q, k, v)
    dq, dk, dv = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)
    dq1 = aot_sdpa.sdpa_bwd_dq(q, k, v, do, m, l)
    dk1 = aot_sdpa.sdpa_bwd_dk(q, k, v, do, m, l)
    dv1 = aot_sdpa.sdpa_bwd_dv(q, k, v, do, m, l)
    to = aot_sdpa.sdpa_jvp(q, k, v, tq, tk, tv, m, l)
    fo, fm, fl, fto = aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv)
    hq, hk, hv = aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv, tdo)
    qkv = dict(Q=q, K=k, V=v)
    # per op, its last launch above is checked
    expected = {
        "fwd": dict(qkv, O=o, Mstat=mo, Lstat=lo),
        "bwd_z_from_stats": dict(qkv, DO=do, Mstat=m, Lstat=l),
        "bwd_dkdv": dict(qkv, DO=do, Mstat=m, Lstat=l, DK=dk, DV=dv),
        "bwd_dq": dict(qkv, DO=do, O=None, Mstat=m, Lstat=l, DQ=dq1),
        "bwd_dk": dict(qkv, DO=do, Mstat=m, Lstat=l, DK=dk1, DV=None),
        "bwd_dv": dict(qkv, DO=do, Mstat=m, Lstat=l, Zbuf=None, DK=None, DV=dv1),
        "jvp": dict(qkv, TQ=tq, TK=tk, TV=tv, Mstat=m, Lstat=l, TO=to),
        "fwd_jvp": dict(qkv, TQ=tq, TK=tk, TV=tv, O=fo, Mstat=fm, Lstat=fl, TO=fto),
        "bwd_jvp_rows": dict(qkv, TQ=tq, TK=tk, TV=tv, DO=do, TDO=tdo, Mstat=m, Lstat=l),
        "bwd_jvp_dq": dict(qkv, TQ=tq, TK=tk, TV=tv, DO=do, TDO=tdo, Mstat=m, Lstat=l, HQ=hq),
        "bwd_jvp_dkdv": dict(qkv, TQ=tq, TK=tk, TV=tv, DO=do, TDO=tdo, Mstat=m, Lstat=l,
                             HK=hk, HV=hv),
    }
    # bwd_fused and its z pre-pass from o (float32 only):
    # test_fused_backward_gets_its_tensors_by_name
    assert set(expected) | {"bwd_fused", "bwd_z_from_o"} == set(OPS), \
        "a new op needs its expectations here"
    for name, want in expected.items():  # no attention mask: a null Bias
        if "Bias" in OPS[name].pointers:
            want["Bias"] = None
    _check(recorder, expected)
    # the sizes, the HAS_TDO flag, (no causal mask) Q_LEN = T, DIAG = M - 1, HAS_BIAS = 0 and
    # HAS_O (1 where a tensor named O is passed)
    last = {c[0]: c for c in recorder.calls}
    assert last["bwd_jvp_dq"][3] == (B, H, T, M, D, 1, T, M - 1, 0, 0)
    assert last["fwd"][3] == (B, H, T, M, D, 0, T, M - 1, 0, 1)
    assert last["bwd_dq"][3] == (B, H, T, M, D, 0, T, M - 1, 0, 0)
    recorder.calls.clear()
    aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv)
    for name, ptrs, _, ints, _ in recorder.calls:
        assert ints[5] == 0 and dict(zip(OPS[name].pointers, ptrs))["TDO"] == 0


@pytest.mark.parametrize("presplit", [0, 64])
@pytest.mark.parametrize("Hkv", [3, 1])
def test_fused_backward_gets_its_tensors_by_name(recorder, Hkv, presplit):
    """Where _ops.fused_bwd says so (float32 on sm_90, not in deterministic mode), the
    backward is the z pre-pass, then one bwd_fused launch with dK, dV and a zeroed dQ (its
    programs add their shares of dQ to it), on the folded grid with grouped heads; with a
    mask it stays the two kernels (bwd_fused has no masked variant). Where bwd_fused runs
    "fp16x3" (presplit: its bucket) the pre-pass from o also splits Q and dO into a buffer of
    2 * Z*H*T rows of 2 * bucket + 8 halves that bwd_fused then reads (without o: z from the
    stats, then that pre-pass without O, for the split alone); elsewhere Split is null."""
    B, H, T, M, D = 2, 3, 5, 7, 16
    recorder.presplit = presplit
    # a (B, T, H, D) view for q where no heads fold (a folded one would be a copy)
    q = _t(B, H, T, D, dtype=torch.float32, transpose=Hkv == H)
    do = _t(B, H, T, D, dtype=torch.float32)
    k, v = _t(B, Hkv, M, D, dtype=torch.float32), _t(B, Hkv, M, D, dtype=torch.float32)
    m, l = torch.randn(B, H, T), torch.rand(B, H, T) + 1
    recorder.fused = True
    o = _t(B, H, T, D, dtype=torch.float32)
    aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)  # bwd_fused needs every row's z first: the pre-pass
    assert [c[0] for c in recorder.calls] == ["bwd_z_from_o", "bwd_fused"]
    fold = _ops._fold if Hkv != H else (lambda x, _: x)
    _check(recorder, {"bwd_z_from_o": dict(O=fold(o, Hkv), DO=fold(do, Hkv), Q=fold(q, Hkv),
                                           Mstat=fold(m, Hkv), Lstat=fold(l, Hkv))})
    named = dict(recorder.tensors)
    split = named["bwd_fused"]["Split"]
    assert named["bwd_z_from_o"]["Split"] is split
    if presplit:
        assert split.dtype == torch.float16 and split.numel() == 2 * B * H * T * (2 * presplit + 8)
    else:
        assert split is None
    recorder.calls.clear()
    recorder.tensors.clear()
    dq, dk, dv = aot_sdpa.sdpa_bwd(q, k, v, do, m, l)
    assert [c[0] for c in recorder.calls] == (["bwd_z_from_stats", "bwd_z_from_o", "bwd_fused"]
                                             if presplit else ["bwd_z_from_stats", "bwd_fused"])
    assert (dq == 0).all()  # the recorder launches nothing: what the kernel gets is zeros
    named = dict(recorder.tensors)
    assert named["bwd_fused"]["DQ"].data_ptr() == dq.data_ptr()
    assert named["bwd_fused"]["Zbuf"] is named["bwd_z_from_stats"]["Zbuf"]
    _check(recorder, {"bwd_fused": dict(Q=fold(q, Hkv), K=k, V=v, DO=fold(do, Hkv),
                                        Mstat=fold(m, Hkv), Lstat=fold(l, Hkv), DK=dk, DV=dv,
                                        DQ=fold(dq, Hkv))})
    if presplit:  # the split alone: no O, the stats' z kept
        assert named["bwd_z_from_o"]["O"] is None
        assert named["bwd_z_from_o"]["Split"] is named["bwd_fused"]["Split"]
        assert named["bwd_z_from_o"]["Zbuf"] is named["bwd_fused"]["Zbuf"]
        _check(recorder, {"bwd_z_from_o": dict(O=None, Q=fold(q, Hkv), DO=fold(do, Hkv))})
    recorder.calls.clear()
    mask = torch.ones(B, 1, 1, M, dtype=torch.bool)
    aot_sdpa.sdpa_bwd(q, k, v, do, m, l, mask=mask)
    assert [c[0] for c in recorder.calls] == ["bwd_z_from_stats", "bwd_dq", "bwd_dkdv"]
    recorder.calls.clear()
    aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o, mask=mask)  # dQ forms z from o
    assert [c[0] for c in recorder.calls] == ["bwd_dq", "bwd_dkdv"]


@pytest.mark.parametrize("dtype,planes", [(torch.float16, 2), (torch.bfloat16, 2), (torch.float32, 1)])
@pytest.mark.parametrize("with_o", [True, False])
@pytest.mark.parametrize("Hkv", [3, 1])
def test_z_buffer_has_the_lse2_plane(recorder, with_o, Hkv, dtype, planes):
    """The kernel that forms z gets m, l and a contiguous float32 buffer of (Z, H, T) planes
    on the kernels' (folded) grid to fill: z, then for 16-bit data lse2, which the dK/dV kernel
    of the same call, launched after it, reads (the same buffer; float32's reads m and l, so it
    has no lse2 plane). Given o that is the dQ kernel, launched first with o and HAS_O = 1 (no
    pre-pass); without o the z pre-pass from the stats, and dQ reads z (O null, HAS_O = 0)."""
    B, H, T, M, D = 2, 3, 5, 7, 16
    q, do = _t(B, H, T, D, dtype=dtype), _t(B, H, T, D, dtype=dtype)
    k, v = _t(B, Hkv, M, D, dtype=dtype), _t(B, Hkv, M, D, dtype=dtype)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    recorder.tensors.clear()
    recorder.calls.clear()
    aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o if with_o else None)
    named = dict(recorder.tensors)
    order = [c[0] for c in recorder.calls]
    assert order == (["bwd_dq", "bwd_dkdv"] if with_o
                     else ["bwd_z_from_stats", "bwd_dq", "bwd_dkdv"])
    assert recorder.calls[order.index("bwd_dq")][3][9] == int(with_o)  # HAS_O
    z = named[order[0]]
    if with_o:
        assert z["O"].data_ptr() == o.data_ptr()
    else:
        assert named["bwd_dq"]["O"] is None
    assert z["Mstat"].data_ptr() == m.data_ptr() and z["Lstat"].data_ptr() == l.data_ptr()
    zbuf = z["Zbuf"]
    assert zbuf.dtype == torch.float32 and zbuf.is_contiguous()
    assert zbuf.numel() == planes * B * H * T  # Z * H_kernel * T_kernel: folding keeps the count
    assert named["bwd_dkdv"]["Zbuf"] is zbuf and named["bwd_dq"]["Zbuf"] is zbuf


@pytest.mark.parametrize("causal,diag", [(True, 0), ("top_left", 0), ("bottom_right", 7 - 5)])
@pytest.mark.parametrize("Hkv", [6, 2])
def test_causal_passes_query_length_and_diagonal(recorder, causal, diag, Hkv):
    """Every kernel of every op gets Q_LEN = T (the unfolded query length, also when
    grouped-query rows are folded: rows find their position as row mod T) and DIAG = 0
    (top-left) or M - T (bottom-right); the z-from-o kernel has no keys and takes neither."""
    B, H, T, M, D = 2, 6, 5, 7, 16
    q, do, tq = (_t(B, H, T, D) for _ in range(3))
    k, v, tk, tv = (_t(B, Hkv, M, D) for _ in range(4))
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v, causal=causal)
    aot_sdpa.sdpa_bwd(q, k, v, do, m, l, causal=causal)
    aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o, causal=causal)
    for fn in (aot_sdpa.sdpa_bwd_dq, aot_sdpa.sdpa_bwd_dk, aot_sdpa.sdpa_bwd_dv):
        fn(q, k, v, do, m, l, causal=causal)
    aot_sdpa.sdpa_jvp(q, k, v, tq, tk, tv, m, l, causal=causal)
    aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv, causal=causal)
    aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv, causal=causal)
    if causal is True:  # the drop-in's is_causal is torch's, top-left
        aot_sdpa.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=Hkv != H)
    recorder.fused = True  # the one-kernel float32 backward
    aot_sdpa.sdpa_bwd(*(x.float() for x in (q, k, v, do)), m, l, causal=causal)
    aot_sdpa.sdpa_bwd(*(x.float() for x in (q, k, v, do)), m, l, o=o.float(), causal=causal)
    seen = set()
    for name, _, _, ints, _ in recorder.calls:
        seen.add(name)
        assert ints[2] == (H // Hkv) * T, (name, ints)
        if name != "bwd_z_from_o":  # dO . O per row: no keys, no Q_LEN / DIAG parameters
            assert ints[6:8] == (T, diag) and ints[8] == 0, (name, ints)
    assert seen == set(OPS), "every op's kernels ran with the causal ints"


def test_dropin_inference_writes_the_stats_to_one_scratch(recorder):
    q, k, v = _t(2, 3, 5, 16), _t(2, 3, 7, 16), _t(2, 3, 7, 16)
    o = aot_sdpa.scaled_dot_product_attention(q, k, v)
    name, ptrs, strides, ints, _ = recorder.calls[-1]
    named = dict(zip(OPS[name].pointers, ptrs))
    assert name == "fwd" and named["O"] == o.data_ptr() and named["Q"] == q.data_ptr()
    assert named["Mstat"] == named["Lstat"] != 0  # one (B, H, T) scratch, l written over m
    i = OPS["fwd"].stride_owners.index("Mstat")
    assert strides[3 * i:3 * i + 3] == [3 * 5, 5, 1]


@pytest.mark.parametrize("dtype,D,precision,arch_fp32,d128_fp16x3,split", [
    (torch.float16, 128, "highest", "tf32x3", False, False),
    (torch.float16, 128, "highest", "bf16x6", True, False),
    (torch.bfloat16, 72, "highest", "tf32x3", False, False),
    (torch.float32, 64, "highest", "tf32x3", False, False),
    (torch.float32, 64, "highest", "bf16x6", True, False),
    (torch.float32, 65, "highest", "tf32x3", False, True),
    (torch.float32, 128, "highest", "tf32x3", False, True),
    (torch.float32, 128, "highest", "bf16x6", False, False),
    (torch.float32, 128, "highest", "bf16x6", True, True),
    (torch.float32, 72, "highest", "bf16x6", False, False),
    (torch.float32, 72, "highest", "bf16x6", True, False),
    (torch.float32, 72, "high", "tf32x3", False, False),
    (torch.float32, 128, "high", "tf32x3", False, True),
    (torch.float32, 128, "high", "bf16x6", True, True)])
@pytest.mark.parametrize("drop_in", [False, True])
def test_float32_head_dims_above_64_run_forward_then_jvp(recorder, monkeypatch, dtype, D,
                                                          precision, arch_fp32, d128_fp16x3,
                                                          split, drop_in):
    """sdpa_fwd_jvp (and the drop-in under forward AD, which keeps no stats) runs the fused
    kernel, except where _ops.split_fwd_jvp measured two kernels faster (fp32-accurate
    float32 in the 128 bucket where the device's arch has "tf32x3" products (sm_80), and at
    D = 128 where its forward and JVP kernels run "fp16x3" (sm_90); TF32 at D = 128): the
    forward kernel, then the JVP kernel on the stats it wrote (two distinct buffers: the JVP
    reads m and l). `arch_fp32` and `d128_fp16x3` stand in for the device's fp32 precision
    and _ops.fp16x3_d128."""
    monkeypatch.setattr(_ops, "fp32_precision", lambda device: arch_fp32)
    monkeypatch.setattr(_ops, "fp16x3_d128", lambda device: d128_fp16x3)
    q, tq = _t(2, 3, 5, D, dtype=dtype), _t(2, 3, 5, D, dtype=dtype)
    k, v, tk, tv = (_t(2, 3, 7, D, dtype=dtype) for _ in range(4))
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        if drop_in:
            o, to = _ops.fwd_jvp_out(q, k, v, tq, tk, tv)
            m = l = None
        else:
            o, m, l, to = aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv)
    finally:
        torch.set_float32_matmul_precision(prev)
    names = [c[0] for c in recorder.calls]
    assert names == (["fwd", "jvp"] if split else ["fwd_jvp"])
    last = {c[0]: dict(zip(OPS[c[0]].pointers, c[1])) for c in recorder.calls}
    if not split:
        assert last["fwd_jvp"]["O"] == o.data_ptr() and last["fwd_jvp"]["TO"] == to.data_ptr()
        return
    fwd, jvp = last["fwd"], last["jvp"]
    assert fwd["O"] == o.data_ptr() and jvp["TO"] == to.data_ptr()
    assert fwd["Mstat"] != fwd["Lstat"]
    assert (jvp["Mstat"], jvp["Lstat"]) == (fwd["Mstat"], fwd["Lstat"])
    assert (jvp["TQ"], jvp["TK"], jvp["TV"]) == (tq.data_ptr(), tk.data_ptr(), tv.data_ptr())
    if m is not None:
        assert (fwd["Mstat"], fwd["Lstat"]) == (m.data_ptr(), l.data_ptr())


def test_masked_float32_d128_forward_jvp_stays_fused(recorder, monkeypatch):
    """The sm_90 split at D = 128 (_ops.fp16x3_d128) is for unmasked calls: the masked
    flavours of the forward and JVP kernels run "bf16x6", where the fused kernel is faster,
    so a masked float32 forward+JVP there runs the fused kernel."""
    monkeypatch.setattr(_ops, "fp32_precision", lambda device: "bf16x6")
    monkeypatch.setattr(_ops, "fp16x3_d128", lambda device: True)
    q, tq = _t(2, 3, 5, 128, dtype=torch.float32), _t(2, 3, 5, 128, dtype=torch.float32)
    k, v, tk, tv = (_t(2, 3, 7, 128, dtype=torch.float32) for _ in range(4))
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv, mask=mask)
    aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv)
    assert [c[0] for c in recorder.calls] == ["fwd_jvp", "fwd", "jvp"]


@pytest.mark.parametrize("bthd", [False, True])
def test_grouped_query_folds_the_query_heads_into_rows(recorder, bthd):
    """k, v with Hkv heads: every kernel runs plain attention over (B, Hkv, (H/Hkv)*T) rows,
    reading k and v in place and q in place when its layout allows (contiguous), a copy
    otherwise ((B, T, H, D) views); outputs come back shaped (B, H, T, ...)."""
    B, H, Hkv, T, M, D = 2, 6, 2, 5, 7, 16
    q, do, tq = (_t(B, H, T, D, transpose=bthd) for _ in range(3))
    k, v, tk, tv = (_t(B, Hkv, M, D) for _ in range(4))
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    assert o.shape == q.shape and m.shape == l.shape == (B, H, T)
    dq, dk, dv = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    to = aot_sdpa.sdpa_jvp(q, k, v, tq, tk, tv, m, l)
    assert to.shape == q.shape
    hq, hk, hv = aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv)
    assert hq.shape == q.shape and hk.shape == k.shape and hv.shape == v.shape
    for name, ptrs, _, ints, _ in recorder.calls:
        named = dict(zip(OPS[name].pointers, ptrs))
        assert ints[:5] == (B, Hkv, (H // Hkv) * T, M, D), (name, ints)
        if "K" in named:
            assert named["K"] == k.data_ptr() and named["V"] == v.data_ptr()
        if "Q" in named:
            assert (named["Q"] == q.data_ptr()) == (not bthd), name  # a view, or a copy


def test_a_missing_or_extra_name_is_an_error(recorder):
    q = _t(1, 1, 4, 16)
    with pytest.raises(TypeError, match="takes pointers"):
        _ops._launch("fwd", 0, 0, (1, 1, 4, 4, 16), 1.0, Q=q, K=q, V=q, O=q, Mstat=q)
    with pytest.raises(TypeError, match="takes pointers"):
        _ops._launch("fwd", 0, 0, (1, 1, 4, 4, 16), 1.0, Q=q, K=q, V=q, O=q, Mstat=q, Lstat=q,
                     DQ=q)


def test_packing_by_name_reads_tensors_and_refuses_bad_arguments():
    """The extension's packing (what launch_named launches with), called directly."""
    pack = aot_sdpa._C._pack_named
    fwd = OPS["fwd"]
    q = _t(2, 3, 5, 16, transpose=True)
    m = torch.empty(2, 3, 5)
    bias = torch.empty(2, 1, 1, 7).expand(2, 3, 5, 7).as_strided((2, 3, 5), (7, 0, 0))
    named = dict(Q=q, K=q, V=q, Bias=bias, O=q, Mstat=m, Lstat=m)
    ptrs, strides = pack(fwd.index, named)
    assert ptrs == [named[n].data_ptr() for n in fwd.pointers]
    assert strides == [s for n in fwd.stride_owners for s in named[n].stride()[:3]]
    # a pointer the op never reads may be None: null, and its own triple zeros
    dv = OPS["bwd_dv"]
    bwd = dict(Q=q, K=q, V=q, DO=q, Bias=None, Mstat=m, Lstat=m, Zbuf=None, DK=None, DV=q)
    ptrs, strides = pack(dv.index, bwd)
    assert dict(zip(dv.pointers, ptrs))["DK"] == 0
    i = dv.stride_owners.index("DK")
    assert strides[3 * i:3 * i + 3] == [0, 0, 0]
    without_lstat = {k: t for k, t in named.items() if k != "Lstat"}
    with pytest.raises(TypeError, match="takes pointers"):  # one name missing, one extra
        pack(fwd.index, {**without_lstat, "X": q})
    with pytest.raises(AttributeError):  # not a tensor: no data_ptr()
        pack(fwd.index, dict(named, Q=3))
    with pytest.raises(TypeError, match="3 dims"):  # a stride owner needs (z, h, row) strides
        pack(fwd.index, dict(named, Mstat=torch.empty(5)))
    with pytest.raises(ValueError, match="unknown op"):
        pack(len(OPS), named)


def test_stats_share_one_stride_triple():
    # the forward writes m and l with one triple ("s", owned by Mstat): they must be laid out
    # alike, which _stats_pair guarantees
    m, l = _ops._stats_pair(torch.empty(1), 2, 3, 5)
    assert m.stride() == l.stride() and m.shape == l.shape == (2, 3, 5)
    assert "Lstat" not in OPS["fwd"].stride_owners and "Mstat" in OPS["fwd"].stride_owners


@pytest.mark.parametrize("case", ["bool_key_padding", "fp32_in_place", "gqa_rows_copied",
                                  "gqa_dense_view", "one_value_per_row"])
def test_mask_reaches_every_kernel_as_a_bias_view(recorder, case):
    """Every kernel of every op that reads scores gets the mask as Bias with (batch, head,
    row) strides (0 where it broadcasts) and HAS_BIAS = 1: a boolean mask converted once
    (compact float32), a float32 one read in place, and with grouped heads a view whose rows
    span the group (dense) or a copy with the heads materialised ((B, 1, T, M))."""
    B, H, T, M, D = 2, 3, 5, 7, 16
    Hkv = 1 if case.startswith("gqa") else H
    G = H // Hkv
    q, do, tq = (_t(B, H, T, D) for _ in range(3))
    k, v, tk, tv = (_t(B, Hkv, M, D) for _ in range(4))
    m, l = torch.randn(B, H, T), torch.rand(B, H, T) + 1
    if case == "bool_key_padding":
        mask = torch.rand(B, 1, 1, M) > 0.5
        want_ptr, want = None, [M, 0, 0]
    elif case == "fp32_in_place":
        mask = torch.randn(1, H, T, M)
        want_ptr, want = mask.data_ptr(), [0, T * M, M]
    elif case == "gqa_rows_copied":
        mask = torch.rand(B, 1, T, M) > 0.5
        want_ptr, want = None, [H * T * M, G * T * M, M]
    elif case == "gqa_dense_view":
        mask = torch.randn(B, H, T, M)
        want_ptr, want = mask.data_ptr(), [H * T * M, G * T * M, M]
    else:  # (B, 1, T, 1): one value for all keys of a row, spelled out (keys contiguous)
        mask = torch.rand(B, 1, T, 1) > 0.5
        want_ptr, want = None, [T * M, 0, M]
    aot_sdpa.triton_sdpa_fused(q, k, v, mask=mask)
    aot_sdpa.sdpa_bwd(q, k, v, do, m, l, mask=mask)
    aot_sdpa.sdpa_bwd_dk(q, k, v, do, m, l, mask=mask)
    aot_sdpa.sdpa_bwd_dv(q, k, v, do, m, l, mask=mask)
    aot_sdpa.sdpa_jvp(q, k, v, tq, tk, tv, m, l, mask=mask)
    aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv, mask=mask)
    aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv, mask=mask)
    seen = set()
    for name, ptrs, strides, ints, _ in recorder.calls:
        abi = OPS[name]
        assert ints[INT_NAMES.index("HAS_BIAS")] == 1, name
        assert name not in ("bwd_dk", "bwd_dv"), "masked dK/dV-only calls run bwd_dkdv"
        if "Bias" not in abi.pointers:
            continue
        seen.add(name)
        ptr = dict(zip(abi.pointers, ptrs))["Bias"]
        assert ptr != 0 and (want_ptr is None or ptr == want_ptr), name
        i = abi.stride_owners.index("Bias")
        assert strides[3 * i:3 * i + 3] == want, (name, strides[3 * i:3 * i + 3])
    assert seen == {n for n, a in OPS.items() if "Bias" in a.pointers} - {"bwd_dk", "bwd_dv"}


@pytest.mark.parametrize("case", ["bool_4d", "bool_2d", "expanded_rows", "fp16", "keys_strided",
                                  "fp32_view"])
def test_bias_from_mask_values_and_layout(case):
    """The kernels' bias: 4-D float32, True -> 0 and False -> -inf (a float mask's values
    exactly), a broadcast (stride-0) dim kept at size 1 (not materialised), keys contiguous;
    a float32 mask with contiguous keys is used in place (no copy)."""
    g = torch.Generator().manual_seed(0)
    B, H, T, M = 2, 3, 5, 7
    keep = torch.rand(B, 1, 1, M, generator=g) > 0.4
    if case == "bool_4d":
        mask, want_shape = keep, (B, 1, 1, M)
    elif case == "bool_2d":  # (T, M): leading dims of size 1 added
        mask, want_shape = torch.rand(T, M, generator=g) > 0.4, (1, 1, T, M)
    elif case == "expanded_rows":  # stride 0 over heads and rows: one row per batch kept
        mask, want_shape = keep.expand(B, H, T, M), (B, 1, 1, M)
    elif case == "fp16":
        mask, want_shape = torch.randn(1, H, T, M, generator=g).half(), (1, H, T, M)
    elif case == "keys_strided":  # keys not contiguous: copied so that they are
        mask, want_shape = torch.randn(1, 1, M, T, generator=g).transpose(-1, -2), (1, 1, T, M)
    else:
        mask, want_shape = torch.randn(B, 1, T, M, generator=g), (B, 1, T, M)
    bias = _ops.bias_from_mask(mask)
    assert bias.dtype == torch.float32 and bias.dim() == 4
    assert tuple(bias.shape) == want_shape and bias.stride(-1) == 1
    full = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape)).expand(B, H, T, M)
    if mask.dtype == torch.bool:
        want = torch.zeros(full.shape).masked_fill(~full, float("-inf"))
    else:
        want = full.float()
    assert torch.equal(bias.expand(B, H, T, M), want)
    if case == "fp32_view":
        assert bias.data_ptr() == mask.data_ptr()


def test_padding_fast_runs_for_key_padding_masks_only():
    """padding_fast compiles the mask's row stride ([abi] zero_strides) as the constant 0, with
    the dense mask's code compiled out: the dispatcher runs it only for a key-padding mask (row
    stride 0: one bias row for every query row) on a call that meets the fast condition with
    the head dim filling its bucket; a mask with a row per query row runs masked_fast (read as
    key padding it would be a wrong number), other calls masked. No driver needed."""
    B, H, T, D = 2, 3, 32, 64
    x = {n: torch.zeros(B, H, T, D, dtype=torch.float16) for n in ("Q", "K", "V", "DO", "DK", "DV")}
    stats = dict(Mstat=torch.zeros(B, H, T), Lstat=torch.zeros(B, H, T), Zbuf=torch.zeros(B * H, T))
    op = OPS["bwd_dkdv"].index
    key_padding = torch.zeros(B, T).as_strided((B, H, T), (T, 0, 0))
    per_row = torch.zeros(B, T, T).as_strided((B, H, T), (T * T, 0, T))
    per_head_row = torch.zeros(B, H, T, T).as_strided((B, H, T), (H * T * T, T * T, T))
    padding = aot_sdpa._C._bias_is_key_padding
    assert padding(op, dict(x, Bias=None, **stats))
    assert padding(op, dict(x, Bias=key_padding, **stats))
    assert not padding(op, dict(x, Bias=per_row, **stats))
    assert not padding(op, dict(x, Bias=per_head_row, **stats))
    # the dense mask still meets the fast condition: it runs masked_fast
    ints = (B, H, T, T, D, 0, T, T - 1, 1, 0)
    assert aot_sdpa._C._fast_ok(op, dict(x, Bias=per_row, **stats), ints)
    # which variant each case runs (sm_90 fp16 and fp32: padding_fast is 16-bit only)
    sel = aot_sdpa._C._select_for_cc
    for code, dt in ((0, "fp16"), (1, "bf16")):
        # bucket 128: no padding_fast compiled, key padding runs masked_fast
        assert sel(op, code, 128, 90, True, True, padding=True)[0] == (
            f"bwd_dkdv_{dt}_d128_masked_fast_sm90")
        run, sib, sib2 = sel(op, code, 64, 90, True, True, padding=True)
        assert run == f"bwd_dkdv_{dt}_d64_padding_fast_sm90", run
        assert {sib, sib2} == {f"bwd_dkdv_{dt}_d64_masked_sm90",
                               f"bwd_dkdv_{dt}_d64_masked_fast_sm90"}
        assert sel(op, code, 64, 90, True, True)[0] == f"bwd_dkdv_{dt}_d64_masked_fast_sm90"
        assert sel(op, code, 64, 90, False, True, padding=True)[0] == (
            f"bwd_dkdv_{dt}_d64_masked_sm90")  # unaligned: masked
        # a head dim below its bucket: masked (the hinted ones need an exact bucket)
        assert sel(op, code, 40, 90, True, True, padding=True)[0] == f"bwd_dkdv_{dt}_d64_masked_sm90"
        assert sel(op, code, 32, 90, True, True, padding=True)[0] == (
            f"bwd_dkdv_{dt}_d32_masked_fast_sm90")  # bucket 32: no padding_fast compiled
        assert "masked" not in sel(op, code, 64, 90, True, False, padding=True)[0]  # no mask
    assert sel(op, 2, 64, 90, True, True, padding=True)[0] == "bwd_dkdv_fp32_d64_masked_fast_sm90"
    # sm_80 compiles no masked_fast ([masked_fast] in variants.toml): every mask runs masked,
    # the hinted flavour a sibling of none
    assert sel(op, 0, 64, 80, True, True, padding=True) == ("bwd_dkdv_fp16_d64_masked_sm80", None,
                                                            None)


def test_fast_flavour_needs_unit_stride_stats():
    """The fast flavours compile the stats' row stride ([abi] unit_strides) as the constant 1,
    so the dispatcher's fast condition must refuse stats whose row stride is not 1 (they would
    be read as if contiguous); data strides % 16 and alignment are checked as before."""
    B, H, T, D = 2, 3, 32, 64
    x = {n: torch.zeros(B, H, T, D, dtype=torch.float16) for n in ("Q", "K", "V", "DO", "DK", "DV")}
    m, l = torch.zeros(B, H, T), torch.zeros(B, H, T)
    ints = (B, H, T, T, D, 0, T, T - 1, 0, 0)
    op = OPS["bwd_dkdv"].index

    def fast(**over):
        t = dict(x, Bias=None, Mstat=m, Lstat=l, Zbuf=torch.zeros(B * H, T))
        t.update(over)
        return aot_sdpa._C._fast_ok(op, t, ints)

    assert fast()
    assert not fast(Mstat=torch.zeros(B, H, 2 * T)[..., ::2])  # row stride 2
    assert not fast(Lstat=torch.zeros(B, H, 2 * T)[..., ::2])
    assert fast(Mstat=torch.zeros(B, H, 2 * T)[..., :T])  # head stride 2T, rows still unit
    assert not fast(Q=torch.zeros(B, H, T, D + 8, dtype=torch.float16)[..., :D])  # row stride 72
    # the data tensors' row strides are int32 in the fast flavours ([abi] narrow_row_strides):
    # a call whose row offsets, (max(T, M) + 512) * stride + 512, pass 2**31 runs the general
    # flavour (tensors here only lend pointers and strides; ints carry T and M)
    big = 2**31 // (64 * 2)  # rows: max(T, M) * 64 is ~2**30, fits
    assert aot_sdpa._C._fast_ok(op, dict(x, Bias=None, Mstat=m, Lstat=l,
                                         Zbuf=torch.zeros(B * H, T)),
                                (B, H, big, big, D, 0, big, big - 1, 0, 0))
    for t, m_ in ((2 * big, 1), (1, 2 * big)):  # rows * 64 reach 2**31: T or M alone decides
        assert not aot_sdpa._C._fast_ok(op, dict(x, Bias=None, Mstat=m, Lstat=l,
                                                 Zbuf=torch.zeros(B * H, T)),
                                        (B, H, t, m_, D, 0, t, m_ - 1, 0, 0))
    # the ragged flavour's condition (a head dim below its bucket): fast's with strides and D
    # multiples of 8; the dispatcher then picks it for D < bucket
    D72 = 72
    y = {n: torch.zeros(B, H, T, D72, dtype=torch.float16) for n in ("Q", "K", "V", "DO", "DK",
                                                                      "DV")}
    ints72 = (B, H, T, T, D72, 0, T, T - 1, 0, 0)
    ty = dict(y, Bias=None, Mstat=m, Lstat=l, Zbuf=torch.zeros(B * H, T))
    assert aot_sdpa._C._fast_ok(op, ty, ints72, ragged=True)
    assert not aot_sdpa._C._fast_ok(op, ty, ints72)  # 72 % 16: never the fast condition
    assert not aot_sdpa._C._fast_ok(op, ty, (B, H, T, T, 70, 0, T, T - 1, 0, 0), ragged=True)
    rows76 = torch.zeros(B, H, T, 76, dtype=torch.float16)[..., :D72]  # row stride 76 % 8 = 4
    assert not aot_sdpa._C._fast_ok(op, dict(ty, Q=rows76), ints72, ragged=True)
    shifted = torch.zeros(B * H * T * D72 + 1, dtype=torch.float16)[1:].view(B, H, T, D72)
    assert not aot_sdpa._C._fast_ok(op, dict(ty, K=shifted), ints72, ragged=True)  # 2-byte offset
    assert not aot_sdpa._C._fast_ok(op, dict(ty, Mstat=torch.zeros(B, H, 2 * T)[..., ::2]),
                                    ints72, ragged=True)  # unit stats stride, as fast
    # the forward's shared stats triple ("s", owned by Mstat) is held to the same rule
    fwd = OPS["fwd"].index
    t = dict(Q=x["Q"], K=x["K"], V=x["V"], Bias=None, O=x["DK"], Mstat=m, Lstat=l)
    assert aot_sdpa._C._fast_ok(fwd, t, ints)
    assert not aot_sdpa._C._fast_ok(fwd, dict(t, Mstat=torch.zeros(B, H, 2 * T)[..., ::2]), ints)


def test_dq_fast_condition_covers_the_optional_o():
    """The dQ kernel takes the forward's O where given (HAS_O: it forms z from it), so its
    hinted flavours' condition holds O to the data rules (16-byte aligned, row stride % 16);
    without O (a null pointer, zero strides) the rest decides alone."""
    B, H, T, D = 2, 3, 32, 64
    x = {n: torch.zeros(B, H, T, D, dtype=torch.float16) for n in ("Q", "K", "V", "DO", "DQ")}
    t = dict(x, Bias=None, Mstat=torch.zeros(B, H, T), Lstat=torch.zeros(B, H, T),
             Zbuf=torch.zeros(2 * B * H, T))
    op = OPS["bwd_dq"].index
    ints = (B, H, T, T, D, 0, T, T - 1, 0, 1)
    assert aot_sdpa._C._fast_ok(op, dict(t, O=torch.zeros(B, H, T, D, dtype=torch.float16)), ints)
    assert aot_sdpa._C._fast_ok(op, dict(t, O=None), ints[:9] + (0,))
    shifted = torch.zeros(B * H * T * D + 1, dtype=torch.float16)[1:].view(B, H, T, D)
    assert not aot_sdpa._C._fast_ok(op, dict(t, O=shifted), ints)  # a 2-byte offset
    rows72 = torch.zeros(B, H, T, 72, dtype=torch.float16)[..., :D]  # row stride 72 % 16 = 8
    assert not aot_sdpa._C._fast_ok(op, dict(t, O=rows72), ints)


def test_split_rows_pad_matches_the_kernels():
    """_ops sizes the split buffer's rows as 2 * bucket + _SPLIT_PAD halves; the kernels
    address them with kernels/_common.py SPLIT_PAD (read as text: no Triton import here)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "kernels" / "_common.py").read_text()
    assert f"SPLIT_PAD = tl.constexpr({_ops._SPLIT_PAD})\n" in text

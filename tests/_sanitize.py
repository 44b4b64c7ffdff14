"""Every op once per memory-safety case, small shapes: the workload compute-sanitizer runs.

    compute-sanitizer --tool memcheck --error-exitcode 1 python tests/_sanitize.py [MODE ...]

Cases (issue 11, item 6): causal (top-left T < M, bottom-right T > M: rows that see no key),
masks (key padding with a fully masked batch, additive with -inf, dense with grouped heads),
grouped-query heads (Hkv = 1, 2), ragged T/M (1, 3, primes), head dims 1, 72, 256, a
strided (B, T, H, D) view, every sequence-length tier's cubin and the split head-dim buckets.
Every dtype by default. Modes: "fast" runs float16 alone (racecheck is slower), "float32"
float32 alone; "tiers", "split", "d256" or "chunks" only those cases (with "fast": in float16 alone). Prints
one line per case and "sanitize workload done" at the end.
"""

from __future__ import annotations

import sys

import torch

import aot_sdpa


def _every_op(q, k, v, do, tq, tk, tv, **kw):
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v, **kw)
    aot_sdpa.triton_sdpa_fused(q, k, v, out=(torch.empty_like(o), torch.empty_like(m),
                                             torch.empty_like(l)), **kw)
    if kw.get("mask") is None and kw.get("causal", False) in (False, True):
        # the drop-in's inference call (its stats to the device's scratch)
        aot_sdpa.scaled_dot_product_attention(q, k, v, is_causal=kw.get("causal", False),
                                              enable_gqa=True)
    aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o, **kw)
    aot_sdpa.sdpa_bwd(q, k, v, do, m, l, **kw)
    aot_sdpa.sdpa_bwd_dq(q, k, v, do, m, l, **kw)
    aot_sdpa.sdpa_bwd_dk(q, k, v, do, m, l, **kw)
    aot_sdpa.sdpa_bwd_dv(q, k, v, do, m, l, **kw)
    aot_sdpa.sdpa_jvp(q, k, v, tq, tk, tv, m, l, **kw)
    aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv, **kw)
    aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv, **kw)
    aot_sdpa.sdpa_bwd_jvp(q, k, v, do, m, l, tq, tk, tv, do, **kw)


def _case(name, B, H, Hkv, T, M, D, dtype, bthd=False, mask=None, **kw):
    g = torch.Generator(device="cuda").manual_seed(T * 7 + M)

    def r(h, n, query_like):
        if bthd and query_like:
            return torch.randn(B, n, h, D, device="cuda", generator=g).to(dtype).transpose(1, 2)
        return torch.randn(B, h, n, D, device="cuda", generator=g).to(dtype)

    x = [r(H, T, True), r(Hkv, M, False), r(Hkv, M, False), r(H, T, True), r(H, T, True),
         r(Hkv, M, False), r(Hkv, M, False)]
    mk = None if mask is None else mask(B, H, T, M, g)
    _every_op(*x, mask=mk, **kw)
    torch.cuda.synchronize()
    print(f"ok {name} {str(dtype)[6:]}", flush=True)


def _key_padding(B, H, T, M, g):
    keep = torch.arange(M, device="cuda")[None, :] < torch.tensor(
        [max(M - 3 * b, 0) for b in range(B)], device="cuda")[:, None]
    keep[-1] = False
    return keep[:, None, None, :]


def _additive(B, H, T, M, g):
    a = torch.randn(1, H, T, M, device="cuda", generator=g)
    return a.masked_fill(torch.rand(1, H, T, M, device="cuda", generator=g) < 0.3, float("-inf"))


def _dense(B, H, T, M, g):
    return torch.rand(B, 1, T, M, device="cuda", generator=g) > 0.5


def _tiers(dt):
    """The sequence-length tiers (kernels/variants.toml max_len): each tier cubin at a length
    inside its range (16-bit forward, fast D = 64 up to 200 and up to 768, D = 128 and ragged
    D = 72; 16-bit dQ and dK/dV, fast D = 64 up to 64; the float32 D = 64 one-kernel backward,
    T <= 200),
    with odd lengths so the tail block is partial, past max_len where tail_len runs it (the
    untiered tile's last block at most half full), and where causal_len runs it for causal
    calls (top-left with T > M, bottom-right with T < M: rows that see no key, and grouped
    heads), where grid_len runs dQ's and dK/dV's for a grid that leaves its waves idle, and
    their narrow-tail tiers (T <= 64 or such a grid, and T <= 200; narrow_only)."""
    _case("tier fast D=64 T<=200", 2, 3, 3, 197, 197, 64, dt)
    _case("tier fast D=64 T<=768", 1, 2, 2, 331, 500, 64, dt)
    _case("tier fast D=128 T<=200", 2, 2, 2, 131, 200, 128, dt)
    _case("tier ragged D=72 T<=128", 2, 2, 2, 113, 128, 72, dt)
    _case("tier fast D=64 tail_len T=801 M=1000", 1, 2, 2, 801, 1000, 64, dt)
    _case("tier fast D=128 tail_len T=385", 1, 2, 2, 385, 385, 128, dt)
    _case("tier ragged D=72 tail_len T=300", 1, 2, 2, 300, 290, 72, dt)
    _case("tier fast D=64 causal_len T=1500 M=1201", 1, 2, 2, 1500, 1201, 64, dt, causal=True)
    _case("tier fast D=64 causal_len bottom-right T=999 M=1300 GQA", 1, 4, 2, 999, 1300, 64, dt,
          causal="bottom_right")
    _case("tier fast D=64 dQ, dK/dV T<=64", 3, 2, 2, 61, 64, 64, dt)
    _case("tier fast D=64 dQ, dK/dV causal_len T=1000 M=1023 GQA", 1, 4, 2, 1000, 1023, 64, dt,
          causal=True)
    # grid_len: a grid that leaves its waves idle (8 untiered programs); the small batches of
    # the cases above take it too
    _case("tier fast D=64 dQ, dK/dV grid_len T=127 M=509 GQA", 1, 4, 2, 127, 509, 64, dt)
    # narrow_only, where the keys (M mod 64 = 16) and the query rows (T mod 32 = 13, 5) end in
    # a narrow tail: the grid_len tiers' tiles with it (144 / 288 untiered programs: idle
    # waves), then the T <= 200 ones (256 programs fill a wave of the H200's 264 slots)
    _case("tier fast D=64 dQ, dK/dV narrow tails T=77 M=144", 24, 6, 6, 77, 144, 64, dt)
    _case("tier fast D=64 dQ, dK/dV narrow tails T=197 M=144 full grid", 1, 128, 128, 197, 144,
          64, dt)


def _split(dt):
    """The split head-dim buckets (kernels/variants.toml [split_buckets]: the 16-bit sm_90
    forward, dQ and dK/dV in 80 = 64 + 16 and 96 = 64 + 32): fast (D fills the bucket) with
    causal over several blocks each way, ragged (D = 88) with multi-query heads and bottom-right
    causal (rows that see no key), ragged D = 72 (bucket 80's own tiles) with grouped heads,
    T = 1; D = 72 strided (general) is a case of main()."""
    _case("split fast D=80 causal", 2, 2, 2, 131, 200, 80, dt, causal=True)
    _case("split ragged D=72 gqa", 2, 4, 2, 113, 150, 72, dt)
    _case("split ragged D=88 mqa bottom-right", 1, 4, 1, 200, 131, 88, dt, causal="bottom_right")
    _case("split fast D=96 T=1 M=3", 1, 2, 2, 1, 3, 96, dt)


def _d256(dt):
    """Bucket 256's 16-bit two-pass dK/dV (TWO_PASS: each 128-key block's rows swept for dV,
    then for dK) beyond main()'s (1, 2, 40, 50) case: several key blocks with a partial last
    one, causal with grouped heads, bottom-right with T > M (rows that see no key), the ragged
    flavour (D = 200) and the general one (a strided view)."""
    _case("D=256 several key blocks", 2, 2, 2, 131, 301, 256, dt)
    _case("D=256 gqa causal", 1, 4, 2, 257, 257, 256, dt, causal=True)
    _case("D=256 bottom-right T>M", 1, 2, 2, 300, 131, 256, dt, causal="bottom_right")
    _case("D=200 ragged causal", 1, 2, 1, 150, 200, 200, dt, causal=True)
    _case("D=256 strided", 2, 2, 2, 70, 150, 256, dt, bthd=True)


def _chunks(dt):
    """The causal backward's programs dealt out by chunks of 8 heads (HEAD_CHUNK: buckets 128
    and 256, 16-bit fast and ragged dQ and dK/dV): 12 heads (a whole chunk and a short one),
    grouped heads folded with bottom-right T > M, and the ragged flavour (D = 200)."""
    _case("D=128 12 heads causal", 3, 4, 4, 300, 300, 128, dt, causal=True)
    _case("D=256 12 heads causal", 3, 4, 4, 260, 260, 256, dt, causal=True)
    _case("D=128 gqa bottom-right T>M", 3, 4, 2, 300, 200, 128, dt, causal="bottom_right")
    _case("D=200 ragged 12 heads causal", 3, 4, 4, 150, 150, 200, dt, causal=True)


def main():
    dtypes = ([torch.float16] if "fast" in sys.argv[1:] else [torch.float32]
              if "float32" in sys.argv[1:] else [torch.float16, torch.bfloat16, torch.float32])
    for mode, cases, mode_dtypes in (("tiers", _tiers, (torch.float16, torch.bfloat16,
                                                         torch.float32)),
                                     ("split", _split, (torch.float16, torch.bfloat16)),
                                     ("d256", _d256, (torch.float16, torch.bfloat16)),
                                     ("chunks", _chunks, (torch.float16, torch.bfloat16))):
        if mode in sys.argv[1:]:  # those cases alone, in their dtypes (fp16 alone with "fast")
            for dt in mode_dtypes if "fast" not in sys.argv[1:] else (torch.float16,):
                cases(dt)
            print("sanitize workload done", flush=True)
            return
    for dt in dtypes:
        _case("plain ragged", 2, 3, 3, 37, 53, 64, dt)
        _case("T=1 M=3", 1, 2, 2, 1, 3, 8, dt)
        _case("T=3 M=1", 1, 2, 2, 3, 1, 8, dt)
        _case("causal top-left T<M", 1, 2, 2, 67, 131, 64, dt, causal=True)
        _case("causal bottom-right T>M", 1, 2, 2, 131, 67, 40, dt, causal="bottom_right")
        _case("gqa Hkv=2 causal", 1, 4, 2, 61, 61, 64, dt, causal=True)
        _case("mqa Hkv=1", 2, 4, 1, 33, 77, 64, dt)
        _case("mask key padding", 3, 2, 2, 45, 70, 64, dt, mask=_key_padding)
        _case("mask key padding, whole key blocks", 3, 2, 2, 200, 300, 64, dt,
              mask=_key_padding)
        _case("mask key padding, aligned", 2, 2, 2, 256, 256, 64, dt, mask=_key_padding)
        # a head dim below its bucket: key padding through the masked flavour (its MASKED)
        _case("mask key padding D=72", 3, 2, 2, 200, 300, 72, dt, mask=_key_padding,
              causal=True)
        _case("mask additive + causal", 1, 2, 2, 70, 45, 72, dt, mask=_additive,
              causal="bottom_right")
        _case("mask dense gqa", 2, 4, 2, 29, 53, 64, dt, mask=_dense)
        _case("D=1", 1, 2, 2, 17, 19, 1, dt)
        _case("D=72 strided", 2, 3, 3, 50, 60, 72, dt, bthd=True)
        if dt != torch.float32:
            _case("D=256", 1, 2, 2, 40, 50, 256, dt)
            _case("D=256 masked causal", 1, 2, 2, 40, 50, 256, dt, mask=_key_padding,
                  causal=True)
        _tiers(dt)
        if dt != torch.float32:
            _split(dt)
            _d256(dt)
    print("sanitize workload done", flush=True)


if __name__ == "__main__":
    main()

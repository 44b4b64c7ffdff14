"""What the 16-bit D = 128 forward would gain from Triton features our AOT build does not use:
TMA loads through tensor descriptors, and Hopper warp specialization (GPU only, JIT).

Our forward loads tiles with pointer arithmetic (cp.async), which `triton.tools.compile`-style
AOT supports; tensor descriptors need either a by-value CUtensorMap per tensor built by the
launcher (host descriptors) or Triton's global scratch (device descriptors), neither of which
our launcher has. Before building either, this probe measures the gain on one minimal kernel:
a plain non-causal online-softmax forward (no masks, no ragged rows: T a multiple of BLOCK_M
and BLOCK_N, D a power of two), JIT-compiled several ways from one source:

  ptr    pointer loads (what our kernels do)
  tma    host TensorDescriptor loads of Q, K, V and store of O
  tma_ws tma, with the key loop `tl.range(..., warp_specialize=True)` (Triton 3.6 compiles it
         for sm_90 as tma: the two TTGIRs differ only in the loop's attribute; measured no
         faster, results/probe_tma_fwd_h200.log, and no longer in MODES)
  *_ovl  the key loop software-pipelined by hand: the next key block's Q K^T issued before
         this block's softmax, so the exp2 work can overlap a product on the tensor cores
  *_ovl3 FlashAttention-3's order: the next block's Q K^T, this block's P V, then the next
         block's softmax (overlapping P V)

each timed (`_harness.backlogged_ms`: device time per call with the host out of the way, ms)
next to our AOT forward (`triton_sdpa_fused`) and torch's flash and cuDNN forward in the same
process, at the real-shape rows where the 16-bit forward loses (D128-1k, D128-4k), and a D = 64
row. FLOPs: 4 * B * H * T * M * D (two matmuls, 2 flops per multiply-add).

    python probe_tma_fwd.py
Prints one table; nothing is written to results/ (a probe, not a shipped path).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

import aot_sdpa

from _harness import backlogged_ms, table, torch_backend

LOG2E = 1.4426950408889634  # log2(e): exp(x) == exp2(x * LOG2E)


@triton.jit
def _load_kv(K, V, k_desc, v_desc, key0, offs_n, offs_d, HEAD_DIM: tl.constexpr,
             TMA: tl.constexpr):
    """K and V tiles (BLOCK_N x HEAD_DIM) of the key block whose first row is key0."""
    if TMA:
        return k_desc.load([key0, 0]), v_desc.load([key0, 0])
    k = tl.load(K + (key0 + offs_n)[:, None] * HEAD_DIM + offs_d[None, :])
    v = tl.load(V + (key0 + offs_n)[:, None] * HEAD_DIM + offs_d[None, :])
    return k, v


@triton.jit
def _probs(s, m_i, l_i, qk_scale):
    """One key block of the online softmax from raw scores s: (p, m_new, alpha, l_new) with
    m_new = max(m_i, max_j s_j qk_scale), p = exp2(s qk_scale - m_new), alpha =
    exp2(m_i - m_new), l_new = alpha l_i + rowsum(p)."""
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
    p = tl.math.exp2(s * qk_scale - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    return p, m_new, alpha, l_i * alpha + tl.sum(p, 1)


@triton.jit
def _probe_fwd(Q, K, V, O, q_desc, k_desc, v_desc, o_desc, qk_scale, T,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
               TMA: tl.constexpr, WS: tl.constexpr, OVERLAP: tl.constexpr):
    """O_i = sum_j exp(S_ij - m_i) v_j / l_i, S = scale * Q K^T, for one (query block, batch*head)
    program; Q, K, V, O are (B*H*T, HEAD_DIM) row-major, so row r of head bh is bh*T + r.
    OVERLAP 1: each step issues the next key block's Q K^T before this block's softmax (the
    softmax's exp2 work can run while that product is on the tensor cores); OVERLAP 2
    (FlashAttention-3's order): each step issues the next block's Q K^T, then this block's
    P V, then the next block's softmax, which can overlap P V."""
    bh = tl.program_id(1)
    row0 = bh * T + tl.program_id(0) * BLOCK_M
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    # -- Q tile (BLOCK_M x HEAD_DIM), loaded once
    if TMA:
        q = q_desc.load([row0, 0])
    else:
        q = tl.load(Q + (row0 + offs_m)[:, None] * HEAD_DIM + offs_d[None, :])
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    if OVERLAP == 0:
        for start_n in tl.range(0, T, BLOCK_N, warp_specialize=WS):
            k, v = _load_kv(K, V, k_desc, v_desc, bh * T + start_n, offs_n, offs_d, HEAD_DIM, TMA)
            # -- scores, probabilities, then acc <- alpha*acc + P V
            p, m_i, alpha, l_i = _probs(tl.dot(q, tl.trans(k)), m_i, l_i, qk_scale)
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    elif OVERLAP == 1:
        k, v = _load_kv(K, V, k_desc, v_desc, bh * T, offs_n, offs_d, HEAD_DIM, TMA)
        s = tl.dot(q, tl.trans(k))
        for start_n in tl.range(BLOCK_N, T, BLOCK_N):
            # -- the next block's scores first (in flight during this block's softmax)
            k_next, v_next = _load_kv(K, V, k_desc, v_desc, bh * T + start_n, offs_n, offs_d,
                                      HEAD_DIM, TMA)
            s_next = tl.dot(q, tl.trans(k_next))
            # -- this block: probabilities, then acc <- alpha*acc + P V
            p, m_i, alpha, l_i = _probs(s, m_i, l_i, qk_scale)
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
            s, v = s_next, v_next
        p, m_i, alpha, l_i = _probs(s, m_i, l_i, qk_scale)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    else:
        k, v = _load_kv(K, V, k_desc, v_desc, bh * T, offs_n, offs_d, HEAD_DIM, TMA)
        p, m_i, alpha, l_i = _probs(tl.dot(q, tl.trans(k)), m_i, l_i, qk_scale)
        for start_n in tl.range(BLOCK_N, T, BLOCK_N):
            # -- the next block's scores, then the last block's P V, then the next softmax
            k_next, v_next = _load_kv(K, V, k_desc, v_desc, bh * T + start_n, offs_n, offs_d,
                                      HEAD_DIM, TMA)
            s_next = tl.dot(q, tl.trans(k_next))
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
            p, m_i, alpha, l_i = _probs(s_next, m_i, l_i, qk_scale)
            v = v_next
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    o = (acc / l_i[:, None]).to(O.dtype.element_ty)
    if TMA:
        o_desc.store([row0, 0], o)
    else:
        tl.store(O + (row0 + offs_m)[:, None] * HEAD_DIM + offs_d[None, :], o)


def probe(q, k, v, mode: str, block_m=128, block_n=64, warps=8, stages=3):
    from triton.tools.tensor_descriptor import TensorDescriptor

    B, H, T, D = q.shape
    o = torch.empty_like(q)
    flat = [x.view(B * H * T, D) for x in (q, k, v, o)]
    tma = mode.startswith("tma")
    if tma:
        descs = [TensorDescriptor.from_tensor(x, [block_m if i in (0, 3) else block_n, D])
                 for i, x in enumerate(flat)]
    else:
        descs = flat
    grid = (T // block_m, B * H)

    def run():
        _probe_fwd[grid](*flat, *descs, q.shape[-1] ** -0.5 * LOG2E, T, BLOCK_M=block_m,
                         BLOCK_N=block_n, HEAD_DIM=D, TMA=tma, WS=mode == "tma_ws",
                         OVERLAP=2 if mode.endswith("ovl3") else int(mode.endswith("ovl")),
                         num_warps=warps, num_stages=stages)
        return o

    return run


MODES = ("ptr", "ptr_ovl", "ptr_ovl3", "tma", "tma_ovl", "tma_ovl3")
CONFIGS = ((128, 64, 8, 3), (128, 128, 8, 2))
DTYPES = (torch.float16,)  # bf16 ran within 3% of fp16 in every mode (the first run's table)


def main() -> None:
    shapes = {"D128-1k": (16, 16, 1024, 128), "D128-4k": (4, 16, 4096, 128),
              "D64-4k": (4, 16, 4096, 64), "DiT-B/2": (32, 12, 256, 64)}
    rows = []
    for name, (B, H, T, D) in shapes.items():
        for dtype in DTYPES:
            q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=dtype) for _ in range(3))
            ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            flops = 4 * B * H * T * T * D
            impls = {"aot_sdpa": lambda: aot_sdpa.triton_sdpa_fused(q, k, v)}
            for backend in ("flash", "cudnn"):
                def call(backend=backend):
                    with torch_backend(backend):
                        return torch.nn.functional.scaled_dot_product_attention(q, k, v)
                impls[backend] = call
            for mode in MODES:
                for cfg in CONFIGS:
                    fn = probe(q, k, v, mode, *cfg)
                    key = f"{mode} {cfg[0]}x{cfg[1]}/{cfg[2]}/{cfg[3]}"
                    try:
                        err = (fn().float() - ref.float()).abs().max().item()
                    except Exception as e:  # a mode Triton cannot compile here: say so
                        print(f"{name} {key}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
                        continue
                    # against torch's own 16-bit output: a correct probe kernel differs by
                    # rounding (~1e-3), a wrong one (bad descriptor or tile) by O(1)
                    if err > 2e-2:
                        print(f"{name} {key}: max error {err:.3g}, not timed")
                        continue
                    impls[key] = fn
            best_torch = None
            for key, fn in impls.items():
                t = backlogged_ms(fn, n=10, reps=7)
                if key in ("flash", "cudnn"):
                    best_torch = min(best_torch or t["ms"], t["ms"])
                rows.append({"shape": name, "dtype": str(dtype)[6:], "impl": key, "ms": round(t["ms"], 4),
                             "p10": round(t["p10_ms"], 4), "p90": round(t["p90_ms"], 4),
                             "tflops": round(flops / t["ms"] / 1e9, 1)})
            for r in rows:
                if r["shape"] == name and r["dtype"] == str(dtype)[6:]:
                    r["vs_torch_best"] = round(best_torch / r["ms"], 3)
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    print(table(rows, ["shape", "dtype", "impl", "ms", "p10", "p90", "tflops", "vs_torch_best"]))


if __name__ == "__main__":
    main()

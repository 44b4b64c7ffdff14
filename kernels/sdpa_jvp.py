"""Forward-mode derivative (JVP) of SDPA: frozen-stats JVP and fused primal+tangent forward.

Tangents (tQ, tK, tV) of (Q, K, V). With S = scale * Q K^T and P = softmax_row(S):
    dS   = scale * (tQ K^T + Q tK^T)
    dS_c = dS - rowsum(P * dS)
    dP   = P * dS_c
    tO   = dP V + P tV
Using the row stats m, l for P gives the exact JVP (the centering term carries the stats'
own derivatives). Per query row this is
    tO_i = sum_j P_ij (dS_ij V_j + tV_j) - (sum_j P_ij dS_ij) O_i,   O_i = sum_j P_ij V_j
so one sweep over keys with three accumulators (A, r, O) suffices; T x M is never stored.
With an attention mask S gets its bias B added (B has no tangent). j ranges over the keys
row i sees (all, or causal, or with B_ij > -inf: see _common); a row that sees none has
O = 0, tO = 0 (and from the fused kernel m = -inf, l = 0).
"""

import triton
import triton.language as tl
from _common import (
    LN2,
    LOG2E,
    batch_head,
    bias_rows,
    block_offsets,
    frozen_probs,
    key_range,
    load_kT_v,
    load_row_stats,
    load_rows,
    mma,
    mma_swept,
    online_probs,
    padding_sweeps,
    query_block,
    row_limits,
    store_rows,
    sweep_scales,
)


@triton.jit
def _load_kv_block(k_base, tk_base, v_base, tv_base, stride_kn, stride_tkn, stride_vn,
                   stride_tvn, cols, n_ok, offs_d, d_ok, MASK_N: tl.constexpr,
                   EVEN_D: tl.constexpr):
    """K^T, tK^T (HEAD_DIM x BLOCK_N) and V, tV (BLOCK_N x HEAD_DIM) of one key block."""
    kT, v = load_kT_v(k_base, v_base, stride_kn, stride_vn, cols, n_ok, offs_d, d_ok, MASK_N,
                      EVEN_D)
    tkT, tv = load_kT_v(tk_base, tv_base, stride_tkn, stride_tvn, cols, n_ok, offs_d, d_ok,
                        MASK_N, EVEN_D)
    return kT, tkT, v, tv


@triton.jit
def _key_scales(k_base, tk_base, v_base, tv_base, stride_kn, stride_tkn, stride_vn, stride_tvn,
                n_hi, M, offs_n, offs_d, d_ok, EVEN_D: tl.constexpr,
                INPUT_PRECISION: tl.constexpr):
    """"fp16x3": one power of two each for K and tK over the keys [0, n_hi) a program sweeps
    (sweep_scales' K part, V's left unused), and whether both are within K_ONE_SPAN of their
    largest key: ((s_k, 1/s_k, s_tk, 1/s_tk), k_one). Other precisions: 1s and True."""
    s_k, inv_k, _, _, k_one = sweep_scales(k_base, v_base, stride_kn, stride_vn, 0, n_hi, M,
                                           offs_n, offs_d, d_ok, EVEN_D, INPUT_PRECISION)
    s_tk, inv_tk, _, _, tk_one = sweep_scales(tk_base, tv_base, stride_tkn, stride_tvn, 0, n_hi,
                                              M, offs_n, offs_d, d_ok, EVEN_D, INPUT_PRECISION)
    return (s_k, inv_k, s_tk, inv_tk), k_one & tk_one


@triton.jit
def _scores(q, kT, sc, INPUT_PRECISION: tl.constexpr, K_ONE: tl.constexpr):
    """Q K^T; K_ONE: K in the sweeps' one scale (sc = (s_k, 1/s_k, s_tk, 1/s_tk) from
    _key_scales; mma_swept), else per key and tile (mma)."""
    s_k, inv_k, s_tk, inv_tk = sc
    if K_ONE:
        return mma_swept(q, kT, None, s_k, inv_k, INPUT_PRECISION)
    else:
        return mma(q, kT, None, INPUT_PRECISION)


@triton.jit
def _score_tangents(q, tq, kT, tkT, sc, INPUT_PRECISION: tl.constexpr, K_ONE: tl.constexpr):
    """tQ K^T + Q tK^T, K's and tK's scales as _scores'."""
    s_k, inv_k, s_tk, inv_tk = sc
    if K_ONE:
        ds = mma_swept(tq, kT, None, s_k, inv_k, INPUT_PRECISION)
        return mma_swept(q, tkT, ds, s_tk, inv_tk, INPUT_PRECISION)
    else:
        return mma(q, tkT, mma(tq, kT, None, INPUT_PRECISION), INPUT_PRECISION)


@triton.jit
def _jvp_inner(acc_a, acc_o, r, q, tq, m2, inv_l, k_base, tk_base, v_base, tv_base,
               stride_kn, stride_tkn, stride_vn, stride_tvn, n_lo, n_hi, M, lim, b_rows,
               offs_n, offs_d, d_ok, sm_scale, qk_scale, sc,
               BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, MASK_N: tl.constexpr,
               BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr, K_ONE: tl.constexpr):
    """Frozen-stats accumulators over key blocks [n_lo, n_hi); K's and tK's scales as
    _scores' (sc, K_ONE)."""
    for start_n in range(n_lo, n_hi, BLOCK_N):
        cols = start_n + offs_n
        n_ok = cols < M
        # -- load this key block's primal and tangent tiles
        kT, tkT, v, tv = _load_kv_block(k_base, tk_base, v_base, tv_base, stride_kn, stride_tkn,
                                        stride_vn, stride_tvn, cols, n_ok, offs_d, d_ok, MASK_N,
                                        EVEN_D)
        # -- P from the frozen stats (zero on masked keys)
        s2 = _scores(q, kT, sc, INPUT_PRECISION, K_ONE) * qk_scale
        p = frozen_probs(s2, m2, inv_l, b_rows, cols, lim, MASK_N, BIAS)
        # -- dS = scale * (tQ K^T + Q tK^T);  P*dS
        ds = _score_tangents(q, tq, kT, tkT, sc, INPUT_PRECISION, K_ONE) * sm_scale
        # -- P dS in the dtype of the products; r sums those same values, so the centering
        #    r O cancels the (P dS) V product exactly where it should (e.g. a row that sees
        #    one key has tO = tV exactly, also in 16-bit)
        pds = (p * ds).to(v.dtype)
        # -- r += rowsum(P dS);  A += (P dS) V + P tV;  O += P V
        r += tl.sum(pds.to(tl.float32), 1)
        p_lo = p.to(v.dtype)
        acc_a = mma(pds, v, acc_a, INPUT_PRECISION)
        acc_a = mma(p_lo, tv, acc_a, INPUT_PRECISION)
        acc_o = mma(p_lo, v, acc_o, INPUT_PRECISION)
    return acc_a, acc_o, r


@triton.jit
def _jvp_sweeps(acc_a, acc_o, r, q, tq, m2, inv_l, k_base, tk_base, v_base, tv_base, stride_kn,
                stride_tkn, stride_vn, stride_tvn, n_lo, n_full, n_hi, rows, Q_LEN, DIAG, M,
                b_row, offs_n, offs_d, d_ok, sm_scale, qk_scale, sc,
                BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, BIAS: tl.constexpr,
                INPUT_PRECISION: tl.constexpr, K_ONE: tl.constexpr):
    """_jvp_keys' sweeps: with key padding (BIAS 1) its zero-bias blocks [0, n_lo) plainly,
    then [n_lo, n_full) and the tail [n_full, n_hi) with per-score limits."""
    if BIAS == 1:
        acc_a, acc_o, r = _jvp_inner(acc_a, acc_o, r, q, tq, m2, inv_l, k_base, tk_base, v_base,
                                     tv_base, stride_kn, stride_tkn, stride_vn, stride_tvn, 0,
                                     n_lo, M, 0, b_row, offs_n, offs_d, d_ok, sm_scale, qk_scale,
                                     sc, BLOCK_N, EVEN_D, False, 0, INPUT_PRECISION, K_ONE)
    acc_a, acc_o, r = _jvp_inner(acc_a, acc_o, r, q, tq, m2, inv_l, k_base, tk_base, v_base,
                                 tv_base, stride_kn, stride_tkn, stride_vn, stride_tvn, n_lo,
                                 n_full, M, 0, b_row, offs_n, offs_d, d_ok, sm_scale, qk_scale,
                                 sc, BLOCK_N, EVEN_D, False, BIAS, INPUT_PRECISION, K_ONE)
    if n_full < n_hi:
        lim = row_limits(rows, Q_LEN, DIAG, M)  # not live during the first sweep
        acc_a, acc_o, r = _jvp_inner(acc_a, acc_o, r, q, tq, m2, inv_l, k_base, tk_base, v_base,
                                     tv_base, stride_kn, stride_tkn, stride_vn, stride_tvn, n_full,
                                     n_hi, M, lim, b_row, offs_n, offs_d, d_ok, sm_scale, qk_scale,
                                     sc, BLOCK_N, EVEN_D, True, BIAS, INPUT_PRECISION, K_ONE)
    return acc_a, acc_o, r


@triton.jit
def _jvp_keys(acc_a, acc_o, r, q, tq, m2, inv_l, k_base, tk_base, v_base, tv_base, stride_kn,
              stride_tkn, stride_vn, stride_tvn, n_full, n_hi, rows, Q_LEN, DIAG, M, b_row,
              offs_n, offs_d, d_ok, sm_scale, qk_scale,
              BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, BIAS: tl.constexpr,
              INPUT_PRECISION: tl.constexpr):
    """_jvp_inner over the key blocks every row sees whole, then the masked tail (as
    sdpa_fwd._fwd_keys); BIAS 1: with a key-padding mask (b_row its row), split by
    padding_sweeps. "fp16x3", head dims up to 64: K and tK in one scale each for all the
    sweeps where every key is within K_ONE_SPAN of the largest (_key_scales; a branch at run
    time), else per key and tile. Measured (H200, JIT, fp16x3, benchmarks/probe_fp16x3.py):
    1.12-1.13x faster at D = 64 (ViT-B 0.326 -> 0.291 ms, (8, 12, 1024, 64) 1.089 -> 0.976,
    (2, 8, 4096, 64) 2.792 -> 2.479), 0.94x at D = 128 ((16, 16, 1024, 128) 6.27 -> 6.67): per
    key there."""
    n_lo = 0
    if BIAS == 1:  # key padding: a plain sweep over its zero-bias blocks, none past its last key
        n_lo, n_full, n_hi = padding_sweeps(b_row, M, n_full, n_hi, BLOCK_N)
    sc, k_one = (1.0, 1.0, 1.0, 1.0), False
    if offs_d.shape[0] <= 64:
        sc, k_one = _key_scales(k_base, tk_base, v_base, tv_base, stride_kn, stride_tkn,
                                stride_vn, stride_tvn, n_hi, M, offs_n, offs_d, d_ok, EVEN_D,
                                INPUT_PRECISION)
    if k_one:
        acc_a, acc_o, r = _jvp_sweeps(acc_a, acc_o, r, q, tq, m2, inv_l, k_base, tk_base, v_base,
                                      tv_base, stride_kn, stride_tkn, stride_vn, stride_tvn, n_lo,
                                      n_full, n_hi, rows, Q_LEN, DIAG, M, b_row, offs_n, offs_d,
                                      d_ok, sm_scale, qk_scale, sc, BLOCK_N, EVEN_D, BIAS,
                                      INPUT_PRECISION, True)
    else:
        acc_a, acc_o, r = _jvp_sweeps(acc_a, acc_o, r, q, tq, m2, inv_l, k_base, tk_base, v_base,
                                      tv_base, stride_kn, stride_tkn, stride_vn, stride_tvn, n_lo,
                                      n_full, n_hi, rows, Q_LEN, DIAG, M, b_row, offs_n, offs_d,
                                      d_ok, sm_scale, qk_scale, sc, BLOCK_N, EVEN_D, BIAS,
                                      INPUT_PRECISION, False)
    return acc_a, acc_o, r


@triton.jit
def _sdpa_jvp_kernel(
    Q, K, V, TQ, TK, TV, Bias, Mstat, Lstat, TO,
    sm_scale,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_tqz, stride_tqh, stride_tqm,
    stride_tkz, stride_tkh, stride_tkn,
    stride_tvz, stride_tvh, stride_tvn,
    stride_toz, stride_toh, stride_tom,
    stride_mz, stride_mh, stride_mm,
    stride_lz, stride_lh, stride_lm,
    stride_biasz, stride_biash, stride_biasm,
    Z, H, T, M, D, Q_LEN, DIAG,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    EVEN_D: tl.constexpr, MASKED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """tO = A - r * O for one (query block, batch*head), P from the frozen stats (m, l):

    A_i = sum_j P_ij (dS_ij V_j + tV_j),  r_i = sum_j P_ij dS_ij,  O_i = sum_j P_ij V_j
    """
    off_z, off_h, bh, valid = batch_head(Z, H)
    if valid:
        offs_m, offs_n, offs_d, m_ok, d_ok = block_offsets(query_block(Q.dtype.element_ty),
                                                           BLOCK_M, BLOCK_N, HEAD_DIM, T, D)
        q = load_rows(Q, off_z, off_h, stride_qz, stride_qh, stride_qm, offs_m, offs_d, m_ok,
                      d_ok, EVEN_D)
        tq = load_rows(TQ, off_z, off_h, stride_tqz, stride_tqh, stride_tqm, offs_m, offs_d, m_ok,
                       d_ok, EVEN_D)
        m2, inv_l = load_row_stats(Mstat, Lstat, off_z, off_h, stride_mz, stride_mh, stride_mm,
                                   stride_lz, stride_lh, stride_lm, offs_m, m_ok,
                                   Q.dtype.element_ty)
        k_base = K + off_z * stride_kz + off_h * stride_kh
        tk_base = TK + off_z * stride_tkz + off_h * stride_tkh
        v_base = V + off_z * stride_vz + off_h * stride_vh
        tv_base = TV + off_z * stride_tvz + off_h * stride_tvh
        acc_a = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        acc_o = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        r = tl.zeros([BLOCK_M], tl.float32)
        qk_scale = sm_scale * LOG2E
        n_full, n_hi = key_range(offs_m, m_ok, Q_LEN, DIAG, M, BLOCK_N)
        b_base = Bias + off_z * stride_biasz + off_h * stride_biash
        if MASKED:
            if MASKED == 2 and stride_biasm == 0:  # key padding (one bias row for every query row)
                acc_a, acc_o, r = _jvp_keys(acc_a, acc_o, r, q, tq, m2, inv_l, k_base, tk_base,
                                            v_base, tv_base, stride_kn, stride_tkn, stride_vn,
                                            stride_tvn, n_full, n_hi, offs_m, Q_LEN, DIAG, M,
                                            b_base, offs_n, offs_d, d_ok, sm_scale, qk_scale,
                                            BLOCK_N, EVEN_D, 1, INPUT_PRECISION)
            else:  # a bias row per query row: every key block a row may see, masked
                lim = tl.where(m_ok, row_limits(offs_m, Q_LEN, DIAG, M), -1)
                b_rows = bias_rows(b_base, stride_biasm, offs_m)
                acc_a, acc_o, r = _jvp_inner(acc_a, acc_o, r, q, tq, m2, inv_l, k_base, tk_base,
                                             v_base, tv_base, stride_kn, stride_tkn, stride_vn,
                                             stride_tvn, 0, n_hi, M, lim, b_rows, offs_n, offs_d,
                                             d_ok, sm_scale, qk_scale, (1.0, 1.0, 1.0, 1.0),
                                             BLOCK_N, EVEN_D, True, 2, INPUT_PRECISION, False)
        else:
            acc_a, acc_o, r = _jvp_keys(acc_a, acc_o, r, q, tq, m2, inv_l, k_base, tk_base, v_base,
                                        tv_base, stride_kn, stride_tkn, stride_vn, stride_tvn,
                                        n_full, n_hi, offs_m, Q_LEN, DIAG, M, Bias, offs_n, offs_d,
                                        d_ok, sm_scale, qk_scale, BLOCK_N, EVEN_D, False,
                                        INPUT_PRECISION)
        t_o = acc_a - r[:, None] * acc_o
        store_rows(TO, t_o, off_z, off_h, stride_toz, stride_toh, stride_tom, offs_m, offs_d, m_ok,
                   d_ok, EVEN_D)


@triton.jit
def _fwd_jvp_inner(acc_o, acc_a, r, m_i, l_i, q, tq, k_base, tk_base, v_base, tv_base,
                   stride_kn, stride_tkn, stride_vn, stride_tvn, n_lo, n_hi, M, lim, b_rows,
                   offs_n, offs_d, d_ok, sm_scale, qk_scale,
                   BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, MASK_N: tl.constexpr,
                   BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """Online-softmax sweep carrying the primal (acc_o, l) and tangent (acc_a, r) sums; masks
    as sdpa_fwd._fwd_inner."""
    for start_n in range(n_lo, n_hi, BLOCK_N):
        cols = start_n + offs_n
        n_ok = cols < M
        # -- load this key block's primal and tangent tiles
        kT, tkT, v, tv = _load_kv_block(k_base, tk_base, v_base, tv_base, stride_kn, stride_tkn,
                                        stride_vn, stride_tvn, cols, n_ok, offs_d, d_ok, MASK_N,
                                        EVEN_D)
        # -- running max, rescale factor and unnormalised probs e (base 2)
        e, m_new, alpha = online_probs(mma(q, kT, None, INPUT_PRECISION), m_i, b_rows, cols, lim,
                                       qk_scale, MASK_N, BIAS)
        # -- dS = scale * (tQ K^T + Q tK^T);  e*dS
        ds = mma(tq, kT, None, INPUT_PRECISION)
        ds = mma(q, tkT, ds, INPUT_PRECISION) * sm_scale
        # -- e dS in the dtype of the products, r summing those same values (as _jvp_inner)
        eds = (e * ds).to(v.dtype)
        # -- rescale and accumulate: l, r (row sums) and O, A (row vectors)
        l_i = l_i * alpha + tl.sum(e, 1)
        r = r * alpha + tl.sum(eds.to(tl.float32), 1)
        e_lo = e.to(v.dtype)
        acc_o = mma(e_lo, v, acc_o * alpha[:, None], INPUT_PRECISION)
        acc_a = mma(eds, v, acc_a * alpha[:, None], INPUT_PRECISION)
        acc_a = mma(e_lo, tv, acc_a, INPUT_PRECISION)
        m_i = m_new
    return acc_o, acc_a, r, m_i, l_i


@triton.jit
def _fwd_jvp_keys(acc_o, acc_a, r, m_i, l_i, q, tq, k_base, tk_base, v_base, tv_base, stride_kn,
                  stride_tkn, stride_vn, stride_tvn, n_full, n_hi, rows, Q_LEN, DIAG, M, b_row,
                  offs_n, offs_d, d_ok, sm_scale, qk_scale,
                  BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, BIAS: tl.constexpr,
                  INPUT_PRECISION: tl.constexpr):
    """_fwd_jvp_inner over the key blocks every row sees whole, then the masked tail (as
    sdpa_fwd._fwd_keys); BIAS 1: with a key-padding mask (b_row its row), split by
    padding_sweeps."""
    n_lo = 0
    if BIAS == 1:  # key padding: a plain sweep over its zero-bias blocks, none past its last key
        n_lo, n_full, n_hi = padding_sweeps(b_row, M, n_full, n_hi, BLOCK_N)
        acc_o, acc_a, r, m_i, l_i = _fwd_jvp_inner(
            acc_o, acc_a, r, m_i, l_i, q, tq, k_base, tk_base, v_base, tv_base, stride_kn,
            stride_tkn, stride_vn, stride_tvn, 0, n_lo, M, 0, b_row, offs_n, offs_d, d_ok,
            sm_scale, qk_scale, BLOCK_N, EVEN_D, False, 0, INPUT_PRECISION)
    acc_o, acc_a, r, m_i, l_i = _fwd_jvp_inner(
        acc_o, acc_a, r, m_i, l_i, q, tq, k_base, tk_base, v_base, tv_base, stride_kn, stride_tkn,
        stride_vn, stride_tvn, n_lo, n_full, M, 0, b_row, offs_n, offs_d, d_ok, sm_scale,
        qk_scale, BLOCK_N, EVEN_D, False, BIAS, INPUT_PRECISION)
    if n_full < n_hi:
        lim = row_limits(rows, Q_LEN, DIAG, M)  # not live during the first sweep
        acc_o, acc_a, r, m_i, l_i = _fwd_jvp_inner(
            acc_o, acc_a, r, m_i, l_i, q, tq, k_base, tk_base, v_base, tv_base, stride_kn,
            stride_tkn, stride_vn, stride_tvn, n_full, n_hi, M, lim, b_row, offs_n, offs_d, d_ok,
            sm_scale, qk_scale, BLOCK_N, EVEN_D, True, BIAS, INPUT_PRECISION)
    return acc_o, acc_a, r, m_i, l_i


@triton.jit
def _sdpa_fwd_jvp_kernel(
    Q, K, V, TQ, TK, TV, Bias, O, Mstat, Lstat, TO,
    sm_scale,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_tqz, stride_tqh, stride_tqm,
    stride_tkz, stride_tkh, stride_tkn,
    stride_tvz, stride_tvh, stride_tvn,
    stride_oz, stride_oh, stride_om,
    stride_toz, stride_toh, stride_tom,
    stride_sz, stride_sh, stride_sm,
    stride_biasz, stride_biash, stride_biasm,
    Z, H, T, M, D, Q_LEN, DIAG,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    EVEN_D: tl.constexpr, MASKED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """Primal and tangent in one pass (online softmax, running max m~, e_ij = exp(S_ij - m~_i)):

    l_i = sum_j e_ij,  O_i = sum_j e_ij V_j / l_i
    r_i = sum_j e_ij dS_ij,  A_i = sum_j e_ij (dS_ij V_j + tV_j)
    tO_i = A_i / l_i - (r_i / l_i) O_i;  m_i = max_j S_ij (natural units)
    """
    off_z, off_h, bh, valid = batch_head(Z, H)
    if valid:
        offs_m, offs_n, offs_d, m_ok, d_ok = block_offsets(query_block(Q.dtype.element_ty),
                                                           BLOCK_M, BLOCK_N, HEAD_DIM, T, D)
        q = load_rows(Q, off_z, off_h, stride_qz, stride_qh, stride_qm, offs_m, offs_d, m_ok,
                      d_ok, EVEN_D)
        tq = load_rows(TQ, off_z, off_h, stride_tqz, stride_tqh, stride_tqm, offs_m, offs_d, m_ok,
                       d_ok, EVEN_D)
        k_base = K + off_z * stride_kz + off_h * stride_kh
        tk_base = TK + off_z * stride_tkz + off_h * stride_tkh
        v_base = V + off_z * stride_vz + off_h * stride_vh
        tv_base = TV + off_z * stride_tvz + off_h * stride_tvh
        acc_o = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        acc_a = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        r = tl.zeros([BLOCK_M], tl.float32)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        qk_scale = sm_scale * LOG2E
        n_full, n_hi = key_range(offs_m, m_ok, Q_LEN, DIAG, M, BLOCK_N)
        b_base = Bias + off_z * stride_biasz + off_h * stride_biash
        if MASKED:
            if MASKED == 2 and stride_biasm == 0:  # key padding (one bias row for every query row)
                acc_o, acc_a, r, m_i, l_i = _fwd_jvp_keys(
                    acc_o, acc_a, r, m_i, l_i, q, tq, k_base, tk_base, v_base, tv_base, stride_kn,
                    stride_tkn, stride_vn, stride_tvn, n_full, n_hi, offs_m, Q_LEN, DIAG, M,
                    b_base, offs_n, offs_d, d_ok, sm_scale, qk_scale, BLOCK_N, EVEN_D, 1,
                    INPUT_PRECISION)
            else:  # a bias row per query row: every key block a row may see, masked
                lim = tl.where(m_ok, row_limits(offs_m, Q_LEN, DIAG, M), -1)
                b_rows = bias_rows(b_base, stride_biasm, offs_m)
                acc_o, acc_a, r, m_i, l_i = _fwd_jvp_inner(
                    acc_o, acc_a, r, m_i, l_i, q, tq, k_base, tk_base, v_base, tv_base, stride_kn,
                    stride_tkn, stride_vn, stride_tvn, 0, n_hi, M, lim, b_rows, offs_n, offs_d, d_ok,
                    sm_scale, qk_scale, BLOCK_N, EVEN_D, True, 2, INPUT_PRECISION)
        else:
            acc_o, acc_a, r, m_i, l_i = _fwd_jvp_keys(
                acc_o, acc_a, r, m_i, l_i, q, tq, k_base, tk_base, v_base, tv_base, stride_kn,
                stride_tkn, stride_vn, stride_tvn, n_full, n_hi, offs_m, Q_LEN, DIAG, M, Bias,
                offs_n, offs_d, d_ok, sm_scale, qk_scale, BLOCK_N, EVEN_D, False, INPUT_PRECISION)
        inv_l = tl.where(l_i > 0.0, 1.0 / l_i, 0.0)  # l = 0: a row that saw no key
        o = acc_o * inv_l[:, None]
        t_o = acc_a * inv_l[:, None] - (r * inv_l)[:, None] * o
        store_rows(O, o, off_z, off_h, stride_oz, stride_oh, stride_om, offs_m, offs_d, m_ok,
                   d_ok, EVEN_D)
        store_rows(TO, t_o, off_z, off_h, stride_toz, stride_toh, stride_tom, offs_m, offs_d, m_ok,
                   d_ok, EVEN_D)
        s_off = off_z * stride_sz + off_h * stride_sh + offs_m * stride_sm
        tl.store(Mstat + s_off, m_i * LN2, mask=m_ok)  # base-2 max -> natural units
        tl.store(Lstat + s_off, l_i, mask=m_ok)

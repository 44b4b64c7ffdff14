"""Tangent of the backward (forward-over-reverse): the exact HVP of attention, from frozen stats.

Given (Q, K, V, dO), the forward's row stats (m, l) and tangents (tQ, tK, tV, tdO), these
kernels return the tangents (hQ, hK, hV) of the backward's (dQ, dK, dV). With tdO = 0 that is
the Hessian-vector product of L = <dO, SDPA(Q, K, V)> along (tQ, tK, tV). Notation (a dot
marks a tangent; P from the frozen stats equals the true softmax):

    S  = scale Q K^T,            P  = exp(S - m) / l
    S. = scale (tQ K^T + Q tK^T),  r  = rowsum(P S.),       P. = P (S. - r)
    dP = dO V^T,                 dP. = dO tV^T + tdO V^T
    z  = rowsum(P dP),           z. = rowsum(P. dP + P dP.) = rowsum(P S. dP) - r z + rowsum(P dP.)
    dS = P (dP - z),             dS. = P. (dP - z) + P (dP. - z.)
    hQ = scale (dS. K + dS tK)
    hK = scale (dS.^T Q + dS^T tQ)
    hV = P.^T dO + P^T tdO

Three launches, no atomics (every output row is owned by one program that reduces in a fixed
order, so results are bitwise reproducible), O(T) extra memory (the row vectors r, z, z.):
    rows  (grid over query blocks): r, z, z. by one sweep over the keys, row sums only;
    dq    (grid over query blocks): hQ, sweeping the keys;
    dkdv  (grid over key blocks):   hK and hV, sweeping the queries.
With an attention mask S gets its bias B added (B has no tangent). Sums over j run over the
keys row i sees (all, or causal, or with B_ij > -inf: see _common); P (and so every term) is
0 elsewhere and on rows that see no key.
HAS_TDO is a run-time flag (0 when tdO is absent: the tdO products are skipped, TDO is never
read); each kernel branches on it once, outside its loops.
"""

import triton
import triton.language as tl
from _common import (
    LOG2E,
    batch_head,
    bias_rows,
    block_offsets,
    frozen_probs,
    frozen_probs_T,
    group_rows,
    jumped,
    key_range,
    load_row_stats,
    load_rows,
    load_tile,
    load_tiles_T,
    one_masked_loop,
    query_block,
    query_limits,
    row_limits,
    row_vector,
    store_rows,
)


@triton.jit
def _query_inner(r, z, w, y, hq, q, tq, do, tdo, m2, inv_l, k_base, tk_base, v_base, tv_base,
                 stride_kn, stride_tkn, stride_vn, stride_tvn, n_lo, n_hi, M, lim, b_rows,
                 offs_n, offs_d, d_ok, sm_scale, qk_scale,
                 BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, MASK_N: tl.constexpr,
                 BIAS: tl.constexpr, USE_TDO: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                 FOR_HQ: tl.constexpr):
    """One query block over key blocks [n_lo, n_hi), for either query-side kernel.
    FOR_HQ 0 (rows): the row sums r += P S., z += P dP, w += P S. dP, y += P dP. (hq unused).
    FOR_HQ 1 (dq): with r, z and w = z. given (y unused), hq += dS. K + dS tK (hQ / scale)."""
    for start_n in range(n_lo, n_hi, BLOCK_N):
        cols = start_n + offs_n
        n_ok = cols < M
        # -- K^T, tK^T, V^T, tV^T (HEAD_DIM x BLOCK_N) of this key block
        kT, tkT, vT, tvT = load_tiles_T(k_base, tk_base, v_base, tv_base, stride_kn, stride_tkn,
                                        stride_vn, stride_tvn, cols, n_ok, offs_d, d_ok, MASK_N,
                                        EVEN_D)
        # -- P from the frozen stats (zero on masked keys)
        s2 = tl.dot(q, kT, input_precision=INPUT_PRECISION) * qk_scale
        p = frozen_probs(s2, m2, inv_l, b_rows, cols, lim, MASK_N, BIAS)
        # -- S. = scale (tQ K^T + Q tK^T);  dP = dO V^T;  dP. = dO tV^T (+ tdO V^T)
        sd = tl.dot(tq, kT, input_precision=INPUT_PRECISION)
        sd = tl.dot(q, tkT, sd, input_precision=INPUT_PRECISION) * sm_scale
        dp = tl.dot(do, vT, input_precision=INPUT_PRECISION)
        dpd = tl.dot(do, tvT, input_precision=INPUT_PRECISION)
        if USE_TDO:
            dpd = tl.dot(tdo, vT, dpd, input_precision=INPUT_PRECISION)
        if FOR_HQ:
            # -- dS = P (dP - z);  dS. = P ((S. - r)(dP - z) + dP. - z.)
            dpz = dp - z[:, None]
            ds = p * dpz
            dsd = p * ((sd - r[:, None]) * dpz + dpd - w[:, None])
            # -- hQ += dS. K + dS tK
            hq = tl.dot(dsd.to(kT.dtype), tl.trans(kT), hq, input_precision=INPUT_PRECISION)
            hq = tl.dot(ds.to(kT.dtype), tl.trans(tkT), hq, input_precision=INPUT_PRECISION)
        else:
            # -- the four row sums
            psd = p * sd
            r += tl.sum(psd, 1)
            z += tl.sum(p * dp, 1)
            w += tl.sum(psd * dp, 1)
            y += tl.sum(p * dpd, 1)
    return r, z, w, y, hq


@triton.jit
def _query_sweep(q, tq, do, tdo, m2, inv_l, r, z, w, k_base, tk_base, v_base, tv_base, b_base,
                 stride_kn, stride_tkn, stride_vn, stride_tvn, stride_biasm, M, offs_m, m_ok,
                 Q_LEN, DIAG, offs_n, offs_d, d_ok, sm_scale, qk_scale,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                 EVEN_D: tl.constexpr, MASKED: tl.constexpr, USE_TDO: tl.constexpr,
                 INPUT_PRECISION: tl.constexpr, FOR_HQ: tl.constexpr):
    """_query_inner over the key blocks every row sees without a mask, then the diagonal /
    ragged tail with one (with an attention mask: every key block through the masked sweep).
    FOR_HQ 0: returns the row sums (r, z, w = z.'s first term, y; r, z, w given are ignored);
    FOR_HQ 1: (r, z, w = z.) given, returns them and hQ / scale."""
    if FOR_HQ:
        y = 0.0
        hq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    else:
        r = tl.zeros([BLOCK_M], tl.float32)
        z = tl.zeros([BLOCK_M], tl.float32)
        w = tl.zeros([BLOCK_M], tl.float32)
        y = tl.zeros([BLOCK_M], tl.float32)
        hq = 0.0
    n_full, n_hi = key_range(offs_m, m_ok, Q_LEN, DIAG, M, BLOCK_N)
    if MASKED:
        lim = tl.where(m_ok, row_limits(offs_m, Q_LEN, DIAG, M), -1)
        if MASKED == 2 and stride_biasm == 0:  # key padding (one bias row for every query row)
            r, z, w, y, hq = _query_inner(r, z, w, y, hq, q, tq, do, tdo, m2, inv_l, k_base,
                                          tk_base, v_base, tv_base, stride_kn, stride_tkn,
                                          stride_vn, stride_tvn, 0, n_hi, M, lim, b_base, offs_n,
                                          offs_d, d_ok, sm_scale, qk_scale, BLOCK_N, EVEN_D, True,
                                          1, USE_TDO, INPUT_PRECISION, FOR_HQ)
        else:
            b_rows = bias_rows(b_base, stride_biasm, offs_m)
            r, z, w, y, hq = _query_inner(r, z, w, y, hq, q, tq, do, tdo, m2, inv_l, k_base,
                                          tk_base, v_base, tv_base, stride_kn, stride_tkn,
                                          stride_vn, stride_tvn, 0, n_hi, M, lim, b_rows, offs_n,
                                          offs_d, d_ok, sm_scale, qk_scale, BLOCK_N, EVEN_D, True,
                                          2, USE_TDO, INPUT_PRECISION, FOR_HQ)
    else:
        r, z, w, y, hq = _query_inner(r, z, w, y, hq, q, tq, do, tdo, m2, inv_l, k_base, tk_base,
                                      v_base, tv_base, stride_kn, stride_tkn, stride_vn,
                                      stride_tvn, 0, n_full, M, 0, b_base, offs_n, offs_d, d_ok,
                                      sm_scale, qk_scale, BLOCK_N, EVEN_D, False, False, USE_TDO,
                                      INPUT_PRECISION, FOR_HQ)
        if n_full < n_hi:
            lim = row_limits(offs_m, Q_LEN, DIAG, M)  # not live during the unmasked sweep
            r, z, w, y, hq = _query_inner(r, z, w, y, hq, q, tq, do, tdo, m2, inv_l, k_base,
                                          tk_base, v_base, tv_base, stride_kn, stride_tkn,
                                          stride_vn, stride_tvn, n_full, n_hi, M, lim, b_base,
                                          offs_n, offs_d, d_ok, sm_scale, qk_scale, BLOCK_N,
                                          EVEN_D, True, False, USE_TDO, INPUT_PRECISION, FOR_HQ)
    return r, z, w, y, hq


@triton.jit
def _query_program(Q, K, V, TQ, TK, TV, DO, TDO, Bias, Mstat, Lstat, Rbuf, Zbuf, ZDbuf, HQ,
                   sm_scale, stride_qz, stride_qh, stride_qm, stride_kz, stride_kh, stride_kn,
                   stride_vz, stride_vh, stride_vn, stride_tqz, stride_tqh, stride_tqm,
                   stride_tkz, stride_tkh, stride_tkn, stride_tvz, stride_tvh, stride_tvn,
                   stride_doz, stride_doh, stride_dom, stride_tdoz, stride_tdoh, stride_tdom,
                   stride_hqz, stride_hqh, stride_hqm, stride_mz, stride_mh, stride_mm,
                   stride_lz, stride_lh, stride_lm, stride_biasz, stride_biash, stride_biasm,
                   Z, H, T, M, D, HAS_TDO, Q_LEN, DIAG,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                   EVEN_D: tl.constexpr, MASKED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                   FOR_HQ: tl.constexpr):
    """One (query block, batch*head) program of either query-side kernel (_query_sweep):
    FOR_HQ 0 writes r, z, z. to Rbuf, Zbuf, ZDbuf (HQ never touched); FOR_HQ 1 reads them and
    writes hQ."""
    off_z, off_h, bh, valid = batch_head(Z, H)
    if valid:
        offs_m, offs_n, offs_d, m_ok, d_ok = block_offsets(query_block(Q.dtype.element_ty),
                                                           BLOCK_M, BLOCK_N, HEAD_DIM, T, D)
        q = load_rows(Q, off_z, off_h, stride_qz, stride_qh, stride_qm, offs_m, offs_d, m_ok,
                      d_ok, EVEN_D)
        tq = load_rows(TQ, off_z, off_h, stride_tqz, stride_tqh, stride_tqm, offs_m, offs_d, m_ok,
                       d_ok, EVEN_D)
        do = load_rows(DO, off_z, off_h, stride_doz, stride_doh, stride_dom, offs_m, offs_d, m_ok,
                       d_ok, EVEN_D)
        m2, inv_l = load_row_stats(Mstat, Lstat, off_z, off_h, stride_mz, stride_mh, stride_mm,
                                   stride_lz, stride_lh, stride_lm, offs_m, m_ok,
                                   Q.dtype.element_ty)
        if FOR_HQ:  # the row vectors the sweep takes
            r0 = row_vector(Rbuf, bh, T, offs_m, m_ok, 0.0)
            z0 = row_vector(Zbuf, bh, T, offs_m, m_ok, 0.0)
            zd0 = row_vector(ZDbuf, bh, T, offs_m, m_ok, 0.0)
        else:  # or computes
            r0 = 0.0
            z0 = 0.0
            zd0 = 0.0
        k_base = K + off_z * stride_kz + off_h * stride_kh
        tk_base = TK + off_z * stride_tkz + off_h * stride_tkh
        v_base = V + off_z * stride_vz + off_h * stride_vh
        tv_base = TV + off_z * stride_tvz + off_h * stride_tvh
        b_base = Bias + off_z * stride_biasz + off_h * stride_biash
        qk_scale = sm_scale * LOG2E
        if HAS_TDO != 0:
            tdo = load_rows(TDO, off_z, off_h, stride_tdoz, stride_tdoh, stride_tdom, offs_m,
                            offs_d, m_ok, d_ok, EVEN_D)
            r, z, w, y, hq = _query_sweep(q, tq, do, tdo, m2, inv_l, r0, z0, zd0, k_base, tk_base,
                                          v_base, tv_base, b_base, stride_kn, stride_tkn, stride_vn,
                                          stride_tvn, stride_biasm, M, offs_m, m_ok, Q_LEN, DIAG,
                                          offs_n, offs_d, d_ok, sm_scale, qk_scale, BLOCK_M,
                                          BLOCK_N, HEAD_DIM, EVEN_D, MASKED, True, INPUT_PRECISION,
                                          FOR_HQ)
        else:
            r, z, w, y, hq = _query_sweep(q, tq, do, do, m2, inv_l, r0, z0, zd0, k_base, tk_base,
                                          v_base, tv_base, b_base, stride_kn, stride_tkn, stride_vn,
                                          stride_tvn, stride_biasm, M, offs_m, m_ok, Q_LEN, DIAG,
                                          offs_n, offs_d, d_ok, sm_scale, qk_scale, BLOCK_M,
                                          BLOCK_N, HEAD_DIM, EVEN_D, MASKED, False, INPUT_PRECISION,
                                          FOR_HQ)
        if FOR_HQ:
            store_rows(HQ, hq * sm_scale, off_z, off_h, stride_hqz, stride_hqh, stride_hqm, offs_m,
                       offs_d, m_ok, d_ok, EVEN_D)
        else:
            row = bh * T + offs_m
            tl.store(Rbuf + row, r, mask=m_ok)
            tl.store(Zbuf + row, z, mask=m_ok)
            tl.store(ZDbuf + row, w - r * z + y, mask=m_ok)


@triton.jit
def _sdpa_bwd_jvp_rows_kernel(
    Q, K, V, TQ, TK, TV, DO, TDO, Bias, Mstat, Lstat, Rbuf, Zbuf, ZDbuf,
    sm_scale,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_tqz, stride_tqh, stride_tqm,
    stride_tkz, stride_tkh, stride_tkn,
    stride_tvz, stride_tvh, stride_tvn,
    stride_doz, stride_doh, stride_dom,
    stride_tdoz, stride_tdoh, stride_tdom,
    stride_mz, stride_mh, stride_mm,
    stride_lz, stride_lh, stride_lm,
    stride_biasz, stride_biash, stride_biasm,
    Z, H, T, M, D, HAS_TDO, Q_LEN, DIAG,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    EVEN_D: tl.constexpr, MASKED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """Row vectors of one (query block, batch*head), written to contiguous (Z*H, T) buffers:

    r_i  = sum_j P_ij S._ij
    z_i  = sum_j P_ij dP_ij
    z._i = sum_j P_ij S._ij dP_ij - r_i z_i + sum_j P_ij dP._ij
    """
    # Rbuf stands in for HQ (FOR_HQ off: never touched)
    _query_program(Q, K, V, TQ, TK, TV, DO, TDO, Bias, Mstat, Lstat, Rbuf, Zbuf, ZDbuf, Rbuf,
                   sm_scale, stride_qz, stride_qh, stride_qm, stride_kz, stride_kh, stride_kn,
                   stride_vz, stride_vh, stride_vn, stride_tqz, stride_tqh, stride_tqm,
                   stride_tkz, stride_tkh, stride_tkn, stride_tvz, stride_tvh, stride_tvn,
                   stride_doz, stride_doh, stride_dom, stride_tdoz, stride_tdoh, stride_tdom,
                   0, 0, 0, stride_mz, stride_mh, stride_mm, stride_lz, stride_lh, stride_lm,
                   stride_biasz, stride_biash, stride_biasm, Z, H, T, M, D, HAS_TDO, Q_LEN, DIAG,
                   BLOCK_M, BLOCK_N, HEAD_DIM, EVEN_D, MASKED, INPUT_PRECISION, False)


@triton.jit
def _sdpa_bwd_jvp_dq_kernel(
    Q, K, V, TQ, TK, TV, DO, TDO, Bias, Mstat, Lstat, Rbuf, Zbuf, ZDbuf, HQ,
    sm_scale,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_tqz, stride_tqh, stride_tqm,
    stride_tkz, stride_tkh, stride_tkn,
    stride_tvz, stride_tvh, stride_tvn,
    stride_doz, stride_doh, stride_dom,
    stride_tdoz, stride_tdoh, stride_tdom,
    stride_hqz, stride_hqh, stride_hqm,
    stride_mz, stride_mh, stride_mm,
    stride_lz, stride_lh, stride_lm,
    stride_biasz, stride_biash, stride_biasm,
    Z, H, T, M, D, HAS_TDO, Q_LEN, DIAG,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    EVEN_D: tl.constexpr, MASKED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """hQ_i = scale * sum_j (dS._ij K_j + dS_ij tK_j) for one (query block, batch*head)."""
    _query_program(Q, K, V, TQ, TK, TV, DO, TDO, Bias, Mstat, Lstat, Rbuf, Zbuf, ZDbuf, HQ,
                   sm_scale, stride_qz, stride_qh, stride_qm, stride_kz, stride_kh, stride_kn,
                   stride_vz, stride_vh, stride_vn, stride_tqz, stride_tqh, stride_tqm,
                   stride_tkz, stride_tkh, stride_tkn, stride_tvz, stride_tvh, stride_tvn,
                   stride_doz, stride_doh, stride_dom, stride_tdoz, stride_tdoh, stride_tdom,
                   stride_hqz, stride_hqh, stride_hqm, stride_mz, stride_mh, stride_mm,
                   stride_lz, stride_lh, stride_lm, stride_biasz, stride_biash, stride_biasm,
                   Z, H, T, M, D, HAS_TDO, Q_LEN, DIAG, BLOCK_M, BLOCK_N, HEAD_DIM, EVEN_D,
                   MASKED, INPUT_PRECISION, True)


@triton.jit
def _hkhv_inner(hk, hv, k, tk, v, tv, q_base, tq_base, do_base, tdo_base, m_base, l_base,
                r_base, z_base, zd_base, b_base, stride_qm, stride_tqm, stride_dom, stride_tdom,
                stride_mm, stride_lm, stride_biasm, m_lo, m_hi, row_end, jump_at, jump, cols,
                Q_LEN, DIAG, M, offs_m, offs_d, d_ok, sm_scale, qk_scale,
                BLOCK_M: tl.constexpr, EVEN_D: tl.constexpr, MASK_M: tl.constexpr,
                BIAS: tl.constexpr, USE_TDO: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                JUMP: tl.constexpr):
    """Accumulate hK / scale and hV of one key block over query blocks [m_lo, m_hi)
    (JUMP: the blocks from jump_at on moved forward by jump rows); MASK_M masks rows >=
    row_end and keys past a row's diagonal, BIAS adds the mask's bias and masks its -inf
    entries."""
    for start_m in range(m_lo, m_hi, BLOCK_M):
        if JUMP:  # the tail's block, moved forward (one_masked_loop)
            start_m = jumped(start_m, jump_at, jump)
        rows = start_m + offs_m
        r_ok = rows < row_end
        # -- Q^T, tQ^T (HEAD_DIM x BLOCK_M), dO (BLOCK_M x HEAD_DIM) and the row vectors;
        #    padded rows get m = +inf so their P^T column is exactly 0
        qT = load_tile(q_base + rows[None, :] * stride_qm + offs_d[:, None], r_ok[None, :],
                       d_ok[:, None], MASK_M, EVEN_D)
        tqT = load_tile(tq_base + rows[None, :] * stride_tqm + offs_d[:, None], r_ok[None, :],
                        d_ok[:, None], MASK_M, EVEN_D)
        do = load_tile(do_base + rows[:, None] * stride_dom + offs_d[None, :], r_ok[:, None],
                       d_ok[None, :], MASK_M, EVEN_D)
        m2 = tl.load(m_base + rows * stride_mm, mask=r_ok, other=float("inf")) * LOG2E
        inv_l = 1.0 / tl.load(l_base + rows * stride_lm, mask=r_ok, other=1.0)
        r = tl.load(r_base + rows, mask=r_ok, other=0.0)
        z = tl.load(z_base + rows, mask=r_ok, other=0.0)
        zd = tl.load(zd_base + rows, mask=r_ok, other=0.0)
        # -- P^T = exp2(S^T*log2(e) - m*log2(e)) / l   (BLOCK_N x BLOCK_M)
        s2T = tl.dot(k, qT, input_precision=INPUT_PRECISION) * qk_scale
        pT = frozen_probs_T(s2T, m2, inv_l, b_base, stride_biasm, rows, r_ok, cols, Q_LEN,
                            DIAG, M, MASK_M, BIAS)
        # -- S.^T = scale (tK Q^T + K tQ^T);  dP^T = V dO^T;  dP.^T = tV dO^T (+ V tdO^T)
        sdT = tl.dot(tk, qT, input_precision=INPUT_PRECISION)
        sdT = tl.dot(k, tqT, sdT, input_precision=INPUT_PRECISION) * sm_scale
        dpT = tl.dot(v, tl.trans(do), input_precision=INPUT_PRECISION)
        dpdT = tl.dot(tv, tl.trans(do), input_precision=INPUT_PRECISION)
        if USE_TDO:
            tdo = load_tile(tdo_base + rows[:, None] * stride_tdom + offs_d[None, :],
                            r_ok[:, None], d_ok[None, :], MASK_M, EVEN_D)
            dpdT = tl.dot(v, tl.trans(tdo), dpdT, input_precision=INPUT_PRECISION)
        # -- P.^T = P^T (S.^T - r);  dS^T = P^T (dP^T - z);  dS.^T = P.^T (dP^T - z) + P^T (dP.^T - z.)
        pdT = pT * (sdT - r[None, :])
        dpzT = dpT - z[None, :]
        dsT = pT * dpzT
        dsdT = pdT * dpzT + pT * (dpdT - zd[None, :])
        # -- hV += P.^T dO (+ P^T tdO);  hK += dS.^T Q + dS^T tQ
        hv = tl.dot(pdT.to(do.dtype), do, hv, input_precision=INPUT_PRECISION)
        if USE_TDO:
            hv = tl.dot(pT.to(do.dtype), tdo, hv, input_precision=INPUT_PRECISION)
        hk = tl.dot(dsdT.to(qT.dtype), tl.trans(qT), hk, input_precision=INPUT_PRECISION)
        hk = tl.dot(dsT.to(qT.dtype), tl.trans(tqT), hk, input_precision=INPUT_PRECISION)
    return hk, hv


@triton.jit
def _hkhv_sweep(k, tk, v, tv, q_base, tq_base, do_base, tdo_base, m_base, l_base, r_base,
                z_base, zd_base, b_base, stride_qm, stride_tqm, stride_dom, stride_tdom,
                stride_mm, stride_lm, stride_biasm, T, M, offs_n, n_ok, Q_LEN, DIAG,
                offs_m, offs_d, d_ok, sm_scale, qk_scale,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                EVEN_D: tl.constexpr, MASKED: tl.constexpr, USE_TDO: tl.constexpr,
                INPUT_PRECISION: tl.constexpr):
    """Per query head of the group (T // Q_LEN of them when grouped and causal, else one with
    Q_LEN = T): rows before `first` skipped; the whole query blocks that see all of the key
    block unmasked, then in one masked loop the blocks from `first` that see part of it
    (diagonal) and the ragged tail: one copy of the masked loop body, where the three sweeps
    in row order had two (compile time and speed: docs/design.md, "One masked loop"); with an
    attention mask every row from `first` on through the masked sweep."""
    hk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    hv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    first, full = query_limits(offs_n, n_ok, Q_LEN, DIAG)
    for g in range(0, T // Q_LEN):
        m_lo, m_mid, g_end = group_rows(g, Q_LEN, first, full, BLOCK_M)
        if MASKED:
            if MASKED == 2 and stride_biasm == 0:  # key padding (one bias row for every query row)
                hk, hv = _hkhv_inner(hk, hv, k, tk, v, tv, q_base, tq_base, do_base, tdo_base,
                                     m_base, l_base, r_base, z_base, zd_base, b_base, stride_qm,
                                     stride_tqm, stride_dom, stride_tdom, stride_mm, stride_lm,
                                     stride_biasm, m_lo, g_end, g_end, g_end, 0, offs_n, Q_LEN, DIAG, M,
                                     offs_m, offs_d, d_ok, sm_scale, qk_scale, BLOCK_M, EVEN_D, True,
                                     1, USE_TDO, INPUT_PRECISION, False)
            else:
                hk, hv = _hkhv_inner(hk, hv, k, tk, v, tv, q_base, tq_base, do_base, tdo_base,
                                     m_base, l_base, r_base, z_base, zd_base, b_base, stride_qm,
                                     stride_tqm, stride_dom, stride_tdom, stride_mm, stride_lm,
                                     stride_biasm, m_lo, g_end, g_end, g_end, 0, offs_n, Q_LEN, DIAG, M,
                                     offs_m, offs_d, d_ok, sm_scale, qk_scale, BLOCK_M, EVEN_D, True,
                                     2, USE_TDO, INPUT_PRECISION, False)
        else:
            m_full, _, _ = one_masked_loop(m_mid, g_end, BLOCK_M)
            hk, hv = _hkhv_inner(hk, hv, k, tk, v, tv, q_base, tq_base, do_base, tdo_base,
                                 m_base, l_base, r_base, z_base, zd_base, b_base, stride_qm,
                                 stride_tqm, stride_dom, stride_tdom, stride_mm, stride_lm,
                                 stride_biasm, m_mid, m_full, g_end, 0, 0, offs_n, Q_LEN, DIAG, M,
                                 offs_m, offs_d, d_ok, sm_scale, qk_scale, BLOCK_M, EVEN_D, False,
                                 False, USE_TDO, INPUT_PRECISION, False)
            # the partial blocks, then the tail's block moved forward to m_full
            _, m_hi, jump = one_masked_loop(m_mid, g_end, BLOCK_M)  # after: fewer live registers
            hk, hv = _hkhv_inner(hk, hv, k, tk, v, tv, q_base, tq_base, do_base, tdo_base,
                                 m_base, l_base, r_base, z_base, zd_base, b_base, stride_qm,
                                 stride_tqm, stride_dom, stride_tdom, stride_mm, stride_lm,
                                 stride_biasm, m_lo, m_hi, g_end, m_mid, jump, offs_n, Q_LEN, DIAG,
                                 M, offs_m, offs_d, d_ok, sm_scale, qk_scale, BLOCK_M, EVEN_D, True,
                                 False, USE_TDO, INPUT_PRECISION, True)
    return hk, hv


@triton.jit
def _sdpa_bwd_jvp_dkdv_kernel(
    Q, K, V, TQ, TK, TV, DO, TDO, Bias, Mstat, Lstat, Rbuf, Zbuf, ZDbuf, HK, HV,
    sm_scale,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_tqz, stride_tqh, stride_tqm,
    stride_tkz, stride_tkh, stride_tkn,
    stride_tvz, stride_tvh, stride_tvn,
    stride_doz, stride_doh, stride_dom,
    stride_tdoz, stride_tdoh, stride_tdom,
    stride_hkz, stride_hkh, stride_hkn,
    stride_hvz, stride_hvh, stride_hvn,
    stride_mz, stride_mh, stride_mm,
    stride_lz, stride_lh, stride_lm,
    stride_biasz, stride_biash, stride_biasm,
    Z, H, T, M, D, HAS_TDO, Q_LEN, DIAG,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    EVEN_D: tl.constexpr, MASKED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """hK and hV for one (key block, batch*head) program, sweeping all query blocks:

    hK_j = scale * sum_i (dS._ij Q_i + dS_ij tQ_i)
    hV_j = sum_i (P._ij dO_i + P_ij tdO_i)
    """
    off_z, off_h, bh, valid = batch_head(Z, H)
    if valid:
        # this program owns keys offs_n and sweeps query blocks of BLOCK_M rows
        offs_n, offs_m, offs_d, n_ok, d_ok = block_offsets(tl.program_id(0), BLOCK_N, BLOCK_M,
                                                           HEAD_DIM, M, D)
        k = load_rows(K, off_z, off_h, stride_kz, stride_kh, stride_kn, offs_n, offs_d, n_ok,
                      d_ok, EVEN_D)
        tk = load_rows(TK, off_z, off_h, stride_tkz, stride_tkh, stride_tkn, offs_n, offs_d, n_ok,
                       d_ok, EVEN_D)
        v = load_rows(V, off_z, off_h, stride_vz, stride_vh, stride_vn, offs_n, offs_d, n_ok,
                      d_ok, EVEN_D)
        tv = load_rows(TV, off_z, off_h, stride_tvz, stride_tvh, stride_tvn, offs_n, offs_d, n_ok,
                       d_ok, EVEN_D)
        q_base = Q + off_z * stride_qz + off_h * stride_qh
        tq_base = TQ + off_z * stride_tqz + off_h * stride_tqh
        do_base = DO + off_z * stride_doz + off_h * stride_doh
        m_base = Mstat + off_z * stride_mz + off_h * stride_mh
        l_base = Lstat + off_z * stride_lz + off_h * stride_lh
        r_base = Rbuf + bh * T
        z_base = Zbuf + bh * T
        zd_base = ZDbuf + bh * T
        b_base = Bias + off_z * stride_biasz + off_h * stride_biash
        qk_scale = sm_scale * LOG2E
        if HAS_TDO != 0:
            tdo_base = TDO + off_z * stride_tdoz + off_h * stride_tdoh
            hk, hv = _hkhv_sweep(k, tk, v, tv, q_base, tq_base, do_base, tdo_base, m_base, l_base,
                                 r_base, z_base, zd_base, b_base, stride_qm, stride_tqm,
                                 stride_dom, stride_tdom, stride_mm, stride_lm, stride_biasm, T, M,
                                 offs_n, n_ok, Q_LEN, DIAG, offs_m, offs_d, d_ok,
                                 sm_scale, qk_scale, BLOCK_M, BLOCK_N, HEAD_DIM, EVEN_D, MASKED, True,
                                 INPUT_PRECISION)
        else:
            hk, hv = _hkhv_sweep(k, tk, v, tv, q_base, tq_base, do_base, do_base, m_base, l_base,
                                 r_base, z_base, zd_base, b_base, stride_qm, stride_tqm,
                                 stride_dom, stride_dom, stride_mm, stride_lm, stride_biasm, T, M,
                                 offs_n, n_ok, Q_LEN, DIAG, offs_m, offs_d, d_ok,
                                 sm_scale, qk_scale, BLOCK_M, BLOCK_N, HEAD_DIM, EVEN_D, MASKED, False,
                                 INPUT_PRECISION)
        store_rows(HK, hk * sm_scale, off_z, off_h, stride_hkz, stride_hkh, stride_hkn, offs_n,
                   offs_d, n_ok, d_ok, EVEN_D)
        store_rows(HV, hv, off_z, off_h, stride_hvz, stride_hvh, stride_hvn, offs_n, offs_d,
                   n_ok, d_ok, EVEN_D)

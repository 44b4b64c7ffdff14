"""Explicit SDPA backward from frozen row stats (m, l): z preprocess, dK/dV and dQ kernels.

With S = scale * Q K^T and P = exp(S - m) / l (m, l given, not recomputed):
    dV = P^T dO
    dP = dO V^T
    z_i = sum_j dP_ij P_ij          (= dO_i . O_i when O = P V with the same stats)
    dS = P * (dP - z)
    dQ = scale * dS K
    dK = scale * dS^T Q
(with an attention mask, S gets its bias B added). j ranges over the keys row i sees (all,
or causal, or with B_ij > -inf: see _common); P is 0 elsewhere, and on rows that see no key
(m = -inf, l = 0), whose derivatives are therefore 0.
The z pre-pass writes z into Zbuf, a (Z*H, T) float32 plane, and for 16-bit data a second
plane (given the forward's O, the dQ kernel, launched first, forms and writes both itself:
HAS_O): each row's base-2 log-sum-exp lse2_i = m_i log2(e) + log2(l_i) (+inf on rows that see
no key), so that the dK/dV loop of 16-bit data gets P_ij = exp2(s2_ij - lse2_i) from one
load per row (no m log2(e), reciprocal or multiply by 1/l per row and query block:
389 -> 271 SASS instructions per iteration, sm_90 fp16 D = 128). float32 keeps (m, 1/l) there: rounding
m log2(e) + log2(l) to float32 adds its error to every exponent (log2_stats).
The z, dK/dV and dQ kernels use no atomics: every output row is owned by one program that
reduces in a fixed order, so their results are bitwise reproducible. _sdpa_bwd_fused_kernel
(the dK/dV sweep that also adds each key block's share of dQ to a float32 dQ atomically:
five block products per block pair instead of seven) gives up that for dQ; the dispatcher
runs it for float32 on sm_90 only while torch.are_deterministic_algorithms_enabled() is False
(python/aot_sdpa/_ops.py fused_bwd).
The dK/dV and dQ kernels also compile for the split head-dim buckets (_split: 80 = 64 + 16,
96 = 64 + 32), without a mask: every product over the head dim (S, dP) is the sum of a lead
and a tail product, and every output (dK, dV, dQ) has one accumulator per part
(_dkdv_split, _dq_split).
"""

import triton
import triton.language as tl
from _common import (
    LOG2E,
    SPLIT_PAD,
    batch_head,
    bias_rows,
    block_offsets,
    fp16x3_parts,
    frozen_probs,
    frozen_probs_T,
    group_rows,
    jumped,
    key_range,
    load_cols_T,
    load_kT_v,
    load_row_stats,
    load_rows,
    load_split_rows,
    load_tile,
    mma,
    mma_split_rows,
    one_masked_loop,
    padding_sweeps,
    query_block,
    query_limits,
    row_limits,
    row_vector,
    split_rows,
    split_rows_store,
    store_rows,
    unseen_rows_to_zero,
)
from _split import is_split, load_rows_split, split_lead, split_offsets, store_rows_split


@triton.jit
def ordered_program(Z, H, ordered, dtype: tl.constexpr, QUERY_BLOCKS: tl.constexpr,
                    HEAD_CHUNK: tl.constexpr):
    """(block, off_z, off_h, bh, valid): this program's block index along its head's query
    rows (QUERY_BLOCKS, the dQ kernel) or keys (dK/dV) and its batch*head (batch_head's
    four, int64).

    Without HEAD_CHUNK (0), for float32 data (query_block's reason: its kernels sit at the
    register cap), or without `ordered` (run time: every block does the same work), the block
    is program_id(0) (QUERY_BLOCKS: query_block's) and batch*head is batch_head's. Else (a
    causal mask: query block i sweeps ~i + 1 key blocks, key block i ~n - i query blocks) the
    launch order L = pid0 + n * bh (n = num_programs(0); axis 0 runs fastest and programs
    start in L order) is dealt out heaviest block first over chunks of HEAD_CHUNK heads: the
    chunk's heaviest blocks of all its heads, then the next heaviest, ..., the head running
    fastest. In the per-head order every head ends on its light blocks, but the last heads'
    heavy blocks start late and overrun the launch's end (a list-scheduling model of 132
    slots puts that tail at 6-14% of the kernel at B*T = 16k, H = 16; chunks of 8-16 heads at
    1-3%). A chunk rather than every head at once keeps the data of the heads that run
    together few (shared in L2), as the per-head order does: on the H200 (JIT, fp16,
    probe_causal_order.py) one chunk of every head was slower than chunks of 8.
    The map is a bijection of [0, n * Z * H): chunk c = L // (HEAD_CHUNK * n) holds
    g = min(HEAD_CHUNK, Z*H - c*HEAD_CHUNK) heads; for r = L - c*HEAD_CHUNK*n, rank r // g
    (0: the heaviest) of head c*HEAD_CHUNK + r % g. Programs past n * Z * H (axis 2's
    padding) exit."""
    off_z, off_h, bh, valid = batch_head(Z, H)
    n = tl.num_programs(0)
    rank = tl.program_id(0)
    if HEAD_CHUNK > 0 and dtype != tl.float32:
        if ordered:
            heads = Z.to(tl.int64) * H
            launch = rank.to(tl.int64) + n.to(tl.int64) * bh  # L: the launch order
            span = n.to(tl.int64) * HEAD_CHUNK  # programs per chunk of HEAD_CHUNK heads
            chunk = launch // span
            r = launch - chunk * span
            g = tl.maximum(tl.minimum(heads - chunk * HEAD_CHUNK, HEAD_CHUNK), 1)
            rank = (r // g).to(tl.int32)
            bh = chunk * HEAD_CHUNK + (r - rank * g)
            off_z, off_h, valid = bh // H, bh % H, launch < n.to(tl.int64) * heads
    if QUERY_BLOCKS and dtype != tl.float32:  # the heaviest query block is the last
        rank = n - 1 - rank
    return rank, off_z, off_h, bh, valid


@triton.jit
def _store_z_lse2(Zbuf, z, m2, inv_l, bh, Z, H, T, rows, row_ok, dtype: tl.constexpr):
    """Rows `rows` of Zbuf's contiguous (Z*H, T) planes: z, then, for 16-bit data only (whose
    dK/dV kernel reads it), lse2 = m log2(e) + log2(l): load_row_stats' 16-bit m2, made +inf
    where m = -inf (unseen_rows_to_zero: a row that sees no key, l = 0), so exp2(s2 - lse2)
    is 0 there for any score without a select. A float32 Zbuf has the z plane only."""
    tl.store(Zbuf + bh * T + rows, z, mask=row_ok)
    if dtype != tl.float32:
        lse2, _ = unseen_rows_to_zero(m2, inv_l)
        tl.store(Zbuf + Z.to(tl.int64) * H * T + bh * T + rows, lse2, mask=row_ok)


@triton.jit
def _dot_rows(o, do):
    """z_i = sum_d dO_id * O_id of a tile's rows, in float32."""
    return tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)


@triton.jit
def _sdpa_bwd_z_from_o_kernel(
    O, DO, Q, Mstat, Lstat, Zbuf, Split,
    stride_oz, stride_oh, stride_om,
    stride_doz, stride_doh, stride_dom,
    stride_qz, stride_qh, stride_qm,
    stride_mz, stride_mh, stride_mm,
    stride_lz, stride_lh, stride_lm,
    Z, H, T, D, HAS_O,
    BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, EVEN_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    """The one-kernel backward's pre-pass (bwd_fused), per block of query rows:
    HAS_O: z_i = sum_d dO_id * O_id (fp32) and lse2_i (_store_z_lse2) into Zbuf's planes (else
    O and Zbuf are not touched: z came from the stats); "fp16x3": Q's and dO's rows split
    (split_rows_store) into Split, Q's (Z*H, T) rows then dO's, each row
    [hi | lo | 1/s | padding] with s_i x_i = hi_i + lo_i (else Q and Split are not touched)."""
    off_z, off_h, bh, valid = batch_head(Z, H)
    if valid:
        offs_m, _, offs_d, m_ok, d_ok = block_offsets(tl.program_id(0), BLOCK_M, BLOCK_M,
                                                      HEAD_DIM, T, D)
        do = load_rows(DO, off_z, off_h, stride_doz, stride_doh, stride_dom, offs_m, offs_d, m_ok,
                       d_ok, EVEN_D)
        if HAS_O:
            o = load_rows(O, off_z, off_h, stride_oz, stride_oh, stride_om, offs_m, offs_d,
                          m_ok, d_ok, EVEN_D)
            z = _dot_rows(o, do)
            # the stats only feed lse2: float32 stores none, and its loads compile away
            m2, inv_l = load_row_stats(Mstat, Lstat, off_z, off_h, stride_mz, stride_mh,
                                       stride_mm, stride_lz, stride_lh, stride_lm, offs_m, m_ok,
                                       O.dtype.element_ty)
            _store_z_lse2(Zbuf, z, m2, inv_l, bh, Z, H, T, offs_m, m_ok, O.dtype.element_ty)
        if INPUT_PRECISION == "fp16x3":
            ROW: tl.constexpr = 2 * HEAD_DIM + SPLIT_PAD
            q = load_rows(Q, off_z, off_h, stride_qz, stride_qh, stride_qm, offs_m, offs_d,
                          m_ok, d_ok, EVEN_D)
            split_rows_store(Split + bh.to(tl.int64) * T * ROW, q, offs_m, m_ok, offs_d,
                             HEAD_DIM)
            split_rows_store(Split + (Z.to(tl.int64) * H + bh) * T * ROW, do, offs_m, m_ok,
                             offs_d, HEAD_DIM)


@triton.jit
def _z_stats_inner(acc, q, m2, inv_l, kT_base, v_base, stride_kn, stride_vn, n_lo, n_hi, M,
                   lim, b_rows, offs_n, offs_d, d_ok, qk_scale,
                   BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, MASK_N: tl.constexpr,
                   BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """acc += P V over key blocks [n_lo, n_hi), P from the frozen stats."""
    for start_n in range(n_lo, n_hi, BLOCK_N):
        cols = start_n + offs_n
        n_ok = cols < M
        # -- load K^T (HEAD_DIM x BLOCK_N) and V (BLOCK_N x HEAD_DIM) for this key block
        kT, v = load_kT_v(kT_base, v_base, stride_kn, stride_vn, cols, n_ok, offs_d, d_ok, MASK_N,
                          EVEN_D)
        # -- P = exp2(S*log2(e) - m*log2(e)) / l, zero on masked keys
        s2 = mma(q, kT, None, INPUT_PRECISION) * qk_scale
        p = frozen_probs(s2, m2, inv_l, b_rows, cols, lim, MASK_N, BIAS)
        # -- acc += P V
        acc = mma(p.to(v.dtype), v, acc, INPUT_PRECISION)
    return acc


@triton.jit
def _z_stats_keys(acc, q, m2, inv_l, kT_base, v_base, stride_kn, stride_vn, n_full, n_hi, rows,
                  Q_LEN, DIAG, M, b_row, offs_n, offs_d, d_ok, qk_scale,
                  BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """_z_stats_inner over the key blocks every row sees whole, then the masked tail (as
    sdpa_fwd._fwd_keys), without an attention mask (the masked flavour sweeps every block
    masked: this kernel has no masked_fast flavour)."""
    acc = _z_stats_inner(acc, q, m2, inv_l, kT_base, v_base, stride_kn, stride_vn, 0, n_full, M,
                         0, b_row, offs_n, offs_d, d_ok, qk_scale, BLOCK_N, EVEN_D, False, 0,
                         INPUT_PRECISION)
    if n_full < n_hi:
        lim = row_limits(rows, Q_LEN, DIAG, M)  # not live during the first sweep
        acc = _z_stats_inner(acc, q, m2, inv_l, kT_base, v_base, stride_kn, stride_vn, n_full,
                             n_hi, M, lim, b_row, offs_n, offs_d, d_ok, qk_scale, BLOCK_N, EVEN_D,
                             True, 0, INPUT_PRECISION)
    return acc


@triton.jit
def _sdpa_bwd_z_from_stats_kernel(
    Q, K, V, DO, Bias, Mstat, Lstat, Zbuf,
    sm_scale,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_doz, stride_doh, stride_dom,
    stride_mz, stride_mh, stride_mm,
    stride_lz, stride_lh, stride_lm,
    stride_biasz, stride_biash, stride_biasm,
    Z, H, T, M, D, Q_LEN, DIAG,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    EVEN_D: tl.constexpr, MASKED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """z_i = dO_i . (sum_j P_ij V_j) with P from the given (frozen) stats, and lse2_i, into
    Zbuf's two planes (_store_z_lse2).

    Equal to sum_j dP_ij P_ij exactly, for any m, l (not only the forward's own).
    """
    off_z, off_h, bh, valid = batch_head(Z, H)
    if valid:
        offs_m, offs_n, offs_d, m_ok, d_ok = block_offsets(query_block(Q.dtype.element_ty),
                                                           BLOCK_M, BLOCK_N, HEAD_DIM, T, D)
        q = load_rows(Q, off_z, off_h, stride_qz, stride_qh, stride_qm, offs_m, offs_d, m_ok,
                      d_ok, EVEN_D)
        do = load_rows(DO, off_z, off_h, stride_doz, stride_doh, stride_dom, offs_m, offs_d, m_ok,
                       d_ok, EVEN_D)
        m2, inv_l = load_row_stats(Mstat, Lstat, off_z, off_h, stride_mz, stride_mh, stride_mm,
                                   stride_lz, stride_lh, stride_lm, offs_m, m_ok,
                                   Q.dtype.element_ty)
        k_base = K + off_z * stride_kz + off_h * stride_kh
        v_base = V + off_z * stride_vz + off_h * stride_vh
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        qk_scale = sm_scale * LOG2E
        n_full, n_hi = key_range(offs_m, m_ok, Q_LEN, DIAG, M, BLOCK_N)
        b_base = Bias + off_z * stride_biasz + off_h * stride_biash
        if MASKED:  # every key block a row may see, masked (key padding too: stride_biasm 0)
            lim = tl.where(m_ok, row_limits(offs_m, Q_LEN, DIAG, M), -1)
            b_rows = bias_rows(b_base, stride_biasm, offs_m)
            acc = _z_stats_inner(acc, q, m2, inv_l, k_base, v_base, stride_kn, stride_vn, 0, n_hi, M,
                                 lim, b_rows, offs_n, offs_d, d_ok, qk_scale, BLOCK_N, EVEN_D, True,
                                 2, INPUT_PRECISION)
        else:
            acc = _z_stats_keys(acc, q, m2, inv_l, k_base, v_base, stride_kn, stride_vn, n_full,
                                n_hi, offs_m, Q_LEN, DIAG, M, Bias, offs_n, offs_d, d_ok,
                                qk_scale, BLOCK_N, EVEN_D, INPUT_PRECISION)
        z = tl.sum(acc * do.to(tl.float32), 1)
        _store_z_lse2(Zbuf, z, m2, inv_l, bh, Z, H, T, offs_m, m_ok, Q.dtype.element_ty)


@triton.jit
def _dkdv_rows_stats(m_base, l_base, rows, r_ok, stride_mm, stride_lm, BLOCK_M: tl.constexpr,
                     MASK_M: tl.constexpr, LSE2: tl.constexpr):
    """The frozen stats of query rows `rows` as frozen_probs_T takes them: LSE2, (lse2, 1)
    from Zbuf's lse2 plane (m_base: this head's row of it; one load per row, no reciprocal,
    no multiply per score); else (m log2(e), 1 / l) from the stats m, l. MASK_M: padded rows
    get m = +inf (lse2 = +inf), so their column of P^T is exactly 0."""
    if LSE2:
        if MASK_M:
            m2 = tl.load(m_base + rows, mask=r_ok, other=float("inf"))
        else:
            m2 = tl.load(m_base + rows)
        inv_l = tl.full([BLOCK_M], 1.0, tl.float32)
    elif MASK_M:
        m2 = tl.load(m_base + rows * stride_mm, mask=r_ok, other=float("inf")) * LOG2E
        inv_l = 1.0 / tl.load(l_base + rows * stride_lm, mask=r_ok, other=1.0)
    else:
        m2 = tl.load(m_base + rows * stride_mm) * LOG2E
        inv_l = 1.0 / tl.load(l_base + rows * stride_lm)
    return m2, inv_l


@triton.jit
def _rows_z(z_base, rows, r_ok, MASK_M: tl.constexpr):
    """z of query rows `rows` (z_base: this head's row of Zbuf's z plane), 0 on padded rows."""
    if MASK_M:
        z = tl.load(z_base + rows, mask=r_ok, other=0.0)
    else:
        z = tl.load(z_base + rows)
    return z


@triton.jit
def _dkdv_split_inner(dk, dk_t, dv, dv_t, k, k_t, v, v_t, q_base, do_base, m_base, l_base,
                      z_base, stride_qm, stride_dom, stride_mm, stride_lm, m_lo, m_hi, row_end,
                      cols, Q_LEN, DIAG, M, offs_m, offs_d, d_ok, offs_t, t_ok, qk_scale,
                      BLOCK_M: tl.constexpr, EVEN_D: tl.constexpr, MASK_M: tl.constexpr,
                      INPUT_PRECISION: tl.constexpr, COMPUTE_DK: tl.constexpr,
                      COMPUTE_DV: tl.constexpr, LSE2: tl.constexpr):
    """_dkdv_inner (no mask, no jump, no atomic dQ) for a split bucket (_split): K, V, Q, dO
    as lead (offs_d) and tail (offs_t) columns; S^T and dP^T sum two products, dK and dV
    have one accumulator per part."""
    for start_m in range(m_lo, m_hi, BLOCK_M):
        rows = start_m + offs_m
        r_ok = rows < row_end
        # -- Q^T (HEAD_DIM x BLOCK_M) and dO (BLOCK_M x HEAD_DIM), lead and tail; row stats
        qT = load_tile(q_base + rows[None, :] * stride_qm + offs_d[:, None], r_ok[None, :],
                       d_ok[:, None], MASK_M, EVEN_D)
        qT_t = load_tile(q_base + rows[None, :] * stride_qm + offs_t[:, None], r_ok[None, :],
                         t_ok[:, None], MASK_M, EVEN_D)
        do = load_tile(do_base + rows[:, None] * stride_dom + offs_d[None, :], r_ok[:, None],
                       d_ok[None, :], MASK_M, EVEN_D)
        do_t = load_tile(do_base + rows[:, None] * stride_dom + offs_t[None, :], r_ok[:, None],
                         t_ok[None, :], MASK_M, EVEN_D)
        m2, inv_l = _dkdv_rows_stats(m_base, l_base, rows, r_ok, stride_mm, stride_lm, BLOCK_M,
                                     MASK_M, LSE2)
        # -- S^T = K_lead Q_lead^T + K_tail Q_tail^T;  P^T from the frozen stats
        s2T = mma(k_t, qT_t, mma(k, qT, None, INPUT_PRECISION), INPUT_PRECISION) * qk_scale
        pT = frozen_probs_T(s2T, m2, inv_l, 0, 0, rows, r_ok, cols, Q_LEN, DIAG, M, MASK_M, 0)
        # -- dV += P^T dO, per part
        if COMPUTE_DV:
            p16 = pT.to(do.dtype)
            dv = mma(p16, do, dv, INPUT_PRECISION)
            dv_t = mma(p16, do_t, dv_t, INPUT_PRECISION)
        if COMPUTE_DK:
            # -- dP^T = V dO^T (lead + tail);  dS^T = P^T * (dP^T - z);  dK += dS^T Q, per part
            z = _rows_z(z_base, rows, r_ok, MASK_M)
            dpT = mma(v_t, tl.trans(do_t), mma(v, tl.trans(do), None, INPUT_PRECISION),
                      INPUT_PRECISION)
            dsT = (pT * (dpT - z[None, :])).to(qT.dtype)
            dk = mma(dsT, tl.trans(qT), dk, INPUT_PRECISION)
            dk_t = mma(dsT, tl.trans(qT_t), dk_t, INPUT_PRECISION)
    return dk, dk_t, dv, dv_t


@triton.jit
def _dkdv_inner(dk, dv, k, v, q_base, do_base, m_base, l_base, z_base, b_base, dq_base,
                stride_qm, stride_dom, stride_mm, stride_lm, stride_biasm, stride_dqm, m_lo, m_hi,
                row_end, jump_at, jump, cols, Q_LEN, DIAG, M, offs_m, offs_d, d_ok, qk_scale,
                sm_scale, BLOCK_M: tl.constexpr, EVEN_D: tl.constexpr, MASK_M: tl.constexpr,
                BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr, COMPUTE_DK: tl.constexpr,
                COMPUTE_DV: tl.constexpr, LSE2: tl.constexpr, JUMP: tl.constexpr,
                ATOMIC_DQ: tl.constexpr):
    """Accumulate dK (unscaled) and dV of one key block over query blocks [m_lo, m_hi)
    (JUMP: the blocks from jump_at on moved forward by jump rows); MASK_M masks rows >=
    row_end and keys past a row's diagonal, BIAS adds the mask's bias (b_base: its (z, h)
    plane) and masks its -inf entries. LSE2: m_base is this head's row of Zbuf's lse2 plane
    (contiguous), l_base unused; else the stats m, l. ATOMIC_DQ: also add this key block's
    share of dQ, scale * dS K, to the float32 rows of dq_base (atomically: every key block's
    program adds to the same rows)."""
    # PRESPLIT (bwd_fused in "fp16x3"): q_base and do_base point at the pre-pass's split rows
    # of Q and dO (_sdpa_bwd_z_from_o_kernel, split_rows_store), whose scales fold into P^T
    # and dS^T; Q and dO are never split here
    PRESPLIT: tl.constexpr = ATOMIC_DQ and INPUT_PRECISION == "fp16x3"
    if PRESPLIT:  # k and v come split (_dkdv_program): (hi, lo, 1/s) per key row
        k_hi, k_lo, inv_k = k
        v_hi, v_lo, inv_v = v
    for start_m in range(m_lo, m_hi, BLOCK_M):
        if JUMP:  # the tail's block, moved forward (one_masked_loop)
            start_m = jumped(start_m, jump_at, jump)
        rows = start_m + offs_m
        r_ok = rows < row_end
        # -- the frozen row stats, then Q^T (HEAD_DIM x BLOCK_M) and dO (BLOCK_M x HEAD_DIM)
        m2, inv_l = _dkdv_rows_stats(m_base, l_base, rows, r_ok, stride_mm, stride_lm, BLOCK_M,
                                     MASK_M, LSE2)
        if PRESPLIT:
            # (as their fp16 parts hi + lo = s_i x_i and each row's 1 / s_i)
            qT_hi, qT_lo, inv_q = load_split_rows(q_base, stride_qm, rows, r_ok, offs_d, MASK_M,
                                                  True)
            do_hi, do_lo, inv_do = load_split_rows(do_base, stride_dom, rows, r_ok, offs_d,
                                                   MASK_M, False)
            # -- P^T = exp2(S^T*log2(e) - m*log2(e)) / l   (BLOCK_N x BLOCK_M), from K's and
            #    Q's parts: S^T = (K s_K)(Q s)^T / (s_K s)
            s2T = fp16x3_parts(k_hi, k_lo, qT_hi, qT_lo) * (inv_k[:, None] * inv_q[None, :])
            s2T = s2T * qk_scale
        else:
            qT = load_tile(q_base + rows[None, :] * stride_qm + offs_d[:, None], r_ok[None, :],
                           d_ok[:, None], MASK_M, EVEN_D)
            do = load_tile(do_base + rows[:, None] * stride_dom + offs_d[None, :],
                           r_ok[:, None], d_ok[None, :], MASK_M, EVEN_D)
            s2T = mma(k, qT, None, INPUT_PRECISION) * qk_scale
        pT = frozen_probs_T(s2T, m2, inv_l, b_base, stride_biasm, rows, r_ok, cols, Q_LEN,
                            DIAG, M, MASK_M, BIAS)
        # -- dV += P^T dO
        if COMPUTE_DV:
            if PRESPLIT:
                dv = mma_split_rows(pT, do_hi, do_lo, inv_do, dv)
            else:
                dv = mma(pT.to(do.dtype), do, dv, INPUT_PRECISION)
        if COMPUTE_DK:
            # -- dP^T = V dO^T;  dS^T = P^T * (dP^T - z);  dK += dS^T Q
            z = _rows_z(z_base, rows, r_ok, MASK_M)
            if PRESPLIT:
                dpT = fp16x3_parts(v_hi, v_lo, tl.trans(do_hi), tl.trans(do_lo))
                dpT = dpT * (inv_v[:, None] * inv_do[None, :])
                dsT = pT * (dpT - z[None, :])
                dk = mma_split_rows(dsT, tl.trans(qT_hi), tl.trans(qT_lo), inv_q, dk)
            else:
                dpT = mma(v, tl.trans(do), None, INPUT_PRECISION)
                dsT = pT * (dpT - z[None, :])
                dk = mma(dsT.to(qT.dtype), tl.trans(qT), dk, INPUT_PRECISION)
            if ATOMIC_DQ:
                # -- dQ_i += scale * dS K for this block's keys (BLOCK_M x HEAD_DIM); padded
                #    rows and tail columns are not written. A whole block at D == HEAD_DIM
                #    adds unmasked: a mask that varies along the head dim (d_ok, D unknown)
                #    keeps the adds scalar, and they took ~1/8 of the kernel's time (H200,
                #    JIT, (2, 8, 4096, 64) float32: 2.77 -> 2.43 ms unmasked)
                if PRESPLIT:  # K's row scales fold into dS's columns (mma_split_rows)
                    dq = mma_split_rows(tl.trans(dsT), k_hi, k_lo, inv_k, 0.0) * sm_scale
                else:
                    dq = mma(tl.trans(dsT).to(k.dtype), k, None, INPUT_PRECISION) * sm_scale
                dq_ptrs = dq_base + rows[:, None] * stride_dqm + offs_d[None, :]
                if MASK_M or not EVEN_D:
                    tl.atomic_add(dq_ptrs, dq, mask=r_ok[:, None] & d_ok[None, :], sem="relaxed")
                else:
                    tl.atomic_add(dq_ptrs, dq, sem="relaxed")
    return dk, dv


@triton.jit
def _dkdv_rows(dk, dv, k, v, q_base, do_base, m_base, l_base, z_base, b_base, dq_base,
               stride_qm, stride_dom, stride_mm, stride_lm, stride_biasm, stride_dqm, m_lo,
               m_mid, row_end, cols, Q_LEN, DIAG, M, offs_m, offs_d, d_ok, qk_scale, sm_scale,
               BLOCK_M: tl.constexpr, EVEN_D: tl.constexpr, BIAS: tl.constexpr,
               INPUT_PRECISION: tl.constexpr, COMPUTE_DK: tl.constexpr,
               COMPUTE_DV: tl.constexpr, LSE2: tl.constexpr, ONE_MASKED: tl.constexpr,
               ATOMIC_DQ: tl.constexpr, TAIL_M: tl.constexpr = 0):
    """One query head's rows for a key block (group_rows): [m_lo, m_mid) see part of the
    block (masked), whole query blocks from m_mid on see all of it (unmasked), then a masked
    ragged tail [m_full, row_end). ONE_MASKED: the unmasked blocks first, then the partial
    blocks and the tail in one masked loop (one copy of the masked loop body: less code to
    compile); else the three sweeps in row order. TAIL_M > 0: without partial blocks, a tail
    of at most TAIL_M rows is swept as one TAIL_M-row block instead. BIAS 1: with a
    key-padding mask (b_base its row), else none."""
    if not ONE_MASKED:  # the partial blocks first, in their own masked loop
        dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, m_base, l_base, z_base, b_base,
                             dq_base, stride_qm, stride_dom, stride_mm, stride_lm, stride_biasm,
                             stride_dqm, m_lo, m_mid, row_end, 0, 0, cols, Q_LEN, DIAG, M,
                             offs_m, offs_d, d_ok, qk_scale, sm_scale, BLOCK_M, EVEN_D, True,
                             BIAS, INPUT_PRECISION, COMPUTE_DK, COMPUTE_DV, LSE2, False,
                             ATOMIC_DQ)
    m_full, _, _ = one_masked_loop(m_mid, row_end, BLOCK_M)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, m_base, l_base, z_base, b_base,
                         dq_base, stride_qm, stride_dom, stride_mm, stride_lm, stride_biasm,
                         stride_dqm, m_mid, m_full, row_end, 0, 0, cols, Q_LEN, DIAG, M, offs_m,
                         offs_d, d_ok, qk_scale, sm_scale, BLOCK_M, EVEN_D, False, BIAS,
                         INPUT_PRECISION, COMPUTE_DK, COMPUTE_DV, LSE2, False, ATOMIC_DQ)
    if TAIL_M > 0 and m_lo == m_mid and m_full < row_end and row_end - m_full <= TAIL_M:
        # no partial blocks, a ragged tail of at most TAIL_M rows: one narrow masked block
        dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, m_base, l_base, z_base, b_base,
                             dq_base, stride_qm, stride_dom, stride_mm, stride_lm, stride_biasm,
                             stride_dqm, m_full, row_end, row_end, 0, 0, cols, Q_LEN, DIAG, M,
                             tl.arange(0, TAIL_M), offs_d, d_ok, qk_scale, sm_scale, TAIL_M,
                             EVEN_D, True, BIAS, INPUT_PRECISION, COMPUTE_DK, COMPUTE_DV, LSE2,
                             False, ATOMIC_DQ)
    elif ONE_MASKED:  # the partial blocks, then the tail's block moved forward to m_full
        _, m_hi, jump = one_masked_loop(m_mid, row_end, BLOCK_M)  # after: fewer live registers
        dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, m_base, l_base, z_base, b_base,
                             dq_base, stride_qm, stride_dom, stride_mm, stride_lm, stride_biasm,
                             stride_dqm, m_lo, m_hi, row_end, m_mid, jump, cols, Q_LEN, DIAG, M,
                             offs_m, offs_d, d_ok, qk_scale, sm_scale, BLOCK_M, EVEN_D, True,
                             BIAS, INPUT_PRECISION, COMPUTE_DK, COMPUTE_DV, LSE2, True,
                             ATOMIC_DQ)
    elif m_full < row_end:
        dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, m_base, l_base, z_base, b_base,
                             dq_base, stride_qm, stride_dom, stride_mm, stride_lm, stride_biasm,
                             stride_dqm, m_full, row_end, row_end, 0, 0, cols, Q_LEN, DIAG, M,
                             offs_m, offs_d, d_ok, qk_scale, sm_scale, BLOCK_M, EVEN_D, True,
                             BIAS, INPUT_PRECISION, COMPUTE_DK, COMPUTE_DV, LSE2, False,
                             ATOMIC_DQ)
    return dk, dv


@triton.jit
def _dkdv_heads(dk, dv, k, v, q_base, do_base, m_base, l_base, z_base, b_base, dq_base,
                stride_qm, stride_dom, stride_mm, stride_lm, stride_biasm, stride_dqm, first, full,
                T, cols, Q_LEN, DIAG, M, offs_m, offs_d, d_ok, qk_scale, sm_scale,
                BLOCK_M: tl.constexpr, EVEN_D: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                COMPUTE_DK: tl.constexpr, COMPUTE_DV: tl.constexpr, LSE2: tl.constexpr,
                ONE_MASKED: tl.constexpr, ATOMIC_DQ: tl.constexpr, TAIL_M: tl.constexpr):
    """A key block's unmasked sweep (no attention mask) over every query head of its group
    (T // Q_LEN heads; one with Q_LEN = T): each head's rows as _dkdv_rows sweeps them, from
    `first`, `full` (query_limits)."""
    for g in range(0, T // Q_LEN):
        m_lo, m_mid, g_end = group_rows(g, Q_LEN, first, full, BLOCK_M)
        dk, dv = _dkdv_rows(dk, dv, k, v, q_base, do_base, m_base, l_base, z_base, b_base,
                            dq_base, stride_qm, stride_dom, stride_mm, stride_lm, stride_biasm,
                            stride_dqm, m_lo, m_mid, g_end, cols, Q_LEN, DIAG, M, offs_m, offs_d,
                            d_ok, qk_scale, sm_scale, BLOCK_M, EVEN_D, False, INPUT_PRECISION,
                            COMPUTE_DK, COMPUTE_DV, LSE2, ONE_MASKED, ATOMIC_DQ, TAIL_M)
    return dk, dv


@triton.jit
def _dkdv_bases(Q, DO, Mstat, Lstat, Zbuf, off_z, off_h, bh, Z, H, T, stride_qz, stride_qh,
                stride_doz, stride_doh, stride_mz, stride_mh, stride_lz, stride_lh,
                LSE2: tl.constexpr):
    """A key-block program's per-head bases (64-bit): Q's and dO's, this head's row of Zbuf's
    z plane, and the row stats' (m_base, l_base): with LSE2 its row of Zbuf's lse2 plane (l_base
    then unused), else the stats m and l."""
    q_base = Q + off_z * stride_qz + off_h * stride_qh
    do_base = DO + off_z * stride_doz + off_h * stride_doh
    z_base = Zbuf + bh * T
    if LSE2:
        m_base = Zbuf + Z.to(tl.int64) * H * T + bh * T
    else:
        m_base = Mstat + off_z * stride_mz + off_h * stride_mh
    l_base = Lstat + off_z * stride_lz + off_h * stride_lh
    return q_base, do_base, z_base, m_base, l_base


@triton.jit
def _dkdv_split(K, V, DK, DV, q_base, do_base, m_base, l_base, z_base, sm_scale,
                stride_qm, stride_kz, stride_kh, stride_kn, stride_vz, stride_vh, stride_vn,
                stride_dom, stride_dkz, stride_dkh, stride_dkn, stride_dvz, stride_dvh,
                stride_dvn, stride_mm, stride_lm, blk, off_z, off_h, T, M, D, Q_LEN, DIAG,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, LEAD_DIM: tl.constexpr,
                TAIL_DIM: tl.constexpr, EVEN_D: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                COMPUTE_DK: tl.constexpr, COMPUTE_DV: tl.constexpr, LSE2: tl.constexpr):
    """_dkdv_program's program for a split bucket HEAD_DIM = LEAD_DIM + TAIL_DIM (_split; no
    mask, no atomic dQ): the same equations and sweeps (per query head of the group: the
    partial blocks masked, the whole ones unmasked, the ragged tail masked), every product
    over the head dim the sum of a lead and a tail product, dK and dV one accumulator per part."""
    offs_n, offs_m, offs_d, n_ok, d_ok, offs_t, t_ok = split_offsets(
        blk, BLOCK_N, BLOCK_M, LEAD_DIM, TAIL_DIM, M, D)
    k, k_t = load_rows_split(K, off_z, off_h, stride_kz, stride_kh, stride_kn, offs_n, n_ok, offs_d,
                             d_ok, offs_t, t_ok, EVEN_D)
    v, v_t = load_rows_split(V, off_z, off_h, stride_vz, stride_vh, stride_vn, offs_n, n_ok, offs_d,
                             d_ok, offs_t, t_ok, EVEN_D)
    dk = tl.zeros([BLOCK_N, LEAD_DIM], tl.float32)
    dk_t = tl.zeros([BLOCK_N, TAIL_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, LEAD_DIM], tl.float32)
    dv_t = tl.zeros([BLOCK_N, TAIL_DIM], tl.float32)
    qk_scale = sm_scale * LOG2E
    first, full = query_limits(offs_n, n_ok, Q_LEN, DIAG)
    for g in range(0, T // Q_LEN):
        m_lo, m_mid, g_end = group_rows(g, Q_LEN, first, full, BLOCK_M)
        m_full, _, _ = one_masked_loop(m_mid, g_end, BLOCK_M)
        # the partial blocks (masked), the whole ones (unmasked), the ragged tail (masked)
        dk, dk_t, dv, dv_t = _dkdv_split_inner(dk, dk_t, dv, dv_t, k, k_t, v, v_t, q_base,
                                               do_base, m_base, l_base, z_base, stride_qm,
                                               stride_dom, stride_mm, stride_lm, m_lo, m_mid,
                                               g_end, offs_n, Q_LEN, DIAG, M, offs_m, offs_d,
                                               d_ok, offs_t, t_ok, qk_scale, BLOCK_M, EVEN_D,
                                               True, INPUT_PRECISION, COMPUTE_DK, COMPUTE_DV,
                                               LSE2)
        dk, dk_t, dv, dv_t = _dkdv_split_inner(dk, dk_t, dv, dv_t, k, k_t, v, v_t, q_base,
                                               do_base, m_base, l_base, z_base, stride_qm,
                                               stride_dom, stride_mm, stride_lm, m_mid, m_full,
                                               g_end, offs_n, Q_LEN, DIAG, M, offs_m, offs_d,
                                               d_ok, offs_t, t_ok, qk_scale, BLOCK_M, EVEN_D,
                                               False, INPUT_PRECISION, COMPUTE_DK, COMPUTE_DV,
                                               LSE2)
        if m_full < g_end:
            dk, dk_t, dv, dv_t = _dkdv_split_inner(dk, dk_t, dv, dv_t, k, k_t, v, v_t, q_base,
                                                   do_base, m_base, l_base, z_base, stride_qm,
                                                   stride_dom, stride_mm, stride_lm, m_full,
                                                   g_end, g_end, offs_n, Q_LEN, DIAG, M, offs_m,
                                                   offs_d, d_ok, offs_t, t_ok, qk_scale, BLOCK_M,
                                                   EVEN_D, True, INPUT_PRECISION, COMPUTE_DK,
                                                   COMPUTE_DV, LSE2)
    if COMPUTE_DK:
        store_rows_split(DK, dk, dk_t, sm_scale, off_z, off_h, stride_dkz, stride_dkh, stride_dkn,
                         offs_n, n_ok, offs_d, d_ok, offs_t, t_ok, EVEN_D)
    if COMPUTE_DV:
        store_rows_split(DV, dv, dv_t, 1.0, off_z, off_h, stride_dvz, stride_dvh, stride_dvn,
                         offs_n, n_ok, offs_d, d_ok, offs_t, t_ok, EVEN_D)


@triton.jit
def _dkdv_program(Q, K, V, DO, Bias, Mstat, Lstat, Zbuf, DK, DV, DQ, Split, sm_scale,
                  stride_qz, stride_qh, stride_qm, stride_kz, stride_kh, stride_kn,
                  stride_vz, stride_vh, stride_vn, stride_doz, stride_doh, stride_dom,
                  stride_dkz, stride_dkh, stride_dkn, stride_dvz, stride_dvh, stride_dvn,
                  stride_dqz, stride_dqh, stride_dqm, stride_mz, stride_mh, stride_mm,
                  stride_lz, stride_lh, stride_lm, stride_biasz, stride_biash, stride_biasm,
                  Z, H, T, M, D, Q_LEN, DIAG,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                  EVEN_D: tl.constexpr, MASKED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                  COMPUTE_DK: tl.constexpr, COMPUTE_DV: tl.constexpr, ATOMIC_DQ: tl.constexpr,
                  TAIL_M: tl.constexpr = 0, TWO_PASS: tl.constexpr = 0,
                  HEAD_CHUNK: tl.constexpr = 0):
    """The body of _sdpa_bwd_dkdv_kernel and _sdpa_bwd_fused_kernel (ATOMIC_DQ: DQ is also
    written, float32 and zeroed by the caller; else DQ is never read; ATOMIC_DQ in "fp16x3":
    Q and dO are read from Split, _sdpa_bwd_z_from_o_kernel's split rows, else Split is never
    read). A split HEAD_DIM
    (_split) runs _dkdv_split: no mask, no atomic dQ. HEAD_CHUNK: ordered_program's (key
    blocks)."""
    blk, off_z, off_h, bh, valid = ordered_program(Z, H, DIAG < M - 1, Q.dtype.element_ty, False,
                                                   HEAD_CHUNK)
    # 16-bit dK/dV reads lse2 (Zbuf's second plane) for the row stats; float32, and dV
    # alone (no pre-pass: Zbuf is null), read m and l
    LSE2: tl.constexpr = COMPUTE_DK and Q.dtype.element_ty != tl.float32
    if is_split(HEAD_DIM):
        tl.static_assert(MASKED == 0 and not ATOMIC_DQ,
                         "split buckets have no masked flavour and no atomic dQ")
        LEAD_DIM: tl.constexpr = split_lead(HEAD_DIM)
        if valid:
            q_base, do_base, z_base, m_base, l_base = _dkdv_bases(
                Q, DO, Mstat, Lstat, Zbuf, off_z, off_h, bh, Z, H, T, stride_qz, stride_qh,
                stride_doz, stride_doh, stride_mz, stride_mh, stride_lz, stride_lh, LSE2)
            _dkdv_split(K, V, DK, DV, q_base, do_base, m_base, l_base, z_base, sm_scale, stride_qm,
                        stride_kz, stride_kh, stride_kn, stride_vz, stride_vh, stride_vn,
                        stride_dom, stride_dkz, stride_dkh, stride_dkn, stride_dvz, stride_dvh,
                        stride_dvn, stride_mm, stride_lm, blk, off_z, off_h, T, M, D, Q_LEN,
                        DIAG, BLOCK_M, BLOCK_N, LEAD_DIM, HEAD_DIM - LEAD_DIM, EVEN_D,
                        INPUT_PRECISION, COMPUTE_DK, COMPUTE_DV, LSE2)
    elif valid:
        # this program owns keys offs_n and sweeps query blocks of BLOCK_M rows
        offs_n, offs_m, offs_d, n_ok, d_ok = block_offsets(blk, BLOCK_N, BLOCK_M, HEAD_DIM, M, D)
        k = load_rows(K, off_z, off_h, stride_kz, stride_kh, stride_kn, offs_n, offs_d, n_ok,
                      d_ok, EVEN_D)
        v = load_rows(V, off_z, off_h, stride_vz, stride_vh, stride_vn, offs_n, offs_d, n_ok,
                      d_ok, EVEN_D)
        q_base, do_base, z_base, m_base, l_base = _dkdv_bases(
            Q, DO, Mstat, Lstat, Zbuf, off_z, off_h, bh, Z, H, T, stride_qz, stride_qh,
            stride_doz, stride_doh, stride_mz, stride_mh, stride_lz, stride_lh, LSE2)
        if ATOMIC_DQ and INPUT_PRECISION == "fp16x3":  # _dkdv_inner's PRESPLIT
            # Q's and dO's split rows: Split holds Q's (Z*H, T) rows, then dO's
            ROW: tl.constexpr = 2 * HEAD_DIM + SPLIT_PAD
            q_base = Split + bh.to(tl.int64) * T * ROW
            do_base = Split + (Z.to(tl.int64) * H + bh) * T * ROW
            q_rows = ROW
            do_rows = ROW
            # K and V split once here (split_rows: hi + lo = s_j x_j per key, and 1/s_j):
            # the sweeps read only the parts, so the float32 tiles and a second, column-
            # scaled split of K for dQ (mma's) are not kept live beside them
            k = split_rows(k)
            v = split_rows(v)
        else:
            q_rows = stride_qm
            do_rows = stride_dom
        # One masked loop for a head's partial blocks and ragged tail (_dkdv_rows) where the
        # H200 ran it faster or within 0.3% (buckets <= 64, 16-bit and float32); at bucket
        # 128 (16-bit) and in plain TF32 it was slower, and the three sweeps stay
        # (docs/design.md, "One masked loop")
        # TWO_PASS (unmasked, dK and dV): dV's own sweep first, then dK's; else one sweep
        tl.static_assert((TWO_PASS == 0) | ((MASKED == 0) & (COMPUTE_DK == 1) & (COMPUTE_DV == 1)
                                            & (ATOMIC_DQ == 0)),
                         "TWO_PASS: dK and dV, no mask, no atomic dQ")
        DV_TOO: tl.constexpr = (COMPUTE_DV == 1) & (TWO_PASS == 0)
        ONE_MASKED: tl.constexpr = HEAD_DIM <= 64 and (Q.dtype.element_ty != tl.float32
                                                      or INPUT_PRECISION != "tf32")
        dq_base = DQ + off_z * stride_dqz + off_h * stride_dqh
        dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
        dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
        qk_scale = sm_scale * LOG2E
        # Per query head of the group (T // Q_LEN of them when grouped and causal, else one
        # with Q_LEN = T): rows before `first` see none of these keys (skipped), rows from
        # `first` up to `full` see part of them (masked, in blocks from `first`), the rest
        # see all of them (unmasked, then a masked ragged tail)
        b_base = Bias + off_z * stride_biasz + off_h * stride_biash
        if MASKED == 2:
            # key padding (one bias row for every query row, stride_biasm == 0): the block's
            # biases B_j (-inf past M); `keep` is False on keys masked for every row (dense
            # masks: True everywhere). With B_j in {0, -inf} (a boolean mask), P_ij is the
            # unmasked P_ij on kept keys, and dK_j, dV_j of a masked key are 0: the block is
            # swept unmasked and the masked keys' rows of dK, dV are zeroed at the end (an
            # unseen row, m = -inf, cannot meet a kept key here: every row sees a kept key
            # of a block it sweeps whole, and diagonal blocks mask by position).
            padding = stride_biasm == 0
            b_keys = tl.load(b_base + offs_n, mask=n_ok & padding, other=float("-inf"))
            keep = (b_keys > float("-inf")) | (stride_biasm != 0)
            zero_or_inf = tl.max(tl.where(keep, tl.abs(b_keys), 0.0), 0) == 0.0
        first, full = query_limits(offs_n, n_ok, Q_LEN, DIAG)
        if TWO_PASS:
            # dV alone over every query head's rows, stored; then the sweep below, dK alone
            dk, dv = _dkdv_heads(dk, dv, k, v, q_base, do_base, m_base, l_base, z_base, b_base,
                                 dq_base, q_rows, do_rows, stride_mm, stride_lm, stride_biasm,
                                 stride_dqm, first, full, T, offs_n, Q_LEN, DIAG, M, offs_m,
                                 offs_d, d_ok, qk_scale, sm_scale, BLOCK_M, EVEN_D,
                                 INPUT_PRECISION, False, True, LSE2, ONE_MASKED, ATOMIC_DQ, TAIL_M)
            store_rows(DV, dv, off_z, off_h, stride_dvz, stride_dvh, stride_dvn, offs_n, offs_d,
                       n_ok, d_ok, EVEN_D)
        if MASKED:
            for g in range(0, T // Q_LEN):
                m_lo, m_mid, g_end = group_rows(g, Q_LEN, first, full, BLOCK_M)
                if MASKED == 2 and stride_biasm == 0:  # key padding (one bias row for every query row)
                    # keys all masked (B_j = -inf: a padded batch's tail) have P_ij = 0 for
                    # every row, so dK_j = dV_j = 0: the block is skipped, not swept
                    if tl.max(b_keys, 0) > float("-inf"):
                        if zero_or_inf:  # no bias to add (masked keys zeroed below)
                            dk, dv = _dkdv_rows(dk, dv, k, v, q_base, do_base, m_base, l_base,
                                                z_base, b_base, dq_base, q_rows, do_rows,
                                                stride_mm, stride_lm, stride_biasm, stride_dqm,
                                                m_lo, m_mid, g_end, offs_n, Q_LEN, DIAG, M,
                                                offs_m, offs_d, d_ok, qk_scale, sm_scale,
                                                BLOCK_M, EVEN_D, 0, INPUT_PRECISION,
                                                COMPUTE_DK, DV_TOO, LSE2, ONE_MASKED,
                                                ATOMIC_DQ, TAIL_M)
                        else:
                            dk, dv = _dkdv_rows(dk, dv, k, v, q_base, do_base, m_base, l_base,
                                                z_base, b_base, dq_base, q_rows, do_rows,
                                                stride_mm, stride_lm, stride_biasm, stride_dqm,
                                                m_lo, m_mid, g_end, offs_n, Q_LEN, DIAG, M,
                                                offs_m, offs_d, d_ok, qk_scale, sm_scale,
                                                BLOCK_M, EVEN_D, 1, INPUT_PRECISION,
                                                COMPUTE_DK, DV_TOO, LSE2, ONE_MASKED,
                                                ATOMIC_DQ, TAIL_M)
                else:  # a bias row per query row: every row that may see a key, masked
                    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, m_base, l_base, z_base,
                                         b_base, dq_base, q_rows, do_rows, stride_mm,
                                         stride_lm, stride_biasm, stride_dqm, m_lo, g_end, g_end,
                                         0, 0, offs_n, Q_LEN, DIAG, M, offs_m, offs_d, d_ok,
                                         qk_scale, sm_scale, BLOCK_M, EVEN_D, True, 2,
                                         INPUT_PRECISION, COMPUTE_DK, DV_TOO, LSE2, False,
                                         ATOMIC_DQ)
        else:
            dk, dv = _dkdv_heads(dk, dv, k, v, q_base, do_base, m_base, l_base, z_base, b_base,
                                 dq_base, q_rows, do_rows, stride_mm, stride_lm, stride_biasm,
                                 stride_dqm, first, full, T, offs_n, Q_LEN, DIAG, M, offs_m,
                                 offs_d, d_ok, qk_scale, sm_scale, BLOCK_M, EVEN_D,
                                 INPUT_PRECISION, COMPUTE_DK, DV_TOO, LSE2, ONE_MASKED, ATOMIC_DQ,
                                 TAIL_M)
        if MASKED == 2:  # keys masked for every row: dK_j = dV_j = 0
            dk = tl.where(keep[:, None], dk, 0.0)
            dv = tl.where(keep[:, None], dv, 0.0)
        if COMPUTE_DK:
            store_rows(DK, dk * sm_scale, off_z, off_h, stride_dkz, stride_dkh, stride_dkn, offs_n,
                       offs_d, n_ok, d_ok, EVEN_D)
        if DV_TOO:
            store_rows(DV, dv, off_z, off_h, stride_dvz, stride_dvh, stride_dvn, offs_n, offs_d,
                       n_ok, d_ok, EVEN_D)


@triton.jit
def _sdpa_bwd_dkdv_kernel(
    Q, K, V, DO, Bias, Mstat, Lstat, Zbuf, DK, DV,
    sm_scale,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_doz, stride_doh, stride_dom,
    stride_dkz, stride_dkh, stride_dkn,
    stride_dvz, stride_dvh, stride_dvn,
    stride_mz, stride_mh, stride_mm,
    stride_lz, stride_lh, stride_lm,
    stride_biasz, stride_biash, stride_biasm,
    Z, H, T, M, D, Q_LEN, DIAG,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    EVEN_D: tl.constexpr, MASKED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    COMPUTE_DK: tl.constexpr, COMPUTE_DV: tl.constexpr, TAIL_M: tl.constexpr = 0,
    TWO_PASS: tl.constexpr = 0, HEAD_CHUNK: tl.constexpr = 0,
):
    """dK and/or dV for one (key block, batch*head) program, looping over all query blocks.

    dV_j = sum_i P_ij dO_i
    dK_j = scale * sum_i P_ij (dO_i . V_j - z_i) Q_i
    (COMPUTE_DK / COMPUTE_DV select the outputs; dV alone needs no z.) TAIL_M (0: off): a
    head's ragged end of at most TAIL_M query rows, where no partial (causal) block precedes
    it, is swept as one TAIL_M-row block (_dkdv_rows). TWO_PASS (both outputs, no mask): the
    program sweeps the query rows twice, for dV alone, then for dK alone: one BLOCK_N x
    HEAD_DIM float32 accumulator live at a time instead of two (a 128-key block at D = 256),
    for one more block product per block pair (S^T formed in both sweeps: five, not four).
    HEAD_CHUNK (0: off): under a causal mask, 16-bit programs take their key blocks heaviest
    first over chunks of HEAD_CHUNK heads (ordered_program).
    """
    # DK stands in for DQ (ATOMIC_DQ off: never read)
    _dkdv_program(Q, K, V, DO, Bias, Mstat, Lstat, Zbuf, DK, DV, DK, Q, sm_scale, stride_qz, stride_qh,
                  stride_qm, stride_kz, stride_kh, stride_kn, stride_vz, stride_vh, stride_vn,
                  stride_doz, stride_doh, stride_dom, stride_dkz, stride_dkh, stride_dkn,
                  stride_dvz, stride_dvh, stride_dvn, 0, 0, 0, stride_mz, stride_mh, stride_mm,
                  stride_lz, stride_lh, stride_lm, stride_biasz, stride_biash, stride_biasm, Z, H,
                  T, M, D, Q_LEN, DIAG, BLOCK_M, BLOCK_N, HEAD_DIM, EVEN_D, MASKED,
                  INPUT_PRECISION, COMPUTE_DK, COMPUTE_DV, False, TAIL_M, TWO_PASS, HEAD_CHUNK)


@triton.jit
def _sdpa_bwd_fused_kernel(
    Q, K, V, DO, Mstat, Lstat, Zbuf, DK, DV, DQ, Split,
    sm_scale,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_doz, stride_doh, stride_dom,
    stride_dkz, stride_dkh, stride_dkn,
    stride_dvz, stride_dvh, stride_dvn,
    stride_dqz, stride_dqh, stride_dqm,
    stride_mz, stride_mh, stride_mm,
    stride_lz, stride_lh, stride_lm,
    Z, H, T, M, D, Q_LEN, DIAG,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    EVEN_D: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """dK, dV and dQ in one sweep, for one (key block, batch*head) program (no attention
    mask; causal and grouped heads as the dK/dV kernel):

    dV_j  = sum_i P_ij dO_i
    dK_j  = scale * sum_i dS_ij Q_i,      dS_ij = P_ij (dO_i . V_j - z_i)
    dQ_i += scale * sum_{j in block} dS_ij K_j   (float32 atomic adds into DQ, zeroed first)

    Five block products per (query block, key block) pair against the two-kernel backward's
    seven (the dQ kernel recomputes S and dP); the price is that dQ's float32 sums run in the
    order the programs reach them, so dQ is not bitwise repeatable (dK and dV are).

    In "fp16x3" Q and dO come split by the pre-pass (Split, _sdpa_bwd_z_from_o_kernel):
    s_i Q_i = Qhi_i + Qlo_i and t_i dO_i = dOhi_i + dOlo_i in fp16 with powers of two s_i, t_i
    per row, so that every query block's split is done once instead of by every key block's
    program (kernels/_common.py mma splits both operands of each product):
      S^T  = (K s_K)(Qhi + Qlo)^T / (s_K s)        dP^T = (V s_V)(dOhi + dOlo)^T / (s_V t)
      dV  += (s_P (P^T / t)) (dOhi + dOlo) / s_P   dK  += (s_D (dS^T / s)) (Qhi + Qlo) / s_D
      dQ  += (s_E (dS / s_K)) (Khi + Klo) / s_E    (K s_K = Khi + Klo, split once per program)
    (s_K, s_V, s_P, s_D, s_E: split_rows' row scales of the left operands, K's and V's once per
    program; 1/s and 1/t fold into P^T's and dS^T's columns and 1/s_K into dS's, exact).
    """
    # no mask (MASKED 0: Bias never read, Q stands in); both outputs of dK/dV, and dQ
    _dkdv_program(Q, K, V, DO, Q, Mstat, Lstat, Zbuf, DK, DV, DQ, Split, sm_scale, stride_qz,
                  stride_qh,
                  stride_qm, stride_kz, stride_kh, stride_kn, stride_vz, stride_vh, stride_vn,
                  stride_doz, stride_doh, stride_dom, stride_dkz, stride_dkh, stride_dkn,
                  stride_dvz, stride_dvh, stride_dvn, stride_dqz, stride_dqh, stride_dqm,
                  stride_mz, stride_mh, stride_mm, stride_lz, stride_lh, stride_lm, 0, 0, 0, Z, H,
                  T, M, D, Q_LEN, DIAG, BLOCK_M, BLOCK_N, HEAD_DIM, EVEN_D, 0, INPUT_PRECISION,
                  True, True, True)


@triton.jit
def _dq_inner(dq, q, do, m2, inv_l, z, kT_base, vT_base, stride_kn, stride_vn, n_lo, n_hi, M,
              lim, b_rows, offs_n, offs_d, d_ok, qk_scale,
              BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, MASK_N: tl.constexpr,
              BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """Accumulate dQ (unscaled) of one query block over key blocks [n_lo, n_hi)."""
    for start_n in range(n_lo, n_hi, BLOCK_N):
        cols = start_n + offs_n
        n_ok = cols < M
        # -- load K^T and V^T (HEAD_DIM x BLOCK_N)
        kT = load_cols_T(kT_base, stride_kn, cols, n_ok, offs_d, d_ok, MASK_N, EVEN_D)
        vT = load_cols_T(vT_base, stride_vn, cols, n_ok, offs_d, d_ok, MASK_N, EVEN_D)
        # -- P from the frozen stats (zero on masked keys)
        s2 = mma(q, kT, None, INPUT_PRECISION) * qk_scale
        p = frozen_probs(s2, m2, inv_l, b_rows, cols, lim, MASK_N, BIAS)
        # -- dP = dO V^T;  dS = P * (dP - z);  dQ += dS K
        dp = mma(do, vT, None, INPUT_PRECISION)
        ds = p * (dp - z[:, None])
        dq = mma(ds.to(kT.dtype), tl.trans(kT), dq, INPUT_PRECISION)
    return dq


@triton.jit
def _dq_keys(dq, q, do, m2, inv_l, z, kT_base, vT_base, stride_kn, stride_vn, n_full, n_hi, rows,
             Q_LEN, DIAG, M, b_row, offs_n, offs_d, d_ok, qk_scale,
             BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, BIAS: tl.constexpr,
             INPUT_PRECISION: tl.constexpr, TAIL_N: tl.constexpr = 0):
    """_dq_inner over the key blocks every row sees whole, then the masked tail (as
    sdpa_fwd._fwd_keys, TAIL_N included); BIAS 1: with a key-padding mask (b_row its row),
    split by padding_sweeps."""
    n_lo = 0
    if BIAS == 1:  # key padding: a plain sweep over its zero-bias blocks, none past its last key
        n_lo, n_full, n_hi = padding_sweeps(b_row, M, n_full, n_hi, BLOCK_N)
        dq = _dq_inner(dq, q, do, m2, inv_l, z, kT_base, vT_base, stride_kn, stride_vn, 0, n_lo,
                       M, 0, b_row, offs_n, offs_d, d_ok, qk_scale, BLOCK_N, EVEN_D, False, 0,
                       INPUT_PRECISION)
    dq = _dq_inner(dq, q, do, m2, inv_l, z, kT_base, vT_base, stride_kn, stride_vn, n_lo, n_full,
                   M, 0, b_row, offs_n, offs_d, d_ok, qk_scale, BLOCK_N, EVEN_D, False, BIAS,
                   INPUT_PRECISION)
    if n_full < n_hi:
        lim = row_limits(rows, Q_LEN, DIAG, M)  # not live during the first sweep
        if TAIL_N > 0 and n_hi - n_full <= TAIL_N:  # a narrow tail: one TAIL_N-key block
            dq = _dq_inner(dq, q, do, m2, inv_l, z, kT_base, vT_base, stride_kn, stride_vn,
                           n_full, n_hi, M, lim, b_row, tl.arange(0, TAIL_N), offs_d, d_ok,
                           qk_scale, TAIL_N, EVEN_D, True, BIAS, INPUT_PRECISION)
        else:
            dq = _dq_inner(dq, q, do, m2, inv_l, z, kT_base, vT_base, stride_kn, stride_vn,
                           n_full, n_hi, M, lim, b_row, offs_n, offs_d, d_ok, qk_scale, BLOCK_N,
                           EVEN_D, True, BIAS, INPUT_PRECISION)
    return dq


@triton.jit
def _dq_split_inner(dq, dq_t, q, q_t, do, do_t, m2, inv_l, z, k_base, v_base, stride_kn,
                    stride_vn, n_lo, n_hi, M, lim, offs_n, offs_d, d_ok, offs_t, t_ok, qk_scale,
                    BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, MASK_N: tl.constexpr,
                    INPUT_PRECISION: tl.constexpr):
    """_dq_inner (no mask) for a split bucket (_split): Q, dO, K, V as lead (offs_d) and tail
    (offs_t) columns; S and dP sum two products, dQ has one accumulator per part."""
    for start_n in range(n_lo, n_hi, BLOCK_N):
        cols = start_n + offs_n
        n_ok = cols < M
        # -- K^T and V^T (HEAD_DIM x BLOCK_N), lead and tail columns
        kT = load_cols_T(k_base, stride_kn, cols, n_ok, offs_d, d_ok, MASK_N, EVEN_D)
        kT_t = load_cols_T(k_base, stride_kn, cols, n_ok, offs_t, t_ok, MASK_N, EVEN_D)
        vT = load_cols_T(v_base, stride_vn, cols, n_ok, offs_d, d_ok, MASK_N, EVEN_D)
        vT_t = load_cols_T(v_base, stride_vn, cols, n_ok, offs_t, t_ok, MASK_N, EVEN_D)
        # -- S = Q_lead K_lead^T + Q_tail K_tail^T;  P from the frozen stats (0 past lim)
        s2 = mma(q_t, kT_t, mma(q, kT, None, INPUT_PRECISION), INPUT_PRECISION) * qk_scale
        p = frozen_probs(s2, m2, inv_l, 0, cols, lim, MASK_N, 0)
        # -- dP = dO V^T (lead + tail);  dS = P * (dP - z);  dQ += dS K, per part
        dp = mma(do_t, vT_t, mma(do, vT, None, INPUT_PRECISION), INPUT_PRECISION)
        ds = (p * (dp - z[:, None])).to(kT.dtype)
        dq = mma(ds, tl.trans(kT), dq, INPUT_PRECISION)
        dq_t = mma(ds, tl.trans(kT_t), dq_t, INPUT_PRECISION)
    return dq, dq_t


@triton.jit
def _dq_split(Q, K, V, DO, O, Mstat, Lstat, Zbuf, DQ, sm_scale, stride_qz, stride_qh, stride_qm,
              stride_kz, stride_kh, stride_kn, stride_vz, stride_vh, stride_vn, stride_doz,
              stride_doh, stride_dom, stride_oz, stride_oh, stride_om, stride_dqz, stride_dqh,
              stride_dqm, stride_mz, stride_mh, stride_mm, stride_lz, stride_lh, stride_lm, blk,
              off_z, off_h, bh, Z, H, T, M, D, Q_LEN, DIAG, HAS_O,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, LEAD_DIM: tl.constexpr,
              TAIL_DIM: tl.constexpr, EVEN_D: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """_sdpa_bwd_dq_kernel's program for a split bucket HEAD_DIM = LEAD_DIM + TAIL_DIM (_split;
    no mask): the same equations and sweeps, every product over the head dim the sum of a lead
    and a tail product, dQ one accumulator per part."""
    offs_m, offs_n, offs_d, m_ok, d_ok, offs_t, t_ok = split_offsets(
        blk, BLOCK_M, BLOCK_N, LEAD_DIM, TAIL_DIM, T, D)
    q, q_t = load_rows_split(Q, off_z, off_h, stride_qz, stride_qh, stride_qm, offs_m, m_ok, offs_d,
                             d_ok, offs_t, t_ok, EVEN_D)
    do, do_t = load_rows_split(DO, off_z, off_h, stride_doz, stride_doh, stride_dom, offs_m, m_ok,
                               offs_d, d_ok, offs_t, t_ok, EVEN_D)
    m2, inv_l = load_row_stats(Mstat, Lstat, off_z, off_h, stride_mz, stride_mh, stride_mm,
                               stride_lz, stride_lh, stride_lm, offs_m, m_ok, Q.dtype.element_ty)
    if HAS_O:  # z from dO . O (lead + tail columns), stored for the dK/dV kernel
        o, o_t = load_rows_split(O, off_z, off_h, stride_oz, stride_oh, stride_om, offs_m, m_ok,
                                 offs_d, d_ok, offs_t, t_ok, EVEN_D)
        z = _dot_rows(o, do) + _dot_rows(o_t, do_t)
        _store_z_lse2(Zbuf, z, m2, inv_l, bh, Z, H, T, offs_m, m_ok, Q.dtype.element_ty)
    else:
        z = row_vector(Zbuf, bh, T, offs_m, m_ok, 0.0)
    k_base = K + off_z * stride_kz + off_h * stride_kh
    v_base = V + off_z * stride_vz + off_h * stride_vh
    dq = tl.zeros([BLOCK_M, LEAD_DIM], tl.float32)
    dq_t = tl.zeros([BLOCK_M, TAIL_DIM], tl.float32)
    qk_scale = sm_scale * LOG2E
    # the key blocks every row sees whole, then the diagonal / ragged tail with a limit
    n_full, n_hi = key_range(offs_m, m_ok, Q_LEN, DIAG, M, BLOCK_N)
    dq, dq_t = _dq_split_inner(dq, dq_t, q, q_t, do, do_t, m2, inv_l, z, k_base, v_base,
                               stride_kn, stride_vn, 0, n_full, M, 0, offs_n, offs_d, d_ok,
                               offs_t, t_ok, qk_scale, BLOCK_N, EVEN_D, False, INPUT_PRECISION)
    if n_full < n_hi:
        lim = row_limits(offs_m, Q_LEN, DIAG, M)  # not live during the first sweep
        dq, dq_t = _dq_split_inner(dq, dq_t, q, q_t, do, do_t, m2, inv_l, z, k_base, v_base,
                                   stride_kn, stride_vn, n_full, n_hi, M, lim, offs_n, offs_d,
                                   d_ok, offs_t, t_ok, qk_scale, BLOCK_N, EVEN_D, True,
                                   INPUT_PRECISION)
    store_rows_split(DQ, dq, dq_t, sm_scale, off_z, off_h, stride_dqz, stride_dqh, stride_dqm,
                     offs_m, m_ok, offs_d, d_ok, offs_t, t_ok, EVEN_D)


@triton.jit
def _sdpa_bwd_dq_kernel(
    Q, K, V, DO, O, Bias, Mstat, Lstat, Zbuf, DQ,
    sm_scale,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_doz, stride_doh, stride_dom,
    stride_oz, stride_oh, stride_om,
    stride_dqz, stride_dqh, stride_dqm,
    stride_mz, stride_mh, stride_mm,
    stride_lz, stride_lh, stride_lm,
    stride_biasz, stride_biash, stride_biasm,
    Z, H, T, M, D, Q_LEN, DIAG, HAS_O,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    EVEN_D: tl.constexpr, MASKED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    TAIL_N: tl.constexpr = 0, HEAD_CHUNK: tl.constexpr = 0,
):
    """dQ_i = scale * sum_j P_ij (dO_i . V_j - z_i) K_j for one (query block, batch*head).

    z: with HAS_O (a runtime flag: the forward's O is given) the program forms its rows'
    z_i = dO_i . O_i itself and stores it, with lse2 (_store_z_lse2), into Zbuf for the dK/dV
    kernel launched after it: no z pre-pass (a launch and a read of dO fewer). Else it reads
    the pre-pass's z from Zbuf (O null).
    A HEAD_DIM that is not a power of two is a split bucket (_split; kernels/variants.toml
    [split_buckets]): _dq_split, no mask there (MASKED = 0). TAIL_N (0: off): a ragged end of
    at most TAIL_N keys is swept as one TAIL_N-key block (_dq_keys). HEAD_CHUNK (0: off): under
    a causal mask, 16-bit programs take their query blocks heaviest first over chunks of
    HEAD_CHUNK heads (ordered_program)."""
    blk, off_z, off_h, bh, valid = ordered_program(Z, H, DIAG < M - 1, Q.dtype.element_ty, True,
                                                   HEAD_CHUNK)
    if is_split(HEAD_DIM):
        tl.static_assert(MASKED == 0, "split buckets have no masked flavour")
        LEAD_DIM: tl.constexpr = split_lead(HEAD_DIM)
        if valid:
            _dq_split(Q, K, V, DO, O, Mstat, Lstat, Zbuf, DQ, sm_scale, stride_qz, stride_qh,
                      stride_qm, stride_kz, stride_kh, stride_kn, stride_vz, stride_vh, stride_vn,
                      stride_doz, stride_doh, stride_dom, stride_oz, stride_oh, stride_om,
                      stride_dqz, stride_dqh, stride_dqm, stride_mz, stride_mh, stride_mm,
                      stride_lz, stride_lh, stride_lm, blk, off_z, off_h, bh, Z, H, T, M, D,
                      Q_LEN, DIAG, HAS_O, BLOCK_M, BLOCK_N, LEAD_DIM, HEAD_DIM - LEAD_DIM, EVEN_D,
                      INPUT_PRECISION)
    elif valid:
        offs_m, offs_n, offs_d, m_ok, d_ok = block_offsets(blk, BLOCK_M, BLOCK_N, HEAD_DIM, T, D)
        q = load_rows(Q, off_z, off_h, stride_qz, stride_qh, stride_qm, offs_m, offs_d, m_ok,
                      d_ok, EVEN_D)
        do = load_rows(DO, off_z, off_h, stride_doz, stride_doh, stride_dom, offs_m, offs_d, m_ok,
                       d_ok, EVEN_D)
        m2, inv_l = load_row_stats(Mstat, Lstat, off_z, off_h, stride_mz, stride_mh, stride_mm,
                                   stride_lz, stride_lh, stride_lm, offs_m, m_ok,
                                   Q.dtype.element_ty)
        if HAS_O:  # z from dO . O, stored for the dK/dV kernel
            o = load_rows(O, off_z, off_h, stride_oz, stride_oh, stride_om, offs_m, offs_d, m_ok,
                          d_ok, EVEN_D)
            z = _dot_rows(o, do)
            _store_z_lse2(Zbuf, z, m2, inv_l, bh, Z, H, T, offs_m, m_ok, Q.dtype.element_ty)
        else:
            z = row_vector(Zbuf, bh, T, offs_m, m_ok, 0.0)
        k_base = K + off_z * stride_kz + off_h * stride_kh
        v_base = V + off_z * stride_vz + off_h * stride_vh
        dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        qk_scale = sm_scale * LOG2E
        n_full, n_hi = key_range(offs_m, m_ok, Q_LEN, DIAG, M, BLOCK_N)
        b_base = Bias + off_z * stride_biasz + off_h * stride_biash
        if MASKED:
            if MASKED == 2 and stride_biasm == 0:  # key padding (one bias row for every query row)
                dq = _dq_keys(dq, q, do, m2, inv_l, z, k_base, v_base, stride_kn, stride_vn,
                              n_full, n_hi, offs_m, Q_LEN, DIAG, M, b_base, offs_n, offs_d, d_ok,
                              qk_scale, BLOCK_N, EVEN_D, 1, INPUT_PRECISION)
            else:  # a bias row per query row: every key block a row may see, masked
                lim = tl.where(m_ok, row_limits(offs_m, Q_LEN, DIAG, M), -1)
                b_rows = bias_rows(b_base, stride_biasm, offs_m)
                dq = _dq_inner(dq, q, do, m2, inv_l, z, k_base, v_base, stride_kn, stride_vn, 0, n_hi,
                               M, lim, b_rows, offs_n, offs_d, d_ok, qk_scale, BLOCK_N, EVEN_D, True,
                               2, INPUT_PRECISION)
        else:
            dq = _dq_keys(dq, q, do, m2, inv_l, z, k_base, v_base, stride_kn, stride_vn, n_full,
                          n_hi, offs_m, Q_LEN, DIAG, M, Bias, offs_n, offs_d, d_ok, qk_scale,
                          BLOCK_N, EVEN_D, False, INPUT_PRECISION, TAIL_N)
        store_rows(DQ, dq * sm_scale, off_z, off_h, stride_dqz, stride_dqh, stride_dqm, offs_m,
                   offs_d, m_ok, d_ok, EVEN_D)

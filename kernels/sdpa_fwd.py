"""Fused SDPA forward (FlashAttention-2 style) returning O and the row stats m, l."""

import triton
import triton.language as tl
from _common import (
    LN2,
    LOG2E,
    batch_head,
    bias_rows,
    block_offsets,
    key_range,
    load_kT_v,
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
from _split import is_split, load_rows_split, split_lead, split_offsets, store_rows_split


@triton.jit
def _sweep_start(K, V, off_z, off_h, stride_kz, stride_kh, stride_vz, stride_vh, sm_scale,
                 BLOCK_M: tl.constexpr):
    """What a query block's key sweep starts from: the 64-bit per-head base pointers of K and V
    (strides are int64), the base-2 score scale qk_scale = scale log2(e), and the online
    softmax's running max m_i = -inf and sum l_i = 0 per row."""
    k_base = K + off_z * stride_kz + off_h * stride_kh
    v_base = V + off_z * stride_vz + off_h * stride_vh
    qk_scale = sm_scale * LOG2E
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    return k_base, v_base, qk_scale, m_i, tl.zeros([BLOCK_M], tl.float32)


@triton.jit
def _fwd_split_inner(acc, acc_t, m_i, l_i, q, q_t, k_base, v_base, stride_kn, stride_vn, n_lo,
                     n_hi, M, lim, offs_n, offs_d, d_ok, offs_t, t_ok, qk_scale,
                     BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, MASK_N: tl.constexpr,
                     INPUT_PRECISION: tl.constexpr):
    """_fwd_inner (no mask) for a split bucket: the head dim as a lead part (columns offs_d)
    and a tail (offs_t), each a power of two; S sums their two products and O has one
    accumulator per part (acc, acc_t)."""
    for start_n in range(n_lo, n_hi, BLOCK_N):
        cols = start_n + offs_n
        n_ok = cols < M
        # -- K^T and V of this key block, lead columns and tail columns
        kT, v = load_kT_v(k_base, v_base, stride_kn, stride_vn, cols, n_ok, offs_d, d_ok, MASK_N,
                          EVEN_D)
        kT_t, v_t = load_kT_v(k_base, v_base, stride_kn, stride_vn, cols, n_ok, offs_t, t_ok,
                              MASK_N, EVEN_D)
        # -- S = q_lead k_lead^T + q_tail k_tail^T (one fp32 accumulator)
        s = mma(q_t, kT_t, mma(q, kT, None, INPUT_PRECISION), INPUT_PRECISION)
        # -- new running max, rescale factor for the old accumulators, unnormalised probs
        p, m_new, alpha = online_probs(s, m_i, 0, cols, lim, qk_scale, MASK_N, 0)
        # -- l_i <- alpha*l_i + rowsum(p);  acc <- alpha*acc + p V, per part
        l_i = l_i * alpha + tl.sum(p, 1)
        p = p.to(v.dtype)
        acc = mma(p, v, acc * alpha[:, None], INPUT_PRECISION)
        acc_t = mma(p, v_t, acc_t * alpha[:, None], INPUT_PRECISION)
        m_i = m_new
    return acc, acc_t, m_i, l_i


@triton.jit
def _fwd_split(Q, K, V, O, Mstat, Lstat, sm_scale, stride_qz, stride_qh, stride_qm, stride_kz,
               stride_kh, stride_kn, stride_vz, stride_vh, stride_vn, stride_oz, stride_oh,
               stride_om, stride_sz, stride_sh, stride_sm, off_z, off_h, T, M, D, Q_LEN, DIAG,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, LEAD_DIM: tl.constexpr,
               TAIL_DIM: tl.constexpr, EVEN_D: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """_sdpa_fwd_kernel's program for a split bucket HEAD_DIM = LEAD_DIM + TAIL_DIM (no mask):
    the same equations, with every product over the head dim the sum of a lead and a tail
    product, so a head dim of 72 costs products of 80 columns, not 128."""
    offs_m, offs_n, offs_d, m_ok, d_ok, offs_t, t_ok = split_offsets(
        query_block(Q.dtype.element_ty), BLOCK_M, BLOCK_N, LEAD_DIM, TAIL_DIM, T, D)
    q, q_t = load_rows_split(Q, off_z, off_h, stride_qz, stride_qh, stride_qm, offs_m, m_ok, offs_d,
                             d_ok, offs_t, t_ok, EVEN_D)
    k_base, v_base, qk_scale, m_i, l_i = _sweep_start(K, V, off_z, off_h, stride_kz, stride_kh,
                                                      stride_vz, stride_vh, sm_scale, BLOCK_M)
    acc = tl.zeros([BLOCK_M, LEAD_DIM], tl.float32)
    acc_t = tl.zeros([BLOCK_M, TAIL_DIM], tl.float32)
    # the key blocks every row sees whole, then the diagonal / ragged tail with a limit
    n_full, n_hi = key_range(offs_m, m_ok, Q_LEN, DIAG, M, BLOCK_N)
    acc, acc_t, m_i, l_i = _fwd_split_inner(acc, acc_t, m_i, l_i, q, q_t, k_base, v_base,
                                            stride_kn, stride_vn, 0, n_full, M, 0, offs_n, offs_d,
                                            d_ok, offs_t, t_ok, qk_scale, BLOCK_N, EVEN_D, False,
                                            INPUT_PRECISION)
    if n_full < n_hi:
        lim = row_limits(offs_m, Q_LEN, DIAG, M)
        acc, acc_t, m_i, l_i = _fwd_split_inner(acc, acc_t, m_i, l_i, q, q_t, k_base, v_base,
                                                stride_kn, stride_vn, n_full, n_hi, M, lim,
                                                offs_n, offs_d, d_ok, offs_t, t_ok, qk_scale,
                                                BLOCK_N, EVEN_D, True, INPUT_PRECISION)
    inv_l = 1.0 / tl.where(l_i > 0.0, l_i, 1.0)  # l = 0: a row that saw no key
    store_rows_split(O, acc, acc_t, inv_l[:, None], off_z, off_h, stride_oz, stride_oh, stride_om,
                     offs_m, m_ok, offs_d, d_ok, offs_t, t_ok, EVEN_D)
    s_off = off_z * stride_sz + off_h * stride_sh + offs_m * stride_sm
    tl.store(Mstat + s_off, m_i * LN2, mask=m_ok)  # base-2 max -> natural units
    tl.store(Lstat + s_off, l_i, mask=m_ok)


@triton.jit
def _fwd_inner(acc, m_i, l_i, q, kT_base, v_base, stride_kn, stride_vn, n_lo, n_hi, M, lim,
               b_rows, offs_n, offs_d, d_ok, qk_scale, sc,
               BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, MASK_N: tl.constexpr,
               BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr, K_ONE: tl.constexpr):
    """Online-softmax sweep over key blocks [n_lo, n_hi); MASK_N masks the keys j > lim_i
    (keys >= M and, causal, keys past the row's diagonal) and, BIAS, adds the attention
    mask's bias (rows b_rows), masking its -inf entries; BIAS 1 without MASK_N adds a
    key-padding bias to blocks every row sees whole (padding_bias). A masked row may have
    seen no key yet (m_i = -inf): it then rescales by exp2(-inf - 0) = 0, never by
    exp2(-inf + inf). sc = (s_k, 1/s_k, s_v) from sweep_scales ("fp16x3"; other precisions:
    1s, folded): V scaled by s_v (acc in its units until the caller unscales it), K by s_k
    where K_ONE, else per key and tile (mma)."""
    s_k, inv_k, s_v = sc
    for start_n in range(n_lo, n_hi, BLOCK_N):
        cols = start_n + offs_n
        n_ok = cols < M
        # -- load K^T (HEAD_DIM x BLOCK_N) and V (BLOCK_N x HEAD_DIM) for this key block
        kT, v = load_kT_v(kT_base, v_base, stride_kn, stride_vn, cols, n_ok, offs_d, d_ok, MASK_N,
                          EVEN_D)
        # -- scores, then the new running max, rescale factor for the old accumulators and
        #    unnormalised probs
        if K_ONE:
            s = mma_swept(q, kT, None, s_k, inv_k, INPUT_PRECISION)
        else:
            s = mma(q, kT, None, INPUT_PRECISION)
        p, m_new, alpha = online_probs(s, m_i, b_rows, cols, lim, qk_scale, MASK_N, BIAS)
        # -- l_i <- alpha*l_i + rowsum(p);  acc <- alpha*acc + p V
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = mma_swept(p.to(v.dtype), v, acc, s_v, 1.0, INPUT_PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _fwd_sweeps(acc, m_i, l_i, q, kT_base, v_base, stride_kn, stride_vn, n_lo, n_full, n_hi,
                rows, Q_LEN, DIAG, M, b_row, offs_n, offs_d, d_ok, qk_scale, sc, mask_lim,
                BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, BIAS: tl.constexpr,
                INPUT_PRECISION: tl.constexpr, TAIL_N: tl.constexpr, K_ONE: tl.constexpr):
    """_fwd_keys' sweeps: with key padding (BIAS 1) the zero-bias blocks [0, n_lo) plainly,
    then [n_lo, n_full) and the tail [n_full, n_hi) with per-score limits; with a bias row
    per query row (BIAS 2, b_row their pointers) every block [0, n_hi) masked by mask_lim."""
    if BIAS == 2:
        acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, kT_base, v_base, stride_kn, stride_vn, 0,
                                   n_hi, M, mask_lim, b_row, offs_n, offs_d, d_ok, qk_scale, sc,
                                   BLOCK_N, EVEN_D, True, 2, INPUT_PRECISION, K_ONE)
    else:
        if BIAS == 1:
            acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, kT_base, v_base, stride_kn, stride_vn, 0,
                                       n_lo, M, 0, b_row, offs_n, offs_d, d_ok, qk_scale, sc,
                                       BLOCK_N, EVEN_D, False, 0, INPUT_PRECISION, K_ONE)
        acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, kT_base, v_base, stride_kn, stride_vn, n_lo,
                                   n_full, M, 0, b_row, offs_n, offs_d, d_ok, qk_scale, sc, BLOCK_N,
                                   EVEN_D, False, BIAS, INPUT_PRECISION, K_ONE)
        if n_full < n_hi:
            lim = row_limits(rows, Q_LEN, DIAG, M)  # not live during the first sweep
            if TAIL_N > 0 and n_hi - n_full <= TAIL_N:  # a narrow tail: one TAIL_N-key block
                acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, kT_base, v_base, stride_kn, stride_vn,
                                           n_full, n_hi, M, lim, b_row, tl.arange(0, TAIL_N),
                                           offs_d, d_ok, qk_scale, sc, TAIL_N, EVEN_D, True, BIAS,
                                           INPUT_PRECISION, K_ONE)
            else:
                acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, kT_base, v_base, stride_kn, stride_vn,
                                           n_full, n_hi, M, lim, b_row, offs_n, offs_d, d_ok,
                                           qk_scale, sc, BLOCK_N, EVEN_D, True, BIAS,
                                           INPUT_PRECISION, K_ONE)
    return acc, m_i, l_i


@triton.jit
def _fwd_keys(acc, m_i, l_i, q, kT_base, v_base, stride_kn, stride_vn, n_full, n_hi, rows,
              Q_LEN, DIAG, M, b_row, offs_n, offs_d, d_ok, qk_scale,
              BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, BIAS: tl.constexpr,
              INPUT_PRECISION: tl.constexpr, TAIL_N: tl.constexpr = 0, mask_lim=0):
    """The key blocks every row sees whole ([0, n_full), no per-score limit), then the
    diagonal / ragged tail [n_full, n_hi) with one (TAIL_N > 0: a tail of at most TAIL_N keys
    as one TAIL_N-key block, not a BLOCK_N one); blocks past the last row's limit are
    skipped. BIAS 1: with a key-padding mask (b_row its row); its blocks of zero bias are
    swept first without it, and keys past its last kept one dropped (padding_sweeps). BIAS 2:
    a bias row per query row (b_row their pointers), every block [0, n_hi) masked, each row
    by its key limit mask_lim (-1 for padded rows: none of their bias is read; unused
    otherwise). BIAS 0: no mask.
    acc enters as zeros; "fp16x3": the sweeps run in the scales of one scan of the keys
    [0, n_hi) they cover (sweep_scales), acc unscaled at the end; K in one scale where every
    key is within K_ONE_SPAN of the largest (a branch at run time), else per key."""
    n_lo = 0
    if BIAS == 1:  # key padding: a plain sweep over its zero-bias blocks, none past its last key
        n_lo, n_full, n_hi = padding_sweeps(b_row, M, n_full, n_hi, BLOCK_N)
    s_k, inv_k, s_v, inv_v, k_one = sweep_scales(kT_base, v_base, stride_kn, stride_vn, 0, n_hi,
                                                 M, offs_n, offs_d, d_ok, EVEN_D,
                                                 INPUT_PRECISION)
    if k_one:
        acc, m_i, l_i = _fwd_sweeps(acc, m_i, l_i, q, kT_base, v_base, stride_kn, stride_vn,
                                    n_lo, n_full, n_hi, rows, Q_LEN, DIAG, M, b_row, offs_n,
                                    offs_d, d_ok, qk_scale, (s_k, inv_k, s_v), mask_lim, BLOCK_N,
                                    EVEN_D, BIAS, INPUT_PRECISION, TAIL_N, True)
    else:
        acc, m_i, l_i = _fwd_sweeps(acc, m_i, l_i, q, kT_base, v_base, stride_kn, stride_vn,
                                    n_lo, n_full, n_hi, rows, Q_LEN, DIAG, M, b_row, offs_n,
                                    offs_d, d_ok, qk_scale, (s_k, inv_k, s_v), mask_lim, BLOCK_N,
                                    EVEN_D, BIAS, INPUT_PRECISION, TAIL_N, False)
    return acc * inv_v, m_i, l_i


@triton.jit
def _sdpa_fwd_kernel(
    Q, K, V, Bias, O, Mstat, Lstat,
    sm_scale,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_oz, stride_oh, stride_om,
    stride_sz, stride_sh, stride_sm,
    stride_biasz, stride_biash, stride_biasm,
    Z, H, T, M, D, Q_LEN, DIAG,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    EVEN_D: tl.constexpr, MASKED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    TAIL_N: tl.constexpr = 0,
):
    """Forward attention for one (query block, batch*head) program.

    S_ij = scale * q_i . k_j (+ B_ij)         (fp32 accumulation; B: the mask's bias)
    m_i  = max_j S_ij                         (fp32, natural units)
    l_i  = sum_j exp(S_ij - m_i)              (fp32)
    O_i  = sum_j exp(S_ij - m_i) v_j / l_i    (stored in the input dtype)
    j ranges over the keys row i sees (all M, or causal: j <= i mod Q_LEN + DIAG, see
    _common) and, with a mask (MASKED), have B_ij > -inf; a row that sees none stores
    O_i = 0, m_i = -inf, l_i = 0.

    Computed with the online softmax in base 2 (exp2, scale folded into log2(e)), one pass
    over the keys, never materialising S. Stats are written to Mstat/Lstat with strides
    (stride_sz, stride_sh, stride_sm).

    A HEAD_DIM that is not a power of two is a split bucket (kernels/variants.toml
    [split_buckets]): a lead power of two (_split.split_lead) plus a power-of-two tail, each
    product over the head dim the sum of two (_fwd_split); no mask there (MASKED = 0).
    TAIL_N (0: off): a ragged end of at most TAIL_N keys is swept as one TAIL_N-key block
    (unsplit buckets, no per-row mask: _fwd_keys).
    """
    off_z, off_h, bh, valid = batch_head(Z, H)
    if is_split(HEAD_DIM):
        tl.static_assert(MASKED == 0, "split buckets have no masked flavour")
        LEAD_DIM: tl.constexpr = split_lead(HEAD_DIM)
        if valid:
            _fwd_split(Q, K, V, O, Mstat, Lstat, sm_scale, stride_qz, stride_qh, stride_qm,
                       stride_kz, stride_kh, stride_kn, stride_vz, stride_vh, stride_vn,
                       stride_oz, stride_oh, stride_om, stride_sz, stride_sh, stride_sm, off_z,
                       off_h, T, M, D, Q_LEN, DIAG, BLOCK_M, BLOCK_N, LEAD_DIM,
                       HEAD_DIM - LEAD_DIM, EVEN_D, INPUT_PRECISION)
    elif valid:
        offs_m, offs_n, offs_d, m_ok, d_ok = block_offsets(query_block(Q.dtype.element_ty),
                                                           BLOCK_M, BLOCK_N, HEAD_DIM, T, D)
        q = load_rows(Q, off_z, off_h, stride_qz, stride_qh, stride_qm, offs_m, offs_d, m_ok,
                      d_ok, EVEN_D)
        k_base, v_base, qk_scale, m_i, l_i = _sweep_start(K, V, off_z, off_h, stride_kz,
                                                          stride_kh, stride_vz, stride_vh,
                                                          sm_scale, BLOCK_M)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        n_full, n_hi = key_range(offs_m, m_ok, Q_LEN, DIAG, M, BLOCK_N)
        b_base = Bias + off_z * stride_biasz + off_h * stride_biash
        if MASKED:
            if MASKED == 2 and stride_biasm == 0:  # key padding (one bias row for every query row)
                acc, m_i, l_i = _fwd_keys(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn,
                                          n_full, n_hi, offs_m, Q_LEN, DIAG, M, b_base, offs_n,
                                          offs_d, d_ok, qk_scale, BLOCK_N, EVEN_D, 1,
                                          INPUT_PRECISION)
            else:  # a bias row per query row: every key block a row may see, masked
                lim = tl.where(m_ok, row_limits(offs_m, Q_LEN, DIAG, M), -1)
                acc, m_i, l_i = _fwd_keys(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn,
                                          n_full, n_hi, offs_m, Q_LEN, DIAG, M,
                                          bias_rows(b_base, stride_biasm, offs_m), offs_n,
                                          offs_d, d_ok, qk_scale, BLOCK_N, EVEN_D, 2,
                                          INPUT_PRECISION, 0, lim)
        else:
            acc, m_i, l_i = _fwd_keys(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn,
                                      n_full, n_hi, offs_m, Q_LEN, DIAG, M, Bias, offs_n, offs_d,
                                      d_ok, qk_scale, BLOCK_N, EVEN_D, False, INPUT_PRECISION,
                                      TAIL_N)
        o = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]  # l = 0: a row that saw no key
        store_rows(O, o, off_z, off_h, stride_oz, stride_oh, stride_om, offs_m, offs_d, m_ok, d_ok,
                   EVEN_D)
        s_off = off_z * stride_sz + off_h * stride_sh + offs_m * stride_sm
        tl.store(Mstat + s_off, m_i * LN2, mask=m_ok)  # base-2 max -> natural units
        tl.store(Lstat + s_off, l_i, mask=m_ok)

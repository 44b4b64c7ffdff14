"""Shared @triton.jit helpers for the aot-sdpa kernels.

Conventions used by every kernel in this folder:

* Tensors are addressed as ``base + z*stride_z + h*stride_h + row*stride_row + d`` with the
  last (head) dimension contiguous; all strides arrive as int64 so every offset is 64-bit and
  tensors larger than 2**31 elements are addressed correctly.
* ``HEAD_DIM`` is the compiled head-dim bucket (32/64/128/256); the runtime head dim ``D`` may be
  smaller, in which case ``EVEN_D`` is False and the tail columns are masked to zero. A bucket
  that is not a power of two (80, 96: kernels/variants.toml [split_buckets]) is tiled as a lead
  power of two plus a power-of-two tail (_split), in the kernels that have such variants.
* Softmax runs in base 2: ``exp(x) = exp2(x * log2(e))``; the score scale is folded into the
  same multiply (``qk_scale = scale * log2(e)``).
* Causal attention is two run-time integers, not a variant: query row r of a head sits at
  position ``pos = r mod Q_LEN`` (Q_LEN = T, or T/G when the G query heads of a grouped
  key/value head are stacked along the rows) and sees the keys ``j <= pos + DIAG``.
  DIAG = M - 1 lets every row see every key (no causal mask); DIAG = 0 is torch's causal
  mask (top-left aligned); DIAG = M - Q_LEN aligns it bottom-right (FlashAttention's).
  Key blocks no row of a query block sees are skipped; blocks every row sees run unmasked.
* An attention mask is an additive float32 bias B (Bias, strides stride_biasz/h/m, keys
  contiguous, stride 0 where it broadcasts; a boolean mask arrives as 0 / -inf), read by the
  masked flavours of each kernel (MASKED, compile-time: 0 in the unmasked flavours, which
  carry the pointer but compile no code for it, so their registers, shared memory and speed
  are those of a kernel without masks). S_ij becomes scale * q_i . k_j + B_ij and a key with
  B_ij = -inf is not seen (as a causal one). MASKED = 1 sends every key block a row may see
  through the masked sweep, which loads B, for any mask (a key-padding mask is the case of
  row stride 0). MASKED = 2 (the hinted masked flavours) does so for dense masks only; a
  key-padding mask (one row B_j for every query row, stride_biasm == 0) is cheaper there:
  blocks whose B_j are all 0 run unmasked, blocks whose B_j are all -inf are skipped, the
  rest add B_j per key (padding_sweeps, padding_bias).
* A query row that sees no key at all (bottom-right with T > M, or every key masked) gets
  o = 0, m = -inf, l = 0 and zero derivatives: its P is 0 everywhere.
"""

import os

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): exp(x) == exp2(x * LOG2E)
LN2 = tl.constexpr(0.6931471805599453)  # ln(2): converts a base-2 row max back to natural units
# sweep_scales: K takes one scale per program when every key's largest |K_jd| (not 0) is
# within this factor (2**6) of the largest of all, else per-key scales per tile
K_ONE_SPAN = tl.constexpr(64.0)
# A split buffer's row (split_rows_store): hi and lo (HEAD_DIM halves each), then 1/s as one
# float32 (2 halves) padded to 8 halves, so that every row stays 16-byte aligned
SPLIT_PAD = tl.constexpr(8)
# Triton's interpreter (TRITON_INTERPRET=1, the CPU tests) runs no inline PTX: f16_satfinite
# takes a plain-Triton path there
INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


@triton.jit
def batch_head(Z, H):
    """Return (off_z, off_h, bh, valid) for this program's batch*head index, all int64.

    The grid carries batch*head on axes 1 and 2 (axis 1 is capped at 65535 by CUDA), so
    bh = pid1 + pid2 * num_programs(1), computed in int64: pid2 * 65535 passes 2**31 once
    B*H does; programs past Z*H exit.
    """
    bh = tl.program_id(1).to(tl.int64) + tl.program_id(2).to(tl.int64) * tl.num_programs(1)
    return bh // H, bh % H, bh, bh < Z.to(tl.int64) * H


@triton.jit
def load_tile(ptrs, row_ok, d_ok, MASK_ROWS: tl.constexpr, EVEN_D: tl.constexpr):
    """Load a tile, masking ragged rows (``row_ok``) and/or the head-dim tail (``d_ok``)."""
    if MASK_ROWS:
        if EVEN_D:
            x = tl.load(ptrs, mask=row_ok, other=0.0)
        else:
            x = tl.load(ptrs, mask=row_ok & d_ok, other=0.0)
    else:
        if EVEN_D:
            x = tl.load(ptrs)
        else:
            x = tl.load(ptrs, mask=d_ok, other=0.0)
    return x


@triton.jit
def store_tile(ptrs, x, row_ok, d_ok, EVEN_D: tl.constexpr):
    """Store a tile, always masking ragged rows and, unless EVEN_D, the head-dim tail."""
    if EVEN_D:
        tl.store(ptrs, x, mask=row_ok)
    else:
        tl.store(ptrs, x, mask=row_ok & d_ok)


@triton.jit
def load_rows(base, off_z, off_h, stride_z, stride_h, stride_row, rows, offs_d, row_ok, d_ok,
              EVEN_D: tl.constexpr):
    """Tile (len(rows) x HEAD_DIM) of batch off_z, head off_h of a (Z, H, rows, D) tensor."""
    ptrs = base + off_z * stride_z + off_h * stride_h + rows[:, None] * stride_row + offs_d[None, :]
    return load_tile(ptrs, row_ok[:, None], d_ok[None, :], True, EVEN_D)


@triton.jit
def store_rows(base, x, off_z, off_h, stride_z, stride_h, stride_row, rows, offs_d, row_ok, d_ok,
               EVEN_D: tl.constexpr):
    """Store x (cast to the tensor's dtype) into rows of batch off_z, head off_h."""
    ptrs = base + off_z * stride_z + off_h * stride_h + rows[:, None] * stride_row + offs_d[None, :]
    store_tile(ptrs, x.to(base.dtype.element_ty), row_ok[:, None], d_ok[None, :], EVEN_D)


@triton.jit
def load_row_stats(Mstat, Lstat, off_z, off_h, stride_mz, stride_mh, stride_mm,
                   stride_lz, stride_lh, stride_lm, rows, row_ok, dtype: tl.constexpr):
    """Frozen row stats in the form frozen_probs takes them (log2_stats for data of `dtype`);
    padded rows read m = 0, l = 1."""
    m = tl.load(Mstat + off_z * stride_mz + off_h * stride_mh + rows * stride_mm, mask=row_ok,
                other=0.0)
    l = tl.load(Lstat + off_z * stride_lz + off_h * stride_lh + rows * stride_lm, mask=row_ok,
                other=1.0)
    return log2_stats(m * LOG2E, l, dtype)


@triton.jit
def query_block(dtype: tl.constexpr):
    """This query-block program's block index: for 16-bit data the last block first.

    The grid's axis 0 runs fastest, so blocks start in program_id(0) order within each
    batch*head. Under a causal mask block i sweeps ~i + 1 key blocks: in index order every
    head's heaviest block starts last and the launch ends on a tail of long programs (at
    (1, 16, 8192, 64) bf16, 1024 blocks over 264 resident slots, causal ran 1.49x faster
    than full where 2x is the work ratio). Reversed, the long programs start first and the
    short ones fill the gaps. Without causal every block does the same work: no change.
    float32 kernels keep index order: they sit at 255 registers, and ptxas spilled more
    with the reversed index (sm_90 D = 128 forward 216 -> 488 bytes of stack, TF32 16 ->
    272; the DiT-XL/2 float32 forward 23% slower), which costs more than the tail. The
    16-bit general flavours (unaligned data: the fallback) spill more too (forward D = 128
    32 -> 72 bytes, JVP D = 64 88 -> 216); their hinted flavours, which regular calls run,
    do not (forward+JVP D = 128 16 -> 32 bytes aside)."""
    if dtype == tl.float32:
        return tl.program_id(0)
    else:
        return tl.num_programs(0) - 1 - tl.program_id(0)


@triton.jit
def block_offsets(pid, BLOCK_ROWS: tl.constexpr, BLOCK_INNER: tl.constexpr,
                  HEAD_DIM: tl.constexpr, n_rows, D):
    """This program's rows, the inner-loop offsets, head-dim offsets and their masks."""
    rows = pid * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    offs_d = tl.arange(0, HEAD_DIM)
    return rows, tl.arange(0, BLOCK_INNER), offs_d, rows < n_rows, offs_d < D


@triton.jit
def key_range(rows, row_ok, Q_LEN, DIAG, M, BLOCK_N: tl.constexpr):
    """Which key blocks the query rows `rows` see (row r sees keys j <= row_limits(r)):
    [0, n_full) is seen by every valid row (no mask needed), [n_full, n_hi) by some (masked
    by row_limits, recomputed there so that no per-row vector stays live across the unmasked
    sweep: 8 more registers per thread cost the dQ kernel its second block per SM); keys
    >= n_hi are seen by none (skipped)."""
    lim = row_limits(rows, Q_LEN, DIAG, M)
    lo = tl.min(tl.where(row_ok, lim, M - 1), 0) + 1  # keys [0, lo) are seen by every row
    n_full = (tl.maximum(lo, 0) // BLOCK_N) * BLOCK_N
    n_hi = tl.maximum(tl.max(tl.where(row_ok, lim, -1), 0) + 1, 0)
    return n_full, n_hi


@triton.jit
def query_limits(cols, col_ok, Q_LEN, DIAG):
    """For a key block `cols` (a column program): the positions of the query rows that see
    them. Key j is seen from position j - DIAG on (int64: DIAG may be near +-2**31). Returns
    (first, full): positions < first see no key of the block (skipped), positions >= full
    see all of its valid keys (no mask needed), both clamped to [0, Q_LEN]."""
    need = cols.to(tl.int64) - DIAG
    first = tl.minimum(tl.maximum(tl.min(tl.where(col_ok, need, Q_LEN), 0), 0), Q_LEN)
    full = tl.minimum(tl.maximum(tl.max(tl.where(col_ok, need, 0), 0), 0), Q_LEN)
    return first.to(tl.int32), full.to(tl.int32)


@triton.jit
def group_rows(g, Q_LEN, first, full, BLOCK_M: tl.constexpr):
    """A key-block program's rows of query head g of its group (rows g*Q_LEN .. +Q_LEN, with
    `first`, `full` from query_limits): [lo, mid) see part of the block (masked, in blocks
    from lo), from mid on all of it (unmasked full blocks, then a masked ragged tail up to
    end); rows before lo see none of it (skipped)."""
    g0 = g * Q_LEN
    end = g0 + Q_LEN
    lo = g0 + first
    return lo, tl.minimum(lo + tl.cdiv(full - first, BLOCK_M) * BLOCK_M, end), end


@triton.jit
def one_masked_loop(mid, end, BLOCK_M: tl.constexpr):
    """The sweeps of group_rows' [lo, end) in two loops: the whole blocks [mid, full) unmasked,
    then one masked loop over [lo, hi) that covers the partial blocks [lo, mid) and the ragged
    tail [full, end): the tail's one block (< BLOCK_M rows) is the loop's block at mid, moved
    forward by jump = full - mid (jumped). hi = mid without a tail. Where mid was clipped at
    end, full == end: no tail, and the partial blocks' rows past end are masked."""
    full = mid + ((end - mid) // BLOCK_M) * BLOCK_M
    return full, mid + tl.where(full < end, BLOCK_M, 0), full - mid


@triton.jit
def jumped(start, jump_at, jump):
    """A masked loop's block start: blocks from jump_at on move forward by jump rows
    (one_masked_loop)."""
    return start + tl.where(start >= jump_at, jump, 0)


@triton.jit
def row_limits(rows, Q_LEN, DIAG, M):
    """The last key each query row sees, min(r mod Q_LEN + DIAG, M - 1), as int32 (summed in
    int64: DIAG may be near +-2**31); row r sees key j iff j <= its limit."""
    return tl.minimum((rows % Q_LEN).to(tl.int64) + DIAG, M - 1).to(tl.int32)


@triton.jit
def bias_rows(b_base, stride_biasm, rows):
    """Pointers to the first key of each of `rows` in the attention mask of one head
    (b_base = Bias + z * stride_biasz + h * stride_biash), 64-bit."""
    return b_base + rows.to(tl.int64) * stride_biasm


@triton.jit
def scores_seen(s2, b_rows, cols, lim, BIAS: tl.constexpr):
    """For the masked sweep of a query block: (s2', seen) with seen_ij = row i sees key j
    (j <= lim_i, and with the mask its bias B_ij > -inf) and s2' = s2 + B * log2(e)
    (base-2 units) with the mask, s2 without. BIAS: 0 no mask; 1 one bias row for every
    query row (key padding; b_rows is the row's pointer): a vector of the block's keys, one
    load per key; 2 a bias row per query row (b_rows: their pointers): a tile. Only keys some
    row may see are loaded (give padded rows lim = -1)."""
    seen = cols[None, :] <= lim[:, None]
    if BIAS == 1:
        b = tl.load(b_rows + cols, mask=cols <= tl.max(lim, 0), other=float("-inf"))
        s2 = s2 + b[None, :] * LOG2E
        seen = seen & (b > float("-inf"))[None, :]
    elif BIAS == 2:
        b = tl.load(b_rows[:, None] + cols[None, :], mask=seen, other=float("-inf"))
        s2 = s2 + b * LOG2E
        seen = b > float("-inf")
    return s2, seen


@triton.jit
def scores_seen_T(s2T, b_base, stride_biasm, rows, r_ok, cols, Q_LEN, DIAG, M,
                  BIAS: tl.constexpr):
    """scores_seen for a key block (s2T is BLOCK_N x BLOCK_M, keys `cols` by rows `rows`):
    rows >= their end (r_ok False) see nothing; lim from row_limits; BIAS 1 loads the
    block's keys of the one bias row, 2 a tile."""
    seen = (cols[:, None] <= row_limits(rows, Q_LEN, DIAG, M)[None, :]) & r_ok[None, :]
    if BIAS == 1:
        b = tl.load(b_base + cols, mask=cols < M, other=float("-inf"))
        s2T = s2T + b[:, None] * LOG2E
        seen = seen & (b > float("-inf"))[:, None]
    elif BIAS == 2:
        b = tl.load(bias_rows(b_base, stride_biasm, rows)[None, :] + cols[:, None], mask=seen,
                    other=float("-inf"))
        s2T = s2T + b * LOG2E
        seen = b > float("-inf")
    return s2T, seen


PADDING_SCAN = tl.constexpr(512)  # keys per load when padding_sweeps scans a bias row


@triton.jit
def padding_sweeps(b_row, M, n_full, n_hi, BLOCK_N: tl.constexpr):
    """Split a query block's key sweep under a key-padding mask (one bias row B_j, b_row its
    pointer; key_range gave [0, n_full) seen whole by every row, [n_full, n_hi) in part) into
    (n_plain, n_full', n_hi'):
        [0, n_plain)        whole blocks with B_j = 0 for every key: swept as without a mask
                            (no bias load, no per-score add);
        [n_plain, n_full')  whole blocks with the bias added (padding_bias);
        [n_full', n_hi')    the masked tail, as before;
    keys from the last one with B_j > -inf on (P_ij = 0 for every row) are dropped. A
    boolean mask padded on the right is then one plain sweep and at most one biased block.
    One pass over the row, PADDING_SCAN keys per load."""
    first_nonzero = M  # the first key with B_j != 0 (M: none)
    last_kept = tl.full([], -1, tl.int32)  # the last key with B_j > -inf (-1: none)
    for start in range(0, M, PADDING_SCAN):
        cols = start + tl.arange(0, PADDING_SCAN)
        b = tl.load(b_row + cols, mask=cols < M, other=float("-inf"))
        first_nonzero = tl.minimum(first_nonzero, tl.min(tl.where(b != 0.0, cols, M), 0))
        last_kept = tl.maximum(last_kept, tl.max(tl.where(b > float("-inf"), cols, -1), 0))
    n_hi = tl.minimum(n_hi, last_kept + 1)
    n_full = tl.minimum(n_full, n_hi)
    n_plain = tl.minimum((first_nonzero // BLOCK_N) * BLOCK_N, n_full)
    return n_plain, n_full, n_hi


@triton.jit
def padding_bias(s2, b_row, cols):
    """A key-padding mask (one bias row for every query row, b_row its pointer) on a key block
    every valid row sees whole (no causal or ragged limit in it): s2 + B_j * log2(e), one
    load per key and one add per score. A masked key (B_j = -inf) gets -inf: no compare or
    select per score, which is what the masked sweep's per-score limits cost."""
    return s2 + tl.load(b_row + cols)[None, :] * LOG2E


@triton.jit
def online_probs(s, m_i, b_rows, cols, lim, qk_scale, MASK_N: tl.constexpr, BIAS: tl.constexpr):
    """One key block of the online softmax, in base 2: from the raw scores s = q k^T (fp32)
    and the running max m_i (base-2 units, s2 = s * qk_scale with qk_scale = scale log2(e)),
    returns (p, m_new, alpha): p = exp2(s2 - m_new) unnormalised, m_new = max(m_i, max_j s2)
    and alpha = exp2(m_i - m_new), the old sums' rescale factor. MASK_N / BIAS as
    scores_seen / padding_bias: masked scores get p = 0, and a row that has seen no key yet
    (m_new = -inf) rescales by exp2(-inf - 0) = 0, never by exp2(-inf + inf). Unmasked,
    max_j(s_ij) * qk_scale == max_j(s_ij * qk_scale) (qk_scale > 0, rounding is monotone),
    so a score costs one FMA, s * qk_scale - m_new, not a multiply and a subtraction."""
    if MASK_N:
        s2, seen = scores_seen(s * qk_scale, b_rows, cols, lim, BIAS)
        s2 = tl.where(seen, s2, float("-inf"))
    elif BIAS == 1:  # key padding on a block every row sees whole: -inf where masked
        s2 = padding_bias(s * qk_scale, b_rows, cols)
    if MASK_N or BIAS == 1:
        m_new = tl.maximum(m_i, tl.max(s2, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that saw no key yet
        p = tl.math.exp2(s2 - m_ref[:, None])
    else:
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        m_ref = m_new
        p = tl.math.exp2(s * qk_scale - m_ref[:, None])
    return p, m_new, tl.math.exp2(m_i - m_ref)


@triton.jit
def log2_stats(m2, l, dtype: tl.constexpr):
    """The frozen stats (m2 = m log2(e), l) as frozen_probs takes them, (m2', 1 / l') with
    P = exp2(s2 - m2') / l'. 16-bit data: (m2 + log2(l), 1), a constant 1 the compiler
    folds, so a score costs one FMA and one exp2 (s2 = scale log2(e) s), not also a multiply;
    float32: (m2, 1 / l), whose rounding stays below what log2(l) would add to every
    exponent. A padded row (load_row_stats reads m = 0, l = 1) gets (0, 1), never stored; a
    row that saw no key (m2 = -inf, l = 0) keeps m2' = -inf (unseen_rows_to_zero)."""
    if dtype == tl.float32:
        return m2, 1.0 / l
    else:
        return m2 + tl.log2(l), tl.full(l.shape, 1.0, tl.float32)


@triton.jit
def unseen_rows_to_zero(m2, inv_l):
    """Frozen stats of a row that saw no key (m = -inf, l = 0, so m2 = -inf; inv_l = inf, or
    1 from log2_stats) made (+inf, 0), so exp2(s2 - m2) * inv_l is 0 for every score s2
    (finite or -inf) without a select per score; other rows unchanged."""
    unseen = m2 == float("-inf")
    return tl.where(unseen, float("inf"), m2), tl.where(unseen, 0.0, inv_l)


@triton.jit
def frozen_probs(s2, m2, inv_l, b_rows, cols, lim, MASK_N: tl.constexpr, BIAS: tl.constexpr):
    """P = exp2(s2 - m2) * inv_l of a query block from the frozen stats as log2_stats gives
    them (s2: base-2 scores; m2 = m log2(e) and inv_l = 1 / l, or m2 = m log2(e) + log2(l)
    and inv_l = 1), zero where a row does not see the key (MASK_N: past its
    limit, or masked: scores_seen). BIAS 1 without MASK_N: a key-padding mask (b_rows: its
    one row) on a block every row sees whole: padding_bias, and rows that saw no key zeroed
    through their stats (unseen_rows_to_zero), no per-score select."""
    if MASK_N:
        s2, seen = scores_seen(s2, b_rows, cols, lim, BIAS)
    elif BIAS == 1:
        s2 = padding_bias(s2, b_rows, cols)
        m2, inv_l = unseen_rows_to_zero(m2, inv_l)
    p = tl.math.exp2(s2 - m2[:, None]) * inv_l[:, None]
    if MASK_N:
        p = tl.where(seen, p, 0.0)
    return p


@triton.jit
def frozen_probs_T(s2T, m2, inv_l, b_base, stride_biasm, rows, r_ok, cols, Q_LEN, DIAG, M,
                   MASK_M: tl.constexpr, BIAS: tl.constexpr):
    """frozen_probs for a key block: P^T (BLOCK_N x BLOCK_M), zero where a row does not see
    the key (MASK_M: past its diagonal, masked, or a padded row: scores_seen_T). BIAS 1
    without MASK_M: a key-padding mask on a block of rows that all see every valid key of
    the block (the block's keys are all < M): the bias added, rows that saw no key zeroed
    through their stats (unseen_rows_to_zero), no per-score select."""
    if MASK_M:
        s2T, seen = scores_seen_T(s2T, b_base, stride_biasm, rows, r_ok, cols, Q_LEN, DIAG, M,
                                  BIAS)
    elif BIAS == 1:
        # keys past M (the last key block's padding) are never stored: bias 0 there
        s2T = s2T + tl.load(b_base + cols, mask=cols < M, other=0.0)[:, None] * LOG2E
        m2, inv_l = unseen_rows_to_zero(m2, inv_l)
    pT = tl.math.exp2(s2T - m2[None, :]) * inv_l[None, :]
    if MASK_M:
        pT = tl.where(seen, pT, 0.0)
    return pT


@triton.jit
def row_vector(base, bh, T, rows, row_ok, other):
    """Rows `rows` of batch*head bh of a contiguous float32 (Z*H, T) buffer (z, r, ...)."""
    return tl.load(base + bh * T + rows, mask=row_ok, other=other)


@triton.jit
def load_cols_T(base, stride_n, cols, n_ok, offs_d, d_ok, MASK_N: tl.constexpr,
                EVEN_D: tl.constexpr):
    """X^T (HEAD_DIM x BLOCK_N) of the rows `cols` of one head of X."""
    return load_tile(base + cols[None, :] * stride_n + offs_d[:, None], n_ok[None, :],
                     d_ok[:, None], MASK_N, EVEN_D)


@triton.jit
def load_tiles_T(k_base, tk_base, v_base, tv_base, stride_kn, stride_tkn, stride_vn, stride_tvn,
                 cols, n_ok, offs_d, d_ok, MASK_N: tl.constexpr, EVEN_D: tl.constexpr):
    """K^T, tK^T, V^T, tV^T (HEAD_DIM x BLOCK_N) of the key block `cols`."""
    kT = load_cols_T(k_base, stride_kn, cols, n_ok, offs_d, d_ok, MASK_N, EVEN_D)
    tkT = load_cols_T(tk_base, stride_tkn, cols, n_ok, offs_d, d_ok, MASK_N, EVEN_D)
    vT = load_cols_T(v_base, stride_vn, cols, n_ok, offs_d, d_ok, MASK_N, EVEN_D)
    tvT = load_cols_T(tv_base, stride_tvn, cols, n_ok, offs_d, d_ok, MASK_N, EVEN_D)
    return kT, tkT, vT, tvT


@triton.jit
def load_kT_v(k_base, v_base, stride_kn, stride_vn, cols, n_ok, offs_d, d_ok,
              MASK_N: tl.constexpr, EVEN_D: tl.constexpr):
    """K^T (HEAD_DIM x BLOCK_N) and V (BLOCK_N x HEAD_DIM) of the key block `cols`."""
    kT = load_cols_T(k_base, stride_kn, cols, n_ok, offs_d, d_ok, MASK_N, EVEN_D)
    v = load_tile(v_base + cols[:, None] * stride_vn + offs_d[None, :], n_ok[:, None],
                  d_ok[None, :], MASK_N, EVEN_D)
    return kT, v


@triton.jit
def round_tf32(x, INPUT_PRECISION: tl.constexpr):
    """A float32 operand of a plain-TF32 product, rounded to the nearest TF32 value
    (cvt.rna.tf32.f32, as cuBLAS rounds its TF32 inputs). Fed unrounded, the tensor cores drop
    the 13 low mantissa bits (round toward zero): a biased error that adds up along the
    product, measured at ~7x torch's TF32 error on the forward (H200). Identity for every
    other precision and dtype."""
    if INPUT_PRECISION == "tf32":
        if x.dtype == tl.float32:
            x = tl.inline_asm_elementwise("cvt.rna.tf32.f32 $0, $1;", "=r,r", [x],
                                          dtype=tl.float32, is_pure=True, pack=1)
    return x


@triton.jit
def pow2_scale(x, AXIS: tl.constexpr):
    """Per row (AXIS 1) or column (AXIS 0) of a float32 tile x: pow2_of_max of its max |x|."""
    return pow2_of_max(tl.max(tl.abs(x), AXIS))


@triton.jit
def pow2_of_max(amax):
    """For maxima amax >= 0 (any shape): s = 2**e, the power of two with amax * s in
    [2**14, 2**15), and 1 / s. e = 141 - E, where E is the biased exponent of amax (141 = 127,
    the bias, + 14), clamped to [-126, 126] so that s and 1 / s are normal floats: every finite
    max down to 2**-112 is scaled into that range (the largest, < 2**128, needs e = -113); a
    smaller one, or zero, gets s = 2**126, whose fp16 parts still hold x to 2**-150, below
    float32's own resolution there; inf or NaN stays so. Multiplying by s or 1 / s is exact."""
    e = 141 - ((amax.to(tl.int32, bitcast=True) >> 23) & 0xFF)  # 0xFF: the 8 exponent bits
    e = tl.minimum(tl.maximum(e, -126), 126)
    s = ((e + 127) << 23).to(tl.float32, bitcast=True)  # 2**e, built from its exponent field
    inv = ((127 - e) << 23).to(tl.float32, bitcast=True)  # 2**-e
    return s, inv


@triton.jit
def f16_satfinite(x):
    """fp16(x) rounded to nearest, +-inf -> +-65504 (fp16's largest), NaN kept:
    cvt.rn.satfinite.f16x2.f32, one instruction per two elements as the plain conversion
    (PTX ISA 8.1; sm_80+); Triton's interpreter, which runs no PTX, clamps first."""
    if INTERPRETED:
        return tl.clamp(x, -65504.0, 65504.0).to(tl.float16)
    else:
        # -- $1 (the pair's first element) to the low half: cvt.f16x2's second source
        return tl.inline_asm_elementwise("cvt.rn.satfinite.f16x2.f32 $0, $2, $1;", "=r,r,r", [x],
                                         dtype=tl.float16, is_pure=True, pack=2)


@triton.jit
def split_f16(x):
    """x = hi + lo + r with hi = fp16(x), lo = fp16(x - hi) (round to nearest): |r| <=
    2**-22 |x| while lo is a normal fp16. Scaled by pow2_scale (row max in [2**14, 2**15)),
    that holds down to ~2**-16 of the row's max; below it lo is subnormal and |r| stays under
    2**-24, i.e. 2**-38 of the row's max. hi saturates (f16_satfinite): x = +-inf gives
    hi = +-65504 and lo = fp16(x - hi) = +-inf, both of x's sign, so that fp16x3_dot's three
    products carry it as one float32 product would (a finite hi * inf, never inf - inf or
    inf * 0 of the split: with hi = inf, lo = inf - inf = NaN made every score NaN); NaN stays
    NaN in both."""
    hi = f16_satfinite(x)
    return hi, (x - hi.to(tl.float32)).to(tl.float16)


@triton.jit
def fp16x3_dot(a, b):
    """a @ b of float32 tiles already scaled into fp16's range (pow2_scale), as three fp16
    products of their parts (split_f16), fp32 accumulation:
      a @ b = a_lo b_hi + a_hi b_lo + a_hi b_hi
    dropping a_lo b_lo and the split remainders, ~2**-22 of |a_i| |b_j| per term. An infinite
    element x enters as (hi, lo) = (+-65504, +-inf): a_ik b_kj is then +-inf of the float32
    product's sign in a cross term (both infinite: in both), and 0 * inf = NaN only where
    x's partner is 0 (or too small for fp16 in its scaled row or column)."""
    a_hi, a_lo = split_f16(a)
    b_hi, b_lo = split_f16(b)
    return fp16x3_parts(a_hi, a_lo, b_hi, b_lo)


@triton.jit
def fp16x3_parts(a_hi, a_lo, b_hi, b_lo):
    """fp16x3_dot of operands already split: a_lo b_hi + a_hi b_lo + a_hi b_hi."""
    # -- the small terms first, then hi * hi, in one fp32 accumulator
    p = tl.dot(a_lo, b_hi)
    p = tl.dot(a_hi, b_lo, p)
    return tl.dot(a_hi, b_hi, p)


@triton.jit
def split_rows(x):
    """x's rows scaled into fp16's range (pow2_scale, s per row) and split (split_f16):
    (hi, lo, 1/s) with s_i x_i = hi_i + lo_i (+ the split's remainder)."""
    s, inv = pow2_scale(x, 1)
    hi, lo = split_f16(x * s[:, None])
    return hi, lo, inv


@triton.jit
def split_rows_store(base, x, rows, row_ok, offs_d, HEAD_DIM: tl.constexpr):
    """Store split_rows(x) of a float32 tile x (len(rows) x HEAD_DIM; columns past the head dim
    zero) as rows `rows` of a split buffer at `base` (fp16, 2 HEAD_DIM + SPLIT_PAD halves per
    row): [hi | lo | 1/s as float32 | padding]. Every column is written (tail columns as 0),
    so a reader needs no head-dim mask."""
    ROW: tl.constexpr = 2 * HEAD_DIM + SPLIT_PAD
    hi, lo, inv = split_rows(x)
    ptrs = base + rows[:, None] * ROW + offs_d[None, :]
    tl.store(ptrs, hi, mask=row_ok[:, None])
    tl.store(ptrs + HEAD_DIM, lo, mask=row_ok[:, None])
    tl.store((base + rows * ROW + 2 * HEAD_DIM).to(tl.pointer_type(tl.float32)), inv,
             mask=row_ok)


@triton.jit
def load_split_rows(base, stride_row, rows, row_ok, offs_d, MASK_ROWS: tl.constexpr,
                    TRANS: tl.constexpr):
    """Rows `rows` of a split buffer (split_rows_store; stride_row = 2 HEAD_DIM + SPLIT_PAD):
    (hi, lo, 1/s), hi and lo as len(rows) x HEAD_DIM tiles (TRANS: HEAD_DIM x len(rows));
    masked rows read as hi = lo = 0, 1/s = 0."""
    HEAD_DIM: tl.constexpr = offs_d.shape[0]
    if TRANS:
        ptrs = base + rows[None, :] * stride_row + offs_d[:, None]
        ok = row_ok[None, :]
    else:
        ptrs = base + rows[:, None] * stride_row + offs_d[None, :]
        ok = row_ok[:, None]
    hi = load_tile(ptrs, ok, ok, MASK_ROWS, True)
    lo = load_tile(ptrs + HEAD_DIM, ok, ok, MASK_ROWS, True)
    inv_ptrs = (base + rows * stride_row + 2 * HEAD_DIM).to(tl.pointer_type(tl.float32))
    if MASK_ROWS:
        inv = tl.load(inv_ptrs, mask=row_ok, other=0.0)
    else:
        inv = tl.load(inv_ptrs)
    return hi, lo, inv


@triton.jit
def mma_split_rows(a, b_hi, b_lo, inv_b, acc):
    """acc + a @ b in "fp16x3" for b given split with its rows scaled (b_kj = (b_hi +
    b_lo)_kj inv_b_k): b's row scales fold into a's columns (exact: powers of two), whose
    rows are then scaled and split here,
      a @ b = fp16x3_parts(s_a (a inv_b), s_b b) / s_a."""
    a_hi, a_lo, inv_a = split_rows(a * inv_b[None, :])
    return acc + fp16x3_parts(a_hi, a_lo, b_hi, b_lo) * inv_a[:, None]


@triton.jit
def mma(a, b, acc, INPUT_PRECISION: tl.constexpr):
    """acc + a @ b on tensor cores (acc None: a @ b), operands rounded by round_tf32.

    INPUT_PRECISION "fp16x3" (float32 a, b; kernels/variants.toml): three fp16 products,
      a @ b = (a_lo b_hi + a_hi b_lo + a_hi b_hi) / (s_a s_b)        (fp32 accumulation)
    where s_a scales each row of a and s_b each column of b by a power of two (pow2_scale,
    so fp16's range holds them whatever their size) and a s_a = a_hi + a_lo (split_f16). The
    dropped a_lo b_lo and split remainders are ~2**-22 of |a_i| |b_j| per term, against
    "bf16x6"'s six bfloat16 products at ~2**-24: at fp16's full tensor-core rate, half the
    products."""
    if INPUT_PRECISION == "fp16x3":
        # -- power-of-two scales: rows of a, columns of b; the three products of the parts
        sa, ia = pow2_scale(a, 1)
        sb, ib = pow2_scale(b, 0)
        p = fp16x3_dot(a * sa[:, None], b * sb[None, :])
        # -- undo the scales (exact; their product first, so that p * 1/s_a alone cannot
        #    overflow where 1/s_b brings it back), then add to acc
        p = p * (ia[:, None] * ib[None, :])
        if acc is not None:
            p = acc + p
        return p
    else:
        return tl.dot(round_tf32(a, INPUT_PRECISION), round_tf32(b, INPUT_PRECISION), acc,
                      input_precision=INPUT_PRECISION)


@triton.jit
def sweep_scales(kT_base, v_base, stride_kn, stride_vn, n_lo, n_hi, M, offs_n, offs_d, d_ok,
                 EVEN_D: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """"fp16x3": powers of two that put a program's K^T and V tiles into fp16's range for all
    its key sweeps, from one scan of the keys [n_lo, n_hi) they cover (keys >= M read as 0),
    before them:
      s_k = 2**e,  max_{j,d} |K_jd| s_k in [2**14, 2**15)      (one per program)
      s_v[d] = 2**e_d,  max_j |V_jd| s_v[d] in [2**14, 2**15)  (one per head-dim column)
    as pow2_of_max gives them, with their inverses, and `k_one`: whether every key's largest
    |K_jd| that is not 0 lies within 2**6 of the largest of all (K_ONE_SPAN). Returns
    (s_k, 1/s_k, s_v, 1/s_v, k_one): scalars for K, [1, HEAD_DIM] for V (to broadcast against
    a V tile or acc), and a scalar.

    Why: per-tile scales took a max over each tile's keys in every block, and K^T's twice
    (Triton rematerialises the per-key max in the MMA layout that unscales the scores rather
    than convert the vector): leaving K's and V's out made the forward 1.41-1.67x faster (H200,
    JIT, benchmarks/probe_fp16x3.py, results/probe_fp16x3_h200.log sections 3-6; K's part is
    nearly all of it). The sweeps then scale each V tile by constants (mma_swept); acc runs in
    V's scaled units from zero and is unscaled by 1 / s_v once, after them (one scale for every
    sweep: an acc carried into a sweep of other scales could overflow when scaled). K takes
    the one scale s_k only where k_one holds; elsewhere its per-key, per-tile scales (mma).

    Precision: a split keeps max(2**-22, 2**-38 max / |x|) of an element x (split_f16), the
    max being that of what one scale covers. V: O_id's error exceeds per-tile scales' only
    where row i attends to values under 2**-16 of column d's max over the program's keys (it is
    <= 2**-38 max_j |V_jd| per unit of probability), where per-tile scales took that max over
    64 or 128 keys. K: one scale for keys of very different sizes lets a small key's scores
    lose precision against keys a row does not see (causal) or gives no weight, which per-key
    scales never did (tests/_interpret_ops.py, keys spanning 10**+-6: 2.2x the rule's allowance,
    causal); within 2**6 its elements keep full precision down to 2**-11 of the key's own max
    (per-key scales: 2**-17). Other precisions: (1, 1, 1, 1, True), folded away."""
    if INPUT_PRECISION == "fp16x3":
        k_max = tl.zeros([offs_d.shape[0], offs_n.shape[0]], tl.float32)
        v_max = tl.zeros([offs_n.shape[0], offs_d.shape[0]], tl.float32)
        key_min = tl.full([offs_n.shape[0]], float("inf"), tl.float32)
        for start_n in range(n_lo, n_hi, offs_n.shape[0]):
            cols = start_n + offs_n
            kT, v = load_kT_v(kT_base, v_base, stride_kn, stride_vn, cols, cols < M, offs_d,
                              d_ok, True, EVEN_D)
            # -- elementwise running maxima, and the smallest nonzero per-key max
            k_abs = tl.abs(kT)
            k_max = tl.maximum(k_max, k_abs)
            v_max = tl.maximum(v_max, tl.abs(v))
            key = tl.max(k_abs, 0)  # each key's largest |K_jd| (keys >= M: 0)
            key_min = tl.minimum(key_min, tl.where(key > 0.0, key, float("inf")))
        k_top = tl.max(tl.max(k_max, 1), 0)  # the largest |K_jd| of all
        s_k, inv_k = pow2_of_max(k_top)
        s_v, inv_v = pow2_scale(v_max, 0)  # per head-dim column
        k_one = tl.min(key_min, 0) * K_ONE_SPAN >= k_top
        return s_k, inv_k, s_v[None, :], inv_v[None, :], k_one
    else:
        return 1.0, 1.0, 1.0, 1.0, True


@triton.jit
def mma_swept(a, b, acc, s_b, inv_b, INPUT_PRECISION: tl.constexpr):
    """acc + a @ b with b's scale fixed for a whole sweep (sweep_scales: s_b a scalar or a
    [1, HEAD_DIM] tensor of powers of two; inv_b = 1 / s_b where one scalar undoes it here, 1
    where the sweep's end does): "fp16x3" measures only a's rows here (pow2_scale),
      a @ b = fp16x3_dot(s_a a, s_b b) / s_a * inv_b
    (1 / s_a * inv_b first, as mma's unscale); other precisions: mma(a, b, acc)."""
    if INPUT_PRECISION == "fp16x3":
        sa, ia = pow2_scale(a, 1)
        p = fp16x3_dot(a * sa[:, None], b * s_b) * (ia * inv_b)[:, None]
        if acc is not None:
            p = acc + p
        return p
    else:
        return mma(a, b, acc, INPUT_PRECISION)

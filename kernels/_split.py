"""Split head-dim buckets (kernels/variants.toml [split_buckets]): a bucket that is not a power
of two, HEAD_DIM = LEAD + TAIL with both powers of two (80 = 64 + 16, 96 = 64 + 32), tiled as
two column parts. Every product over the head dim is the sum of a lead and a tail product,
A B^T = A_lead B_lead^T + A_tail B_tail^T, and every product into the head dim (P V, dS K, ...)
has one accumulator per part, so a head dim of 72 costs products 80 columns wide, not 128.
"""

import triton
import triton.language as tl
from _common import block_offsets, load_rows, store_rows


@triton.constexpr_function
def split_lead(head_dim):
    """The lead part of a split head-dim bucket (one that is not a power of two, e.g. 80 or
    96): its largest power of two, whose tail head_dim - lead must be a power of two >= 16
    (a tensor-core product's least K for 16-bit data), so that Triton can tile both."""
    lead = 1 << (int(head_dim).bit_length() - 1)
    tail = int(head_dim) - lead
    if tail < 16 or tail & (tail - 1):
        raise ValueError(f"head-dim bucket {head_dim}: not a power of two, nor one plus a "
                         "power-of-two tail >= 16")
    return lead


@triton.constexpr_function
def is_split(head_dim):
    """Whether a head-dim bucket is a split one (not a power of two)."""
    return (int(head_dim) & (int(head_dim) - 1)) != 0


@triton.jit
def split_offsets(pid, BLOCK_ROWS: tl.constexpr, BLOCK_INNER: tl.constexpr,
                  LEAD_DIM: tl.constexpr, TAIL_DIM: tl.constexpr, n_rows, D):
    """block_offsets for a split bucket: this program's rows, the inner-loop offsets, the lead
    part's head-dim offsets 0 .. LEAD_DIM - 1 and the tail's LEAD_DIM .. LEAD_DIM + TAIL_DIM - 1,
    with their masks (rows < n_rows, columns < D)."""
    rows, inner, offs_d, row_ok, d_ok = block_offsets(pid, BLOCK_ROWS, BLOCK_INNER, LEAD_DIM,
                                                      n_rows, D)
    offs_t = LEAD_DIM + tl.arange(0, TAIL_DIM)
    return rows, inner, offs_d, row_ok, d_ok, offs_t, offs_t < D


@triton.jit
def load_rows_split(base, off_z, off_h, stride_z, stride_h, stride_row, rows, row_ok, offs_d,
                    d_ok, offs_t, t_ok, EVEN_D: tl.constexpr):
    """The lead and tail parts of a (rows x HEAD_DIM) tile of batch off_z, head off_h (load_rows
    of each part's columns)."""
    lead = load_rows(base, off_z, off_h, stride_z, stride_h, stride_row, rows, offs_d, row_ok,
                     d_ok, EVEN_D)
    tail = load_rows(base, off_z, off_h, stride_z, stride_h, stride_row, rows, offs_t, row_ok,
                     t_ok, EVEN_D)
    return lead, tail


@triton.jit
def store_rows_split(base, lead, tail, scale, off_z, off_h, stride_z, stride_h, stride_row, rows,
                     row_ok, offs_d, d_ok, offs_t, t_ok, EVEN_D: tl.constexpr):
    """Store a tile's lead and tail parts, each times `scale` (a scalar or a column of row
    factors; 1.0 for none), into rows of batch off_z, head off_h (store_rows), the lead first."""
    store_rows(base, lead * scale, off_z, off_h, stride_z, stride_h, stride_row, rows, offs_d,
               row_ok, d_ok, EVEN_D)
    store_rows(base, tail * scale, off_z, off_h, stride_z, stride_h, stride_row, rows, offs_t,
               row_ok, t_ok, EVEN_D)

"""Shared @triton.jit helpers for the aot-sdpa kernels.

Conventions used by every kernel in this folder:

* Tensors are addressed as ``base + z*stride_z + h*stride_h + row*stride_row + d`` with the
  last (head) dimension contiguous; all strides arrive as int64 so every offset is 64-bit and
  tensors larger than 2**31 elements are addressed correctly.
* ``HEAD_DIM`` is the compiled head-dim bucket (16/32/64); the runtime head dim ``D`` may be
  smaller, in which case ``EVEN_D`` is False and the tail columns are masked to zero.
* Softmax runs in base 2: ``exp(x) = exp2(x * log2(e))``; the score scale is folded into the
  same multiply (``qk_scale = scale * log2(e)``).
"""

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): exp(x) == exp2(x * LOG2E)
LN2 = tl.constexpr(0.6931471805599453)  # ln(2): converts a base-2 row max back to natural units


@triton.jit
def batch_head(Z, H):
    """Return (off_z, off_h, valid) for this program's batch*head index.

    The grid carries batch*head on axes 1 and 2 (axis 1 is capped at 65535 by CUDA), so
    bh = pid1 + pid2 * num_programs(1); programs past Z*H exit.
    """
    bh = tl.program_id(1) + tl.program_id(2) * tl.num_programs(1)
    return bh // H, bh % H, bh < Z * H


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

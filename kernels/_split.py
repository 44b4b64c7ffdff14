"""Split head-dim buckets (kernels/variants.toml [split_buckets]): a bucket that is not a power
of two, HEAD_DIM = LEAD + TAIL with both powers of two (80 = 64 + 16, 96 = 64 + 32), tiled as
two column parts. Every product over the head dim is the sum of a lead and a tail product,
A B^T = A_lead B_lead^T + A_tail B_tail^T, and every product into the head dim (P V, dS K, ...)
has one accumulator per part, so a head dim of 72 costs products 80 columns wide, not 128.
"""

import triton
import triton.language as tl


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
def tail_cols(D, LEAD_DIM: tl.constexpr, TAIL_DIM: tl.constexpr):
    """The tail part's head-dim offsets, LEAD_DIM .. LEAD_DIM + TAIL_DIM - 1, and their mask < D
    (the lead's come from block_offsets with HEAD_DIM = LEAD_DIM)."""
    offs_t = LEAD_DIM + tl.arange(0, TAIL_DIM)
    return offs_t, offs_t < D

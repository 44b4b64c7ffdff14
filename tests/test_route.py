"""aot_sdpa.use_for_torch_sdpa(): a model that calls torch's SDPA itself runs aot_sdpa inside
the block, unsupported calls raise (or, with fallback=True, run torch's and are counted and
reported), and torch's function is back afterwards.

CPU: the kernels are the float64 stand-ins (`reference_kernels`), so routing and the
derivatives through it are checked exactly. GPU: the real kernels against torch's SDPA."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import aot_sdpa

from _helpers import max_err

TORCH_SDPA = F.scaled_dot_product_attention


class Block(nn.Module):
    """A pre-norm transformer block that calls torch's SDPA as timm's Attention does."""

    def __init__(self, width=32, heads=4, mask=False, dropout=0.0):
        super().__init__()
        self.heads, self.mask, self.dropout = heads, mask, dropout
        self.norm = nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm(x)).view(B, T, 3, self.heads, C // self.heads).permute(
            2, 0, 3, 1, 4)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril() if self.mask else None
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(x)


def _run(block, x):
    x = x.clone().requires_grad_()
    out = block(x)
    grads = torch.autograd.grad(out.square().sum(), (x, *block.parameters()))
    return out, grads


def test_routes_and_restores_cpu(reference_kernels):
    torch.manual_seed(0)
    block = Block().double()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    want_out, want_grads = _run(block, x)  # torch's SDPA (math on the CPU)
    with aot_sdpa.use_for_torch_sdpa() as route:
        assert F.scaled_dot_product_attention is not TORCH_SDPA
        got_out, got_grads = _run(block, x)
        # forward mode through the routed call too
        _, tangent = torch.func.jvp(block, (x,), (torch.ones_like(x),))
    assert F.scaled_dot_product_attention is TORCH_SDPA
    assert route.routed == 2 and not route.fallbacks
    assert max_err(got_out, want_out) < 1e-10
    for a, b in zip(got_grads, want_grads):
        assert max_err(a, b) < 1e-10
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):  # torch's only SDPA with forward AD
        _, want_tangent = torch.func.jvp(block, (x,), (torch.ones_like(x),))
    assert max_err(tangent, want_tangent) < 1e-10


def test_unsupported_call_raises_by_default_and_restores():
    block = Block(dropout=0.5)  # training mode: dropout, which aot_sdpa does not do
    x = torch.randn(2, 5, 32)
    with pytest.raises(NotImplementedError, match="dropout_p"):
        with aot_sdpa.use_for_torch_sdpa():
            block(x)
    assert F.scaled_dot_product_attention is TORCH_SDPA


def test_fallback_is_counted_and_reported():
    torch.manual_seed(0)
    masked, plain = Block(mask=True), Block()
    x = torch.randn(2, 5, 32)
    want = masked(x), plain(x)
    with pytest.warns(UserWarning, match=r"2 of 2 calls ran torch's own SDPA"):
        with aot_sdpa.use_for_torch_sdpa(fallback=True) as route:
            got = masked(x), plain(x)  # CPU tensors: both fall back
    assert route.routed == 0
    assert route.fallbacks == {"device cpu": 2}  # a mask alone is supported (CUDA)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_blocks_nest():
    with aot_sdpa.use_for_torch_sdpa() as outer:
        inner_fn = F.scaled_dot_product_attention
        with aot_sdpa.use_for_torch_sdpa(fallback=True):
            assert F.scaled_dot_product_attention is not inner_fn
        assert F.scaled_dot_product_attention is inner_fn
    assert F.scaled_dot_product_attention is TORCH_SDPA and outer.routed == 0


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 2e-2), (torch.bfloat16, 6e-2),
                                        (torch.float32, 1e-4)])
def test_block_matches_torch_gpu(dtype, rtol):
    """The routed block's output and gradients vs the same block on torch's SDPA: relative
    errors of the whole block (LayerNorm, linears, MLP around attention) in the dtype."""
    torch.manual_seed(0)
    block = Block(width=256, heads=4).to("cuda", dtype)  # head dim 64
    x = torch.randn(4, 197, 256, device="cuda", dtype=dtype)
    want_out, want_grads = _run(block, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        with aot_sdpa.use_for_torch_sdpa() as route:
            got_out, got_grads = _run(block, x)
    assert route.routed == 1
    for a, b in zip((got_out, *got_grads), (want_out, *want_grads)):
        rel = max_err(a, b) / b.double().abs().max().item()
        assert rel < rtol, rel

"""Shared test helpers: random inputs and the "≤ factor × PyTorch's same-dtype error + atol" rule."""

from __future__ import annotations

import torch


def randn(shape, dtype, device="cuda", seed=0, scale=1.0):
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, dtype=dtype, device=device, generator=g) * scale


def qkv(B, H, T, M, D, dtype, seed=0, device="cuda"):
    return (randn((B, H, T, D), dtype, device, seed), randn((B, H, M, D), dtype, device, seed + 1),
            randn((B, H, M, D), dtype, device, seed + 2))


def poison_allocator(nbytes: int = 64 << 20) -> None:
    """Fill free cached CUDA memory with NaN: outputs allocated next reuse it, so an element no
    kernel wrote reads NaN (and max_err refuses NaN)."""
    junk = torch.full((nbytes // 4,), float("nan"), device="cuda")
    del junk  # back to the caching allocator, NaN-filled


def attention_inputs(T, M, D, dtype, seed):
    """q, k, v and tangents tq, tk, tv; two heads of one batch when T*M is large."""
    B, H = (1, 2) if T * M > 1_000_000 else (2, 3)
    return (*qkv(B, H, T, M, D, dtype, seed=seed), *qkv(B, H, T, M, D, dtype, seed=seed + 10))


def max_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    assert x.shape == ref.shape, (x.shape, ref.shape)
    d = (x.double() - ref.double()).abs()
    assert not torch.isnan(d).any(), "NaN in result"
    return d.max().item() if d.numel() else 0.0


def assert_within(name: str, ours: torch.Tensor, ref64: torch.Tensor, torch_same: torch.Tensor,
                  factor: float, atol: float) -> None:
    """ours vs the fp64 reference: error <= factor * (PyTorch same-dtype error) + atol."""
    e_ours, e_torch = max_err(ours, ref64), max_err(torch_same, ref64)
    assert e_ours <= factor * e_torch + atol, (
        f"{name}: max error {e_ours:.3e} > {factor} x torch's {e_torch:.3e} + {atol:.1e}")


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-300)).item()


# (dtype, factor, atol) of the GPU tests' rule; the backward's tangent allows 3x in 16-bit
# (dS and dS. are rounded to the input dtype before their products; tests/test_hvp_gpu.py)
RULE_DTYPES = [(torch.float16, 2.0, 1e-4), (torch.bfloat16, 2.0, 1e-3),
               (torch.float32, 2.0, 1e-6)]


def operands(B, H, Hkv, T, M, D, dtype, seed):
    """[q, k, v, do, tq, tk, tv]: k, v and their tangents with Hkv heads (grouped-query)."""
    shapes = [(B, H, T, D), (B, Hkv, M, D), (B, Hkv, M, D), (B, H, T, D), (B, H, T, D),
              (B, Hkv, M, D), (B, Hkv, M, D)]
    return [randn(s, dtype, seed=seed + i) for i, s in enumerate(shapes)]


def idle_grid(programs: int, slots: int) -> bool:
    """Whether `programs` programs, `slots` at once, leave at least a quarter of the slots of
    the waves they take idle (csrc/aot_sdpa_ext.cpp idle_grid: the dispatcher's grid_len rule)."""
    waves = -(-programs // slots)
    return 4 * programs <= 3 * waves * slots

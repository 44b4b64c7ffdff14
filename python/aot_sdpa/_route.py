"""Route torch.nn.functional.scaled_dot_product_attention to aot_sdpa inside a `with` block,
for models that call torch's SDPA themselves (timm, diffusers, hand-written blocks)."""

from __future__ import annotations

import collections
import contextlib
import threading
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ._autograd import scaled_dot_product_attention
from ._checks import DTYPE_CODE, MAX_HEAD_DIM

_lock = threading.Lock()


class SdpaRoute:
    """What a use_for_torch_sdpa() block did: `routed` calls ran aot_sdpa; `fallbacks` counts,
    by reason, the calls given to torch's own SDPA (only with fallback=True)."""

    def __init__(self, fallback: bool):
        self.fallback = fallback
        self.routed = 0
        self.fallbacks: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return f"SdpaRoute(routed={self.routed}, fallbacks={dict(self.fallbacks)})"


def _unsupported(query, key, value, attn_mask, dropout_p, is_causal) -> str | None:
    """Why aot_sdpa cannot take this call (None: it can)."""
    if attn_mask is not None and is_causal:
        return "attn_mask with is_causal"
    if dropout_p != 0.0:
        return "dropout_p"
    if not all(isinstance(x, torch.Tensor) for x in (query, key, value)):
        return "non-tensor input"
    if not (query.is_cuda and key.is_cuda and value.is_cuda):
        return f"device {query.device.type}"
    if query.dtype not in DTYPE_CODE:
        return f"dtype {query.dtype}"
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        return "inputs not of rank 4"
    if query.shape[-1] > MAX_HEAD_DIM or value.shape[-1] != query.shape[-1]:
        return f"head dim {query.shape[-1]} (value {value.shape[-1]})"
    return None


@contextlib.contextmanager
def use_for_torch_sdpa(*, fallback: bool = False) -> Iterator[SdpaRoute]:
    """Inside the block, ``torch.nn.functional.scaled_dot_product_attention`` is aot_sdpa's
    drop-in, so a model that calls torch's SDPA (timm, diffusers, your own code) runs aot_sdpa
    without edits::

        with aot_sdpa.use_for_torch_sdpa() as route:
            out = model(x)
        print(route.routed)

    Arguments aot_sdpa does not support (dropout, a head dim above 256, CPU
    tensors, ...) raise, as the drop-in does, unless ``fallback=True``: then
    those calls run torch's own SDPA, are counted by reason in ``route.fallbacks`` and reported
    by a warning when the block ends (never silently).

    The replacement is process-wide while the block runs (blocks nest; each restores what it
    replaced) and applies to calls that look the function up on ``torch.nn.functional`` at call
    time, as timm, diffusers and transformers do; a module that imported the function by name
    before the block keeps torch's.
    """
    route = SdpaRoute(fallback)
    with _lock:
        previous = F.scaled_dot_product_attention

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
             enable_gqa=False):
        if fallback:
            why = _unsupported(query, key, value, attn_mask, dropout_p, is_causal)
            if why is not None:
                route.fallbacks[why] += 1
                return previous(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
        route.routed += 1
        return scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal,
                                            scale, enable_gqa)

    sdpa.__doc__ = "aot_sdpa's drop-in, installed by aot_sdpa.use_for_torch_sdpa()"
    with _lock:
        F.scaled_dot_product_attention = sdpa
    try:
        yield route
    finally:
        with _lock:
            F.scaled_dot_product_attention = previous
        if route.fallbacks:
            n = sum(route.fallbacks.values())
            warnings.warn(f"aot_sdpa.use_for_torch_sdpa: {n} of {n + route.routed} calls ran "
                          f"torch's own SDPA (fallback=True): {dict(route.fallbacks)}",
                          stacklevel=3)

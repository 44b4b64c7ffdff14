"""Hugging Face transformers: ``attn_implementation="aot_sdpa"``.

    import aot_sdpa.integrations.transformers as aot_tf
    aot_tf.register()
    model = AutoModel.from_config(config, attn_implementation="aot_sdpa")

register() adds the attention function below to transformers' AttentionInterface and, for
the masks, transformers' own SDPA mask builder to its AttentionMaskInterface (which gives no
mask where none is needed, e.g. an unpadded encoder batch, and otherwise a boolean
(B, 1, S, S_kv) mask that already holds padding, causality, a cache offset and a sliding
window). q, k, v arrive as (B, H, S, D); the function returns (B, S, H, D) and no attention
weights. Causal exactly as transformers' "sdpa" implementation decides it: is_causal only
when no mask came.

Grouped-query attention (fewer key/value heads) runs without copying k and v. What aot_sdpa
does not support raises NotImplementedError naming it, never a silently different attention:
dropout while training, softcap, a position bias.
"""

from __future__ import annotations

import torch

from .._autograd import scaled_dot_product_attention

NAME = "aot_sdpa"


def _refuse(what: str):
    raise NotImplementedError(f"aot_sdpa (attn_implementation='{NAME}'): {what} is not supported "
                              "yet; use attn_implementation='sdpa' for this model")


def attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                      value: torch.Tensor, attention_mask: torch.Tensor | None,
                      dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature; returns ((B, S, H, D) output, None)."""
    if kwargs.get("softcap") is not None:
        _refuse("softcap")
    if kwargs.get("position_bias") is not None:
        _refuse("a position bias")
    # a sliding window, padding, a cache offset: in the mask (transformers builds it with the
    # window; with no mask the window does not bind, as for its "sdpa" implementation)
    # causal exactly as transformers' "sdpa" implementation decides it (top-left aligned, as
    # torch's is_causal): only when no mask came (a mask holds the causal part itself)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(causal) and query.shape[2] > 1 and attention_mask is None
    if dropout and module.training:
        _refuse(f"attention dropout {dropout} in training")
    out = scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                       is_causal=causal, scale=scaling,
                                       enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make attn_implementation="aot_sdpa" available to transformers models."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)

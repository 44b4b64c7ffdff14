"""attn_implementation="aot_sdpa" in Hugging Face transformers, with tiny randomly initialised
models built from configs here (no downloads): logits and gradients vs
attn_implementation="sdpa"; what aot_sdpa does not support yet raises, naming it.

CPU: the kernels are the float64 stand-ins (tests/conftest.py), float32 models. GPU: the real
kernels in float16 (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import aot_sdpa.integrations.transformers as aot_tf  # noqa: E402

from _helpers import max_err  # noqa: E402

aot_tf.register()


def _vit(impl, dtype=torch.float32, device="cpu"):
    cfg = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=128, image_size=32, patch_size=8,
                                 num_labels=3, attn_implementation=impl)
    torch.manual_seed(0)
    return transformers.ViTForImageClassification(cfg).to(device, dtype).eval()


def _logits_and_grads(model, pixels):
    out = model(pixel_values=pixels).logits
    grads = torch.autograd.grad(out.float().square().sum(), list(model.parameters()))
    return out, grads


def test_vit_matches_sdpa_cpu(reference_kernels):
    pixels = torch.randn(2, 3, 32, 32)
    want = _logits_and_grads(_vit("sdpa"), pixels)
    got = _logits_and_grads(_vit("aot_sdpa"), pixels)
    assert max_err(got[0], want[0]) < 1e-5
    for a, b in zip(got[1], want[1]):
        assert max_err(a, b) < 1e-4 * (1 + b.abs().max().item())


def test_bert_padding_mask_is_refused_and_unpadded_runs_cpu(reference_kernels):
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=4, intermediate_size=64,
                                  attn_implementation="aot_sdpa")
    model = transformers.BertModel(cfg).eval()
    ids = torch.randint(0, 50, (2, 7))
    padded = torch.ones(2, 7, dtype=torch.long)
    padded[1, 5:] = 0
    with pytest.raises(NotImplementedError, match="attention mask"):
        model(input_ids=ids, attention_mask=padded)
    cfg_sdpa = transformers.BertConfig(**{**cfg.to_dict(), "attn_implementation": "sdpa"})
    ref = transformers.BertModel(cfg_sdpa).eval()
    ref.load_state_dict(model.state_dict())
    got = model(input_ids=ids).last_hidden_state
    assert max_err(got, ref(input_ids=ids).last_hidden_state) < 1e-5


def _llama(impl, dtype=torch.float32, device="cpu"):
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=64, attn_implementation=impl)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).to(device, dtype).eval()


def test_llama_causal_gqa_matches_sdpa_cpu(reference_kernels):
    """A causal decoder with grouped-query heads on an unpadded batch without a cache:
    transformers asks for is_causal (no mask), which aot_sdpa runs; a padded batch brings a
    mask, which is refused by name."""
    ids = torch.randint(0, 50, (2, 9))
    want = _llama("sdpa")(input_ids=ids, use_cache=False).logits
    model = _llama("aot_sdpa")
    assert max_err(model(input_ids=ids, use_cache=False).logits, want) < 1e-5
    padded = torch.ones(2, 9, dtype=torch.long)
    padded[1, :3] = 0
    with pytest.raises(NotImplementedError, match="attention mask"):
        model(input_ids=ids, attention_mask=padded, use_cache=False)


@pytest.mark.gpu
def test_vit_matches_sdpa_gpu():
    pixels = torch.randn(4, 3, 32, 32, device="cuda", dtype=torch.float16)
    want = _logits_and_grads(_vit("sdpa", torch.float16, "cuda"), pixels)
    got = _logits_and_grads(_vit("aot_sdpa", torch.float16, "cuda"), pixels)
    scale = want[0].abs().max().item()
    assert max_err(got[0], want[0]) < 2e-2 * scale  # two fp16 blocks around attention
    for a, b in zip(got[1], want[1]):
        assert max_err(a, b) < 5e-2 * (1e-3 + b.abs().max().item())


@pytest.mark.gpu
def test_llama_causal_gqa_matches_sdpa_gpu():
    ids = torch.randint(0, 50, (2, 33), device="cuda")
    want = _llama("sdpa", torch.float16, "cuda")(input_ids=ids, use_cache=False).logits
    got = _llama("aot_sdpa", torch.float16, "cuda")(input_ids=ids, use_cache=False).logits
    assert max_err(got, want) < 2e-2 * want.abs().max().item()

"""Padded batches in transformers on aot_sdpa (needs a CUDA GPU and transformers; models built
from configs with random weights, no download):

* a BERT-base-sized encoder on a padded batch: transformers' key-padding mask reaches the
  kernels' masked flavour; hidden states at the kept tokens vs attn_implementation="sdpa";
* a small Llama-like decoder with grouped-query heads generating greedily from a left-padded
  batch with a KV cache (causal + padding masks, one query against the cache per step):
  the generated tokens vs "sdpa".

    python examples/transformers_padded.py
"""

import torch
import transformers

import aot_sdpa.integrations.transformers as aot_tf


def bert(impl):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(attn_implementation=impl)  # 12 heads of 64
    return transformers.BertModel(cfg).cuda().half().eval()


def llama(impl):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=1000, hidden_size=512, num_hidden_layers=4,
                                   num_attention_heads=8, num_key_value_heads=2,
                                   intermediate_size=1024, attn_implementation=impl)
    return transformers.LlamaForCausalLM(cfg).cuda().half().eval()


def main():
    aot_tf.register()
    ids = torch.randint(0, 1000, (8, 128), device="cuda")
    keep = torch.ones_like(ids)
    for b in range(8):
        keep[b, 128 - 12 * b:] = 0  # row b: its last 12 b tokens are padding
    with torch.no_grad():
        a = bert("aot_sdpa")(input_ids=ids, attention_mask=keep).last_hidden_state
        b = bert("sdpa")(input_ids=ids, attention_mask=keep).last_hidden_state
    kept = keep.bool()
    print(f"BERT padded batch: max |difference| at kept tokens vs sdpa "
          f"{(a - b)[kept].abs().max().item():.2e} (max |h| {b[kept].abs().max().item():.2f})")

    prompt = torch.randint(0, 1000, (4, 32), device="cuda")
    mask = torch.ones_like(prompt)
    mask[1, :7], mask[3, :19] = 0, 0  # left padding
    gen = dict(attention_mask=mask, max_new_tokens=16, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        ours = llama("aot_sdpa").generate(prompt, **gen)
        ref = llama("sdpa").generate(prompt, **gen)
    same = (ours == ref).all(dim=1).tolist()
    print(f"Llama-like GQA decoder, greedy generation with a KV cache from a left-padded batch: "
          f"rows identical to sdpa's: {same}")


if __name__ == "__main__":
    main()

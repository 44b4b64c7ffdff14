"""A transformers ViT on aot_sdpa: attn_implementation="aot_sdpa" (needs a CUDA GPU and
transformers; the model is built from a ViT-B/16 config with random weights, no download).

    python examples/transformers_vit.py

Prints the logits' difference from attn_implementation="sdpa" and the time of a forward.
"""

import torch
import transformers

import aot_sdpa.integrations.transformers as aot_tf


def build(impl):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(attn_implementation=impl)  # ViT-B/16: 12 heads of 64, T=197
    return transformers.ViTForImageClassification(cfg).cuda().half().eval()


def ms(fn, n=20):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n


def main():
    aot_tf.register()
    pixels = torch.randn(32, 3, 224, 224, device="cuda", dtype=torch.float16)
    ours, ref = build("aot_sdpa"), build("sdpa")
    with torch.no_grad():
        a, b = ours(pixel_values=pixels).logits, ref(pixel_values=pixels).logits
        print(f"logits max abs difference vs sdpa: {(a - b).abs().max().item():.2e} "
              f"(max |logit| {b.abs().max().item():.2f})")
        print(f"forward, batch 32: aot_sdpa {ms(lambda: ours(pixel_values=pixels)):.2f} ms, "
              f"sdpa {ms(lambda: ref(pixel_values=pixels)):.2f} ms")


if __name__ == "__main__":
    main()

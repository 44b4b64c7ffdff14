"""A timm model on aot_sdpa without editing it: timm's attention calls torch's SDPA, which
aot_sdpa.use_for_torch_sdpa() routes to aot_sdpa inside the block.

    python examples/timm_vit.py        (needs a CUDA GPU and timm; random weights, no download)

Runs timm's ViT-S/16 (6 heads of 64, T = 197) in float16: inference and a training step with
torch's SDPA and inside the block, judged against the float32 model (torch's fp16 error next
to ours), then a forward-mode JVP in float32 against torch's math backend, and the times.
"""

import copy

import timm
import torch

import aot_sdpa


def ms(fn, n=10):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n


def main(device="cuda"):
    torch.manual_seed(0)
    model32 = timm.create_model("vit_small_patch16_224", pretrained=False).to(device).eval()
    model = copy.deepcopy(model32).half()
    x32 = torch.randn(32, 3, 224, 224, device=device)
    x = x32.half()

    def step(m, inp):
        out = m(inp)
        return out, torch.autograd.grad(out.float().square().mean(), list(m.parameters()))

    rel = lambda a, b: ((a.float() - b.float()).norm() / b.float().norm()).item()
    flat = lambda gs: torch.cat([g.float().flatten() for g in gs])
    ref32_out, ref32_grads = step(model32, x32)
    ref_out, ref_grads = step(model, x)
    tx = torch.randn_like(x32)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        _, ref_tangent = torch.func.jvp(model32, (x32,), (tx,))
    with aot_sdpa.use_for_torch_sdpa() as route:
        out, grads = step(model, x)
        _, tangent = torch.func.jvp(model32, (x32,), (tx,))
        with torch.no_grad():
            t_ours = ms(lambda: model(x))
    with torch.no_grad():
        t_torch = ms(lambda: model(x))
    print(f"routed {route.routed} SDPA calls to aot_sdpa, fallbacks {dict(route.fallbacks)}")
    print(f"fp16 logits rel. error vs float32: aot_sdpa {rel(out, ref32_out):.1e}, "
          f"torch {rel(ref_out, ref32_out):.1e}")
    print(f"fp16 gradient rel. error vs float32: aot_sdpa {rel(flat(grads), flat(ref32_grads)):.1e}, "
          f"torch {rel(flat(ref_grads), flat(ref32_grads)):.1e}")
    print(f"float32 JVP tangent rel. difference vs torch's math backend: "
          f"{rel(tangent, ref_tangent):.1e}")
    print(f"fp16 inference, batch 32: {t_ours:.2f} ms with aot_sdpa, {t_torch:.2f} ms with "
          f"torch's SDPA (whole model)")


if __name__ == "__main__":
    main()

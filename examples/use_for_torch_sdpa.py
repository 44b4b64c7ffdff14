"""Run a model that calls torch's SDPA itself (as timm, diffusers and most hand-written
transformers do) on aot_sdpa, without editing it: aot_sdpa.use_for_torch_sdpa().

    python examples/use_for_torch_sdpa.py        (needs a CUDA GPU)

Builds a small ViT-style encoder in plain torch, runs inference, a training step and a
forward-mode JVP with torch's SDPA and then inside the block, and prints the differences and
how many calls were routed. timm's models work the same way (pass their module instead).
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

import aot_sdpa


class Block(nn.Module):
    def __init__(self, width=384, heads=6):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # torch's SDPA, looked up at call time
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.norm2(x))


def main(device="cuda"):
    torch.manual_seed(0)
    model = nn.Sequential(*(Block() for _ in range(4))).to(device, torch.float16)
    x = torch.randn(8, 197, 384, device=device, dtype=torch.float16)
    # the JVP in float32 (research code's dtype; torch.func.jvp of nn.LayerNorm in float16
    # returns a float32 primal in torch 2.11, which the next float16 Linear refuses)
    model32, x32 = copy.deepcopy(model).float(), x.float()
    tx = torch.randn_like(x32)

    def step(m=model, inp=x):
        out = m(inp)
        grads = torch.autograd.grad(out.float().square().mean(), list(m.parameters()))
        return out, grads

    # fp16 training is judged against float32: torch's fp16 error next to ours. (A plain
    # fp16-vs-fp16 difference is dominated by gradients that are zero in exact arithmetic,
    # such as the key projection's bias, whose fp16 values are rounding noise in both.)
    ref32_out, ref32_grads = step(model32, x32)
    ref_out, ref_grads = step()
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        _, ref_tangent = torch.func.jvp(model32, (x32,), (tx,))  # torch: math backend only
    with aot_sdpa.use_for_torch_sdpa() as route:
        out, grads = step()
        _, tangent = torch.func.jvp(model32, (x32,), (tx,))  # one fused pass per block
    rel = lambda a, b: ((a.float() - b.float()).norm() / b.float().norm()).item()
    flat = lambda gs: torch.cat([g.float().flatten() for g in gs])
    print(f"routed {route.routed} SDPA calls to aot_sdpa, fallbacks {dict(route.fallbacks)}")
    print(f"fp16 output rel. error vs float32: aot_sdpa {rel(out, ref32_out):.1e}, "
          f"torch {rel(ref_out, ref32_out):.1e}")
    print(f"fp16 gradient rel. error vs float32 (all parameters): aot_sdpa "
          f"{rel(flat(grads), flat(ref32_grads)):.1e}, torch {rel(flat(ref_grads), flat(ref32_grads)):.1e}")
    print(f"JVP tangent rel. difference vs torch's math backend: {rel(tangent, ref_tangent):.1e}")


if __name__ == "__main__":
    main()

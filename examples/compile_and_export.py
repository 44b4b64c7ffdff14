"""aot_sdpa under torch.compile and torch.export: its ops are PyTorch custom operators, so a
model calling the drop-in compiles whole (fullgraph=True: no graph break at attention) for
inference and training, with CUDA graphs (mode="reduce-overhead") too, and exports.

    python examples/compile_and_export.py        (needs a CUDA GPU)

Builds a small pre-norm transformer in plain torch (bfloat16, ViT-S-like width 384, 6 heads,
T = 197, a key-padding mask on half the batch) and prints, for each of the four ways of
running it, the largest difference from eager aot_sdpa in the output and in the gradients.
"""

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

    def forward(self, x, mask):
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = aot_sdpa.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.norm2(x))


class Model(nn.Module):
    def __init__(self, depth=4):
        super().__init__()
        self.blocks = nn.ModuleList(Block() for _ in range(depth))

    def forward(self, x, mask):
        for b in self.blocks:
            x = b(x, mask)
        return x


def grads(model, x, mask):
    out = model(x, mask)
    loss = F.mse_loss(out.float(), torch.zeros_like(out, dtype=torch.float32))
    return out, torch.autograd.grad(loss, [x, *model.parameters()])


def main(device="cuda"):
    torch.manual_seed(0)
    dtype = torch.bfloat16
    model = Model().to(device, dtype)
    x = torch.randn(8, 197, 384, device=device, dtype=dtype, requires_grad=True)
    mask = torch.ones(8, 1, 1, 197, dtype=torch.bool, device=device)
    mask[4:, ..., 150:] = False  # key padding: the last 47 tokens of half the batch
    diff = lambda a, b: (a.float() - b.float()).abs().max().item()
    gdiff = lambda ga, gb: max(diff(a, b) for a, b in zip(ga, gb))

    with torch.no_grad():
        ref = model(x, mask)
    ref_out, ref_grads = grads(model, x, mask)
    print(f"eager: max |out| {ref.abs().max().item():.2f}, "
          f"max |grad| {max(g.abs().max().item() for g in ref_grads):.2e}")

    torch._dynamo.reset()
    infer = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        print(f"torch.compile fullgraph, inference: max |out - eager| {diff(infer(x, mask), ref):.2e}")

    torch._dynamo.reset()
    train = torch.compile(model, fullgraph=True)
    out, g = grads(train, x, mask)
    print(f"torch.compile fullgraph, training: max |out - eager| {diff(out, ref_out):.2e}, "
          f"max |grad - eager| {gdiff(g, ref_grads):.2e}")

    torch._dynamo.reset()
    graphs = torch.compile(model, fullgraph=True, mode="reduce-overhead")
    for _ in range(3):  # records CUDA graphs, then replays them
        out, g = grads(graphs, x, mask)
    print(f"torch.compile reduce-overhead (CUDA graphs), training: max |out - eager| "
          f"{diff(out, ref_out):.2e}, max |grad - eager| {gdiff(g, ref_grads):.2e}")

    with torch.no_grad():
        ep = torch.export.export(model, (x.detach(), mask))
        print(f"torch.export: max |out - eager| {diff(ep.module()(x.detach(), mask), ref):.2e}; "
              f"aot_sdpa ops in the graph: "
              f"{sum('aot_sdpa' in str(n.target) for n in ep.graph.nodes)}")


if __name__ == "__main__":
    main()

"""The split bucket 80 at short sequences (GPU only): the 16-bit D = 72 forward at T = 64, 128
and 197 (8192 tokens, H = 16) against torch flash and cuDNN, one process, CUDA graphs. Its
128x64 tile leaves half the rows of each block empty at T = 64 (the bucket-128 ragged flavour
had a 64x64 tier there, which no call with D = 72 reaches since the split buckets).

    python probe_split_short_t.py
"""

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench_cudagraph

import aot_sdpa

F = torch.nn.functional


def main():
    print(torch.cuda.get_device_name(), torch.__version__)
    for dtype in (torch.float16, torch.bfloat16):
        for T in (64, 128, 197):
            B, H, D = 8192 // T, 16, 72
            q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=dtype) for _ in range(3))
            for _ in range(3):  # the last of three timings (the first ones warm the GPU up)
                ours = do_bench_cudagraph(lambda: aot_sdpa.triton_sdpa_fused(q, k, v), rep=50)
            res = {}
            for n, be in (("flash", SDPBackend.FLASH_ATTENTION),
                          ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                with sdpa_kernel(be):
                    res[n] = do_bench_cudagraph(lambda: F.scaled_dot_product_attention(q, k, v),
                                                rep=50)
            best = min(res.values())
            print(f"{str(dtype)[6:]} (B={B}, H={H}, T={T}, D={D}) forward: ours {ours:.4f} ms, "
                  f"flash {res['flash']:.4f}, cudnn {res['cudnn']:.4f}: {best / ours:.3f}x torch's "
                  "best", flush=True)


if __name__ == "__main__":
    main()

"""Where the AOT float32 one-kernel backward (bwd_fused, "fp16x3", dQ by atomic adds) lost to
the stand-alone JIT kernel of probe_presplit_bwd.py (GPU only; device time per call of the
bwd_fused kernel alone, torch.profiler, median of 3).

For each shape: the AOT cubin (`aot`), the same kernel source JIT-compiled through
build_tools/jit_call.py at the shipped tile and at others (optionally under a register cap),
and (`probe`, (2, 8, 4096, 64) only) probe_presplit_bwd.py's kernel. The pre-pass and every
other launch run the AOT cubins (_ops._launch is patched for bwd_fused only).

    python probe_fused_gap.py TAG [aot] [probe] [tiles | d128] [tile=BM,BN,W,S ...]
    AOT_SDPA_KERNELS=<dir>/kernels python probe_fused_gap.py TAG   the JIT rows from other
    kernel sources (an A/B of two versions of sdpa_bwd.py, one process each)
`tiles`: the T ladder (1024, 4096, 8192, and DiT-B/2's 256) at 32x64/4/1 and 64x64/4/1
instead of the default shapes (ViT-B, SD) and tiles; `d128`: D = 128 at T = 1024 / 4096
(16k tokens, H = 16) at 32x128/8/1, 64x64/4/1 and 32x64/4/1 (shipped since). `tile=BM,BN,W,S`
(repeatable): the JIT rows at those tiles instead.
"""

import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aot_sdpa  # noqa: E402
from aot_sdpa import _ops  # noqa: E402
from build_tools import jit_call  # noqa: E402
from build_tools.variants import load  # noqa: E402

from _harness import kernel_times  # noqa: E402

SPEC = load(ROOT / "kernels" / "variants.toml")
JIT = {"on": False, "tile": None, "maxnreg": None, "kernel": None}
_aot_launch = _ops._launch


def _launch(op, dtype, device, sizes, scale, *, has_tdo=0, causal=None, bias=None, **t):
    """bwd_fused through Triton's JIT at JIT's tile while JIT is on; the rest as shipped."""
    if op != "bwd_fused" or not JIT["on"]:
        return _aot_launch(op, dtype, device, sizes, scale, has_tdo=has_tdo, causal=causal,
                           bias=bias, **t)
    bm, bn, w, s = JIT["tile"]
    JIT["kernel"] = jit_call.call(SPEC, op, "fp32", t, sizes, scale, causal=causal,
                                  blocks={"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w,
                                  num_stages=s, input_precision="fp16x3",
                                  maxnreg=JIT["maxnreg"])


def _ms(fn, name: str) -> float:
    """Device ms per call of the kernels whose name contains `name` (median of 3)."""
    return statistics.median(sum(t for k, t in kernel_times(fn, n=10, warmup=2) if name in k)
                             for _ in range(3))


def main(args):
    tag, tiles_mode, d128 = args[0], "tiles" in args, "d128" in args
    _ops._launch = _launch
    shapes = ({"t1024": (8, 16, 1024, 64), "sd": (2, 8, 4096, 64), "long": (1, 16, 8192, 64),
               "dit": (32, 12, 256, 64)} if tiles_mode
              else {"d128_1k": (16, 16, 1024, 128), "d128_4k": (4, 16, 4096, 128)} if d128
              else {"sd": (2, 8, 4096, 64), "vit": (32, 12, 197, 64)})
    tiles = ([((32, 64, 4, 1), None), ((64, 64, 4, 1), None)] if tiles_mode
             else [((32, 128, 8, 1), None), ((64, 64, 4, 1), None), ((32, 64, 4, 1), None)]
             if d128
             else [((32, 64, 4, 1), None), ((32, 64, 4, 1), 232), ((64, 64, 4, 1), None)])
    named = [(tuple(int(x) for x in a[5:].split(",")), None) for a in args
             if a.startswith("tile=")]
    tiles = named or tiles
    for name, (B, H, T, D) in shapes.items():
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, do = (torch.randn(B, H, T, D, device="cuda", generator=g) for _ in range(4))
        o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)

        def fn():
            return aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)

        JIT["on"] = False
        ref = fn()  # the AOT cubins' (dq, dk, dv), which the JIT rows' differences are from
        if "aot" in args or tiles_mode or d128:
            print(f"{tag} {name} AOT: {_ms(fn, 'bwd_fused'):.4f} ms", flush=True)
        JIT["on"] = True
        for tile, cap in tiles:
            JIT["tile"], JIT["maxnreg"] = tile, cap
            t = _ms(fn, "bwd_fused")
            kern = JIT["kernel"]
            diff = [f"{((a - b).abs().max() / b.abs().max()).item():.1e}"
                    for a, b in zip(fn(), ref)]
            print(f"{tag} {name} JIT {tile} maxnreg={cap}: {t:.4f} ms (regs {kern.n_regs}, "
                  f"spills {kern.n_spills}; max |JIT - AOT| / max |AOT| dq/dk/dv {diff})",
                  flush=True)
        if "probe" in args and name == "sd":
            import probe_presplit_bwd as probe

            x = probe.inputs(B, H, T, D)
            for tile, _ in tiles:
                if _ is None:
                    ms = _ms(lambda: probe.run(x, tile, 1), "bwd_kernel")  # noqa: B023
                    print(f"{tag} {name} probe {tile}: {ms:.4f} ms", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Block configs of the 16-bit bucket-128 backward kernels (GPU only; JIT, the general
flavour's constexprs with Triton's own alignment specialisation, kernel time from the profiler):
dK/dV (whose sm_90 tile was chosen by ptxas' spill counts and never timed) and dQ, fp16,
B * T = 16k, H = 16, T = 1k and 4k, not causal. The shipped config first; a tile that does not
compile (shared memory) is reported as such.

    python probe_bwd_d128.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from ab_kernels import _tensors

from _harness import kernel_ms

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from build_tools import jit_call  # noqa: E402
from build_tools.variants import load  # noqa: E402

CONFIGS = {  # (BLOCK_M, BLOCK_N, num_warps, num_stages)
    "bwd_dkdv": ((32, 64, 4, 3), (32, 64, 4, 2), (64, 64, 4, 2), (32, 128, 8, 2),
                 (64, 128, 8, 2), (64, 64, 8, 2), (64, 64, 8, 3), (32, 64, 8, 3)),
    "bwd_dq": ((128, 64, 8, 3), (64, 64, 4, 3), (128, 64, 8, 4), (64, 64, 8, 3)),
}


def main() -> None:
    spec = load(ROOT / "kernels" / "variants.toml")
    D, H = 128, 16
    for T in (1024, 4096):
        B = 16384 // T
        x = _tensors(B, H, T, D)
        for op, configs in CONFIGS.items():
            base = None
            for bm, bn, w, st in configs:
                try:
                    run = lambda: jit_call.call(  # noqa: E731
                        spec, op, "fp16", x, (B, H, T, T, D), 1 / math.sqrt(D),
                        blocks={"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st)
                    k = run()
                    ms = kernel_ms(run, n=10)
                except Exception as e:  # noqa: BLE001 (a tile over the shared-memory limit)
                    print(f"{op} D128 B{B} T{T} {(bm, bn, w, st)}: {type(e).__name__}",
                          flush=True)
                    continue
                base = base or ms
                print(f"{op} D128 B{B} T{T} {(bm, bn, w, st)} {ms:.4f} ms  first / this "
                      f"{base / ms:.3f}  {k.n_regs} regs {k.n_spills} spills", flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    main()

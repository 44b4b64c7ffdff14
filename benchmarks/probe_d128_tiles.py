"""Block configs of the 16-bit bucket-128 kernels whose tiles were never timed against a
three-stage one (GPU only; JIT, the general flavour's constexprs with Triton's own alignment
specialisation, kernel time from the profiler): the backward's dK/dV (its sm_90 tile was chosen
by ptxas' spill counts) and dQ, the forward+JVP and the JVP, fp16, B * T = 16k, H = 16, T = 1k
and 4k, full and causal (top-left). The shipped config first; a tile that does not compile
(shared memory) is reported as such.

    python probe_d128_tiles.py [op ...]
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

CONFIGS = {  # (BLOCK_M, BLOCK_N, num_warps, num_stages), the shipped one first
    "bwd_dkdv": ((32, 64, 4, 3), (32, 64, 4, 2), (64, 64, 4, 2), (32, 128, 8, 2),
                 (64, 128, 8, 2), (64, 64, 8, 2), (64, 64, 8, 3), (32, 64, 8, 3)),
    "bwd_dq": ((128, 64, 8, 3), (64, 64, 4, 3), (128, 64, 8, 4), (64, 64, 8, 3)),
    "fwd_jvp": ((128, 64, 8, 2), (128, 64, 8, 3), (64, 64, 4, 3), (64, 64, 4, 2),
                (64, 64, 8, 3)),
    "jvp": ((128, 64, 8, 2), (128, 64, 8, 3), (64, 64, 4, 3), (64, 64, 4, 2), (64, 64, 8, 3)),
}


def main(ops: list[str]) -> None:
    spec = load(ROOT / "kernels" / "variants.toml")
    D, H = 128, 16
    for T in (1024, 4096):
        B = 16384 // T
        x = _tensors(B, H, T, D)
        for op in ops:
            for causal in (None, (T, 0)):
                mode, base = "causal" if causal else "full", None
                for bm, bn, w, st in CONFIGS[op]:
                    def run(x=x, op=op, sizes=(B, H, T, T, D), bm=bm, bn=bn, w=w, st=st,
                            causal=causal):
                        return jit_call.call(
                            spec, op, "fp16", x, sizes, 1 / math.sqrt(D), causal=causal,
                            blocks={"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st)
                    try:
                        k = run()
                        ms = kernel_ms(run, n=10)
                    except Exception as e:  # noqa: BLE001 (a tile over the shared-memory limit)
                        print(f"{op} D128 B{B} T{T} {mode} {(bm, bn, w, st)}: "
                              f"{type(e).__name__}", flush=True)
                        continue
                    base = base or ms
                    print(f"{op} D128 B{B} T{T} {mode} {(bm, bn, w, st)} {ms:.4f} ms  "
                          f"first / this {base / ms:.3f}  {k.n_regs} regs {k.n_spills} spills",
                          flush=True)
        del x
        torch.cuda.empty_cache()


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    main(sys.argv[1:] or list(CONFIGS))

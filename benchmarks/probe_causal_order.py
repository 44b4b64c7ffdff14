"""The order in which causal backward programs start (GPU only; JIT, kernel time from the
profiler): HEAD_CHUNK (kernels/sdpa_bwd.py ordered_program) for the 16-bit dQ and dK/dV
kernels, each bucket's shipped sm_90 fp16 tile and knobs, B * T = 16k, H = 16, causal
(top-left), against HEAD_CHUNK = 0 (per head: the order before). Chunks of 8 and 16 heads
and one chunk of every head (4096: heaviest first over the whole launch). Interleaved rounds
(the leased host and GPU drift); per round every chunk is timed once; the median of the rounds.
A non-causal line checks that the order is untouched without a mask (HEAD_CHUNK off at run
time: the same time).

    python probe_causal_order.py [--d=64,128,256] [--t=1024,4096,8192] [--rounds=3]
                                 [--ops=bwd_dq,bwd_dkdv] [--tile=BLOCK_M,BLOCK_N,warps,stages]

--ops names other ops whose kernel takes HEAD_CHUNK (AOT_SDPA_KERNELS=<dir>: a tree under
test, as jit_call reads it); an op whose kernel does not is reported and skipped. --tile times
that tile instead of the shipped untiered one (e.g. a sequence-length tier's).
"""

from __future__ import annotations

import inspect
import math
import statistics
import sys
from pathlib import Path

import torch
from ab_kernels import _tensors
from probe_bucket_tiles import shipped, shipped_variant

from _harness import kernel_ms

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from build_tools import jit_call  # noqa: E402
from build_tools.variants import load  # noqa: E402

CHUNKS = (0, 8, 16, 4096)


def main(dims: list[int], lengths: list[int], rounds: int, ops: list[str],
         tile: tuple | None = None) -> None:
    spec = load(ROOT / "kernels" / "variants.toml")
    H = 16
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    for op in list(ops):
        fn = jit_call.kernel(spec, op)
        if "HEAD_CHUNK" not in inspect.signature(getattr(fn, "fn", fn)).parameters:
            print(f"{op}: its kernel has no HEAD_CHUNK, skipped", flush=True)
            ops.remove(op)
    for D in dims:
        for T in lengths:
            B = 16384 // T
            x = _tensors(B, H, T, D)
            for op in ops:
                bm, bn, w, st, *kn = tile or shipped(spec, op, D, False)
                # the shipped tile's register cap too (bucket 64's dQ: 128); --tile: none
                cap = None if tile else shipped_variant(spec, op, D, False).maxnreg

                def run(chunk, causal=(T, 0), op=op, bm=bm, bn=bn, w=w, st=st,
                        kn=kn, cap=cap, x=x, B=B, T=T, D=D):
                    return jit_call.call(
                        spec, op, "fp16", x, (B, H, T, T, D), 1 / math.sqrt(D), causal=causal,
                        blocks={"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st,
                        maxnreg=cap, knobs={**(kn[0] if kn else {}), "HEAD_CHUNK": chunk})

                for c in CHUNKS:
                    run(c)  # compile
                times = {c: [] for c in CHUNKS}
                for _ in range(rounds):
                    for c in CHUNKS:
                        times[c].append(kernel_ms(lambda c=c: run(c), n=10))
                med = {c: statistics.median(t) for c, t in times.items()}
                line = "  ".join(f"chunk{c} {med[c]:.4f} ms ({med[0] / med[c]:.3f}x)"
                                 for c in CHUNKS)
                print(f"{op} D{D} B{B} T{T} causal {(bm, bn, w, st, *kn)}"
                      f"{f' maxnreg {cap}' if cap else ''}: {line}", flush=True)
                if T == lengths[0]:
                    full = {c: kernel_ms(lambda c=c: run(c, None), n=10) for c in (0, 16)}
                    print(f"{op} D{D} B{B} T{T} full: chunk0 {full[0]:.4f} ms  chunk16 "
                          f"{full[16]:.4f} ms ({full[0] / full[16]:.3f}x)", flush=True)
            del x
            torch.cuda.empty_cache()


if __name__ == "__main__":
    opts = dict(a[2:].split("=") for a in sys.argv[1:] if a.startswith("--"))
    main([int(d) for d in opts.get("d", "64,128,256").split(",")],
         [int(t) for t in opts.get("t", "1024,4096,8192").split(",")],
         int(opts.get("rounds", 3)), opts.get("ops", "bwd_dq,bwd_dkdv").split(","),
         tuple(int(x) for x in opts["tile"].split(",")) if "tile" in opts else None)

"""Block configs of the 16-bit kernels of one head-dim bucket on sm_90, timed against the
shipped one (GPU only; JIT, the general flavour's constexprs with Triton's own alignment
specialisation, kernel time from the profiler): the forward, the backward's dK/dV and dQ, the
forward+JVP and the JVP, fp16, B * T = 16k, H = 16, T = 1k and 4k, full and causal (top-left).
The shipped config (the untiered fast sm_90 variant's; --general: the general one's) first; a
tile that does not compile (shared memory) is reported as such. With the forward, torch's
flash and cuDNN forward (and backward, after dQ) kernel times for the same shape. --general:
every input in rows padded by 8 elements (strides not multiples of 16: no divisibility hint,
the loads of our general flavour), T = 1k, not causal.

Bucket 128: the tiles never timed against a three-stage one (dK/dV's was chosen by ptxas'
spill counts); bucket 256 (Gemma's D): every tile was chosen by spill counts and sm_80's shared
memory, none timed on the H200 before.

    python probe_bucket_tiles.py 128|256 [--general] [--t=1024,4096] [op[:first|:two_pass] ...]

`op:first` times only the shipped tile (a reference line for the others), `op:two_pass` the
shipped tile and the TWO_PASS candidates; --t sets the lengths.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from ab_kernels import _tensors

from _harness import kernel_ms, padded_rows, torch_backend, torch_bwd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from build_tools import jit_call  # noqa: E402
from build_tools.variants import load  # noqa: E402

F = torch.nn.functional
CONFIGS = {  # bucket: {op: candidates (BLOCK_M, BLOCK_N, num_warps, num_stages)}
    128: {
        "bwd_dkdv": ((32, 64, 4, 2), (64, 64, 4, 2), (32, 128, 8, 2), (64, 128, 8, 2),
                     (64, 64, 8, 2), (64, 64, 8, 3), (32, 64, 8, 3)),
        "bwd_dq": ((64, 64, 4, 3), (128, 64, 8, 4), (64, 64, 8, 3)),
        "fwd_jvp": ((128, 64, 8, 3), (64, 64, 4, 3), (64, 64, 4, 2), (64, 64, 8, 3)),
        "jvp": ((128, 64, 8, 3), (64, 64, 4, 3), (64, 64, 4, 2), (64, 64, 8, 3)),
    },
    256: {  # the first run's candidates, then (second run) those around its winners
        "fwd": ((64, 64, 4, 2), (64, 32, 8, 2), (64, 64, 8, 2), (64, 64, 8, 3), (128, 32, 8, 2),
                (128, 64, 8, 2), (64, 128, 8, 2), (32, 64, 4, 2), (128, 64, 8, 1),
                (128, 32, 8, 3), (128, 64, 16, 2), (128, 32, 16, 3), (64, 64, 4, 3)),
        "bwd_dkdv": ((16, 32, 4, 3), (32, 32, 4, 2), (32, 64, 4, 2), (16, 64, 4, 2),
                     (32, 32, 8, 2), (32, 64, 8, 2), (64, 32, 8, 2), (64, 64, 8, 2),
                     (64, 64, 8, 1), (64, 32, 8, 3), (32, 64, 8, 3), (128, 32, 8, 2),
                     (32, 128, 8, 2), (64, 64, 16, 2),
                     # a dV sweep, then a dK sweep (TWO_PASS): one accumulator live at a time
                     (32, 128, 8, 3, {"TWO_PASS": 1}), (32, 128, 8, 2, {"TWO_PASS": 1}),
                     (16, 128, 8, 4, {"TWO_PASS": 1}), (64, 64, 8, 2, {"TWO_PASS": 1}),
                     (32, 64, 8, 3, {"TWO_PASS": 1}), (16, 128, 8, 3, {"TWO_PASS": 1})),
        "bwd_dq": ((32, 32, 4, 3), (64, 32, 4, 2), (32, 64, 4, 2), (64, 32, 8, 2),
                   (64, 64, 8, 2), (128, 32, 8, 2), (128, 64, 8, 2), (128, 32, 8, 3),
                   (128, 16, 8, 2), (64, 32, 8, 3), (128, 32, 16, 2), (128, 64, 8, 1)),
        "fwd_jvp": ((32, 32, 4, 2), (64, 32, 4, 2), (64, 32, 8, 2), (64, 64, 8, 2),
                    (128, 32, 8, 2), (32, 64, 4, 2)),
        "jvp": ((32, 32, 4, 2), (64, 32, 4, 2), (64, 32, 8, 2), (64, 64, 8, 2),
                (128, 32, 8, 2), (32, 64, 4, 2)),
        # dK alone and dV alone (one accumulator each: 128-key blocks fit; ptxas on the CPU:
        # 0-24 B of stack for these, 224 B for the fused dK/dV's 64x64/8/2)
        "bwd_dk": ((32, 128, 8, 3), (32, 128, 8, 2), (16, 128, 8, 3), (16, 128, 8, 4),
                   (64, 64, 8, 2)),
        "bwd_dv": ((32, 128, 8, 3), (32, 128, 8, 2), (16, 128, 8, 4), (32, 128, 8, 4),
                   (64, 128, 8, 2)),
    },
}


def shipped_variant(spec, op: str, D: int, general: bool):
    """The untiered sm_90 fp16 variant of `op` at bucket D: the fast flavour's, else the
    general one's (--general: the general one)."""
    return min((v for v in spec.variants if v.op == op and v.dtype == "fp16" and v.head_dim == D
                and v.arch == 90 and v.flavor in ("fast", "general") and v.max_len is None),
               key=lambda v: v.flavor != ("general" if general else "fast"))


def shipped(spec, op: str, D: int, general: bool) -> tuple:
    """shipped_variant's tile, with its config's own constexprs (e.g. TWO_PASS) if any."""
    v = shipped_variant(spec, op, D, general)
    b = dict(v.blocks)
    knobs = jit_call.config_knobs(spec, v)
    return (b["BLOCK_M"], b["BLOCK_N"], v.num_warps, v.num_stages) + ((knobs,) if knobs else ())


def main(D: int, ops: list[str], general: bool, lengths: tuple[int, ...]) -> None:
    spec = load(ROOT / "kernels" / "variants.toml")
    H = 16
    for T in (1024,) if general else lengths:
        B = 16384 // T
        x = _tensors(B, H, T, D)
        if general:  # the same values in rows of D + 8 elements
            x = {n: padded_rows(t, 8) if t.dim() == 4 else t for n, t in x.items()}
        for op_arg in ops:
            op, pick = (op_arg.split(":") + [""])[:2]
            first = shipped(spec, op, D, general)
            tiles = [first] + [t for t in CONFIGS[D][op] if t != first and pick != "first"
                               and (pick != "two_pass" or len(t) > 4)]
            for causal in (None,) if general else (None, (T, 0)):
                mode, base = ("general " if general else "") + ("causal" if causal else "full"), None
                for bm, bn, w, st, *knobs in tiles:
                    def run(x=x, op=op, sizes=(B, H, T, T, D), bm=bm, bn=bn, w=w, st=st,
                            causal=causal, knobs=knobs[0] if knobs else None):
                        return jit_call.call(
                            spec, op, "fp16", x, sizes, 1 / math.sqrt(D), causal=causal,
                            blocks={"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st,
                            knobs=knobs)
                    try:
                        k = run()
                        ms = kernel_ms(run, n=10)
                    except Exception as e:  # noqa: BLE001 (a tile over the shared-memory limit)
                        print(f"{op} D{D} B{B} T{T} {mode} {(bm, bn, w, st, *knobs)}: "
                              f"{type(e).__name__}", flush=True)
                        continue
                    base = base or ms
                    print(f"{op} D{D} B{B} T{T} {mode} {(bm, bn, w, st, *knobs)} {ms:.4f} ms  "
                          f"first / this {base / ms:.3f}  {k.n_regs} regs {k.n_spills} spills",
                          flush=True)
                if op in ("fwd", "bwd_dq") and not general:
                    _torch(op, x, bool(causal), f"{op} D{D} B{B} T{T} {mode}")
        del x
        torch.cuda.empty_cache()


def _torch(op: str, x: dict, causal: bool, label: str) -> None:
    """torch's flash and cuDNN kernel time for the forward (op fwd) or the whole backward
    (after dQ, the last backward kernel probed)."""
    q, k, v, do = x["Q"], x["K"], x["V"], x["DO"]
    for bk in ("flash", "cudnn"):
        what = f"{label} torch {bk} {'backward' if op == 'bwd_dq' else 'forward'}"
        try:
            with torch_backend(bk):
                fn = (torch_bwd(q, k, v, do, is_causal=causal) if op == "bwd_dq" else
                      lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
                ms = kernel_ms(fn, n=10)
        except RuntimeError as e:
            print(f"{what}: {str(e).splitlines()[0][:100]}", flush=True)
            continue
        print(f"{what} {ms:.4f} ms", flush=True)


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    bucket, rest = int(sys.argv[1]), sys.argv[2:]
    ops = [a for a in rest if not a.startswith("--")]
    lengths = next((tuple(int(t) for t in a[4:].split(",")) for a in rest
                    if a.startswith("--t=")), (1024, 4096))
    main(bucket, ops or list(CONFIGS[bucket]), "--general" in rest, lengths)

"""Where the host time of bench_e2e_vit's bf16 steps goes (GPU only): its 12-block model at
(32, 197) bf16, a training step and a torch.func.jvp step, with aot_sdpa's drop-in and with
torch's SDPA (default / math, as bench_e2e_vit compares them).

Prints, per (work, attention): wall time per step (10 steps in a row, synchronised at the end;
median of 5 interleaved rounds, and the rounds' spread), the same with Python's garbage
collector off, the synchronising calls torch's sync debug mode reports in one step, and
cProfile's top functions by own time over 5 steps.

    python profile_e2e_host.py [T]
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import sys
import warnings

import torch
from bench_e2e_vit import ATTNS, WIDTH, _jvp_fn, _model, _train_fn

from _harness import interleaved_rounds, torch_backend, wall_ms


def main(T: int = 197) -> None:
    B = 32 if T == 197 else 8
    dtype = torch.bfloat16
    g = torch.Generator(device="cuda").manual_seed(1)
    x, tx, y = (torch.randn(B, T, WIDTH, device="cuda", dtype=dtype, generator=g)
                for _ in range(3))
    steps = {}
    for work, make, path in (("train", lambda m: _train_fn(m, x, y), "default"),
                             ("jvp", lambda m: _jvp_fn(m, x, tx), "math")):
        for impl in ("aot_sdpa", "torch"):
            steps[work, impl] = (make(_model(ATTNS[impl], dtype)), path if impl == "torch" else None)

    def timer(key, gc_off):
        fn, path = steps[key]

        def run():
            with torch_backend(path):
                if gc_off:
                    gc.disable()
                try:
                    return wall_ms(fn, n=10)
                finally:
                    gc.enable()
        return run

    times = interleaved_rounds({(key, gc_off): timer(key, gc_off) for key in steps
                                for gc_off in (False, True)}, 5)
    walls = {key: times[key, False] for key in steps}
    walls_nogc = {key: times[key, True] for key in steps}
    for key in steps:
        w, wn = sorted(walls[key]), sorted(walls_nogc[key])
        print(f"WALL {key[0]:5s} {key[1]:8s} {w[2]:8.2f} ms/step ({w[0]:.2f} .. {w[-1]:.2f}); "
              f"gc off {wn[2]:8.2f} ({wn[0]:.2f} .. {wn[-1]:.2f})", flush=True)
    for key, (fn, path) in steps.items():
        with torch_backend(path):
            torch.cuda.synchronize()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    fn()
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            syncs = [str(c.message).splitlines()[0] for c in caught
                     if "synchroniz" in str(c.message)]
            print(f"SYNCS {key[0]} {key[1]}: {len(syncs)} {sorted(set(syncs))[:5]}", flush=True)
            prof = cProfile.Profile()
            torch.cuda.synchronize()
            prof.enable()
            for _ in range(5):
                fn()
            torch.cuda.synchronize()
            prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(22)
            print(f"PROFILE {key[0]} {key[1]} (5 steps)\n" + out.getvalue(), flush=True)


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    main(int(sys.argv[1]) if sys.argv[1:] else 197)

"""Import and first-call cost (issue 11 item 5): the kernels ship as compressed images, one
xz stream per (op, arch), unpacked on an op's first call (csrc/aot_images.cpp).

Each measurement runs in a fresh process (3 processes, median and spread), torch and CUDA
initialised before the clock starts; the same first calls through torch's own SDPA in fresh
processes are the baseline (a first backward also starts autograd's device threads):
  import         `import aot_sdpa`
  first_fwd      first triton_sdpa_fused call, fp16 (4, 8, 1024, 64): unpack the forward's
                 image, load its two modules, launch, synchronise
  second_fwd     the same call again (host + device time of a warm call)
  first_bwd      then the first backward (unpacks and loads the backward's images)
  warmup_all     aot_sdpa.warmup(): unpack every image and load every module for the device
  torch_*        first_fwd / second_fwd / first_bwd with torch.nn.functional's SDPA instead
Writes results/load.csv; `--profile` prints where our first backward's time goes.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from _harness import write_csv

CHILD = r"""
import json, sys, time, torch
torch.cuda.init(); torch.zeros(1, device="cuda"); torch.cuda.synchronize()
ours = sys.argv[1] == "aot_sdpa"
out = {}
t = time.perf_counter(); import aot_sdpa; out["import"] = time.perf_counter() - t
q, k, v = (torch.randn(4, 8, 1024, 64, device="cuda", dtype=torch.float16, requires_grad=True)
           for _ in range(3))
attn = aot_sdpa.scaled_dot_product_attention if ours else torch.nn.functional.scaled_dot_product_attention
torch.cuda.synchronize()
def timed(name, fn):
    t = time.perf_counter(); r = fn(); torch.cuda.synchronize()
    out[name] = time.perf_counter() - t
    return r
o = timed("first_fwd", lambda: attn(q, k, v))
timed("second_fwd", lambda: attn(q, k, v))
if sys.argv[2:] == ["profile"]:
    import cProfile, pstats
    prof = cProfile.Profile()
    prof.enable(); o.backward(torch.ones_like(o)); torch.cuda.synchronize(); prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    sys.exit(0)
timed("first_bwd", lambda: o.backward(torch.ones_like(o)))
if ours:
    timed("warmup_all", lambda: aot_sdpa.warmup())
    from aot_sdpa import _C
    ims = _C.images()
    out["images_unpacked"] = sum(im["unpacked"] for im in ims)
    out["images"] = len(ims)
print("RESULT", json.dumps(out))
"""


def _runs(impl: str, n: int = 3) -> list[dict]:
    runs = []
    for _ in range(n):
        res = subprocess.run([sys.executable, "-c", CHILD, impl], capture_output=True, text=True,
                             check=True)
        line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT "))
        runs.append(json.loads(line[len("RESULT "):]))
    return runs


def main() -> None:
    if sys.argv[1:] == ["--profile"]:
        subprocess.run([sys.executable, "-c", CHILD, "aot_sdpa", "profile"], check=True)
        return
    rows = []
    for impl, keys in (("aot_sdpa", ("import", "first_fwd", "second_fwd", "first_bwd",
                                     "warmup_all")),
                       ("torch", ("first_fwd", "second_fwd", "first_bwd"))):
        runs = _runs(impl)
        for key in keys:
            ms = sorted(r[key] * 1e3 for r in runs)
            name = key if impl == "aot_sdpa" else f"torch_{key}"
            rows.append({"what": name, "ms": round(statistics.median(ms), 2),
                         "min_ms": round(ms[0], 2), "max_ms": round(ms[-1], 2)})
            print(f"{name:<17} {rows[-1]['ms']:9.2f} ms  (min {ms[0]:.2f}, max {ms[-1]:.2f})")
        if impl == "aot_sdpa":
            print(f"images unpacked after warmup: {runs[0]['images_unpacked']} of "
                  f"{runs[0]['images']}")
    write_csv("load", rows)


if __name__ == "__main__":
    main()

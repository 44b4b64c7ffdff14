"""Would the 16-bit backward gain from running its dQ and dK/dV kernels at the same time
(GPU only, a probe: nothing shipped)?

Our backward is two launches in a row: dQ (forming z = rowsum(dO * O) and lse2, which it stores)
then dK/dV (reading them). At short sequences each launch is a few waves of programs, and each
ends on a partly filled wave (ViT-S, (32, 6, 197, 64): 384 programs per kernel). If dK/dV formed
z itself, the two would be independent and could share the GPU: one launch over a combined
grid, or two streams. Before building either, this probe measures the most it could give,
with the shipped AOT kernels and no kernel change: dQ on the current stream and dK/dV on a
second one, dK/dV reading a row buffer filled by an earlier dQ call (so it does not wait for
this one; its result is the same, the order of work is what differs). Rows:

  seq       the shipped order (aot_sdpa._ops.bwd's two launches: dQ, then dK/dV)
  conc      dQ and dK/dV on two streams, joined after both
  dq, dkdv  each launch alone
  cudnn     torch's cuDNN backward of the same forward, for scale

Device time per call (`_harness.backlogged_ms`, ms), fp16, D = 64 real shapes where the 16-bit
backward is below cuDNN (ViT-S/B/L, DiT-B/2) and two longer ones. conc / seq is the bound: a
combined launch would also pay for dK/dV forming z (one more O tile per query block).

    python probe_concurrent_bwd.py
Prints one table; nothing is written to results/ (a probe).
"""

from __future__ import annotations

import torch

import aot_sdpa
from aot_sdpa import _ops

from _harness import backlogged_ms, table, torch_backend, torch_bwd

SHAPES = {"ViT-S": (32, 6, 197, 64), "ViT-B": (32, 12, 197, 64), "ViT-L": (16, 16, 197, 64),
          "DiT-B/2": (32, 12, 256, 64), "t512": (16, 16, 512, 64), "t1k": (8, 16, 1024, 64)}


def main() -> None:
    rows = []
    side = torch.cuda.Stream()
    for name, (B, H, T, D) in SHAPES.items():
        q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.float16)
                       for _ in range(4))
        o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
        sizes, dt, scale, dev, _ = _ops._check_bwd(q, k, v, do, m, l, None, o)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        common = dict(Q=q, K=k, V=v, DO=do, Mstat=m, Lstat=l)
        z_dq, z_kv = _ops._zbuf(q, sizes), _ops._zbuf(q, sizes)

        def launch_dq(z=z_dq):
            _ops._launch("bwd_dq", dt, dev, sizes, scale, DQ=dq, O=o, Zbuf=z, **common)

        def launch_dkdv(z):
            _ops._launch("bwd_dkdv", dt, dev, sizes, scale, DK=dk, DV=dv, Zbuf=z, **common)

        launch_dq(z_kv)  # fills dK/dV's own row buffer once (z, lse2), as a dQ call would
        ref = _ops.bwd(q, k, v, do, m, l, o=o)

        def seq():
            launch_dq()
            launch_dkdv(z_dq)

        def conc():
            cur = torch.cuda.current_stream()
            side.wait_stream(cur)
            launch_dq()
            with torch.cuda.stream(side):
                launch_dkdv(z_kv)
            cur.wait_stream(side)

        conc()
        torch.cuda.synchronize()
        for got, want, what in ((dq, ref[0], "dq"), (dk, ref[1], "dk"), (dv, ref[2], "dv")):
            if not torch.equal(got, want):  # same kernels, same inputs: bitwise the same
                raise RuntimeError(f"{name}: the concurrent {what} differs from _ops.bwd's")
        with torch_backend("cudnn"):
            cudnn = torch_bwd(q, k, v, do)
            times = {"seq": seq, "conc": conc, "dq": launch_dq,
                     "dkdv": lambda: launch_dkdv(z_dq), "cudnn": cudnn}
            ms = {label: backlogged_ms(fn, n=20, reps=7)["ms"] for label, fn in times.items()}
        rows.append({"shape": name, **{k: round(t, 4) for k, t in ms.items()},
                     "conc/seq": round(ms["conc"] / ms["seq"], 3),
                     "seq/cudnn": round(ms["seq"] / ms["cudnn"], 3),
                     "conc/cudnn": round(ms["conc"] / ms["cudnn"], 3)})
        print(rows[-1], flush=True)
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()

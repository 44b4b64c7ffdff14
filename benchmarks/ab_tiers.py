"""Each sequence-length tier against its untiered twin on the same calls, in one process (AOT
cubins, GPU only).

For every tier the wheel carries for this GPU (kernel_inventory() entries with max_len > 0),
the op's public call runs at a ladder of sequence lengths up to and past max_len (B * T = 8192
tokens, H = 16; the bucket's head dim, or for a ragged tier a head dim below it: 40 in 64,
72 in 128), once with the dispatcher held to the tier and once to the untiered variants
(_C._tier_rows, a benchmark hook: max(T, M) taken as the tier's own max_len, which the tier
with the smallest max_len covering it, this one, answers even where a family has several, or
as a length no tier covers; a narrow-tail tier and the plain one of the same max_len are held
alike: the narrow one runs where the call's loop ends in its tail, the `narrow` column), past
max_len too (what the tier would do there), alternating A/B
in each of `ROUNDS` rounds. Times
are the device time of the whole call (_harness.backlogged_ms: several calls back to back
behind a GPU sleep, the host out of the way), median over rounds; ratio = untiered / tier
(> 1: the tier is faster). A tier that runs a piece of a call (dQ of the backward) is timed
through the whole call, so its ratio is diluted by the other kernels.

    python ab_tiers.py [op ...]
Writes results/ab_tiers.csv.

    python ab_tiers.py --lengths 200,256,257,... [op ...]
The same A/B at the given sequence lengths instead of each tier's ladder (where a tier should
stop, or whether the tile should follow the tail block, T mod BLOCK_M); writes
results/ab_tiers_lengths.csv. With --own the first arm is each call's own choice (the
dispatcher's max_len and tail_len rules) instead of the tier held: ratio 1 where it runs the
untiered variant; writes results/ab_tiers_own.csv.

    python ab_tiers.py --causal --lengths 512,1024 fwd
Any of the above with causal=True calls (a tier's diagonal blocks are half the 128-row tile's, so
its length rule may differ for causal calls); the CSV name gains "_causal". `--causal-br`: the
bottom-right alignment instead (a query block of a prefill after a cache, T < M, sees M - T
keys more than top-left's); "_causal_br". A length may be "T:M" (M keys; default M = T),
`--hkv N` gives k and v N heads (grouped-query attention; default H = 16), `--tokens N` sets
B * T (default 8192; bench_breadth.py's shapes are 16384). `--out NAME` writes results/NAME.csv
instead of the names above (the backward's tiers: ab_tiers_bwd*.csv, ab_tiers_own_bwd.csv).
`--dtype NAME` (float16, bfloat16, float32) times only that dtype's tiers.
"""

from __future__ import annotations

import sys

import torch

import aot_sdpa
from aot_sdpa import _C

from _harness import backlogged_ms, table, write_csv

ROUNDS = 5
TOKENS = 8192
H = 16
UNTIERED = 2**31 - 1  # max(T, M) as the hook gives it: no tier covers it
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
RAGGED_D = {64: 40, 128: 72}


def _call(op: str, B: int, T: int, D: int, dtype: torch.dtype, causal: bool | str = False,
          M: int | None = None, Hkv: int = H):
    """A no-argument callable running the public call whose kernels include `op` (M keys in
    Hkv heads; M = None: T)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, do, tq = (torch.randn(B, H, T, D, device="cuda", dtype=dtype, generator=g)
                 for _ in range(3))
    k, v, tk, tv = (torch.randn(B, Hkv, M or T, D, device="cuda", dtype=dtype, generator=g)
                    for _ in range(4))
    _, m, l = aot_sdpa.triton_sdpa_fused(q, k, v, causal=causal)
    if op == "fwd":
        return lambda: aot_sdpa.triton_sdpa_fused(q, k, v, causal=causal)
    if op in ("bwd_dq", "bwd_dkdv", "bwd_z_from_stats", "bwd_fused"):
        return lambda: aot_sdpa.sdpa_bwd(q, k, v, do, m, l, causal=causal)
    if op == "jvp":
        return lambda: aot_sdpa.sdpa_jvp(q, k, v, tq, tk, tv, m, l, causal=causal)
    if op == "fwd_jvp":
        return lambda: aot_sdpa.sdpa_fwd_jvp(q, k, v, tq, tk, tv, causal=causal)
    raise SystemExit(f"ab_tiers: no call for op {op!r}")


def _ladder(max_len: int) -> list[int]:
    """Lengths up to and past a tier's max_len: ViT's 197 among them."""
    return sorted({64, 128, 197, max_len // 2, max_len, max_len + 1, 2 * max_len} - {0})


def main(ops: list[str], lengths: list[tuple[int, int]] | None = None, own: bool = False,
         causal: bool | str = False, Hkv: int = H, out: str | None = None,
         dtype: str | None = None) -> None:
    cc = torch.cuda.get_device_capability()
    arch = f"sm_{cc[0]}{cc[1]}"
    tiers = [r for r in aot_sdpa.kernel_inventory() if r["max_len"] and r["arch"] == arch
             and (not ops or r["op"] in ops) and (dtype is None or r["dtype"] == dtype)]
    if not tiers:
        raise SystemExit(f"ab_tiers: no sequence-length tier for {arch}")
    rows = []
    for r in tiers:
        D = RAGGED_D[r["head_dim"]] if r["flavor"] == "ragged" else r["head_dim"]
        dtype = DTYPES[r["dtype"]]
        for T, M in lengths or [(t, t) for t in _ladder(r["max_len"])]:
            fn = _call(r["op"], max(1, TOKENS // T), T, D, dtype, causal, M, Hkv)
            times = {"tier": [], "untiered": []}
            try:
                for _ in range(ROUNDS):
                    for name, rows_hook in (("tier", 0 if own else r["max_len"]),
                                            ("untiered", UNTIERED)):
                        _C._tier_rows(rows_hook)
                        times[name].append(backlogged_ms(fn, reps=3)["ms"])
            finally:
                _C._tier_rows(0)
            med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
            rows.append({"op": r["op"], "dtype": r["dtype"], "flavor": r["flavor"],
                         "bucket": r["head_dim"], "max_len": r["max_len"], "narrow": r["narrow"],
                         "tile": f"{r['block_m']}x{r['block_n']}/{r['num_warps']}/"
                                 f"{r['num_stages']}",
                         "B": max(1, TOKENS // T), "H": H, "Hkv": Hkv, "T": T, "M": M, "D": D,
                         "tier_ms": round(med["tier"], 4), "untiered_ms": round(med["untiered"], 4),
                         "ratio": round(med["untiered"] / med["tier"], 3),
                         "causal": causal, "inside": max(T, M) <= r["max_len"]})
            print(table(rows[-1:], list(rows[-1])), flush=True)
            del fn
            torch.cuda.empty_cache()
    name = "ab_tiers_own" if own else "ab_tiers_lengths" if lengths else "ab_tiers"
    write_csv(out or name + {False: "", True: "_causal", "bottom_right": "_causal_br"}[causal],
              rows)
    print(table(rows, list(rows[0])))


def _pop_value(args: list[str], flag: str) -> str | None:
    """The value after `flag` in args, both removed (None: flag absent)."""
    if flag not in args:
        return None
    i = args.index(flag)
    value = args[i + 1]
    del args[i:i + 2]
    return value


def parse(args: list[str]) -> dict:
    """main()'s keyword arguments from the command line (see the docstring); sets TOKENS."""
    global TOKENS
    lengths = _pop_value(args, "--lengths")
    if lengths is not None:
        pairs = [[int(n) for n in t.split(":")] for t in lengths.split(",")]
        lengths = sorted({(p[0], p[-1]) for p in pairs})
    TOKENS = int(_pop_value(args, "--tokens") or TOKENS)
    Hkv = int(_pop_value(args, "--hkv") or H)
    out = _pop_value(args, "--out")
    dtype = _pop_value(args, "--dtype")
    flags = {"--own", "--causal", "--causal-br"}
    return {"ops": [a for a in args if a not in flags], "lengths": lengths,
            "own": "--own" in args,
            "causal": "bottom_right" if "--causal-br" in args else "--causal" in args, "Hkv": Hkv,
            "out": out, "dtype": dtype}


if __name__ == "__main__":
    main(**parse(sys.argv[1:]))

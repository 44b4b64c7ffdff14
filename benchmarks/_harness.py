"""Shared benchmark harness: CUDA-event timing (median with p10/p90 spread), peak memory,
environment stamp, CSV and PNG output. Every comparison is measured in the same process."""

from __future__ import annotations

import csv
import datetime
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


# the environment stamp's columns, which write_csv appends to every row (env())
ENV_COLUMNS = ("gpu", "torch", "cuda", "cudnn", "aot_sdpa", "python", "date")


def env() -> dict:
    import aot_sdpa

    props = torch.cuda.get_device_properties(0)
    return dict(zip(ENV_COLUMNS, (
        props.name, torch.__version__, torch.version.cuda, torch.backends.cudnn.version(),
        aot_sdpa.__version__, platform.python_version(), datetime.date.today().isoformat())))


def event_times(fn, warmup: int = 10, rep: int = 50) -> list[float]:
    """Per-call device times in ms of rep calls (CUDA events around each call, no
    synchronisation between calls), after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(rep)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(rep)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def spread(times: list[float]) -> dict:
    """Median, p10 and p90 of times."""
    t = sorted(times)
    q = lambda f: t[min(len(t) - 1, int(f * len(t)))]
    return {"ms": q(0.5), "p10_ms": q(0.1), "p90_ms": q(0.9)}


def time_ms(fn, warmup: int = 10, rep: int = 50) -> dict:
    """Median, p10 and p90 of per-call device time in ms (CUDA events around each call)."""
    return spread(event_times(fn, warmup, rep))


def peak_extra_mib(fn) -> float:
    """Peak memory allocated by fn beyond what was allocated before it, in MiB."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    del out
    return (torch.cuda.max_memory_allocated() - base) / 2**20


@contextmanager
def torch_backend(name: str | None):
    """Force one torch SDPA backend: flash, cudnn, efficient or math; None or "default"
    leaves torch's own choice."""
    if name in (None, "default"):
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
         "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[name]
    with sdpa_kernel(b):
        yield


def torch_bwd(q, k, v, do, **sdpa_kwargs):
    """A callable computing torch's SDPA backward (autograd.grad) of one forward graph, built
    now (under the caller's backend context) with `sdpa_kwargs` (is_causal, attn_mask)."""
    qq, kk, vv = (x.detach().requires_grad_() for x in (q, k, v))
    o = torch.nn.functional.scaled_dot_product_attention(qq, kk, vv, **sdpa_kwargs)
    return lambda: torch.autograd.grad(o, (qq, kk, vv), do, retain_graph=True)


def compare(impls: dict, flops: float, key: dict, baseline: str = "aot_sdpa",
            rounds: int = 5, rep: int = 10) -> list[dict]:
    """Time each impl {name: (torch backend or None, fn)}; rows carry TFLOP/s and
    aot_speedup = impl time / aot_sdpa time (so > 1 means aot_sdpa is faster).
    The impls take turns (interleaved_rounds): each round times rep calls of each after a
    short warm-up, and an impl's median, p10 and p90 are over all its rounds' calls. Timed one
    after the other (until 2026-12-01), any drift of the GPU's speed during a cell fell on one
    impl alone; single cells' ratios moved by up to ~6% between runs."""

    def timer(backend, fn):
        def run() -> list[float]:
            with torch_backend(backend):
                return event_times(fn, warmup=3, rep=rep)
        return run

    for backend, fn in impls.values():  # first use: workspaces, cuDNN plans, module loads
        with torch_backend(backend):
            event_times(fn, warmup=7, rep=1)
    times = interleaved_rounds({name: timer(*impl) for name, impl in impls.items()}, rounds)
    rows = []
    for name, per_round in times.items():
        t = spread([ms for r in per_round for ms in r])
        rows.append({**key, "impl": name, **{k: round(v, 4) for k, v in t.items()},
                     "tflops": round(flops / t["ms"] / 1e9, 1)})
    base = next(r["ms"] for r in rows if r["impl"] == baseline)
    for r in rows:
        r["aot_speedup"] = round(r["ms"] / base, 3)
    return rows


def write_csv(name: str, rows: list[dict]) -> Path:
    """Write rows to results/<name>.csv, each stamped with this run's environment (env())
    unless it carries its own: a row kept from an earlier run (kept_rows) keeps its stamp."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.csv"
    stamp = env()
    keys = [k for k in rows[0] if k not in ENV_COLUMNS] + list(stamp.keys())
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, lineterminator="\n")  # LF, as the repository
        w.writeheader()
        for r in rows:
            w.writerow({**stamp, **r})
    out = os.environ.get("OUT")
    if out:  # the device tool brings files back from $OUT
        (Path(out) / path.name).write_text(path.read_text())
    return path


def kept_rows(name: str, keep) -> list[dict]:
    """The rows of results/<name>.csv for which keep(row) holds (those a partial re-run does
    not measure again), numbers parsed back, each with its own environment stamp (the run
    that measured it; write_csv keeps it)."""
    path = RESULTS / f"{name}.csv"
    if not path.exists():
        return []

    def parse(v: str):
        if v == "":
            return None
        for kind in (int, float):
            try:
                return kind(v)
            except ValueError:
                pass
        return v

    with path.open() as f:
        rows = [{k: v if k in ENV_COLUMNS else parse(v) for k, v in r.items()}
                for r in csv.DictReader(f)]
    return [r for r in rows if keep(r)]


def plot(name: str, rows: list[dict], x: str, y: str, series: str, title: str) -> None:
    """One line per series value; skipped (with a note) when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib not installed: no {name}.png)")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for s in dict.fromkeys(r[series] for r in rows):
        pts = [(r[x], r[y]) for r in rows if r[series] == s and r[y] is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=str(s))
    ax.set_xscale("log", base=2)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{title}\n{env()['gpu']}, {env()['date']}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    out = os.environ.get("OUT")
    if out:
        fig.savefig(Path(out) / f"{name}.png", dpi=110)


def sweep_16k(H: int = 16, D: int = 64, Ts=(512, 1024, 2048, 4096, 8192)):
    """The standard sweep: fp16 and bf16, D=64, B*T = 16k tokens. Yields (dtype, B, T, key)."""
    for dtype in (torch.float16, torch.bfloat16):
        for T in Ts:
            B = 16384 // T
            yield dtype, B, T, {"dtype": str(dtype).split(".")[-1], "T": T, "B": B, "H": H, "D": D}


def padded_rows(t: torch.Tensor, extra: int) -> torch.Tensor:
    """t's values in a view whose rows are D + extra elements apart (a row stride that is no
    multiple of 16 for extra 4 or 8: no divisibility hint, our general flavour's loads)."""
    out = torch.zeros(*t.shape[:-1], t.shape[-1] + extra, dtype=t.dtype,
                      device=t.device)[..., :t.shape[-1]]
    out.copy_(t)
    return out


def fwd_flops(B: int, H: int, T: int, M: int, D: int) -> float:
    """Forward FLOPs: two matmuls (Q K^T and P V), 2*T*M*D each, per batch*head: 4*B*H*T*M*D."""
    return 4.0 * B * H * T * M * D


def table(rows: list[dict], cols: list[str]) -> str:
    w = {c: max(len(c), *(len(f"{r[c]}") for r in rows)) for c in cols}
    lines = ["  ".join(c.rjust(w[c]) for c in cols)]
    lines += ["  ".join(f"{r[c]}".rjust(w[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def backlogged_ms(fn, n: int = 10, reps: int = 5) -> dict:
    """Device time per call with the host out of the way: a GPU sleep long enough to cover the
    host's enqueueing of n calls runs first, so the n calls execute back to back. Median and
    spread over `reps` batches (ms per call)."""
    fn()
    torch.cuda.synchronize()
    t0 = torch.cuda.Event(enable_timing=True)
    t1 = torch.cuda.Event(enable_timing=True)
    w = time.perf_counter()
    for _ in range(n):
        fn()
    host_s = time.perf_counter() - w  # upper bound of the host's enqueue time for n calls
    torch.cuda.synchronize()
    cycles = int(min(host_s * 1.5, 0.5) * 2e9)  # ~2 GHz SM clock; 0.5 s at most
    out = []
    for _ in range(reps):
        torch.cuda._sleep(cycles)
        t0.record()
        for _ in range(n):
            fn()
        t1.record()
        torch.cuda.synchronize()
        out.append(t0.elapsed_time(t1) / n)
    out.sort()
    return {"ms": out[len(out) // 2], "p10_ms": out[0], "p90_ms": out[-1]}


def kernel_times(fn, n: int = 5, warmup: int = 1) -> list[tuple[str, float]]:
    """(name, device ms per call) of every kernel (and memcpy/memset) that n calls of fn ran,
    from torch.profiler (CUPTI), after `warmup` calls."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    return [(e.key, e.self_device_time_total / n / 1e3) for e in prof.key_averages()
            if e.self_device_time_total > 0]


def kernel_ms(fn, n: int = 5) -> float:
    """GPU work per call: the summed device time of every kernel that n calls ran
    (kernel_times). Unlike event timing it excludes the idle gaps of a host-bound loop (a
    training step of ~1000 small kernels is host-bound on eager PyTorch), so it is the
    device time of the call whether or not the host keeps up."""
    return sum(ms for _, ms in kernel_times(fn, n))


def wall_ms(fn, n: int = 20, warmup: int = 1) -> float:
    """Wall time per call of n calls in a row, synchronised once at the end: what an eager
    loop sees (the slower of host and device; host time where the GPU work is tiny)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    w = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - w) / n * 1e3


def interleaved_rounds(timers: dict, rounds: int) -> dict[str, list]:
    """Each timer (name -> a zero-argument function returning a time, or a list of them) run
    once per round, in turn, `rounds` times: a leased host's speed drifts within a run (by up
    to ~1.6x over a minute), so interleaving spreads the drift over every case, and one
    round's times were taken back to back. Returns name -> its times in round order."""
    times = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            times[name].append(timer())
    return times

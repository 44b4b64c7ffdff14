"""AOT build: compile every variant in kernels/variants.toml and render the C launchers.

    python -m build_tools.build [--out build/gen] [--jobs N] [--ops fwd,bwd_dq]

Runs without a GPU or CUDA toolkit (Triton's bundled ptxas and cuda.h). Independent variants
compile in parallel processes; an unchanged variant is taken from build/aot_cache. The
generated C file is rewritten only when its content changes, so a no-change rebuild
recompiles nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from build_tools import variants as variants_mod  # noqa: E402
from build_tools.compile_variant import cache_key, compile_variant  # noqa: E402
from build_tools.pack import pack_images  # noqa: E402
from build_tools.render import render  # noqa: E402

KERNELS = ROOT / "kernels"
PINNED_TRITON = "3.6.0"


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def _compile_job(args):
    kernels_dir, variant, abi, out_dir = args
    t0 = time.perf_counter()
    meta = compile_variant(kernels_dir, variant, abi, out_dir)
    return meta, time.perf_counter() - t0


def build(out_dir: Path = ROOT / "build" / "gen", cache_dir: Path = ROOT / "build" / "aot_cache",
          jobs: int | None = None, only_ops: set[str] | None = None,
          variants_file: Path = KERNELS / "variants.toml", log=print) -> dict:
    import triton

    if triton.__version__ != PINNED_TRITON:
        raise RuntimeError(f"aot-sdpa kernels are built with Triton {PINNED_TRITON}; "
                           f"found {triton.__version__}")
    t0 = time.perf_counter()
    spec = variants_mod.load(variants_file, only_ops)
    keys = [cache_key(KERNELS, v, spec.abi, triton.__version__) for v in spec.variants]
    dirs = [cache_dir / f"{v.name}-{k}" for v, k in zip(spec.variants, keys)]
    todo = [i for i, d in enumerate(dirs) if not (d / "meta.json").exists()]
    log(f"aot-sdpa build: {len(spec.variants)} variants, {len(todo)} to compile, "
        f"{len(spec.variants) - len(todo)} cached")
    if todo:
        jobs = jobs or os.cpu_count() or 1
        work = [(str(KERNELS), spec.variants[i], spec.abi, str(dirs[i])) for i in todo]
        # spawn: each worker gets a clean Triton with its own stand-in driver
        import multiprocessing as mp
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            for n, (meta, dt) in enumerate(pool.map(_compile_job, work), 1):
                v = meta["variant"]
                log(f"  [{n}/{len(todo)}] {v['op']} {v['dtype']} d{v['head_dim']} {v['flavor']} "
                    f"sm{v['arch']}: {dt:.1f}s, {meta['cubin_bytes']} B cubin, "
                    f"{meta['shared']} B smem, {meta.get('registers')} registers, "
                    f"{meta.get('stack_bytes')} B stack")
    metas = [json.loads((d / "meta.json").read_text()) for d in dirs]
    cubins = [d / "kernel.cubin" for d in dirs]
    t_pack = time.perf_counter()
    images, placement = pack_images(metas, cubins, out_dir / "images", jobs)
    log(f"aot-sdpa build: {len(images)} images, {sum(im['packed_bytes'] for im in images)} B "
        f"packed, in {time.perf_counter() - t_pack:.1f} s")
    source = render(spec, metas, images, placement)
    changed = _write_if_changed(out_dir / "aot_kernels.cpp", source)
    inventory = [dict(m["variant"], name=v.name, shared=m["shared"], cubin_bytes=m["cubin_bytes"],
                      registers=m.get("registers"), stack_bytes=m.get("stack_bytes"),
                      image=images[g]["name"], image_offset=off, cubin_sha256=sha)
                 for v, m, (g, off, _, sha) in zip(spec.variants, metas, placement)]
    _write_if_changed(out_dir / "inventory.json", json.dumps(inventory, indent=1))
    summary = {"variants": len(metas), "compiled": len(todo), "generated_changed": changed,
               "cubin_bytes": sum(m["cubin_bytes"] for m in metas),
               "packed_bytes": sum(im["packed_bytes"] for im in images),
               "seconds": round(time.perf_counter() - t0, 2)}
    log(f"aot-sdpa build: done in {summary['seconds']} s ({summary['cubin_bytes']} cubin bytes, "
        f"{summary['packed_bytes']} packed)")
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "gen")
    ap.add_argument("--cache", type=Path, default=ROOT / "build" / "aot_cache")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--ops", type=str, default=None, help="comma-separated subset of ops")
    a = ap.parse_args(argv)
    only = set(a.ops.split(",")) if a.ops else None
    build(a.out, a.cache, a.jobs, only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

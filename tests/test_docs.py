"""Docs match the code: every file a document or a native source names exists (CPU)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.(?:md|py|toml|cpp|h|in|sh|csv|png|json|c))"
                  r"(?![\w/-])")
# generated at build time (never in git), or named as examples of what a user writes
GENERATED = {"build/gen/aot_kernels.cpp", "aot_kernels.cpp", "build/gen/inventory.json",
             "meta.json"}
EXTERNAL = {"cuda.h"}  # the CUDA driver API header Triton bundles (build_tools/toolchain.py)
SYSTEM_INCLUDE = re.compile(r"#include <[^>]+>")


def _documents():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
            *sorted((ROOT / "benchmarks").glob("*.md")), *sorted((ROOT / "csrc").glob("*")),
            *sorted((ROOT / "build_tools" / "templates").glob("*.in"))]
    results = ROOT / "benchmarks" / "results" / "README.md"
    return [d for d in docs + [results] if d.is_file()]


def _exists(name: str, doc: Path) -> bool:
    if name in GENERATED or name in EXTERNAL or name.startswith(("build/", "dist/", "http")):
        return True
    candidates = [ROOT / name, doc.parent / name]
    for top in ("docs", "csrc", "kernels", "build_tools", "python/aot_sdpa", "tests",
                "benchmarks", "benchmarks/results", "docs/theory"):
        candidates.append(ROOT / top / name)
    return any(c.exists() for c in candidates)


def test_every_named_file_exists():
    missing = []
    for doc in _documents():
        for name in PATH.findall(SYSTEM_INCLUDE.sub("", doc.read_text())):
            if not _exists(name, doc):
                missing.append(f"{doc.relative_to(ROOT)}: {name}")
    assert not missing, "\n".join(missing)


def test_the_scan_sees_paths():
    # guard against a regex that silently matches nothing
    names = PATH.findall((ROOT / "README.md").read_text())
    assert "docs/design.md" in names and "kernels/variants.toml" in names or \
        "docs/phase9_backward.md" in names

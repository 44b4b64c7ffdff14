"""Private PyTorch APIs are used in one module only, each with a fallback (CPU)."""

import re
from pathlib import Path

import torch

from aot_sdpa import _autograd, _torch_compat

PKG = Path(_torch_compat.__file__).parent
PRIVATE = re.compile(r"torch\._C\b|\b_current_level\b|_DisableFuncTorch|torch\._\w+")


def test_private_torch_apis_only_in_the_compat_module():
    for path in PKG.glob("*.py"):
        if path.name == "_torch_compat.py":
            continue
        hits = PRIVATE.findall(path.read_text())
        assert not hits, f"{path.name} uses private torch APIs {hits}"


def test_fallbacks_take_the_safe_path(monkeypatch):
    q = torch.zeros(1, 1, 2, 4)
    assert not _torch_compat.functorch_active() and not _torch_compat.forward_ad_active()
    assert not _autograd._differentiated(q, q, q)
    # without the private probes, every call is treated as possibly differentiated (the
    # autograd path handles any transform; the raw path would not)
    monkeypatch.setattr(_torch_compat, "_peek", None)
    assert _torch_compat.functorch_active()
    monkeypatch.setattr(_torch_compat.fwAD, "_current_level", None, raising=False)
    monkeypatch.delattr(_torch_compat.fwAD, "_current_level")
    assert _torch_compat.forward_ad_active()


def test_stream_fallback_is_the_public_api(monkeypatch):
    calls = []

    class Stream:
        cuda_stream = 1234

    monkeypatch.setattr(_torch_compat, "_raw_stream", None)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda d: calls.append(d) or Stream())
    assert _torch_compat.current_raw_stream(3) == 1234 and calls == [3]

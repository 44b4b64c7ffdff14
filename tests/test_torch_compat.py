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


def _lowered_state(x):
    """Inside a torch.func.jvp: (level, whether the jvp is the innermost transform inside
    JvpLevel.lower(), forward grad mode there, after the block: innermost again, mode)."""
    jl = _torch_compat.innermost_jvp_level()
    assert jl is not None and jl.level() >= 1
    peek = torch._C._functorch.peek_interpreter_stack
    with jl.lower():
        inside = (peek() is None or peek().level() < jl.level(), torch._C._is_fwd_grad_enabled())
    after = (peek() is not None and peek().level() == jl.level(), torch._C._is_fwd_grad_enabled())
    return x, (inside, after)


def test_jvp_level_lowers_as_torchs_interpreter():
    """JvpLevel.lower() (the fused jvp path's lean stand-in for torch's JvpInterpreter) pops
    the jvp off the transform stack for its block and pushes it back, leaving forward grad as
    it was; where the jvp was entered with forward grad off it also keeps it off inside, as
    torch's does (prevFwdGradMode), and restores it after."""
    x = torch.zeros(3)
    seen = []
    torch.func.jvp(lambda a: seen.append(_lowered_state(a)[1]) or a, (x,), (x,))
    assert seen == [((True, True), (True, True))]
    assert _torch_compat.innermost_jvp_level() is None  # outside any transform
    # torch.func.grad around: jvp still the innermost, the grad level stays on the stack
    seen.clear()
    torch.func.grad(lambda a: torch.func.jvp(
        lambda b: seen.append(_lowered_state(b)[1]) or b, (a,), (a,))[1].sum())(x)
    assert seen == [((True, True), (True, True))]
    # entered with forward grad off: off inside the lowered block, on again after it
    seen.clear()
    with torch.autograd.forward_ad._set_fwd_grad_enabled(False):
        torch.func.jvp(lambda a: seen.append(_lowered_state(a)[1]) or a, (x,), (x,))
        assert not torch._C._is_fwd_grad_enabled()
    assert seen == [((True, False), (True, True))]
    # vmap innermost: not a jvp level
    assert torch.func.vmap(lambda a: torch.tensor(
        _torch_compat.innermost_jvp_level() is None))(torch.zeros(2, 1)).all()


def test_plain_call_only_where_no_derivative_can_pass(monkeypatch):
    """plain_call sends a forward straight to the kernels' fast path, past autograd: it must be
    False wherever a derivative may pass through (a wrong True would drop a gradient)."""
    plain = _torch_compat.plain_call
    q = torch.zeros(1, 1, 2, 4)
    assert plain(q, q, q)
    g = q.clone().requires_grad_()
    assert not plain(q, g, q)
    with torch.no_grad():
        assert plain(q, g, q)
    with torch.inference_mode():
        assert plain(q, q, q)
    seen = []
    torch.func.vmap(lambda x: seen.append(plain(x, x, x)) or x)(q)
    torch.func.grad(lambda x: seen.append(plain(x, x, x)) or x.sum())(q)
    torch.func.jvp(lambda x: seen.append(plain(x, x, x)) or x, (q,), (q,))
    with torch.autograd.forward_ad.dual_level():  # a dual level, even with plain tensors
        seen.append(plain(q, q, q))
    assert seen == [False] * 4
    assert not plain(torch.nn.Parameter(q, requires_grad=False), q, q)  # a subclass
    assert not plain([q], q, q)
    monkeypatch.setattr(_torch_compat, "compiling", lambda: True)
    assert not plain(q, q, q)
    monkeypatch.undo()
    monkeypatch.setattr(_torch_compat, "_peek", None)  # no probe: never plain
    assert not plain(q, q, q)

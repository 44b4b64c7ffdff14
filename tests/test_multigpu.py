"""Two GPUs: correct results on device 1 and alternating calls on devices 0 and 1 (each device
loads its own module); every path a model takes (the drop-in's C fast path and its per-device
stats scratch, causal, grouped heads, a key-padding mask, autograd, torch.func.jvp, head dims in
the split and 128 buckets) gives device 0's bits on device 1, also from two threads driving
both devices at once and inside a CUDA graph captured on device 1. Run on a 2-GPU machine:
pytest -m multigpu."""

import threading

import pytest
import torch

import aot_sdpa
from aot_sdpa import reference

from _helpers import qkv, randn, rel_err

pytestmark = [pytest.mark.gpu, pytest.mark.multigpu]


def _check(dev, dtype=torch.float16):
    q, k, v = qkv(2, 3, 113, 203, 40, dtype, seed=dev, device=f"cuda:{dev}")
    do = randn(q.shape, dtype, device=f"cuda:{dev}", seed=5)
    o, m, l = aot_sdpa.triton_sdpa_fused(q, k, v)
    assert o.device == q.device and m.device == q.device
    ro, rm, rl = reference.forward(q.double(), k.double(), v.double())
    assert rel_err(o, ro) < 2e-3 and rel_err(l, rl) < 1e-3
    dq, dk, dv = aot_sdpa.sdpa_bwd(q, k, v, do, m, l, o=o)
    rdq, rdk, rdv = reference.backward(q.double(), k.double(), v.double(), do.double(), m, l)
    assert rel_err(dq, rdq) < 5e-3 and rel_err(dk, rdk) < 5e-3 and rel_err(dv, rdv) < 5e-3
    t = aot_sdpa.sdpa_jvp(q, k, v, do, k, v, m, l)
    rt = reference.jvp(q.double(), k.double(), v.double(), do.double(), k.double(), v.double(),
                       m, l)
    assert rel_err(t, rt) < 5e-3


def test_device_1_first_then_alternate():
    _check(1)  # device 1 before device 0 ever ran: its own module, its own context
    for _ in range(5):
        _check(0)
        _check(1)


def test_current_device_does_not_matter():
    with torch.cuda.device(0):
        _check(1)
    with torch.cuda.device(1):
        _check(0)


def test_mixed_devices_rejected():
    q, k, v = qkv(1, 2, 8, 8, 16, torch.float16, device="cuda:0")
    with pytest.raises(ValueError, match="k is on cuda:1 but q is on cuda:0"):
        aot_sdpa.triton_sdpa_fused(q, k.to("cuda:1"), v)


_OTHER = 1  # the second device of the tests below (a check of the tests themselves on one GPU
# may set it to 0: device 0 then plays both parts)


def _inputs(seed, B=2, H=8, Hkv=2, T=197, M=211, D=64, dtype=torch.float16):
    """q, k, v (Hkv heads), do: made on the CPU, so that both devices get the same values."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=g)).to(dtype)
            for s in ((B, H, T, D), (B, Hkv, M, D), (B, Hkv, M, D), (B, H, T, D))]


def _workload(dev: int, seed: int = 0, func_jvp: bool = True) -> dict:
    """Every path a model on cuda:`dev` takes, at awkward lengths (T = 197, M = 211); results on
    the CPU. 16-bit only: its kernels have no atomics, so two runs agree bit for bit. func_jvp:
    include torch.func.jvp, whose forward-AD level is process-wide in torch (not for threads)."""
    q, k, v, do = (x.to(f"cuda:{dev}") for x in _inputs(seed))
    group = q.shape[1] // k.shape[1]
    kh, vh = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)  # H heads each
    sdpa = aot_sdpa.scaled_dot_product_attention
    pad = torch.ones(q.shape[0], 1, 1, k.shape[2], dtype=torch.bool)
    pad[1, ..., 150:] = False  # batch 1 sees its first 150 keys only
    out = {"drop-in": sdpa(q, kh, vh),  # the C fast path; its stats go to the device's scratch
           "drop-in, causal, grouped heads": sdpa(q, k, v, is_causal=True, enable_gqa=True),
           "drop-in, key padding": sdpa(q, kh, vh, attn_mask=pad.to(q.device))}
    out.update(zip(("fused o", "fused m", "fused l"), aot_sdpa.triton_sdpa_fused(q, kh, vh)))
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]
    sdpa(*leaves, is_causal=True, enable_gqa=True).backward(do)  # autograd: dQ, dK/dV kernels
    out.update(zip(("grad q", "grad k", "grad v"), (x.grad for x in leaves)))
    if func_jvp:
        o, to = torch.func.jvp(lambda a, b, c: sdpa(a, b, c, is_causal=True), (q, kh, vh),
                               (do, vh, kh))  # the fused primal + tangent kernel
        out.update({"func.jvp o": o, "func.jvp tangent": to})
    for D in (72, 128):  # the split bucket 80 (ragged rows) and bucket 128
        qd, kd, vd, _ = (x.to(q.device) for x in _inputs(seed + D, Hkv=8, D=D))
        out[f"drop-in D={D}"] = sdpa(qd, kd, vd)
    return {name: x.cpu() for name, x in out.items()}


def _differ(a: dict, b: dict) -> list:
    return [name for name in a if not torch.equal(a[name], b[name])]


def test_every_path_on_device_1_gives_device_0s_bits():
    ones = _workload(_OTHER)
    zeros = _workload(0)
    assert not _differ(ones, zeros)
    q, k, v, _ = (x.double() for x in _inputs(0))
    ref = reference.forward(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1))[0]
    assert rel_err(ones["drop-in"], ref) < 2e-3  # and device 0 is the whole suite's


def test_two_threads_drive_both_devices_at_once():
    """Each thread runs the workload on its own device and a side stream of it, repeatedly,
    while the other does the same on the other device; every run must give the bits of a run
    made alone (torch.func.jvp aside: torch's forward-AD level is one for the process)."""
    alone = {dev: _workload(dev, func_jvp=False) for dev in (0, _OTHER)}
    torch.cuda.synchronize(0), torch.cuda.synchronize(_OTHER)
    failures = []

    def drive(dev):
        try:
            with torch.cuda.device(dev), torch.cuda.stream(torch.cuda.Stream(dev)):
                for i in range(8):
                    bad = _differ(_workload(dev, func_jvp=False), alone[dev])
                    if bad:
                        failures.append((dev, i, bad))
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            failures.append((dev, repr(e)))

    threads = [threading.Thread(target=drive, args=(dev,)) for dev in (0, _OTHER)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_cuda_graph_captured_on_device_1():
    """A graph of the drop-in (fast path, causal) and the fused forward captured on device 1
    replays new values into device 1's results, equal to eager calls bit for bit."""
    dev = torch.device(f"cuda:{_OTHER}")
    with torch.cuda.device(dev):
        static = [x.to(dev) for x in _inputs(3, Hkv=8)[:3]]
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):  # warm up off the capture stream, as torch asks
            aot_sdpa.scaled_dot_product_attention(*static, is_causal=True)
            aot_sdpa.triton_sdpa_fused(*static)
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            o_causal = aot_sdpa.scaled_dot_product_attention(*static, is_causal=True)
            o, m, l = aot_sdpa.triton_sdpa_fused(*static)
        for x, new in zip(static, _inputs(4, Hkv=8)[:3]):
            x.copy_(new.to(dev))
        graph.replay()
        torch.cuda.synchronize(dev)
        assert torch.equal(o_causal, aot_sdpa.scaled_dot_product_attention(*static, is_causal=True))
        for got, eager in zip((o, m, l), aot_sdpa.triton_sdpa_fused(*static)):
            assert torch.equal(got, eager)

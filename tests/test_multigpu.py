"""Two GPUs: correct results on device 1 and alternating calls on devices 0 and 1 (each device
loads its own module). Run on a 2-GPU machine: pytest -m multigpu."""

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

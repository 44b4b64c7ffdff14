"""Contract checks (CPU): every rule raises ValueError/TypeError naming the argument.

The device rule is checked last by every op, so every other rule is reachable with CPU
tensors; device mixing is exercised with the 'meta' device.
"""

import math

import pytest
import torch

import aot_sdpa

F16 = torch.float16


def t(*shape, dtype=F16, device="cpu"):
    return torch.zeros(shape, dtype=dtype, device=device)


def qkv(B=1, H=2, T=5, M=7, D=16, dtype=F16):
    return t(B, H, T, D, dtype=dtype), t(B, H, M, D, dtype=dtype), t(B, H, M, D, dtype=dtype)


def stats(B=1, H=2, T=5):
    return t(B, H, T, dtype=torch.float32), t(B, H, T, dtype=torch.float32)


FWD = aot_sdpa.triton_sdpa_fused

# (case id, thunk, exception type, message pattern)
CASES = [
    ("q not a tensor", lambda: FWD([1.0], *qkv()[1:]), TypeError, r"q must be a torch\.Tensor"),
    ("k not a tensor", lambda: FWD(qkv()[0], None, qkv()[2]), TypeError, r"k must be a torch\.Tensor"),
    ("float64", lambda: FWD(*qkv(dtype=torch.float64)), TypeError, r"q has dtype torch\.float64"),
    ("int", lambda: FWD(*qkv(dtype=torch.int32)), TypeError, r"q has dtype torch\.int32"),
    ("bool", lambda: FWD(*qkv(dtype=torch.bool)), TypeError, r"q has dtype torch\.bool"),
    ("mixed dtype k", lambda: FWD(qkv()[0], t(1, 2, 7, 16, dtype=torch.bfloat16), qkv()[2]),
     TypeError, r"k has dtype torch\.bfloat16 but q has torch\.float16"),
    ("mixed dtype v", lambda: FWD(*qkv()[:2], t(1, 2, 7, 16, dtype=torch.float32)), TypeError,
     r"v has dtype torch\.float32"),
    ("rank 3 q", lambda: FWD(t(2, 5, 16), *qkv()[1:]), ValueError, r"q must have rank 4"),
    ("rank 5 k", lambda: FWD(qkv()[0], t(1, 2, 7, 16, 1), qkv()[2]), ValueError,
     r"k must have rank 4"),
    ("batch mismatch", lambda: FWD(t(2, 2, 5, 16), *qkv()[1:]), ValueError,
     r"k has batch 1 but q has 2"),
    ("heads not a multiple", lambda: FWD(t(1, 3, 5, 16), *qkv()[1:]), ValueError,
     r"k has 2 heads but q has 3: the query heads must be a multiple"),
    ("more kv heads than q", lambda: FWD(t(1, 2, 5, 16), *qkv(H=4)[1:]), ValueError,
     r"k has 4 heads but q has 2"),
    ("gqa rows past int32", lambda: FWD(torch.empty(1, 4, 2**30, 16, dtype=F16, device="meta"),
                                        *(torch.empty(1, 1, 7, 16, dtype=F16, device="meta"),) * 2),
     ValueError, r"\(H/Hkv\)\*T must be at most"),
    ("D mismatch", lambda: FWD(t(1, 2, 5, 32), *qkv()[1:]), ValueError, r"k has head dim 16 but q has 32"),
    ("Dv != D", lambda: FWD(*qkv()[:2], t(1, 2, 7, 8)), ValueError, r"Dv=8 but D=16"),
    ("v M mismatch", lambda: FWD(*qkv()[:2], t(1, 2, 6, 16)), ValueError, r"v has \(B, H, M\)"),
    ("D = 0", lambda: FWD(*qkv(D=0)), ValueError, r"1 <= D <= 256"),
    ("D > 256", lambda: FWD(*qkv(D=300)), ValueError, r"head dim D=300"),
    ("M = 0", lambda: FWD(*qkv(M=0)), ValueError, r"M=0 keys"),
    ("q last stride", lambda: FWD(t(1, 2, 16, 5).transpose(-1, -2), *qkv()[1:]), ValueError,
     r"q must have stride 1 in its last"),
    ("v last stride", lambda: FWD(*qkv()[:2], t(1, 2, 16, 7).transpose(-1, -2)), ValueError,
     r"v must have stride 1"),
    ("scale str", lambda: FWD(*qkv(), scale="0.1"), TypeError, r"scale must be a real number"),
    ("scale bool", lambda: FWD(*qkv(), scale=True), TypeError, r"scale must be a real number"),
    ("scale tensor", lambda: FWD(*qkv(), scale=torch.tensor(0.1)), TypeError, r"scale must be"),
    ("scale nan", lambda: FWD(*qkv(), scale=math.nan), ValueError, r"scale must be finite"),
    ("scale inf", lambda: FWD(*qkv(), scale=math.inf), ValueError, r"scale must be finite"),
    ("cpu tensors", lambda: FWD(*qkv()), ValueError, r"q is on cpu; aot_sdpa kernels need CUDA"),
    ("two devices", lambda: FWD(qkv()[0], t(1, 2, 7, 16, device="meta"), qkv()[2]), ValueError,
     r"k is on meta but q is on cpu"),
    # backward
    ("do shape", lambda: aot_sdpa.sdpa_bwd(*qkv(), t(1, 2, 4, 16), *stats()), ValueError,
     r"do has shape \(1, 2, 4, 16\) but must be shaped like q"),
    ("do dtype", lambda: aot_sdpa.sdpa_bwd(*qkv(), t(1, 2, 5, 16, dtype=torch.float32), *stats()),
     TypeError, r"do has dtype torch\.float32 but q has torch\.float16"),
    ("do stride", lambda: aot_sdpa.sdpa_bwd(*qkv(), t(1, 2, 16, 5).transpose(-1, -2), *stats()),
     ValueError, r"do must have stride 1"),
    ("m dtype", lambda: aot_sdpa.sdpa_bwd(*qkv(), t(1, 2, 5, 16), t(1, 2, 5), stats()[1]),
     TypeError, r"m must be float32 row stats"),
    ("l shape", lambda: aot_sdpa.sdpa_bwd(*qkv(), t(1, 2, 5, 16), stats()[0],
                                          t(1, 2, 6, dtype=torch.float32)),
     ValueError, r"l must have shape \(B, H, T\) = \(1, 2, 5\)"),
    ("l not tensor", lambda: aot_sdpa.sdpa_bwd_dq(*qkv(), t(1, 2, 5, 16), stats()[0], 1.0),
     TypeError, r"l must be a torch\.Tensor"),
    ("m device", lambda: aot_sdpa.sdpa_bwd_dk(*qkv(), t(1, 2, 5, 16),
                                             t(1, 2, 5, dtype=torch.float32, device="meta"),
                                             stats()[1]), ValueError, r"m is on meta"),
    ("o shape", lambda: aot_sdpa.sdpa_bwd(*qkv(), t(1, 2, 5, 16), *stats(), o=t(1, 2, 5, 8)),
     ValueError, r"o has shape"),
    ("bwd_dv scale", lambda: aot_sdpa.sdpa_bwd_dv(*qkv(), t(1, 2, 5, 16), *stats(), scale=[1]),
     TypeError, r"scale must be a real number"),
    # JVP / HVP
    ("jvp tangent shape", lambda: aot_sdpa.sdpa_jvp(*qkv(), t(1, 2, 5, 16), t(1, 2, 6, 16),
                                                    t(1, 2, 7, 16), *stats()),
     ValueError, r"dk has shape \(1, 2, 6, 16\) but must be shaped like k"),
    ("jvp tangent dtype", lambda: aot_sdpa.sdpa_jvp(*qkv(), t(1, 2, 5, 16, dtype=torch.bfloat16),
                                                    t(1, 2, 7, 16), t(1, 2, 7, 16), *stats()),
     TypeError, r"dq has dtype torch\.bfloat16"),
    ("jvp stats", lambda: aot_sdpa.sdpa_jvp(*qkv(), t(1, 2, 5, 16), t(1, 2, 7, 16),
                                            t(1, 2, 7, 16), t(1, 2, 5, dtype=torch.float16),
                                            stats()[1]), TypeError, r"m must be float32"),
    ("fwd_jvp tangent", lambda: aot_sdpa.sdpa_fwd_jvp(*qkv(), t(1, 2, 5, 16), t(1, 2, 7, 16),
                                                      t(1, 2, 7, 8)),
     ValueError, r"dv has shape"),
    ("hvp eps 0", lambda: aot_sdpa.hvp_fd_vjp(*qkv(), t(1, 2, 5, 16), *qkv(), eps=0.0),
     ValueError, r"eps must be finite and > 0"),
    ("hvp eps negative", lambda: aot_sdpa.hvp_fd_vjp(*qkv(), t(1, 2, 5, 16), *qkv(), eps=-1e-3),
     ValueError, r"eps must be finite and > 0"),
    ("hvp eps type", lambda: aot_sdpa.hvp_fd_vjp(*qkv(), t(1, 2, 5, 16), *qkv(), eps="1e-3"),
     TypeError, r"eps must be a real number"),
    ("hvp tangent", lambda: aot_sdpa.hvp_fd_vjp(*qkv(), t(1, 2, 5, 16), t(1, 2, 5, 8),
                                                *qkv()[1:]), ValueError, r"tq has shape"),
    ("bwd_jvp tangent", lambda: aot_sdpa.sdpa_bwd_jvp(*qkv(), t(1, 2, 5, 16), *stats(),
                                                      t(1, 2, 5, 16), t(1, 2, 6, 16),
                                                      t(1, 2, 7, 16)),
     ValueError, r"tk has shape \(1, 2, 6, 16\) but must be shaped like k"),
    ("bwd_jvp tdo dtype", lambda: aot_sdpa.sdpa_bwd_jvp(*qkv(), t(1, 2, 5, 16), *stats(), *qkv(),
                                                        t(1, 2, 5, 16, dtype=torch.float32)),
     TypeError, r"tdo has dtype torch\.float32"),
    ("bwd_jvp stats", lambda: aot_sdpa.sdpa_bwd_jvp(*qkv(), t(1, 2, 5, 16), stats()[0],
                                                    t(1, 2, 5), *qkv()),
     TypeError, r"l must be float32"),
    ("sdpa_hvp do", lambda: aot_sdpa.sdpa_hvp(*qkv(), t(1, 2, 4, 16), *qkv()), ValueError,
     r"do has shape"),
    ("sdpa_hvp cpu", lambda: aot_sdpa.sdpa_hvp(*qkv(), t(1, 2, 5, 16), *qkv()), ValueError,
     r"aot_sdpa kernels need CUDA"),
    ("B*H too large", lambda: FWD(torch.empty(2**31, 1, 1, 16, device="meta", dtype=F16),
                                  *(torch.empty(1, 1, 1, 16, device="meta", dtype=F16)
                                    .expand(2**31, 1, 1, 16) for _ in range(2))),
     ValueError, r"B\*H must be below 2\*\*31"),
    ("T too long", lambda: FWD(torch.empty(1, 1, 2**31 - 1000, 1, device="meta", dtype=F16),
                               *(torch.empty(1, 1, 7, 1, device="meta", dtype=F16)
                                 for _ in range(2))),
     ValueError, r"T, M at most 2147482624"),
    # validation before any attribute is read (a list has no requires_grad)
    ("dropin list q", lambda: aot_sdpa.scaled_dot_product_attention([1.0], *qkv()[1:]),
     TypeError, r"query must be a torch\.Tensor"),
    ("bwd list do", lambda: aot_sdpa.sdpa_bwd(*qkv(), [1.0], *stats()), TypeError,
     r"do must be a torch\.Tensor"),
    ("jvp list dq", lambda: aot_sdpa.sdpa_jvp(*qkv(), "dq", *qkv()[1:], *stats()), TypeError,
     r"dq must be a torch\.Tensor"),
    ("fwd_jvp list", lambda: aot_sdpa.sdpa_fwd_jvp(*qkv(), None, *qkv()[1:]), TypeError,
     r"dq must be a torch\.Tensor"),
    # drop-in
    # attention masks
    ("mask not a tensor", lambda: FWD(*qkv(), mask=[[True]]), TypeError,
     r"mask must be a torch\.Tensor"),
    ("mask int", lambda: FWD(*qkv(), mask=t(5, 7, dtype=torch.int32)), TypeError,
     r"mask must be bool \(True = the key takes part\) or float16/bfloat16/float32 \(added to "
     r"the scores\), got torch\.int32"),
    ("mask float64", lambda: aot_sdpa.sdpa_jvp(*qkv(), *qkv(), *stats(),
                                               mask=t(7, dtype=torch.float64)),
     TypeError, r"mask must be bool .* got torch\.float64"),
    ("mask requires grad",
     lambda: FWD(*qkv(), mask=t(1, 1, 5, 7, dtype=torch.float32).requires_grad_()), ValueError,
     r"mask requires grad: aot_sdpa computes no gradient for the mask; pass mask\.detach\(\)"),
    ("mask shape", lambda: FWD(*qkv(), mask=t(5, 6, dtype=torch.bool)), ValueError,
     r"mask of shape \(5, 6\) does not broadcast to \(B, H, T, M\) = \(1, 2, 5, 7\)"),
    ("mask batch", lambda: aot_sdpa.sdpa_bwd(*qkv(), t(1, 2, 5, 16), *stats(),
                                             mask=t(2, 1, 1, 7, dtype=torch.bool)),
     ValueError, r"mask of shape \(2, 1, 1, 7\) does not broadcast"),
    # 4-D masks take check_mask's fast path: each dim that does not broadcast still raises
    ("mask heads 4-D", lambda: FWD(*qkv(), mask=t(1, 3, 1, 7, dtype=torch.bool)), ValueError,
     r"mask of shape \(1, 3, 1, 7\) does not broadcast to \(B, H, T, M\) = \(1, 2, 5, 7\)"),
    ("mask rows 4-D", lambda: FWD(*qkv(), mask=t(1, 1, 4, 7, dtype=torch.bool)), ValueError,
     r"mask of shape \(1, 1, 4, 7\) does not broadcast"),
    ("mask keys 4-D", lambda: FWD(*qkv(), mask=t(1, 1, 1, 6)), ValueError,
     r"mask of shape \(1, 1, 1, 6\) does not broadcast"),
    ("mask int 4-D", lambda: FWD(*qkv(), mask=t(1, 1, 5, 7, dtype=torch.int64)), TypeError,
     r"mask must be bool .* got torch\.int64"),
    ("mask rank 5", lambda: aot_sdpa.sdpa_fwd_jvp(*qkv(), *qkv(),
                                                  mask=t(1, 1, 2, 5, 7, dtype=torch.bool)),
     ValueError, r"mask of shape \(1, 1, 2, 5, 7\) does not broadcast"),
    ("dropin mask with is_causal",
     lambda: aot_sdpa.scaled_dot_product_attention(*qkv(), attn_mask=t(5, 7, dtype=torch.bool),
                                                   is_causal=True),
     ValueError, r"attn_mask and is_causal=True cannot be combined"),
    ("dropin mask shape", lambda: aot_sdpa.scaled_dot_product_attention(
        *qkv(), attn_mask=t(3, 7, dtype=torch.bool)), ValueError,
     r"mask of shape \(3, 7\) does not broadcast"),
    ("dropin dropout", lambda: aot_sdpa.scaled_dot_product_attention(*qkv(), dropout_p=0.5),
     NotImplementedError, r"dropout_p"),
    ("causal unknown name", lambda: FWD(*qkv(), causal="lower"), ValueError,
     r"causal must be False, True, 'top_left' or 'bottom_right', got 'lower'"),
    ("causal type", lambda: aot_sdpa.sdpa_bwd(*qkv(), t(1, 2, 5, 16), *stats(), causal=0.5),
     TypeError, r"causal must be a bool or 'top_left' / 'bottom_right', got float"),
    ("causal code out of range", lambda: aot_sdpa.sdpa_jvp(*qkv(), *qkv(), *stats(), causal=3),
     TypeError, r"causal must be a bool"),
    ("dropin heads differ without enable_gqa",
     lambda: aot_sdpa.scaled_dot_product_attention(t(1, 4, 5, 16), *qkv()[1:]), ValueError,
     r"key has 2 heads but query has 4: pass enable_gqa=True"),
    ("dropin gqa heads not a multiple",
     lambda: aot_sdpa.scaled_dot_product_attention(t(1, 3, 5, 16), *qkv()[1:], enable_gqa=True),
     ValueError, r"the query heads must be a multiple"),
    ("dropin D > 256", lambda: aot_sdpa.scaled_dot_product_attention(*qkv(D=257)), ValueError,
     r"head dim D=257 of q must satisfy 1 <= D <= 256"),
    ("fp32 D > 128", lambda: FWD(*qkv(D=136, dtype=torch.float32)), NotImplementedError,
     r"head dim D=136 with float32 is not supported: float32 kernels are compiled for D <= 128"),
]


@pytest.mark.parametrize("case,thunk,exc,pattern", CASES, ids=[c[0] for c in CASES])
def test_contract_violation_raises_named_error(case, thunk, exc, pattern):
    with pytest.raises(exc, match=pattern):
        thunk()


def test_no_assertion_errors_anywhere_in_the_package():
    from pathlib import Path

    pkg = Path(aot_sdpa.__file__).parent
    for path in pkg.glob("*.py"):
        assert "assert " not in path.read_text(), f"{path.name} validates with assert"


@pytest.mark.parametrize("mode,fp32_code", [("highest", 2), ("high", 3), ("medium", 3)])
def test_dtype_code_follows_torch_matmul_precision(mode, fp32_code):
    """float32 dispatches its TF32 variants (code 3) exactly when torch allows TF32."""
    from aot_sdpa._checks import _check_attention_rules, check_attention

    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(mode)
    try:
        for dtype, code in ((torch.float16, 0), (torch.bfloat16, 1), (torch.float32, fp32_code)):
            q, k, v = (torch.randn(2, 3, n, 40, dtype=dtype) for n in (5, 7, 7))
            fast = check_attention(q, k, v, None)
            assert fast == (2, 3, 5, 7, 40, code, 1 / math.sqrt(40))
            # the fast path and the rule-by-rule checks agree on what they accept
            assert _check_attention_rules(q, k, v, None, ("q", "k", "v")) == fast
            assert check_attention(q, k, v, 0.25)[-1] == 0.25
    finally:
        torch.set_float32_matmul_precision(old)

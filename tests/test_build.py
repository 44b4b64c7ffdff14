"""Build inventory and packaging (CPU): every variant present, import without Triton, the
driver-less error, and the build tools' cache key and parameter classification."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import aot_sdpa

ROOT = Path(__file__).resolve().parent.parent
DTYPES = {"float16", "bfloat16", "float32"}
BUCKETS = {16, 32, 64}
ARCHS = {"sm_90", "sm_80"}
OPS = {"fwd", "bwd_z_from_o", "bwd_z_from_stats", "bwd_dkdv", "bwd_dk", "bwd_dv", "bwd_dq",
       "jvp", "fwd_jvp"}
FAST_OPS = {"fwd", "bwd_dkdv", "bwd_dq", "jvp", "fwd_jvp"}


def test_inventory_has_every_op_dtype_bucket_arch():
    inv = aot_sdpa.kernel_inventory()
    have = {(r["op"], r["dtype"], r["head_dim"], r["arch"], r["flavor"]) for r in inv}
    for op in OPS:
        for dt in DTYPES:
            for d in BUCKETS:
                for arch in ARCHS:
                    assert (op, dt, d, arch, "general") in have
                    if op in FAST_OPS:
                        assert (op, dt, d, arch, "fast") in have
    assert len(inv) == len(have), "duplicate variants"
    for r in inv:
        assert r["cubin_bytes"] > 1000 and r["num_warps"] in (1, 2, 4, 8)
        assert r["num_stages"] >= 1 and r["shared_bytes"] >= 0
        assert r["block_m"] > 0 or r["block_n"] > 0
        limit = 227 * 1024 if r["arch"] == "sm_90" else 163 * 1024
        assert r["shared_bytes"] <= limit
    assert sorted(aot_sdpa.built_archs()) == sorted(ARCHS)


def test_op_abi_matches_python_side():
    from aot_sdpa._native import OPS as abi

    assert set(abi) == OPS
    assert abi["fwd"][1] == ("Q", "K", "V", "O", "Mstat", "Lstat")
    assert abi["bwd_dkdv"][1] == ("Q", "K", "V", "DO", "Mstat", "Lstat", "Zbuf", "DK", "DV")
    assert abi["jvp"][1] == ("Q", "K", "V", "TQ", "TK", "TV", "Mstat", "Lstat", "TO")


def test_import_does_not_import_triton():
    code = "import sys, aot_sdpa; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_m_prints_inventory():
    out = subprocess.run([sys.executable, "-m", "aot_sdpa"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "kernel variants" in out.stdout and "fwd_jvp" in out.stdout


def test_launch_without_driver_raises_clear_runtime_error():
    if not aot_sdpa._C.driver_error():
        pytest.skip("a CUDA driver is present; this checks the driver-less machine")
    from aot_sdpa._native import OPS as abi

    with pytest.raises(RuntimeError, match="libcuda|cuInit"):
        aot_sdpa._C.launch(abi["fwd"][0], 0, 0, 0, [0] * 6, [0] * 15, (1, 1, 1, 1, 16), 1.0)


def test_launch_rejects_wrong_arity():
    from aot_sdpa._native import OPS as abi

    with pytest.raises(ValueError, match="takes 6 pointers and 15 strides"):
        aot_sdpa._C.launch(abi["fwd"][0], 0, 0, 0, [0] * 5, [0] * 15, (1, 1, 1, 1, 16), 1.0)


def test_no_process_exit_in_native_code():
    for path in (ROOT / "csrc").glob("*"):
        text = path.read_text()
        for word in ("exit(", "abort(", "assert("):
            assert word not in text, f"{path.name} contains {word}"


# -- build tools (need Triton, which the test extras install) -----------------------------
triton = pytest.importorskip("triton")
sys.path.insert(0, str(ROOT))
from build_tools import variants as variants_mod  # noqa: E402
from build_tools.compile_variant import cache_key, classify_params  # noqa: E402


def _spec():
    return variants_mod.load(ROOT / "kernels" / "variants.toml")


def test_variants_expand_to_the_inventory_count():
    assert len(_spec().variants) == len(aot_sdpa.kernel_inventory())


def test_cache_key_tracks_source_variant_and_version(tmp_path):
    spec = _spec()
    v = spec.variants[0]
    kdir = tmp_path / "kernels"
    kdir.mkdir()
    for f in (ROOT / "kernels").glob("*.py"):
        (kdir / f.name).write_text(f.read_text())
    base = cache_key(kdir, v, spec.abi, "3.6.0")
    assert base == cache_key(kdir, v, spec.abi, "3.6.0")
    assert base != cache_key(kdir, v, spec.abi, "3.5.0")
    assert base != cache_key(kdir, spec.variants[1], spec.abi, "3.6.0")
    (kdir / v.source).write_text((kdir / v.source).read_text() + "\n# edit\n")
    assert base != cache_key(kdir, v, spec.abi, "3.6.0")


def test_param_classification_hints_only_data_tensors():
    abi = _spec().abi
    names = ["Q", "Mstat", "sm_scale", "stride_qz", "stride_mz", "T"]
    fast = {p["name"]: p for p in classify_params(names, abi, "fp16", "fast")}
    general = classify_params(names, abi, "fp16", "general")
    assert fast["Q"]["ty"] == "*fp16" and fast["Q"]["hint"]
    assert fast["Mstat"]["ty"] == "*fp32" and not fast["Mstat"]["hint"]
    assert fast["stride_qz"]["ty"] == "i64" and fast["stride_qz"]["hint"]
    assert not fast["stride_mz"]["hint"] and fast["T"]["ty"] == "i32"
    assert not any(p["hint"] for p in general)


def test_kernel_needing_scratch_is_rejected(tmp_path):
    """A kernel whose compile needs global scratch memory must fail the build."""
    src = tmp_path / "scratchy.py"
    src.write_text(textwrap.dedent('''
        import triton
        import triton.language as tl

        @triton.jit
        def k(X, N, BLOCK: tl.constexpr):
            desc = tl.make_tensor_descriptor(X, shape=[N], strides=[1], block_shape=[BLOCK])
            desc.store([0], desc.load([0]) + 1)
    '''))
    (tmp_path / "_common.py").write_text("")
    from build_tools.compile_variant import compile_variant
    from build_tools.variants import Variant

    v = Variant(op="t", source="scratchy.py", kernel="k", grid="T", dtype="fp32", head_dim=16,
                arch=90, flavor="general", blocks=(("BLOCK", 64),), constexprs=(), num_warps=4,
                num_stages=1)
    abi = {"fp32_pointers": [], "i32_scalars": ["N"], "fp32_scalars": [],
           "unaligned_stride_prefixes": []}
    with pytest.raises((RuntimeError, ValueError), match="scratch"):
        compile_variant(str(tmp_path), v, abi, str(tmp_path / "out"))


def test_rendered_launchers_match_the_abi(tmp_path):
    """The generated C++ packs every kernel parameter in order and checks exactly the hinted
    (fast-flavour) pointers and strides before choosing the fast variant."""
    from build_tools.compile_variant import classify_params
    from build_tools.render import render

    spec = _spec()
    names = ["Q", "K", "Mstat", "sm_scale", "stride_qz", "stride_kz", "stride_mz", "Z", "T", "D"]
    variants = [v for v in spec.variants if v.op == "fwd"][:2]  # general + fast of one dtype/D
    metas = []
    for v in variants:
        metas.append({"variant": v.as_json(), "kernel_name": v.kernel, "shared": 1024,
                      "num_warps": v.num_warps, "num_stages": v.num_stages, "cubin_bytes": 4,
                      "params": classify_params(names, spec.abi, v.dtype, v.flavor)})
    cubins = []
    for i, _ in enumerate(variants):
        p = tmp_path / f"k{i}.cubin"
        p.write_bytes(b"\0" * 4)
        cubins.append(p)
    src = render(spec, metas, cubins)
    # argument struct and packing in the kernel's parameter order, scratch pointers last
    assert "void* params[] = {&a.Q, &a.K, &a.Mstat, &a.sm_scale, &a.stride_qz, &a.stride_kz, " \
           "&a.stride_mz, &a.Z, &a.T, &a.D, &global_scratch, &profile_scratch};" in src
    # sizes come from the (Z, H, T, M, D) array by name
    assert "a->T = c->sizes[2];" in src and "a->D = c->sizes[4];" in src
    # fast check: data pointers Q, K and their strides; never the stats pointer or stride
    fast = src[src.index("static int aot_fwd_fast_ok"):].split("}", 1)[0]
    assert "c->ptrs[0] % 16u == 0" in fast and "c->ptrs[1] % 16u == 0" in fast
    assert "c->ptrs[2]" not in fast
    assert "c->strides[0] % 16 == 0" in fast and "c->strides[1] % 16 == 0" in fast
    assert "c->strides[2]" not in fast
    # both variants are in the dispatch table with their flavour flag and embedded cubin path
    assert src.count("AOT_INCBIN(aot_cubin_") == 2  # one embedded cubin per variant
    assert str(cubins[0].resolve()) in src and str(cubins[1].resolve()) in src

#!/usr/bin/env bash
# One device session: build, every test (GPU; soak and two-GPU where asked/present), benchmarks.
# Logs go to $OUT/all.log (the composition table to $OUT/compositions.md); CSV/PNG results to
# benchmarks/results and $OUT. A carried build/aot_cache is reused (cubins do not depend on
# the Python version); everything else is rebuilt.
#   BENCHES="hvp fwd"  benchmarks to run (default: host_overhead fwd bwd jvp hvp)
#   PYTEST_ARGS=...    extra pytest arguments;  SOAK=1  also the soak test
#   SANITIZE=1         compute-sanitizer memcheck (every dtype) and racecheck (fp16) of
#                      tests/_sanitize.py, log in $OUT/sanitizer.log
# A carried build/aot_cache.tar.xz (the cache packed to fit the device tool's carry limit) is
# unpacked first when build/aot_cache is absent.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/aot-sdpa-out}
mkdir -p "$OUT"
log="$OUT/all.log"
cd "$(dirname "$0")/.."
{
  nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  rm -rf build/gen python/aot_sdpa/*.so
  if [ -f build/aot_cache.tar.xz ] && [ ! -d build/aot_cache ]; then
    tar -xJf build/aot_cache.tar.xz
  fi
  /usr/bin/time -f "build: %e s" python3 -m pip install -q --no-build-isolation --no-deps -e . \
    || exit 1
  AOT_SDPA_REPORT="$OUT/compositions.md" timeout "${TEST_TIMEOUT:-900}" \
    python3 -m pytest -q tests -p no:warnings -rs ${PYTEST_ARGS:-}
  if [ "${SOAK:-0}" = 1 ]; then python3 -m pytest -q tests -m soak -p no:warnings; fi
  python3 -m pytest -q tests -m multigpu -p no:warnings -rs
  if [ "${SANITIZE:-0}" = 1 ]; then
    {
      echo "## memcheck, every dtype"
      compute-sanitizer --tool memcheck --error-exitcode 1 python3 tests/_sanitize.py
      echo "## racecheck, fp16"
      compute-sanitizer --tool racecheck --error-exitcode 1 python3 tests/_sanitize.py fast
    } > "$OUT/sanitizer.log" 2>&1
    grep -E "SUMMARY|workload done" "$OUT/sanitizer.log"
  fi
  cd benchmarks
  for b in ${BENCHES:-host_overhead fwd bwd jvp hvp}; do
    echo "=== bench_$b"
    timeout 300 python3 "bench_$b.py" 2>&1 | grep -v Warning
  done
} 2>&1 | tee "$log"

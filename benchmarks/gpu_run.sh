#!/usr/bin/env bash
# One device session: clean build, every test (GPU, soak, two-GPU where present), benchmarks.
# Logs go to $OUT/all.log; CSV/PNG results to benchmarks/results and $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/aot-sdpa-out}
mkdir -p "$OUT"
log="$OUT/all.log"
cd "$(dirname "$0")/.."
{
  nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  rm -rf build python/aot_sdpa/*.so
  /usr/bin/time -f "clean build: %e s" python3 -m pip install -q --no-build-isolation --no-deps -e . \
    || exit 1
  python3 -m pytest -q tests -p no:warnings -rs
  python3 -m pytest -q tests -m soak -p no:warnings
  python3 -m pytest -q tests -m multigpu -p no:warnings -rs
  cd benchmarks
  for b in ${BENCHES:-host_overhead fwd bwd jvp}; do
    echo "=== bench_$b"
    timeout 300 python3 "bench_$b.py" 2>&1 | grep -v Warning
  done
  echo "=== profile_host"
  python3 profile_host.py
} 2>&1 | tee "$log"

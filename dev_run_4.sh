#!/usr/bin/env bash
set -uo pipefail
export PYTHONUNBUFFERED=1
t0=$(date +%s)
{
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
git log --oneline -1
rm -rf build/aot_cache build/gen python/aot_sdpa/*.so
tar -xJf build/aot_cache.tar.xz
python3 -m pip install -v --no-build-isolation --no-deps -e . 2>&1 | grep -E "to compile|cached|error" | tail -5
echo "install done $(( $(date +%s) - t0 )) s"
} > $OUT/setup.log 2>&1
timeout 40 python3 -m pytest -q tests/test_fastpath.py -p no:warnings -rs > $OUT/pytest_fast.log 2>&1
echo "fast tests done $(( $(date +%s) - t0 )) s" >> $OUT/setup.log
left=$(( 225 - ($(date +%s) - t0) ))
timeout $left python3 -m pytest -q tests/test_forward_gpu.py tests/test_route.py tests/test_library.py tests/test_gqa_gpu.py -p no:warnings -x > $OUT/pytest_more.log 2>&1
echo "more tests done $(( $(date +%s) - t0 )) s" >> $OUT/setup.log

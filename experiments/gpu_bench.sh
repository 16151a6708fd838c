#!/usr/bin/env bash
# Issue 17's GPU measurements in one go, for a machine lent for minutes: the
# bench at batch 64 with an empty compilation cache, again from the cache
# (compile time from the cache), and at the paper's batch of 400 (MFU);
# then issue 44's memory report of the batch-400 train step with the GPU
# policy (benchmarks.memory: XLA:GPU's plan against the analytic bound, and
# the largest buffers), compile-only.
# Each run has its own time limit, and its JSON lands in $OUT as it finishes,
# so a run cut short still leaves the ones before it.
#
#   bash experiments/gpu_bench.sh                    # on the GPU machine
#   DEVICE=cpu MODEL_SIZE=tiny bash experiments/gpu_bench.sh   # smoke test here
#
# Environment: OUT (where the JSON goes; default ./gpu_bench_out), DEVICE
# (gpu), MODEL_SIZE (paper), PYTHON (python3), LIMIT_S (seconds per run, 240),
# BENCH_FLAGS (more flags for every run, e.g. --nobf16), MEMORY_LIMIT_S
# (seconds for the memory report, 180). At most 8 files land in $OUT (the
# device tool's limit): the memory report's log goes to this script's stderr.
# Wheels the machine lacks: see ../shared/gpu/prepare.sh; when .gpu/whl exists
# they are installed into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_bench_out}
DEVICE=${DEVICE:-gpu}
MODEL_SIZE=${MODEL_SIZE:-paper}
PYTHON=${PYTHON:-python3}
LIMIT_S=${LIMIT_S:-240}
read -r -a EXTRA <<< "${BENCH_FLAGS:-}"
mkdir -p "$OUT"
source experiments/gpu_site.sh
# A fresh compilation cache of its own, so that the second run measures
# loading from it.
CACHE=$(mktemp -d)
"$PYTHON" -c 'import jax; print(jax.__version__, jax.devices())' \
  2>&1 | tail -1 | tee "$OUT/devices.txt"
status=0
bench() {  # NAME, bench flags...
  local name=$1; shift
  timeout "$LIMIT_S" "$PYTHON" -m benchmarks.throughput --device="$DEVICE" \
    --model_size="$MODEL_SIZE" --compilation_cache_dir="$CACHE" \
    --json "$@" "${EXTRA[@]}" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -1 "$OUT/$name.log" | grep '^{' > "$OUT/$name.json" || { [ "$rc" = 0 ] && rc=1; }
  echo "$name: exit $rc"
  [ "$rc" = 0 ] || status=1
}
bench batch64_cold --batch_size=64 --steps=10 --warmup=2
bench batch64_cached --batch_size=64 --steps=5 --warmup=1
bench batch400 --batch_size=400 --steps=5 --warmup=1 --skip_torch
timeout "${MEMORY_LIMIT_S:-180}" "$PYTHON" -m benchmarks.memory \
  --model_size="$MODEL_SIZE" --batch_size=400 --conv_backend=gpu \
  --top_buffers=10 --json > "$OUT/memory400.log" 2>&1
rc=$?
grep -v '^[IW][0-9]' "$OUT/memory400.log" >&2
tail -1 "$OUT/memory400.log" | grep '^{' > "$OUT/memory400.json" || { [ "$rc" = 0 ] && rc=1; }
rm -f "$OUT/memory400.log"
echo "memory400: exit $rc"
[ "$rc" = 0 ] || status=1
exit $status

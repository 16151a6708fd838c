#!/usr/bin/env bash
# Issue 17's GPU measurements in one go, for a machine lent for minutes: the
# bench at batch 64 with an empty compilation cache, again from the cache
# (compile time from the cache), and at the paper's batch of 400 (MFU);
# then issue 44's memory report of the batch-400 train step with the GPU
# policy (benchmarks.memory: XLA:GPU's plan against the analytic bound, and
# the largest buffers), compile-only. Between the first two, the per-layer
# conv forms table (benchmarks.conv_forms, float32, batch 64: conv_forms.json,
# which --conv_forms_table reads) and the bench again with it
# (batch64_forms), so that the step and compile times before and after the
# table come from one machine. Batch 400 (bench and memory report) runs with
# paper.flags' --remat=conv_outputs.
# Each run has its own time limit, cut to what is left of TOTAL_S (the whole
# script must fit one device command), and its JSON lands in $OUT as it
# finishes, so a run cut short still leaves the ones before it.
#
#   bash experiments/gpu_bench.sh                    # on the GPU machine
#   DEVICE=cpu MODEL_SIZE=tiny bash experiments/gpu_bench.sh   # smoke test here
#
# Environment: OUT (where the JSON goes; default ./gpu_bench_out), DEVICE
# (gpu), MODEL_SIZE (paper), PYTHON (python3), LIMIT_S (seconds per run, 240),
# BENCH_FLAGS (more flags for every run, e.g. --nobf16), MEMORY_LIMIT_S
# (seconds for the memory report, 180), FORMS_LIMIT_S (seconds for the forms
# table, 150; it stops measuring new layers at two thirds of it), FORMS_FLAGS
# (more flags for benchmarks.conv_forms), TOTAL_S (seconds for everything,
# 540: a device command may run 600). At most 8 files land in $OUT (the
# device tool's limit): the runs' logs go to logs.txt, the memory report's
# also to this script's stderr.
# Wheels the machine lacks: see ../shared/gpu/prepare.sh; when .gpu/whl exists
# they are installed into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_bench_out}
DEVICE=${DEVICE:-gpu}
MODEL_SIZE=${MODEL_SIZE:-paper}
PYTHON=${PYTHON:-python3}
LIMIT_S=${LIMIT_S:-240}
TOTAL_S=${TOTAL_S:-540}
read -r -a EXTRA <<< "${BENCH_FLAGS:-}"
read -r -a FORMS_EXTRA <<< "${FORMS_FLAGS:-}"
mkdir -p "$OUT"
: > "$OUT/logs.txt"
source experiments/gpu_site.sh
# A fresh compilation cache of its own, so that the second run measures
# loading from it.
CACHE=$(mktemp -d)
"$PYTHON" -c 'import jax; print(jax.__version__, jax.devices())' \
  2>&1 | tail -1 | tee "$OUT/devices.txt"
status=0
budget() {  # WANTED seconds -> the WANTED or what is left of TOTAL_S (0: none)
  local left=$((TOTAL_S - SECONDS))
  if (( left < 1 )); then echo 0; elif (( left < $1 )); then echo "$left"; else echo "$1"; fi
}
finish() {  # NAME, exit status[, nojson]: the JSON of $OUT/NAME.log, its log to logs.txt
  local name=$1 rc=$2
  if [ -z "${3:-}" ]; then
    tail -1 "$OUT/$name.log" | grep '^{' > "$OUT/$name.json" || { [ "$rc" = 0 ] && rc=1; rm -f "$OUT/$name.json"; }
  fi
  { echo "== $name: exit $rc"; grep -v '^[IW][0-9]' "$OUT/$name.log"; } >> "$OUT/logs.txt"
  rm -f "$OUT/$name.log"
  echo "$name: exit $rc"
  [ "$rc" = 0 ] || status=1
}
bench() {  # NAME, bench flags...
  local name=$1; shift
  local limit; limit=$(budget "$LIMIT_S")
  if [ "$limit" = 0 ]; then echo "$name: skipped (TOTAL_S spent)"; status=1; return; fi
  timeout "$limit" "$PYTHON" -m benchmarks.throughput --device="$DEVICE" \
    --model_size="$MODEL_SIZE" --json "$@" "${EXTRA[@]}" > "$OUT/$name.log" 2>&1
  finish "$name" $?
}
bench batch64_cold --batch_size=64 --steps=10 --warmup=2 \
  --compilation_cache_dir="$CACHE"
# The forms table of the train step's layers, then the bench with it (with a
# cache of its own: its compile time is a first compile's).
limit=$(budget "${FORMS_LIMIT_S:-150}")
if [ "$limit" = 0 ]; then echo "conv_forms: skipped (TOTAL_S spent)"; status=1; else
  timeout "$limit" "$PYTHON" -m benchmarks.conv_forms --model_size="$MODEL_SIZE" \
    --batch_size=64 --dtype=float32 --time_limit_s=$((limit * 2 / 3)) \
    --output="$OUT/conv_forms.json" --json "${FORMS_EXTRA[@]}" > "$OUT/forms.log" 2>&1
  # Its summary stays in logs.txt: the JSON in $OUT is the table itself.
  finish forms $? nojson
fi
if [ -f "$OUT/conv_forms.json" ]; then
  bench batch64_forms --batch_size=64 --steps=10 --warmup=2 \
    --conv_forms_table="$OUT/conv_forms.json" --compilation_cache_dir="$(mktemp -d)"
fi
bench batch64_cached --batch_size=64 --steps=5 --warmup=1 \
  --compilation_cache_dir="$CACHE"
# The paper's batch as paper.flags runs it: the backward passes keep only the
# conv outputs (--remat=conv_outputs), so that XLA need not rematerialise.
bench batch400 --batch_size=400 --steps=5 --warmup=1 --skip_torch \
  --remat=conv_outputs --compilation_cache_dir="$CACHE"
limit=$(budget "${MEMORY_LIMIT_S:-180}")
if [ "$limit" = 0 ]; then echo "memory400: skipped (TOTAL_S spent)"; status=1; else
  timeout "$limit" "$PYTHON" -m benchmarks.memory \
    --model_size="$MODEL_SIZE" --batch_size=400 --conv_backend=gpu \
    --remat=conv_outputs --top_buffers=10 --json > "$OUT/memory400.log" 2>&1
  rc=$?
  grep -v '^[IW][0-9]' "$OUT/memory400.log" >&2
  finish memory400 $rc
fi
exit $status

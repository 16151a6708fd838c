#!/usr/bin/env bash
# Issue 24 on a GPU lent for minutes: the pretrained recipe
# (experiments/pretrained.flags) at a GPU's batch and for as many steps as
# TRAIN_S allows, then the bundle of its last checkpoint, scored on vbd_test
# and vbd_val through the CLI (enhance, then evaluate), as the model card's
# rows are. A run cut short by TRAIN_S is stopped with SIGTERM, which saves a
# checkpoint first, so it still leaves a bundle.
#
#   bash experiments/gpu_pretrain.sh --prepare   # here: wheels and FLAC data in .gpu/
#   bash experiments/gpu_pretrain.sh             # on the GPU machine (device `run`,
#                                                #   carry=[".gpu"])
#   DEVICE_DATA=../shared/data MODEL_FLAGS='--model_size=tiny ...' \
#     TRAIN_S=60 bash experiments/gpu_pretrain.sh   # smoke test on a CPU
#
# Environment: OUT (where results go; default ./gpu_pretrain_out), PYTHON
# (python3), DEVICE_DATA (.gpu/data), TRAIN_S (seconds of training, 420),
# EPOCHS (300: the cosine schedule's length), BATCH (64), DTYPE (bfloat16),
# MODEL_FLAGS (more launch.py flags, after the recipe's), VERSION (of the
# bundle, 0.3-gpu). $OUT gets at most 7 files: params.npz and manifest.json
# of the bundle, metrics.jsonl and train.log of the run, test.json and
# val.json (the evaluate summaries), and versions.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --prepare ]; then
  set -e
  bash ../shared/gpu/prepare.sh --data
  # prepare.sh converts vbd_train and vbd_test; validation needs vbd_val too.
  dpy=$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )
  "$dpy" - <<'PY'
import pathlib, soundfile as sf
for kind in ('noisy', 'clean'):
    src = pathlib.Path('../shared/data/vbd_val', kind)
    dst = pathlib.Path('.gpu/data/vbd_val', kind)
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.glob('*.wav')):
        x, sr = sf.read(p, dtype='int16')
        sf.write(dst / (p.stem + '.flac'), x, sr, subtype='PCM_16')
PY
  du -sh .gpu
  exit 0
fi
OUT=${OUT:-gpu_pretrain_out}
PYTHON=${PYTHON:-python3}
DATA=${DEVICE_DATA:-.gpu/data}
TRAIN_S=${TRAIN_S:-420}
EPOCHS=${EPOCHS:-300}
BATCH=${BATCH:-64}
DTYPE=${DTYPE:-bfloat16}
VERSION=${VERSION:-0.3-gpu}
read -r -a MODEL <<< "${MODEL_FLAGS:-}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
for split in vbd_train vbd_val vbd_test; do
  [ -d "$DATA/$split/noisy" ] || { echo "gpu_pretrain.sh: $DATA/$split/noisy is missing (run with --prepare first)" >&2; exit 2; }
done
source experiments/gpu_site.sh
"$PYTHON" -c 'import jax; print(jax.__version__, jax.devices())' \
  2>&1 | tail -1 | tee "$OUT/versions.txt"
work=$(mktemp -d)/run
# Validation every 25 epochs: at batch 64 an epoch of vbd_train is ~27 steps.
timeout -s TERM -k 60 "$TRAIN_S" "$PYTHON" launch.py \
  --flagfile=experiments/pretrained.flags --dataset=wav_pairs \
  --data_dir="$DATA/vbd_train" --validation_dir="$DATA/vbd_val" \
  --workdir="$work" --batch_size="$BATCH" --num_epochs="$EPOCHS" \
  --dtype="$DTYPE" --checkpoint_every_epochs=25 --log_every_steps=200 \
  "${MODEL[@]}" > "$OUT/train.log" 2>&1
echo "train: exit $? (124: stopped by TRAIN_S after its SIGTERM checkpoint)"
cp "$work/metrics.jsonl" "$OUT/" 2>/dev/null
"$PYTHON" -m segan_jax --mode=bundle --workdir="$work" \
  --checkpoint_step="$("$PYTHON" -c 'import sys; from segan_jax import checkpoints; print(checkpoints.steps(sys.argv[1])[-1])' "$work" 2>/dev/null)" \
  --bundle_name=segan_vbd --bundle_version="$VERSION" --bundle_root="$work/bundles" \
  >> "$OUT/train.log" 2>&1 || { echo "bundle failed: see train.log"; exit 1; }
cp "$work/bundles/segan_vbd/params.npz" "$work/bundles/segan_vbd/manifest.json" "$OUT/"
status=0
for split in vbd_test vbd_val; do
  name=${split#vbd_}
  "$PYTHON" -m segan_jax --mode=enhance --pretrained="$work/bundles/segan_vbd" \
    --input="$DATA/$split/noisy" --output="$work/enhanced_$name" >> "$OUT/train.log" 2>&1 \
  && "$PYTHON" -m segan_jax --mode=evaluate --clean_dir="$DATA/$split/clean" \
    --noisy_dir="$DATA/$split/noisy" --enhanced_dir="$work/enhanced_$name" \
    --results="$work/$name.json" >> "$OUT/train.log" 2>&1 \
  && cp "$work/$name.json" "$OUT/" || status=1
  echo "$split: $( [ -f "$OUT/$name.json" ] && echo scored || echo failed)"
done
exit $status

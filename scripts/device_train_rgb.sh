#!/bin/bash
# Trains the shipped checkpoint's RGB network further on a borrowed GPU machine and leaves in
# $OUT what may come back from it (files under 16 MiB): the best epoch as fp16, its metrics and
# the log. Run from the checkout's root with .pack/ carried (scripts/device_pack.py builds it;
# checkpoints/README.md, "A session with a GPU", has the call). The same command runs here on
# a CPU for a check: DEVICE=cpu MINUTES=0.5 EPOCH_SIZE=16 BATCH=4 WORKERS=1 PY=.venv/bin/python
# OUT=/tmp/out bash scripts/device_train_rgb.sh
set -euo pipefail
: "${OUT:?set OUT to the folder the results go to}"
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-6}
BATCH=${BATCH:-32}
EPOCH_SIZE=${EPOCH_SIZE:-4000}
LR=${LR:-1e-4}
WORKERS=${WORKERS:-14}
WORK=${WORK:-/tmp/forgeryloc-device-run}
rm -rf "$WORK" && mkdir -p "$WORK" "$OUT"
export PYTHONPATH="$PWD/.pack/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" scripts/split_checkpoint.py weights/forgeryloc-default.safetensors --rgb "$WORK/rgb-start.safetensors"
"$PY" -m forgeryloc train -o "$WORK/run" --arch m2sformer-lite0 \
  --init-weights "$WORK/rgb-start.safetensors" \
  --data .pack/casia1-dev --val-fraction 0.25 --synth .pack/bsds500 \
  --batch-size "$BATCH" --epoch-size "$EPOCH_SIZE" --max-minutes "$MINUTES" --lr "$LR" \
  --ema-decay 0.999 --freeze-encoder-norm --workers "$WORKERS" --device "$DEVICE" \
  2>&1 | tee "$OUT/train.log"
"$PY" scripts/split_checkpoint.py "$WORK/run/best.safetensors" --rgb "$OUT/rgb-best.safetensors" --fp16
cp "$WORK/run/metrics.jsonl" "$OUT/metrics.jsonl"

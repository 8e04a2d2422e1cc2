#!/bin/bash
# Trains one part of the shipped checkpoint further on a borrowed GPU machine and leaves in $OUT
# what may come back from it (files under 16 MiB): the best epoch, its metrics and the log.
# PART=rgb: the RGB network (`train`, best epoch as fp16 rgb-best.safetensors); PART=stream: the
# JPEG stream (`train-jpeg` with re-saved copies, stream-best.safetensors). Run from the
# checkout's root with .pack/ carried (scripts/device_pack.py builds it; checkpoints/README.md,
# "A session with a GPU", has the call). It runs here on a CPU as a check, e.g.
#   PART=stream DEVICE=cpu MINUTES=0.3 STEPS=4 BATCH=4 WORKERS=1 PY=.venv/bin/python \
#     OUT=/tmp/out bash scripts/device_train.sh
set -euo pipefail
: "${OUT:?set OUT to the folder the results go to}"
PART=${PART:-rgb}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-6}
WORKERS=${WORKERS:-14}
WORK=${WORK:-/tmp/forgeryloc-device-run}
rm -rf "$WORK" && mkdir -p "$WORK" "$OUT"
export PYTHONPATH="$PWD/.pack/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SHIPPED=weights/forgeryloc-default.safetensors
case "$PART" in
  rgb)
    "$PY" scripts/split_checkpoint.py "$SHIPPED" --rgb "$WORK/start.safetensors"
    "$PY" -m forgeryloc train -o "$WORK/run" --arch m2sformer-lite0 \
      --init-weights "$WORK/start.safetensors" \
      --data .pack/casia1-dev --val-fraction 0.25 --synth .pack/bsds500 \
      --batch-size "${BATCH:-32}" --epoch-size "${EPOCH_SIZE:-4000}" --max-minutes "$MINUTES" \
      --lr "${LR:-1e-4}" --ema-decay 0.999 --freeze-encoder-norm --workers "$WORKERS" \
      --device "$DEVICE" 2>&1 | tee "$OUT/train.log"
    "$PY" scripts/split_checkpoint.py "$WORK/run/best.safetensors" \
      --rgb "$OUT/rgb-best.safetensors" --fp16 ;;
  stream)
    "$PY" scripts/split_checkpoint.py "$SHIPPED" --stream "$WORK/start.safetensors"
    "$PY" -m forgeryloc train-jpeg -o "$WORK/run" --init "$WORK/start.safetensors" \
      --data .pack/casia1-dev --val-fraction 0.25 --synth .pack/bsds500 --synth-share 0.5 \
      --launder 0.5 --resave-check 90 --batch-size "${BATCH:-64}" \
      --steps-per-epoch "${STEPS:-300}" --max-minutes "$MINUTES" --lr "${LR:-1e-4}" \
      --workers "$WORKERS" --device "$DEVICE" 2>&1 | tee "$OUT/train.log"
    cp "$WORK/run/best.safetensors" "$OUT/stream-best.safetensors" ;;
  *) echo "PART must be rgb or stream, not $PART" >&2; exit 2 ;;
esac
cp "$WORK/run/metrics.jsonl" "$OUT/metrics.jsonl"

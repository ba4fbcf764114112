#!/usr/bin/env bash
# Reproduce checkpoints/toy_person_yolov8n.pt: a yolov8n person detector trained from scratch
# (random init from yolov8n.yaml, nc=1 'person') on the toy-actors YOLO set, on one CPU core
# (stage 1), then fine-tuned at a lower learning rate (stage 2; the shipped file's stage 1 saw an
# older toy generator, stage 2 the current one, whose YOLO set oversamples lying figures).
#
#   bash scripts/train_toy_detector.sh            # ~30 + ~12 min on a 2-core CPU
#   TOY=/path/to/toy EPOCHS=5 FINETUNE_EPOCHS=1 bash scripts/train_toy_detector.sh   # quicker smoke run
#   FROM=checkpoints/toy_person_yolov8n.pt bash scripts/train_toy_detector.sh          # stage 2 only
#
# Then it measures the detector on the toy val split (person AP@0.5 with detect.evaluate) and
# writes the numbers to runs/toy_detector/eval.txt (copy them into checkpoints/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TOY=${TOY:-data/toy}
EPOCHS=${EPOCHS:-35}
FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-8}
FROM=${FROM:-}
OUT=${OUT:-checkpoints/toy_person_yolov8n.pt}
RUN=${RUN:-runs/toy_detector}

if [ ! -f "$TOY/yolo/dataset.yaml" ]; then
  "$PY" -m stad.data.toy --out "$TOY" --seed 0 --size default
fi

mkdir -p "$RUN"
if [ -z "$FROM" ]; then
  FROM="$RUN/stage1.pt"
  "$PY" -m detect.train --data "$TOY/yolo/dataset.yaml" --model yolov8n.yaml --epochs "$EPOCHS" \
    --imgsz 320 --batch 16 --device cpu --workers 0 --threads 1 --seed 0 \
    --project "$(dirname "$RUN")" --name "$(basename "$RUN")_stage1" --set close_mosaic=5 --out "$FROM"
fi
"$PY" -m detect.train --data "$TOY/yolo/dataset.yaml" --model "$FROM" --epochs "$FINETUNE_EPOCHS" \
  --imgsz 320 --batch 16 --device cpu --workers 0 --threads 2 --seed 0 \
  --project "$(dirname "$RUN")" --name "$(basename "$RUN")_stage2" \
  --set close_mosaic=3 --set lr0=0.002 --set warmup_epochs=1 --out "$OUT"

# Stage-1 quality on the toy val split, the way the pipeline uses it (keyframes of val.csv).
"$PY" -m detect.proposals --weights "$OUT" --source "$TOY/frames" --annotations "$TOY/val.csv" \
  --dataset toy --imgsz 320 --conf 0.01 --threads 1 --out "$RUN/val_proposals.pkl" --csv "$RUN/val_proposals.csv"
"$PY" -m detect.evaluate --proposals "$RUN/val_proposals.pkl" --gt "$TOY/val.csv" | tee "$RUN/eval.txt"

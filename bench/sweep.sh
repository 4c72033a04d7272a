#!/usr/bin/env bash
# bench/sweep.sh — the fine-tuning sweep behind bertrun's defaults: each
# line of a config file (`NAME FLAGS...`, `#` comments) is one
# `bertrun train --task snli` run on the real SNLI files, model chosen on
# dev, from the pretrained checkpoint --init (`none`: from scratch) unless
# the line names its own --init. For each run it records the
# flags, the best dev accuracy (its epoch), the test accuracy of that
# best-dev model and of the last one, the training examples/s and the wall
# time, appends them to $OUT/sweep.jsonl (else bench/results/sweep.jsonl)
# and prints the table of every run recorded there. `--jobs 2` runs two
# configs at a time, each on one thread (wall times are then those of a
# shared machine).
#
#   bench/sweep.sh --init CKPT --configs FILE [--data DIR] [--jobs N]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${BERT_DATA:-}"
init="" configs="" jobs=1
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="$2"; shift 2 ;;
    --init) init="$2"; shift 2 ;;
    --configs) configs="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/sweep.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$data" ] || [ ! -d "$data/snli" ] || [ -z "$init" ] || [ -z "$configs" ]; then
  echo "bench/sweep.sh: needs --init CKPT, --configs FILE and the data (--data DIR or BERT_DATA)" >&2
  exit 2
fi
BERTRUN=${BERTRUN:-build/bertrun}
[ -x "$BERTRUN" ] || cmake --build build --target bertrun >/dev/null
out="${OUT:-bench/results}"
runs="$out/sweep-runs"
mkdir -p "$runs"
threads=(); [ "$jobs" -gt 1 ] && threads=(--threads 1)
from=(--init "$init"); [ "$init" = none ] && from=()

one() { # NAME FLAGS...: one run, one JSON line
  local name="$1"; shift
  local dir="$runs/$name" t0 t1 start=("${from[@]}")
  case " $* " in *" --init "*) start=() ;; esac
  t0=$(date +%s.%N)
  "$BERTRUN" train --task snli --data "$data" "${start[@]}" "${threads[@]}" --out "$dir" --overwrite "$@" \
    >"$dir.out" 2>"$dir.err" || { echo "bench/sweep.sh: $name failed (see $dir.err)" >&2; return 0; }
  t1=$(date +%s.%N)
  python3 - "$name" "$dir" "$dir.out" "$(python3 -c "print($t1 - $t0)")" "$*" "$jobs" >>"$out/sweep.jsonl" <<'EOF'
import json, re, sys
name, d, log, wall, flags, jobs = sys.argv[1:]
rows = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
dev = [r for r in rows if "dev_acc" in r]
ends = [r for r in rows if "test_acc" in r]
text = open(log).read()
best = re.search(r"best dev acc ([0-9.]+) at step (\d+) \(epoch ([0-9.]+)\): test acc ([0-9.]+)", text)
eps = re.search(r"^([0-9.]+) examples/sec", text, re.M)
print(json.dumps({"name": name, "flags": flags,
                  "best_dev_acc": float(best.group(1)) if best else max(r["dev_acc"] for r in dev),
                  "best_epoch": float(best.group(3)) if best else None,
                  "test_acc_best": float(best.group(4)) if best else None,
                  "test_acc_last": ends[-1]["test_acc"] if ends else None,
                  "examples_per_s": float(eps.group(1)) if eps else None,
                  "wall_s": round(float(wall), 1), "runs_at_once": int(jobs)}))
EOF
  echo "bench/sweep.sh: $name done" >&2
}

n=0
while read -r name flags; do
  case "$name" in ''|\#*) continue ;; esac
  # shellcheck disable=SC2086 # the flags are words
  one "$name" $flags &
  n=$((n + 1))
  if [ "$n" -ge "$jobs" ]; then wait -n; n=$((n - 1)); fi
done <"$configs"
wait

python3 - "$out/sweep.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{'name':14} {'best dev':>8} {'epoch':>5} {'test@best':>9} {'test@last':>9} {'ex/s':>6} {'wall s':>6}  flags")
for r in rows:
    f = lambda x, fmt: format(x, fmt) if x is not None else "-"
    print(f"{r['name']:14} {f(r['best_dev_acc'], '8.4f')} {f(r['best_epoch'], '5.3g')} {f(r['test_acc_best'], '9.4f')} "
          f"{f(r['test_acc_last'], '9.4f')} {f(r['examples_per_s'], '6.0f')} {r['wall_s']:6.0f}  {r['flags']}")
EOF

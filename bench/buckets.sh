#!/usr/bin/env bash
# bench/buckets.sh — fine-tuning throughput over one whole SNLI epoch,
# length buckets against d2l's padding to max_len, at each batch size
# given (default: 512, d2l's, and 128, bertc's): `bertrun train --task snli
# --epochs 1` from scratch on the real training files, once bucketed and
# once with --pad-to-max. Examples/s are bertrun's own figure (time in
# training steps only); the steps' compile time and each run's wall time
# are reported beside it. Writes $OUT/buckets.json (else
# bench/results/buckets.json) and prints a table.
#
#   bench/buckets.sh [--data DIR] [--batches "512 128"] [--device cpu] [--max-examples N]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${BERT_DATA:-}"
batches="512 128"
device=cpu
limit=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="$2"; shift 2 ;;
    --batches) batches="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --max-examples) limit=(--max-examples "$2"); shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/buckets.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$data" ] || [ ! -d "$data/snli" ]; then
  echo "bench/buckets.sh: no SNLI data (pass --data DIR or set BERT_DATA)" >&2
  exit 2
fi
BERTRUN=${BERTRUN:-build/bertrun}
[ -x "$BERTRUN" ] || cmake --build build --target bertrun >/dev/null
out="${OUT:-bench/results}"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rows=()
for b in $batches; do
  for mode in bucketed padded; do
    flag=(); [ $mode = padded ] && flag=(--pad-to-max)
    t0=$(date +%s.%N)
    "$BERTRUN" train --task snli --data "$data" --epochs 1 --batch "$b" --device "$device" "${limit[@]}" \
      "${flag[@]}" --out "$tmp/$b-$mode" >"$tmp/$b-$mode.out" 2>"$tmp/$b-$mode.err"
    t1=$(date +%s.%N)
    eps=$(sed -n 's/^\([0-9.]*\) examples\/sec on .*/\1/p' "$tmp/$b-$mode.out")
    comp=$(sed -n 's/.* compiled in \([0-9.]*\) s.*/\1/p' "$tmp/$b-$mode.err")
    rows+=("$b $mode $eps ${comp:-0} $(python3 -c "print($t1 - $t0)")")
    echo "batch $b $mode: $eps examples/s" >&2
  done
done
printf '%s\n' "${rows[@]}" >"$tmp/rows"
python3 - "$out/buckets.json" "$device" "$tmp/rows" <<'EOF'
import json, os, sys, tempfile
runs = [dict(zip(["batch", "mode", "examples_per_s", "compile_s", "wall_s"], l.split())) for l in open(sys.argv[3]) if l.strip()]
for r in runs:
    for k in ("examples_per_s", "compile_s", "wall_s"): r[k] = float(r[k])
    r["batch"] = int(r["batch"])
ratios = {}
for r in runs:
    ratios.setdefault(r["batch"], {})[r["mode"]] = r["examples_per_s"]
table = [{"batch": b, "bucketed": m["bucketed"], "padded": m["padded"], "ratio": m["bucketed"] / m["padded"]}
         for b, m in ratios.items()]
doc = {"what": "SNLI fine-tuning, one epoch, examples/s in training steps", "device": sys.argv[2],
       "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
       "runs": runs, "comparison": table}
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(sys.argv[1]) or ".")
with os.fdopen(fd, "w") as f: json.dump(doc, f, indent=1)
os.replace(tmp, sys.argv[1])
print(f"{'batch':>6} {'bucketed ex/s':>14} {'padded ex/s':>12} {'ratio':>6}")
for t in table: print(f"{t['batch']:>6} {t['bucketed']:>14.1f} {t['padded']:>12.1f} {t['ratio']:>6.2f}")
print(f"(written to {sys.argv[1]})")
EOF

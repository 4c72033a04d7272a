#!/usr/bin/env bash
# run.sh — the CPU benchmark in one call: builds bertc (Release), measures the
# CPU's peak FMA rate (peak_fma), times bertc's training steps on the cpu
# backend (bench_step), times the same steps in PyTorch eager and
# torch.compile (torch_ref.py), and prints bertc against PyTorch side by side.
# Writes peak_fma.json, bertc.json, torch.json and the merged latest.json to
# $OUT (when set) or bench/results/; with --rounds N, bertc and PyTorch in
# turn N times (bertc_rK.json, torch_rK.json), each side's best round kept.
# See bench/README.md for what each number means. Not here: correctness
# checks (ctest) or the GPU benchmark.
set -u -o pipefail

usage() {
  cat <<'EOF'
usage: bench/run.sh [options]

Builds, then benchmarks d2l's BERT training steps (reference config of
models/bert.yaml: nli at batch 64 and 512, pretrain at 64, 128 and 256) on the
cpu backend, and PyTorch on the same CPU with the same thread count.

options:
  --build-dir DIR   build folder (default: build-bench, configured Release;
                    an existing folder is reused as it is)
  --no-build        do not run cmake; use the binaries in the build folder
  --threads N       threads for bertc and PyTorch (default: all CPUs)
  --steps N         timed steps per bertc configuration (default 10)
  --warmup N        untimed steps first (default 2)
  --torch-steps N   timed steps per PyTorch batch size (default 4)
  --rounds N        time bertc and PyTorch N times, alternately (bertc,
                    PyTorch, bertc, ...), and keep each configuration's
                    best round on both sides (default 1): on a machine
                    whose speed drifts (a VM sharing its cores) one round
                    may catch a slow spell on one side only
  --no-torch        skip PyTorch
  --no-pip          do not pip install torch when it is missing (skip it)
  --no-compile      PyTorch eager only (skip torch.compile)
  --no-rss          skip the memory runs: PyTorch at each of bertc's
                    (graph, batch) in a process of its own, for its peak RSS
  --device NAME     bertc backend (default cpu)
  --quick           a tiny model (hidden 8, 1 layer, max_len 16, vocab 100)
                    at batch 4 and 8 everywhere: checks the script end to end
  --out DIR         where results go (default: $OUT, else bench/results)
  -h, --help        this text

exit status: 0 done (a missing cpu backend or PyTorch is reported, not an
error), 1 a step failed, 2 bad usage.
EOF
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="$root/build-bench"
do_build=1 threads=$(nproc 2>/dev/null || echo 1) steps=10 warmup=2 torch_steps=4 rounds=1
do_torch=1 do_pip=1 do_compile=1 do_rss=1 device=cpu quick=0
out=${OUT:-$root/bench/results}

need() { [ $# -ge 2 ] || { echo "run.sh: $1 needs a value (try --help)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --build-dir) need "$@"; build=$(realpath -m "$2"); shift 2 ;;
    --no-build) do_build=0; shift ;;
    --threads) need "$@"; threads=$2; shift 2 ;;
    --steps) need "$@"; steps=$2; shift 2 ;;
    --warmup) need "$@"; warmup=$2; shift 2 ;;
    --torch-steps) need "$@"; torch_steps=$2; shift 2 ;;
    --rounds) need "$@"; rounds=$2; shift 2 ;;
    --no-torch) do_torch=0; shift ;;
    --no-pip) do_pip=0; shift ;;
    --no-compile) do_compile=0; shift ;;
    --no-rss) do_rss=0; shift ;;
    --device) need "$@"; device=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --out) need "$@"; out=$(realpath -m "$2"); shift 2 ;;
    *) echo "run.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
for n in "$threads" "$steps" "$warmup" "$torch_steps" "$rounds"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "run.sh: not a count: '$n'" >&2; exit 2; }
done
[ "$rounds" -ge 1 ] || { echo "run.sh: --rounds must be at least 1" >&2; exit 2; }

mkdir -p "$out" || exit 1
say() { printf '\n== %s\n' "$*"; }
rc=0

# ---- build ----
if [ $do_build = 1 ]; then
  say "build ($build)"
  gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBC_ASAN_TESTS=OFF \
      >"$out/cmake.log" 2>&1 || { cat "$out/cmake.log"; exit 1; }
  fi
  cmake --build "$build" --target bench_step -j "$(nproc)" >"$out/build.log" 2>&1 ||
    { tail -40 "$out/build.log"; exit 1; }
  # peak_fma is its own target (bench/peak_fma.c); absent, %peak is null
  cmake --build "$build" --target peak_fma -j "$(nproc)" >>"$out/build.log" 2>&1 ||
    echo "run.sh: no peak_fma target; fractions of peak will be null"
fi
[ -x "$build/bench_step" ] || { echo "run.sh: $build/bench_step is missing (build first)" >&2; exit 1; }

sets=()
batches=()
torch_batches=()
if [ $quick = 1 ]; then
  for kv in hidden=8 ffn=16 layers=1 max_len=16 vocab=100 n_pred=2; do sets+=(--set "$kv"); done
  batches=(--batch 4 --batch 8)
  torch_batches=(--batch 4 --batch 8)
fi

# ---- peak FMA rate ----
peak_args=(--no-peak)
if [ -x "$build/peak_fma" ]; then
  say "peak FMA rate (peak_fma)"
  if OMP_NUM_THREADS=$threads BC_THREADS=$threads "$build/peak_fma" >"$out/peak_fma.json" \
       2>"$out/peak_fma.log"; then
    cat "$out/peak_fma.json"
    peak_args=(--peak-json "$out/peak_fma.json")
  else
    echo "run.sh: peak_fma failed (see $out/peak_fma.log); fractions of peak will be null"
  fi
else
  echo "run.sh: $build/peak_fma not built; fractions of peak will be null"
fi

# ---- bertc and PyTorch, round after round ----
# One round of bertc's steps into $out/bertc$1.json.
bertc_note=""
bertc_round() {
  say "bertc training steps on $device ($threads threads)${2:+, round $2 of $rounds}"
  rm -f "$out/bertc$1.json"
  "$build/bench_step" --device "$device" --threads "$threads" --steps "$steps" --warmup "$warmup" \
    "${sets[@]}" "${batches[@]}" "${peak_args[@]}" --model "$root/models/bert.yaml" \
    --json "$out/bertc$1.json"
  local st=$?
  case $st in
    0) ;;
    3) bertc_note="backend '$device' is not available in this build"
       echo "run.sh: $bertc_note" ;;
    *) bertc_note="bench_step exited with status $st"; rc=1 ;;
  esac
}

torch_note=""
have_torch=0
if [ $do_torch = 1 ]; then
  if ! python3 -c 'import torch' 2>/dev/null && [ $do_pip = 1 ]; then
    echo "run.sh: installing PyTorch with pip (large download)"
    python3 -m pip install torch >"$out/pip.log" 2>&1 || echo "run.sh: pip install torch failed (see $out/pip.log)"
  fi
  if python3 -c 'import torch' 2>/dev/null; then
    have_torch=1
  else
    torch_note="PyTorch is not installed; skipped"
    echo "run.sh: $torch_note"
  fi
else
  torch_note="skipped (--no-torch)"
fi
modes=(--mode eager)
[ $do_compile = 1 ] && modes+=(--mode compile)
# One round of PyTorch's steps into $out/torch$1.json.
torch_round() {
  say "PyTorch ($threads threads)${2:+, round $2 of $rounds}"
  rm -f "$out/torch$1.json"
  python3 "$root/bench/torch_ref.py" --threads "$threads" --steps "$torch_steps" "${modes[@]}" \
    "${sets[@]}" "${torch_batches[@]}" --json "$out/torch$1.json" ||
    { torch_note="torch_ref.py failed"; rc=1; }
}

rm -f "$out/bertc.json" "$out/torch.json"
if [ "$rounds" = 1 ]; then
  bertc_round ""
  [ $have_torch = 1 ] && torch_round ""
else
  for r in $(seq 1 "$rounds"); do
    bertc_round "_r$r" "$r"
    [ $have_torch = 1 ] && torch_round "_r$r" "$r"
  done
fi

# peak RSS: a process's peak is its first configuration's alone, so one
# PyTorch process per (graph, batch, mode) at bertc's configurations
first="$out/bertc.json"
[ "$rounds" = 1 ] || first="$out/bertc_r1.json"
if [ $have_torch = 1 ] && [ $do_rss = 1 ] && [ -f "$first" ]; then
  say "PyTorch peak RSS at bertc's batches (one process each)"
  python3 -c 'import json,sys; [print(c["graph"], c["batch"]) for c in json.load(open(sys.argv[1]))["configs"]]' \
    "$first" | while read -r g b; do
    for m in "${modes[@]}"; do
      [ "$m" = --mode ] && continue
      python3 "$root/bench/torch_ref.py" --threads "$threads" --steps 1 --warmup 1 --graph "$g" --batch "$b" \
        --mode "$m" "${sets[@]}" --json "$out/torch_rss_${g}_${b}_${m}.json" >/dev/null ||
        echo "run.sh: the memory run of PyTorch $m at $g batch $b failed"
    done
  done
fi

# ---- side by side ----
say "bertc vs PyTorch"
BERTC_NOTE="$bertc_note" TORCH_NOTE="$torch_note" python3 - "$out" "$rounds" <<'EOF'
import json, os, sys, time
out, n_rounds = sys.argv[1], int(sys.argv[2])

def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def save(name, x):
    with open(os.path.join(out, name), "w") as f:
        json.dump(x, f, indent=2)

# --rounds: each configuration's best round (its median step) on each
# side, the rounds' examples/s listed with it
ex = lambda c: c.get("examples_per_s") or 0
def best_of(same):
    top = dict(max(same, key=ex))
    top["examples_per_s_rounds"] = [x.get("examples_per_s") for x in same]
    return top
if n_rounds > 1:
    runs = [r for r in (load(f"bertc_r{i}.json") for i in range(1, n_rounds + 1)) if r]
    if runs:
        best = runs[0]
        best["configs"] = [best_of([x for r in runs for x in r["configs"]
                                    if (x["graph"], x["batch"]) == (c["graph"], c["batch"])])
                           for c in best["configs"]]
        best["rounds"] = len(runs)
        save("bertc.json", best)
    runs = [r for r in (load(f"torch_r{i}.json") for i in range(1, n_rounds + 1)) if r]
    if runs:
        best = runs[0]
        for g, modes in (best.get("graphs") or {}).items():
            for m, e in modes.items():
                by = e.get("by_batch") or {}
                for b in list(by):
                    by[b] = best_of([x for x in ((((r.get("graphs") or {}).get(g) or {}).get(m) or {})
                                                 .get("by_batch", {}).get(b) for r in runs) if x])
                ok = [x for x in by.values() if x.get("examples_per_s")]
                if ok:
                    top = max(ok, key=ex)
                    e["best_batch"], e["best_examples_per_s"] = top["batch"], top["examples_per_s"]
        best["rounds"] = len(runs)
        save("torch.json", best)

bertc, torch_r, peak = load("bertc.json"), load("torch.json"), load("peak_fma.json")
merged = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "bertc": bertc, "torch": torch_r,
          "peak_fma": peak, "bertc_note": os.environ["BERTC_NOTE"] or None,
          "torch_note": os.environ["TORCH_NOTE"] or None, "comparison": []}

def fmt(x, f="{:.1f}"):
    return f.format(x) if isinstance(x, (int, float)) else "-"

rows = []
for c in (bertc or {}).get("configs", []):
    g, b, ex = c["graph"], c["batch"], c["examples_per_s"]
    row = {"graph": g, "batch": b, "bertc_examples_per_s": ex,
           "fraction_of_peak": c.get("fraction_of_peak"), "gflops": c.get("gflops")}
    tg = ((torch_r or {}).get("graphs") or {}).get(g, {})
    for mode in ("eager", "compile"):
        e = tg.get(mode) or {}
        same = (e.get("by_batch") or {}).get(str(b)) or {}
        row[f"torch_{mode}_same_batch"] = same.get("examples_per_s")
        row[f"torch_{mode}_best_batch"] = e.get("best_batch")
        row[f"torch_{mode}_best"] = e.get("best_examples_per_s")
        best = e.get("best_examples_per_s")
        row[f"ratio_vs_{mode}_best"] = ex / best if ex and best else None
    rows.append(row)
merged["comparison"] = rows

hdr = (f"{'graph':9s} {'batch':>5s} {'bertc ex/s':>10s} {'%peak':>6s} | "
       f"{'eager@b':>8s} {'eager best (b)':>15s} {'x eager':>7s} | "
       f"{'compile@b':>9s} {'compile best (b)':>17s} {'x compile':>9s}")
print(hdr)
print("-" * len(hdr))
for r in rows:
    eb = f"{fmt(r['torch_eager_best'])} ({r['torch_eager_best_batch'] or '-'})"
    cb = f"{fmt(r['torch_compile_best'])} ({r['torch_compile_best_batch'] or '-'})"
    pk = 100 * r["fraction_of_peak"] if r["fraction_of_peak"] is not None else None
    print(f"{r['graph']:9s} {r['batch']:5d} {fmt(r['bertc_examples_per_s']):>10s} {fmt(pk):>6s} | "
          f"{fmt(r['torch_eager_same_batch']):>8s} {eb:>15s} {fmt(r['ratio_vs_eager_best'], '{:.2f}x'):>7s} | "
          f"{fmt(r['torch_compile_same_batch']):>9s} {cb:>17s} {fmt(r['ratio_vs_compile_best'], '{:.2f}x'):>9s}")
if not rows:
    print("(no bertc results" + (": " + merged["bertc_note"] if merged["bertc_note"] else "") + ")")
if merged["torch_note"]:
    print("PyTorch: " + merged["torch_note"])
print("x eager / x compile: bertc examples/s over PyTorch's at PyTorch's best batch size;")
rss_rows = []
for c in (bertc or {}).get("configs", []):
    g, b = c["graph"], c["batch"]
    r = {"graph": g, "batch": b, "bertc_peak_rss_bytes": c.get("peak_rss_bytes")}
    for mode in ("eager", "compile"):
        t = load(f"torch_rss_{g}_{b}_{mode}.json") or {}
        e = (((t.get("graphs") or {}).get(g) or {}).get(mode) or {}).get("by_batch", {}).get(str(b)) or {}
        r[f"torch_{mode}_peak_rss_bytes"] = e.get("peak_rss_bytes") if e.get("error") is None else None
    rss_rows.append(r)
merged["peak_rss"] = rss_rows
if any(r["torch_eager_peak_rss_bytes"] or r["torch_compile_peak_rss_bytes"] for r in rss_rows):
    mib = lambda x: fmt(x / 2**20, "{:.0f}") if x else "-"
    print()
    print(f"{'graph':9s} {'batch':>5s} {'bertc RSS MiB':>13s} {'eager RSS MiB':>13s} {'compile RSS MiB':>15s}")
    for r in rss_rows:
        print(f"{r['graph']:9s} {r['batch']:5d} {mib(r['bertc_peak_rss_bytes']):>13s} "
              f"{mib(r['torch_eager_peak_rss_bytes']):>13s} {mib(r['torch_compile_peak_rss_bytes']):>15s}")
    print("peak RSS: each process's own (bertc: bench_step's child per configuration;")
    print("PyTorch: torch_ref.py with one configuration, Python and torch included).")
print("examples/s are of the median step. Results: " + os.path.join(out, "latest.json"))
with open(os.path.join(out, "latest.json"), "w") as f:
    json.dump(merged, f, indent=2)
    f.write("\n")
EOF
exit $rc

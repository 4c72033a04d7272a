#!/usr/bin/env bash
# gpu-check.sh — the GPU run in one call, for the device machine (as root, in
# the repo root; results in $OUT, else bench/results/gpu):
#   a. the GPU: nvidia-smi, driver, name; libcuda.so.1, libnvrtc.so.13 and
#      libcublas.so.13 found (their folders added to LD_LIBRARY_PATH)
#   b. binaries: .devcarry/build from scripts/devpack.sh (its libraries
#      unpacked into .devcarry/lib), or a build here when there is none or
#      the sources changed since it was packed (-DBC_LLVM=OFF without LLVM)
#   c. ctest -L gpu (test_gpu*: the cuda backend against interp); then
#      training with one replica per GPU in one process (--device cuda:all)
#      against --device cuda; tests/buckets.sh on cuda (length buckets:
#      bucketed and padded runs agree, eval and predict in buckets);
#      tests/hf.sh with HF_DEVICES=cuda (an imported BERT fine-tuned on
#      cuda gives the cpu backend's losses)
#   d. bench_step on cuda: nli at batch 512, pretrain at batch 256
#   e. torch_ref.py --device cuda: PyTorch eager and torch.compile
#   f. d2l's full pipeline on cuda, timed: pretrain 4000 steps at batch 256,
#      fine-tune 5 epochs at batch 512 on the SNLI files carried, test
#      accuracy (GPU_CHECK_SKIP_PIPELINE=1 skips it; GPU_CHECK_PRETRAIN_STEPS
#      and GPU_CHECK_EPOCHS shorten it, GPU_CHECK_PRETRAIN_LR sets the
#      pretraining lr); before e, per-kernel times of one
#      nli and one pretrain step (BC_PROFILE=1; GPU_CHECK_SKIP_PROFILE=1
#      skips them); GPU_CHECK_SKIP_TORCH=1 skips e
#   g. a table, printed last: tests, examples/s of bertc vs PyTorch, the
#      pipeline's times and accuracy
# Every stage runs even when an earlier one failed; each has a time limit
# taken from one budget (GPU_CHECK_BUDGET seconds, default 540), so the
# whole run ends inside the device's 10 minutes and the table always comes.
# Exit status: 0 when the gpu tests passed, 1 when they failed, were skipped
# or did not run.
#
# Files in $OUT (the device returns at most 8): gpu-check.log (everything
# printed), ctest.log, bertc.json (bench_step), torch.json, pipeline.log,
# summary.json.
set -u -o pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
out=${OUT:-$root/bench/results/gpu}
mkdir -p "$out"
exec > >(tee "$out/gpu-check.log") 2>&1
tee_pid=$!
t_start=$(date +%s)
dev=${GPU_CHECK_DEVICE:-cuda} # cpu: the same stages on the CPU, to check this script
torch_dev=cpu
case "$dev" in cuda*) torch_dev=$dev ;; esac
deadline=$((t_start + ${GPU_CHECK_BUDGET:-540}))
tmp=$(mktemp -d /tmp/gpu-check.XXXXXX)
facts="$tmp/facts" # key=value lines for the table
: >"$facts"
fact() { printf '%s=%s\n' "$1" "$2" >>"$facts"; }
say() { printf '\n== [%3ds] %s\n' $(($(date +%s) - t_start)) "$*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# seconds a stage may take: `want`, or what the budget has left less `keep`
# (the time the later stages need at least), and never under 10
limit() {
  local want=$1 keep=${2:-10} left
  # what a skipped stage would have needed is not kept for it
  [ -n "${GPU_CHECK_SKIP_TORCH:-}" ] && keep=$((keep > 150 ? keep - 150 : keep / 4))
  [ -n "${GPU_CHECK_SKIP_PIPELINE:-}" ] && keep=$((keep > 100 ? keep - 100 : keep / 4))
  left=$((deadline - $(date +%s) - keep))
  [ "$left" -lt 10 ] && left=10
  echo $((want < left ? want : left))
}

# ---- a. the GPU ----
say "GPU"
timeout 30 nvidia-smi || echo "gpu-check: nvidia-smi failed"
gpu=$(timeout 20 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
driver=$(timeout 20 nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
echo "GPU: ${gpu:-none found}; driver ${driver:-?}; $(nproc) CPUs; $(uname -r)"
fact gpu "${gpu:-none}"
fact driver "${driver:-?}"
# shellcheck source=bench/lib/device_env.sh
. "$root/bench/lib/device_env.sh" # find_lib
find_lib libcuda.so.1 || fact libcuda missing
find_lib libnvrtc.so.13 || fact libnvrtc missing
find_lib libcublas.so.13 || fact libcublas missing
find_lib libcublasLt.so.13 >/dev/null || true
find_lib libnccl.so.2 || fact libnccl missing

# ---- b. binaries ----
say "binaries"
bin=""
manifest=.devcarry/MANIFEST
mget() { sed -n "s/^$1=//p" "$manifest" 2>/dev/null | head -1; }
source_hash() { # the same as scripts/devpack.sh's
  find graph passes codegen runtime tasks tests bench models CMakeLists.txt \
      -type f \( -name '*.c' -o -name '*.h' -o -name '*.def' -o -name '*.yaml' -o -name CMakeLists.txt \) \
      2>/dev/null | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16
}
src_dir=$root
if [ -f .devcarry/lib.tar.xz ] && [ ! -d .devcarry/lib ]; then
  tar -C .devcarry -xJf .devcarry/lib.tar.xz || echo "gpu-check: cannot unpack .devcarry/lib.tar.xz"
fi
[ -d .devcarry/lib ] && export LD_LIBRARY_PATH="$root/.devcarry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -f "$manifest" ]; then
  cat "$manifest"
  # the build has the packing machine's checkout path baked in (BC_SOURCE_DIR,
  # ctest's commands): make that path lead here
  packed_dir=$(mget source_dir)
  if [ "$(realpath -m "$packed_dir")" = "$root" ]; then
    src_dir=$packed_dir
  elif [ ! -e "$packed_dir" ] || [ -L "$packed_dir" ]; then
    mkdir -p "$(dirname "$packed_dir")" && ln -sfn "$root" "$packed_dir" && src_dir=$packed_dir &&
      echo "linked $packed_dir -> $root"
  else
    echo "gpu-check: $packed_dir exists and is not this checkout: cannot use the carried build"
  fi
  now_hash=$(source_hash)
  if [ "$src_dir" != "$packed_dir" ]; then
    fact build "rebuilt (checkout path)"
  elif [ "$now_hash" != "$(mget source_hash)" ] || [ -n "${GPU_CHECK_REBUILD:-}" ]; then
    echo "gpu-check: the sources changed since devpack ($(mget source_hash) -> $now_hash): rebuilding here"
    fact build "rebuilt (sources changed since devpack)"
  elif [ -x .devcarry/build/test_gpu ]; then
    bin="$src_dir/.devcarry/build"
    fact build "carried ($(mget commit), packed $(mget date))"
  fi
else
  echo "gpu-check: no .devcarry (scripts/devpack.sh): building here"
  fact build "built here (no .devcarry)"
fi
if [ -z "$bin" ]; then
  # shellcheck disable=SC2206
  cfg=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBC_ASAN_TESTS=OFF ${GPU_CHECK_CMAKE_ARGS:-})
  if ! ls /usr/lib/llvm-14/lib/cmake/llvm/LLVMConfig.cmake >/dev/null 2>&1; then cfg+=(-DBC_LLVM=OFF); fi
  # the carried headers and .pc files when the system has no libyaml/OpenBLAS
  if [ -d .devcarry/sysroot ] && ! pkg-config --exists yaml-0.1 2>/dev/null; then
    export PKG_CONFIG_LIBDIR="$root/.devcarry/sysroot/lib/pkgconfig"
    cfg+=(-DPKG_CONFIG_EXECUTABLE="$root/.devcarry/sysroot/bin/pkg-config")
  fi
  b=$root/build-gpu
  t=$(now)
  if timeout -k 10 "$(limit 60 150)" cmake -S "$src_dir" -B "$b" "${cfg[@]}" >"$tmp/cmake.log" 2>&1 &&
     timeout -k 10 "$(limit 240 150)" cmake --build "$b" -j "$(nproc)" >"$tmp/build.log" 2>&1; then
    bin=$b
    echo "built in $(elapsed "$t") s ($b)"
  else
    tail -n 30 "$tmp/cmake.log" "$tmp/build.log"
    echo "gpu-check: the build failed (status $?)"
    fact build "FAILED"
  fi
fi
echo "binaries: ${bin:-none}"
[ -n "$bin" ] && ldd "$bin/bertrun" | grep -i 'not found' && echo "gpu-check: libraries missing (above)"

# ---- c. tests ----
say "ctest -L gpu"
tests=notrun
if [ -n "$bin" ]; then
  t=$(now)
  lim=$(limit 170 200)
  # ctest stops a test at lim (and says so); the outer limit is a backstop
  (cd "$bin" && timeout -k 10 $((lim + 15)) ctest -L gpu -V --timeout "$lim") 2>&1 | tee "$out/ctest.log"
  st=${PIPESTATUS[0]}
  fact tests_s "$(elapsed "$t")"
  if [ "$st" = 124 ] || [ "$st" = 137 ] || grep -q '\*\*\*Timeout' "$out/ctest.log"; then tests="TIMEOUT (${lim} s)"
  elif grep -q '\*\*\*Skipped\|Not Run' "$out/ctest.log"; then tests="SKIPPED (no usable GPU?)"
  elif [ "$st" = 0 ] && grep -q '100% tests passed' "$out/ctest.log"; then tests=passed
  else tests="FAILED (ctest $st)"
  fi
  # test_gpu's line per finished case ("  => ok   name  time  numbers")
  grep -E '^[0-9]+: +=> ' "$out/ctest.log" | sed 's/^[0-9]*: *=> //' >"$tmp/cases" || true
fi
fact tests "$tests"
echo "tests: $tests"

# ---- c2. replicas in one process, through the trainer ----
# BC_DIST_NCCL=1 --device cuda:all (one replica per GPU on a thread of its
# own, through NCCL even when there is one GPU) against --device cuda: 20
# tiny pretraining steps at the same global batch give the same losses
# (relative 1e-3: scatter-add atomics, and with several GPUs the summation
# order); BC_DIST_CHECK=1 also compares the replicas after every step.
# On GPU_CHECK_DEVICE=cpu: cpu:0,1 against cpu.
say "bertrun train --device cuda:all (replicas in one process)"
replicas=notrun
if [ -n "$bin" ]; then
  tiny=(--set hidden=32 --set ffn=64 --set heads=2 --set layers=2 --max-len 32 --data tests/data/sample --steps 20
        --batch 16 --report-every 1)
  repdev=cuda:all
  case "$dev" in cuda*) ;; *) repdev=$dev:0,1 ;; esac
  if timeout -k 5 "$(limit 60 190)" "$bin/bertrun" train --task pretrain "${tiny[@]}" --device "$dev" \
       --out "$tmp/rep1" >"$tmp/rep1.log" 2>&1 &&
     BC_DIST_NCCL=1 BC_DIST_CHECK=1 timeout -k 5 "$(limit 60 190)" "$bin/bertrun" train --task pretrain "${tiny[@]}" \
       --device "$repdev" --out "$tmp/repn" >"$tmp/repn.log" 2>&1; then
    replicas=$(python3 - "$tmp/rep1" "$tmp/repn" "$repdev" <<'EOF'
import json, sys
def load(d):
    return {r["step"]: r["loss"] for r in map(json.loads, open(d + "/metrics.jsonl")) if "loss" in r}
a, b = load(sys.argv[1]), load(sys.argv[2])
gap = max(abs(a[k] - b[k]) / abs(a[k]) for k in a) if a.keys() == b.keys() and a else float("inf")
print(("passed" if gap < 1e-3 else "FAILED") + f" ({sys.argv[3]}): max relative loss difference {gap:.2g} "
      f"over {len(a)} steps")
EOF
)
  else
    replicas="FAILED: $(tail -n 3 "$tmp/rep1.log" "$tmp/repn.log" 2>/dev/null | tr '\n' ' ' | cut -c1-400)"
  fi
  grep -h 'replicas' "$tmp/repn.log" | head -2
fi
fact replicas "$replicas"
echo "replicas: $replicas"

# shell_test FACT CMD...: one of tests/*.sh run by CMD on the device (with
# the binaries found above), its output shown; FACT is "passed (N checks)"
# or "FAILED: " and its FAIL lines and differences
shell_test() {
  local name=$1 result=notrun
  shift
  if [ -n "$bin" ]; then
    if env BERTC="$bin/bertc" BERTRUN="$bin/bertrun" "$@" >"$tmp/$name.log" 2>&1; then
      result="passed ($(grep -c '^ok' "$tmp/$name.log") checks)"
    else
      result="FAILED: $(grep -E '^FAIL|difference' "$tmp/$name.log" | tr '\n' ' ' | cut -c1-400)"
    fi
    cat "$tmp/$name.log"
  fi
  fact "$name" "$result"
}

# ---- c. length buckets on the device: tests/buckets.sh's checks on cuda ----
say "tests/buckets.sh on $dev"
shell_test buckets BUCKETS_DEVICES="$dev" timeout -k 5 "$(limit 90 120)" bash tests/buckets.sh

# ---- c. a Hugging Face BERT on the device: tests/hf.sh with its cuda check ----
say "tests/hf.sh with HF_DEVICES=$dev"
shell_test hf HF_DEVICES="$dev" timeout -k 5 "$(limit 120 120)" bash tests/hf.sh

# ---- d. bench_step on cuda ----
say "bench_step on $dev"
# the f32 (non-tensor-core) peak of the GPU, for bench_step's fraction of peak
case "$gpu" in
  *H100*PCIe*) peak=51200 ;;
  *H100*NVL*) peak=60000 ;;
  *H100*|*H200*) peak=66900 ;;
  *) peak="" ;;
esac
if [ -n "$bin" ]; then
  for gb in nli:512 pretrain:256; do
    g=${gb%:*} b=${gb#*:}
    timeout -k 10 "$(limit 90 120)" "$bin/bench_step" --device "$dev" --graph "$g" --batch "$b" --steps 20 --warmup 3 \
      --model models/bert.yaml ${peak:+--peak-gflops $peak} --json "$tmp/bench_$g.json" ||
      echo "gpu-check: bench_step $g failed (status $?)"
  done
  python3 - "$tmp/bench_nli.json" "$tmp/bench_pretrain.json" "$out/bertc.json" <<'EOF' || echo "gpu-check: cannot merge bench_step JSON"
import json, sys
parts = []
for p in sys.argv[1:3]:
    try:
        parts.append(json.load(open(p)))
    except (OSError, ValueError):
        pass
if parts:
    merged = dict(parts[0])
    merged["configs"] = [c for p in parts for c in p.get("configs", [])]
    json.dump(merged, open(sys.argv[3], "w"), indent=2)
EOF
  # the same nli step with TF32 tensor cores for the GEMMs (BC_TF32=1)
  BC_TF32=1 timeout -k 10 "$(limit 60 120)" "$bin/bench_step" --device "$dev" --graph nli --batch 512 --steps 20 \
    --warmup 3 --model models/bert.yaml --json "$tmp/bench_tf32.json" >/dev/null 2>&1 &&
    fact nli_tf32 "$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["configs"][0]; print("%.0f examples/s, %.2f ms/step" % (c["examples_per_s"], c["ms_per_step"]))' "$tmp/bench_tf32.json" 2>/dev/null)"
fi

# where the time of one step goes: per-kernel times from CUDA events
if [ -n "$bin" ] && [ -z "${GPU_CHECK_SKIP_PROFILE:-}" ]; then
  say "profile: nli step at batch 512, kernel by kernel (BC_PROFILE=1)"
  BC_PROFILE=1 timeout -k 10 "$(limit 60 100)" "$bin/bench_step" --device "$dev" --graph nli --batch 512 --steps 5 \
    --warmup 2 --model models/bert.yaml --json "$tmp/profile_nli.json" 2>&1 | tee "$out/profile.log" | tail -40
  BC_PROFILE=1 timeout -k 10 "$(limit 60 100)" "$bin/bench_step" --device "$dev" --graph pretrain --batch 256 --steps 5 \
    --warmup 2 --model models/bert.yaml --json "$tmp/profile_pretrain.json" 2>&1 | tee -a "$out/profile.log" | tail -40
fi

# ---- e. PyTorch ----
say "PyTorch on $torch_dev (eager, torch.compile)"
if [ -n "${GPU_CHECK_SKIP_TORCH:-}" ]; then
  echo "skipped (GPU_CHECK_SKIP_TORCH)"
else
  PYTHONUNBUFFERED=1 timeout -k 10 "$(limit 150 60)" python3 bench/torch_ref.py --device "$torch_dev" --json "$out/torch.json" ||
    echo "gpu-check: torch_ref.py ended with status $? (partial results are kept)"
fi

# ---- f. the pipeline ----
say "d2l pipeline on $dev"
run=$tmp/runs
data=$tmp/data
if [ -n "${GPU_CHECK_SKIP_PIPELINE:-}" ]; then
  fact pipeline "skipped (GPU_CHECK_SKIP_PIPELINE)"
elif [ -z "$bin" ]; then
  fact pipeline "not run (no binaries)"
else
  mkdir -p "$data" "$run"
  if [ -f .devcarry/data.tar.xz ]; then tar -C "$data" -xJf .devcarry/data.tar.xz
  elif [ -n "${BERT_DATA:-}" ]; then data=$BERT_DATA
  fi
  "$bin/bertrun" --help | grep -q cuda || echo "gpu-check: bertrun --help does not mention cuda (is --device cuda wired?)"
  {
    echo "== pretrain"
    t=$(now)
    timeout -k 10 "$(limit 160 90)" "$bin/bertrun" train --task pretrain --data "$data" --steps "${GPU_CHECK_PRETRAIN_STEPS:-4000}" --batch 256 --lr "${GPU_CHECK_PRETRAIN_LR:-0.01}" \
      --device "$dev" --save-every 250 --report-every 250 --out "$run/pretrain"
    st=$?
    echo "pretrain: status $st, $(elapsed "$t") s"
    fact pretrain_s "$(elapsed "$t")"
    fact pretrain_status "$([ $st = 124 ] || [ $st = 137 ] && echo "stopped at its time limit" || echo "status $st")"
    last=$(tail -1 "$run/pretrain/metrics.jsonl" 2>/dev/null)
    fact pretrain_last "$last"
    echo "== fine-tune"
    t=$(now)
    if [ -f "$run/pretrain/checkpoint.safetensors" ]; then
      timeout -k 10 "$(limit 90 25)" "$bin/bertrun" train --task snli --data "$data" \
        --init "$run/pretrain/checkpoint.safetensors" --epochs "${GPU_CHECK_EPOCHS:-5}" --batch 512 --lr 1e-4 --device "$dev" \
        --report-every 50 --out "$run/snli"
      st=$?
      echo "fine-tune: status $st, $(elapsed "$t") s"
      fact snli_s "$(elapsed "$t")"
      fact snli_status "$([ $st = 124 ] || [ $st = 137 ] && echo "stopped at its time limit" || echo "status $st")"
      fact snli_last "$(tail -1 "$run/snli/metrics.jsonl" 2>/dev/null)"
    else
      fact snli_status "not run: no pretraining checkpoint"
    fi
    echo "== eval"
    t=$(now)
    if [ -f "$run/snli/checkpoint.safetensors" ]; then
      timeout -k 10 "$(limit 40 5)" "$bin/bertrun" eval --task snli "$run/snli/checkpoint.safetensors" --data "$data" \
        --device "$dev" | tee "$tmp/eval.txt"
      fact eval_s "$(elapsed "$t")"
      fact accuracy "$(sed -n 's/.*test accuracy \([0-9.]*\).*/\1/p' "$tmp/eval.txt" | head -1)"
    else
      fact eval_s "not run: no fine-tuned checkpoint"
    fi
  } 2>&1 | tee "$out/pipeline.log"
  fact pipeline ran
fi

# ---- g. the table ----
say "summary"
FACTS=$facts CASES=$tmp/cases python3 - "$out" <<'EOF' || { echo "gpu-check: summary failed; facts:"; cat "$facts"; }
import json, os, sys
out = sys.argv[1]
facts = {}
for line in open(os.environ["FACTS"]):
    k, _, v = line.rstrip("\n").partition("=")
    facts[k] = v

def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except (OSError, ValueError):
        return None

bertc, torch_r = load("bertc.json"), load("torch.json")
def fmt(x, f="{:.0f}"):
    return f.format(x) if isinstance(x, (int, float)) else "-"

rows = []
for graph, batch in (("nli", 512), ("pretrain", 256)):
    c = next((c for c in (bertc or {}).get("configs", []) if c["graph"] == graph and c["batch"] == batch), {})
    ex = c.get("examples_per_s")
    g = ((torch_r or {}).get("graphs") or {}).get(graph, {})
    row = {"graph": graph, "batch": batch, "bertc": ex, "bertc_error": c.get("error"),
           "ms_per_step": c.get("ms_per_step"), "kernels": c.get("kernels"),
           "gemm_fraction": c.get("gemm_fraction"), "fraction_of_peak": c.get("fraction_of_peak")}
    for mode in ("eager", "compile"):
        e = g.get(mode) or {}
        same = ((e.get("by_batch") or {}).get(str(batch)) or {}).get("examples_per_s")
        row[f"{mode}_same"], row[f"{mode}_best"], row[f"{mode}_best_batch"] = \
            same, e.get("best_examples_per_s"), e.get("best_batch")
    rows.append(row)

def pl(key):
    try:
        return json.loads(facts.get(key) or "null")
    except ValueError:
        return None

pre, ft = pl("pretrain_last"), pl("snli_last")
summary = {"gpu": facts.get("gpu"), "driver": facts.get("driver"), "build": facts.get("build"),
           "tests": facts.get("tests"), "tests_s": facts.get("tests_s"), "replicas": facts.get("replicas"),
           "buckets": facts.get("buckets"), "hf": facts.get("hf"),
           "bench": rows,
           "pipeline": {"status": facts.get("pipeline"), "pretrain_s": facts.get("pretrain_s"),
                 "pretrain_status": facts.get("pretrain_status"), "finetune_status": facts.get("snli_status"),
                        "pretrain_last": pre, "finetune_s": facts.get("snli_s"),
                        "finetune_last": ft, "eval_s": facts.get("eval_s"),
                        "test_accuracy": facts.get("accuracy")}}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)

print(f"GPU: {facts.get('gpu')} (driver {facts.get('driver')}); binaries: {facts.get('build')}")
for k in ("libcuda", "libnvrtc", "libcublas"):
    if facts.get(k):
        print(f"  {k}: {facts[k]}")
print(f"tests (ctest -L gpu): {facts.get('tests')}" +
      (f" in {facts['tests_s']} s" if facts.get("tests_s") else ""))
try:
    for line in open(os.environ["CASES"]):
        print("  " + line.strip())
except OSError:
    pass
print(f"replicas in one process (bertrun train --device cuda:all): {facts.get('replicas')}")
print(f"length buckets (tests/buckets.sh on the device): {facts.get('buckets')}")
print(f"Hugging Face BERT (tests/hf.sh, fine-tuning on the device against cpu): {facts.get('hf')}")
print()
print(f"{'step':9s} {'batch':>5s} {'bertc ex/s':>10s} | {'eager@b':>8s} {'x':>5s} {'eager best':>15s} {'x':>5s} | {'compile@b':>9s} {'x':>5s}")
for r in rows:
    def ratio(t):
        return f"{r['bertc'] / t:.2f}" if r["bertc"] and t else "-"
    eb = f"{fmt(r['eager_best'])} ({r['eager_best_batch'] or '-'})"
    comp = r["compile_same"]
    comp_s = fmt(comp) if comp else ("n/a" if (torch_r or {}).get("graphs", {}).get(r["graph"], {}).get("compile") else "-")
    print(f"{r['graph']:9s} {r['batch']:5d} {fmt(r['bertc']):>10s} | {fmt(r['eager_same']):>8s} {ratio(r['eager_same']):>5s} "
          f"{eb:>15s} {ratio(r['eager_best']):>5s} | {comp_s:>9s} {ratio(comp):>5s}")
    if r["bertc_error"]:
        print(f"  bertc {r['graph']}: {r['bertc_error'][:200]}")
    elif r["bertc"]:
        print(f"  bertc {r['graph']}: {fmt(r['ms_per_step'], '{:.2f}')} ms/step, {fmt(r['kernels'])} kernels, "
              f"GEMMs {fmt(100 * r['gemm_fraction'] if r['gemm_fraction'] is not None else None)}% of the step, "
              f"{fmt(100 * r['fraction_of_peak'] if r['fraction_of_peak'] is not None else None, '{:.1f}')}% of f32 peak")
print("x: bertc examples/s over PyTorch's (above 1: bertc is faster); median steps, wall time incl. the batch upload")
if facts.get("nli_tf32"):
    print(f"bertc nli b512 with BC_TF32=1 (TF32 tensor cores in cuBLAS): {facts['nli_tf32']}")
print()
p = summary["pipeline"]
print(f"pipeline: {p['status']}")
if p["pretrain_s"]:
    print(f"  pretrain: {p['pretrain_s']} s, {facts.get('pretrain_status')}" +
          (f"; reached step {pre.get('step')} of 4000, loss {fmt(pre.get('loss'), '{:.3f}')}, "
           f"{fmt(pre.get('examples_per_s'))} ex/s" if pre else "; no progress record") +
          (f" (all 4000 steps: ~{4000 * pre['time_s'] / pre['step']:.0f} s)"
           if pre and pre.get("step") and pre.get("time_s") and pre["step"] < 4000 else ""))
if facts.get("snli_status"):
    print(f"  fine-tune: " + (f"{p['finetune_s']} s, " if p["finetune_s"] else "") + facts["snli_status"] +
          (f"; last record {json.dumps(ft)}" if ft else ""))
if p["eval_s"]:
    print(f"  eval: {p['eval_s']}" + (f" s, test accuracy {p['test_accuracy']}" if p["test_accuracy"] else ""))
EOF
rm -rf "$tmp"
rc=1
[ "$tests" = passed ] && rc=0
exec 1>&- 2>&- # let tee write the last lines before the script ends
wait "$tee_pid" 2>/dev/null
exit $rc

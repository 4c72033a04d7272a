#!/usr/bin/env bash
# Runs one harness of fuzz/ for SECONDS (default 30) from its seed corpus:
#   fuzz/run.sh BUILD_DIR READER [SECONDS]   (BUILD_DIR as given to fuzz/build.sh)
# Fails on any crash, sanitizer report, leak, input slower than 25 s
# (a hang) or use of more than 2 GB. New inputs go to BUILD_DIR/run/READER/
# (fresh each run), never into fuzz/corpus/; a failing input is saved as
# BUILD_DIR/run/READER/crash-*, leak-*, timeout-* or oom-*.
# Exit 77 when the harness is not built and no clang with libFuzzer exists.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1 reader=$2 secs=${3:-30}
source fuzz/lib.sh
bin=$dir/fuzz_$reader
if [ ! -x "$bin" ]; then
  fuzz_find_clang >/dev/null || { echo "fuzz: no clang with libFuzzer: skipped"; exit 77; }
  echo "fuzz: $bin is not built (fuzz/build.sh $dir)"
  exit 1
fi
work=$dir/run/$reader
rm -rf "$work"
mkdir -p "$work/new"
# libFuzzer's own failure codes default to 77, which ctest reads as skipped.
args=(-max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 -max_len=32768
      -error_exitcode=1 -timeout_exitcode=1 -print_final_stats=1 -artifact_prefix="$work/")
[ -f "fuzz/$reader.dict" ] && args+=(-dict="fuzz/$reader.dict")
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:${ASAN_OPTIONS:-}
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}
rc=0
"$bin" "${args[@]}" "$work/new" "fuzz/corpus/$reader" || rc=$?
[ "$rc" -eq 77 ] && rc=1 # a failure, whatever the runtime's code
exit "$rc"

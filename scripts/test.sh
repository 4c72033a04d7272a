#!/usr/bin/env bash
# Builds bertc (Release with debug info, plus the AddressSanitizer bertc) and
# runs the whole test suite; ctest prints its summary last. Its fuzz_build
# entry builds the fuzz/ harnesses with clang in build/fuzz, and fuzz_* run
# each for 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
# The real WikiText-2 and SNLI files, where .ci/run finds them; without them
# ctest lists test_data_real as skipped.
if [ -z "${BERT_DATA:-}" ] && [ -d ../shared/data ]; then
  BERT_DATA="$(cd ../shared/data && pwd)"
  export BERT_DATA
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBC_ASAN_TESTS=ON >/dev/null
cmake --build build -j "$(nproc)"
cd build
ctest --output-on-failure -j "$(nproc)" "$@"

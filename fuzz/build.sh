#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ with clang into DIR (default
# build/fuzz): a CMake build of its own with every library compiled with the
# fuzzer's coverage, AddressSanitizer and UBSan (BC_FUZZ_HARNESSES=ON,
# without LLVM). Exit 77 when no clang with libFuzzer is installed
# (clang-14 and libclang-rt-14-dev on Debian 12); BC_FUZZ_CC names another.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build/fuzz}
source fuzz/lib.sh
cc=$(fuzz_find_clang) || { echo "fuzz: no clang with libFuzzer (install clang-14 libclang-rt-14-dev)"; exit 77; }
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
CC=$cc cmake -S . -B "$dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBC_FUZZ_HARNESSES=ON \
  -DBC_FUZZ=OFF -DBC_LLVM=OFF -DBC_ASAN_TESTS=OFF >/dev/null
cmake --build "$dir" --target fuzz_all -j "$(nproc)"

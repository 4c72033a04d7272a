#!/usr/bin/env bash
# Builds bertc (Release with debug info, plus the AddressSanitizer bertc) and
# runs the whole test suite; ctest prints its summary last.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBC_ASAN_TESTS=ON >/dev/null
cmake --build build -j "$(nproc)"
cd build
ctest --output-on-failure -j "$(nproc)" "$@"

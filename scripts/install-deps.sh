#!/usr/bin/env bash
# Installs the system packages bertc builds and tests with (Debian 12);
# curl and ca-certificates are for scripts/get-data.sh; clang-14 and
# libclang-rt-14-dev (libFuzzer) build the harnesses of fuzz/; libutf8proc-dev
# gives the WordPiece tokenizer its Unicode data; libdnnl-dev (oneDNN, the
# default GEMM library: bench/GEMM.md) and libblis-dev (BC_GEMM=blis) are
# loaded at run time, and without them the GEMMs run on OpenBLAS.
# Needs root (CI runs as root); safe to run again.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config libyaml-dev llvm-14-dev graphviz
      libopenblas-dev libutf8proc-dev openmpi-bin libopenmpi-dev python3 curl ca-certificates clang-14
      libclang-rt-14-dev libdnnl-dev libblis-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "dependencies present: ${pkgs[*]}"

#!/usr/bin/env bash
# devpack.sh — packs what the GPU machine needs and lacks into .devcarry/
# (carried beside the working tree; bench/gpu-check.sh uses it there):
#   build/          bertc, bertrun, bench_step, peak_fma and every test binary,
#                   built here with -DBC_LLVM=OFF (no libLLVM there) in
#                   build-devcarry/ (kept, so repacking is incremental), debug
#                   info stripped, and ctest's CTestTestfile.cmake
#   lib.tar.xz      lib/: the shared libraries the binaries need that a bare
#                   Ubuntu 24.04 + CUDA image lacks (found with ldd: libyaml,
#                   OpenBLAS and its libgfortran, libquadmath, utf8proc),
#                   plus pkgconf; sysroot/: headers (yaml.h, cblas.h,
#                   utf8proc.h), .pc files and
#                   pkg-config, so gpu-check.sh can rebuild there when the
#                   sources changed. Compressed (gpu-check.sh unpacks it into
#                   .devcarry/) because OpenBLAS alone is 36 MB and all that
#                   travels, working tree included, must fit in 64 MiB; and
#                   no symbolic links travel outside the archive
#   data.tar.xz     the data the full pipeline reads, from $BERT_DATA
#                   (default ../shared/data): wikitext-2/wiki.train.tokens,
#                   snli/snli_1.0_{dev,test,train_0.01,train_extra}.txt (and
#                   snli_1.0_train.txt when present)
#   MANIFEST        source dir, commit, date, sizes, and a hash of the
#                   sources the binaries were built from (gpu-check.sh
#                   rebuilds on the device when the carried sources differ)
# The CMake build has absolute paths baked in (BC_SOURCE_DIR, the test
# commands): gpu-check.sh links this checkout's path (MANIFEST: source_dir)
# to the device's copy. Fails when .devcarry is over DEVPACK_LIMIT_MIB
# (default 45) or when the binaries need a library it cannot carry.
#
# Usage: scripts/devpack.sh            (env: BERT_DATA, DEVPACK_LIMIT_MIB,
#        DEVPACK_CMAKE_ARGS="..." extra cmake arguments, DEVPACK_JOBS)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
pack=.devcarry
obj=build-devcarry
data=${BERT_DATA:-../shared/data}
limit_mib=${DEVPACK_LIMIT_MIB:-45}
jobs=${DEVPACK_JOBS:-$(nproc)}
die() { echo "devpack: $*" >&2; exit 1; }
say() { printf '== %s\n' "$*"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# The sources the binaries are built from, hashed the same way by
# gpu-check.sh on the device (no git there): every .c .h .def .yaml and
# CMakeLists.txt under the folders CMake compiles, sorted by path.
source_hash() {
  find graph passes codegen runtime tasks tests bench models CMakeLists.txt \
      -type f \( -name '*.c' -o -name '*.h' -o -name '*.def' -o -name '*.yaml' -o -name CMakeLists.txt \) \
      2>/dev/null | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16
}

# ---- build ----
say "build ($obj, -DBC_LLVM=OFF)"
# shellcheck disable=SC2086
cmake -S . -B "$obj" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBC_LLVM=OFF -DBC_ASAN_TESTS=OFF \
  ${DEVPACK_CMAKE_ARGS:-} >"$obj.cmake.log" 2>&1 || { cat "$obj.cmake.log"; die "cmake failed"; }
grep -q '^BC_LLVM:BOOL=OFF' "$obj/CMakeCache.txt" ||
  die "CMakeLists.txt has no BC_LLVM option: the binaries would need libLLVM"
if grep -q '^BC_CUDA_INCLUDE:PATH=.*NOTFOUND' "$obj/CMakeCache.txt" || ! grep -q '^BC_CUDA_INCLUDE:PATH=' "$obj/CMakeCache.txt"; then
  die "CMake found no CUDA headers (cudaTypedefs.h): the cuda backend would be a stub"
fi
rm -f "$obj.cmake.log"
cmake --build "$obj" -j "$jobs" >"$obj.build.log" 2>&1 || { tail -40 "$obj.build.log"; die "build failed"; }
rm -f "$obj.build.log"
srchash=$(source_hash)

# ---- binaries ----
say "binaries"
rm -rf "${pack:?}/build" "${pack:?}/lib" "${pack:?}/sysroot" "${pack:?}/lib.tar.xz"
mkdir -p "$pack/build"
bins=()
for f in "$obj"/*; do
  [ -f "$f" ] && [ -x "$f" ] && head -c 4 "$f" | grep -q 'ELF' && bins+=("$f")
done
[ ${#bins[@]} -gt 5 ] || die "no binaries in $obj"
for f in "${bins[@]}"; do
  strip --strip-debug -o "$pack/build/$(basename "$f")" "$f"
done
for want in bertc bertrun bench_step test_gpu test_cpu; do
  [ -x "$pack/build/$want" ] || die "$want was not built"
done
# ctest's list of tests, with this build folder's paths
sed "s|$root/$obj|$root/$pack/build|g" "$obj/CTestTestfile.cmake" >"$pack/build/CTestTestfile.cmake"
echo "${#bins[@]} binaries"

# ---- shared libraries ----
say "shared libraries (ldd)"
# in every Ubuntu 24.04 image (glibc, libgcc): never carried
system='^(linux-vdso\.so|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|ld-linux-x86-64\.so|libgcc_s\.so|libstdc\+\+\.so|libz\.so)'
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lib"
carried=()
while read -r name path; do
  [[ "$name" =~ $system ]] && continue
  case "$name" in
    libyaml-0.so.*|libopenblas.so.*|libgfortran.so.*|libquadmath.so.*|libutf8proc.so.*) ;;
    *) die "the binaries need $name ($path), which devpack does not know how to carry; ldd ${bins[0]}" ;;
  esac
  [ -f "$path" ] || die "$name: not found ($path)"
  cp -L "$path" "$stage/lib/$name"
  carried+=("$name")
done < <(for f in "${bins[@]}"; do ldd "$f"; done | awk '$2 == "=>" { print $1, $3 } $2 == "=>" && $3 == "not" { print $1, "missing" }' | sort -u)
for need in libyaml-0.so.2 libopenblas.so.0 libutf8proc.so.2; do
  [ -f "$stage/lib/$need" ] || die "$need expected among the libraries, not found by ldd"
done
# pkg-config for a rebuild there (pkgconf is 45 kB, and needs libpkgconf)
pkgconf=$(command -v pkgconf || true)
if [ -n "$pkgconf" ]; then
  cp -L "$pkgconf" "$stage/lib/pkgconf"
  while read -r name path; do
    [[ "$name" =~ $system ]] || cp -L "$path" "$stage/lib/$name"
  done < <(ldd "$pkgconf" | awk '$2 == "=>" { print $1, $3 }')
fi
printf '%s\n' "${carried[@]}"

# ---- headers, .pc files, pkg-config: a rebuild on the device ----
sys="$stage/sysroot"
mkdir -p "$sys/include" "$sys/lib/pkgconfig" "$sys/bin"
yaml_h=$(echo '#include <yaml.h>' | cpp -H -o /dev/null 2>&1 | awk '/yaml.h$/ { print $2; exit }')
[ -f "$yaml_h" ] && cp "$yaml_h" "$sys/include/"
utf8proc_h=$(echo '#include <utf8proc.h>' | cpp -H -o /dev/null 2>&1 | awk '/utf8proc.h$/ { print $2; exit }')
[ -f "$utf8proc_h" ] && cp "$utf8proc_h" "$sys/include/"
blas_inc=$(pkg-config --variable=includedir openblas 2>/dev/null || true)
for h in cblas.h openblas_config.h; do
  for d in "$blas_inc" /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas /usr/include; do
    if [ -n "$d" ] && [ -f "$d/$h" ]; then cp "$d/$h" "$sys/include/"; break; fi
  done
done
ln -s ../../lib/libyaml-0.so.2 "$sys/lib/libyaml.so"
ln -s ../../lib/libopenblas.so.0 "$sys/lib/libopenblas.so"
ln -s ../../lib/libutf8proc.so.2 "$sys/lib/libutf8proc.so"
cat >"$sys/lib/pkgconfig/libutf8proc.pc" <<'EOF'
prefix=${pcfiledir}/../..
Name: libutf8proc
Description: UTF-8 processing library (carried by scripts/devpack.sh)
Version: 2.6.0
Cflags: -I${prefix}/include
Libs: -L${prefix}/lib -lutf8proc
EOF
cat >"$sys/lib/pkgconfig/yaml-0.1.pc" <<'EOF'
prefix=${pcfiledir}/../..
Name: LibYAML
Description: Library to parse and emit YAML (carried by scripts/devpack.sh)
Version: 0.2.5
Cflags: -I${prefix}/include
Libs: -L${prefix}/lib -lyaml
EOF
cat >"$sys/lib/pkgconfig/openblas.pc" <<'EOF'
prefix=${pcfiledir}/../..
Name: openblas
Description: OpenBLAS (carried by scripts/devpack.sh)
Version: 0.3.21
Cflags: -I${prefix}/include
Libs: -L${prefix}/lib -lopenblas
EOF
[ -n "$pkgconf" ] && ln -s ../../lib/pkgconf "$sys/bin/pkg-config"
tar -C "$stage" -cf - lib sysroot | xz -9e -T"$jobs" >"$pack/lib.tar.xz"
echo "lib.tar.xz: $(mib "$(stat -c %s "$pack/lib.tar.xz")") (from $(mib "$(du -sb "$stage" | cut -f1)"))"

# ---- data ----
say "data ($data)"
[ -f "$data/wikitext-2/wiki.train.tokens" ] || die "$data/wikitext-2/wiki.train.tokens not found (set BERT_DATA)"
files=(wikitext-2/wiki.train.tokens)
for f in snli_1.0_dev.txt snli_1.0_test.txt snli_1.0_train.txt snli_1.0_train_0.01.txt snli_1.0_train_extra.txt; do
  [ -f "$data/snli/$f" ] && files+=("snli/$f")
done
for f in snli_1.0_dev.txt snli_1.0_test.txt; do [ -f "$data/snli/$f" ] || die "$data/snli/$f not found"; done
# reuse the archive when it holds the same files, none newer than it
reuse=0
if [ -f "$pack/data.tar.xz" ] && [ -f "$pack/data.files" ] &&
   [ "$(cat "$pack/data.files")" = "${files[*]}" ]; then
  reuse=1
  for f in "${files[@]}"; do [ "$data/$f" -nt "$pack/data.tar.xz" ] && reuse=0; done
fi
if [ $reuse = 0 ]; then
  tar -C "$data" -cf - "${files[@]}" | xz -9 -T"$jobs" >"$pack/data.tar.xz"
  echo "${files[*]}" >"$pack/data.files"
fi
printf '  %s\n' "${files[@]}"
echo "data.tar.xz: $(mib "$(stat -c %s "$pack/data.tar.xz")")$([ $reuse = 1 ] && echo ' (unchanged, reused)')"

# ---- manifest and sizes ----
pack_bytes=$(du -sb "$pack" | cut -f1)
tree_bytes=$( (git ls-files -z --cached --others --exclude-standard 2>/dev/null || true) |
  xargs -0 -r stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
cat >"$pack/MANIFEST" <<EOF
source_dir=$root
source_hash=$srchash
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
build_type=RelWithDebInfo BC_LLVM=OFF
libs=${carried[*]}
data=${files[*]}
EOF
say "sizes"
echo "  .devcarry/build    $(mib "$(du -sb "$pack/build" | cut -f1)")"
echo "  .devcarry/lib.tar.xz $(mib "$(stat -c %s "$pack/lib.tar.xz")")"
echo "  .devcarry/data.tar.xz $(mib "$(stat -c %s "$pack/data.tar.xz")")"
echo "  .devcarry total    $(mib "$pack_bytes") (limit ${limit_mib} MiB)"
echo "  working tree       $(mib "$tree_bytes")"
echo "  carried in all     $(mib $((pack_bytes + tree_bytes))) (the device's limit: 64 MiB)"
[ "$pack_bytes" -le $((limit_mib * 1048576)) ] || die ".devcarry is $(mib "$pack_bytes"), over ${limit_mib} MiB"
[ $((pack_bytes + tree_bytes)) -le $((62 * 1048576)) ] || die "working tree + .devcarry are over 62 MiB"
echo "devpack: ok. Carry '.devcarry'; on the device: bench/gpu-check.sh"

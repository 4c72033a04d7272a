# fuzz/lib.sh — sourced by fuzz/build.sh and fuzz/run.sh.
# fuzz_find_clang: prints the first of $BC_FUZZ_CC, clang-14, clang that
# links a libFuzzer program with ASan and UBSan; fails when none does.
fuzz_find_clang() {
  local cc tmp
  tmp=$(mktemp -d)
  printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' >"$tmp/t.c"
  for cc in ${BC_FUZZ_CC:-} clang-14 clang; do
    if command -v "$cc" >/dev/null &&
       "$cc" -fsanitize=fuzzer,address,undefined "$tmp/t.c" -o "$tmp/t" 2>/dev/null; then
      rm -rf "$tmp"
      echo "$cc"
      return 0
    fi
  done
  rm -rf "$tmp"
  return 1
}

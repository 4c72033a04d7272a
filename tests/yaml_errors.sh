#!/usr/bin/env bash
# tests/yaml_errors.sh — every broken model in tests/yaml_errors/ through the
# bertc binary built with AddressSanitizer and UBSan: exit status 1, the
# diagnostic announced by the file's `# expect:` line on stderr (FILE = the
# path as passed, DIR = its folder), and no sanitizer report (leaks included).
# `# args:` on the second line gives extra options. Skips (77) when
# BERTC_ASAN is not set or not built (cmake -DBC_ASAN_TESTS=OFF).
set -u
if [ -z "${BERTC_ASAN:-}" ] || [ ! -x "$BERTC_ASAN" ]; then
  echo "skip: BERTC_ASAN not built"
  exit 77
fi
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1
dir=tests/yaml_errors
fail=0
n=0
for f in "$dir"/*.yaml; do
  n=$((n + 1))
  expect=$(sed -n '1s/^# expect: //p' "$f")
  args=$(sed -n '2s/^# args: //p' "$f")
  if [ -z "$expect" ]; then
    echo "FAIL: $f has no '# expect:' first line"; fail=1; continue
  fi
  expect=${expect//FILE/$f}
  expect=${expect//DIR/$dir}
  # shellcheck disable=SC2086  # args are words on purpose
  err=$("$BERTC_ASAN" compile "$f" $args 2>&1 >/dev/null)
  rc=$?
  if [ $rc -ne 1 ]; then
    echo "FAIL: $f: exit status $rc, want 1"; fail=1
  fi
  if ! grep -qxF -- "$expect" <<<"$err"; then
    echo "FAIL: $f: stderr lacks the line"; echo "  want: $expect"
    echo "  got:  $(head -1 <<<"$err")"; fail=1
  fi
  if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error' <<<"$err"; then
    echo "FAIL: $f: sanitizer report:"; echo "$err" | sed 's/^/  /' | head -40; fail=1
  fi
done
[ $fail -eq 0 ] && echo "ok: $n broken models rejected cleanly"
exit $fail

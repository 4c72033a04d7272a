# tests/lib/check.sh — sourced by the shell tests: `check WHAT CMD...` runs CMD,
# prints "ok: WHAT" or "FAIL: WHAT", and a failure sets fail=1 (the test's
# exit status at its end).
fail=0
check() {
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fail=1; fi
}

#!/usr/bin/env bash
# tests/get_data.sh — scripts/get-data.sh against a web server on 127.0.0.1
# (started here, on a free port, stopped on exit) serving small archives made
# here with the real archives' inner layout: a good archive lands in the
# layout bertrun reads and a second run does nothing; mirrors are tried in
# order; an archive placed by hand is extracted without the network; a bad
# checksum is an error naming the file and both SHA-1s that leaves nothing
# in the data folder, and so is an archive that lacks a file; a download cut short keeps FILE.part and the next run
# resumes it with a Range request; a server that is down gives the offline
# advice, exit 3, at once. Nothing leaves 127.0.0.1; a few seconds.
set -u
GET=scripts/get-data.sh
fail=0
check() { # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fail=1; return 1; fi
}
for tool in curl python3 sha1sum; do
  command -v $tool >/dev/null || { echo "skip: $tool is not installed"; exit 77; }
done
tmp=$(mktemp -d)
server_pid=""
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
# The getter must not read the caller's data folder or addresses.
unset BERT_DATA BC_WIKITEXT_URLS BC_SNLI_URLS BC_WIKITEXT_SHA1 BC_SNLI_SHA1 BC_CONNECT_TIMEOUT
# ... and curl must ask the test server itself, not a proxy.
export no_proxy=127.0.0.1 NO_PROXY=127.0.0.1

# The archives: a fake WikiText-2 (wikitext-2/wiki.*.tokens) and a fake SNLI
# (snli_1.0/*.txt and *.jsonl, and a macOS resource fork as the real one
# has). Pseudo-random words, so that half of the zip is tens of KB.
mkdir -p "$tmp/www/mirror" "$tmp/src"
python3 - "$tmp/www" "$tmp/src" <<'EOF'
import os, random, sys, zipfile
www, src = sys.argv[1], sys.argv[2]
rng = random.Random(0)
words = ["w%d" % i for i in range(5000)]
def text(lines):
    return "".join(" " + " ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) + " \n"
                   for _ in range(lines))
files = {"wiki.train.tokens": text(3000), "wiki.valid.tokens": text(100), "wiki.test.tokens": text(100)}
head = "gold_label\tsentence1_binary_parse\tsentence2_binary_parse\n"
for split in ("train", "dev", "test"):
    files[f"snli_1.0_{split}.txt"] = head + "".join(
        f"entailment\t( a {rng.choice(words)} )\t( b {rng.choice(words)} )\n" for _ in range(200))
for name, body in files.items():
    open(os.path.join(src, name), "w").write(body)
with zipfile.ZipFile(os.path.join(www, "wikitext-2-v1.zip"), "w", zipfile.ZIP_DEFLATED) as z:
    for n in ("wiki.test.tokens", "wiki.train.tokens", "wiki.valid.tokens"):
        z.writestr("wikitext-2/" + n, files[n])
# An archive that lacks a file (whose checksum is given as right), to see
# that an extraction that fails leaves nothing half-made.
os.mkdir(os.path.join(www, "incomplete"))
with zipfile.ZipFile(os.path.join(www, "incomplete", "wikitext-2-v1.zip"), "w") as z:
    for n in ("wiki.train.tokens", "wiki.valid.tokens"):
        z.writestr("wikitext-2/" + n, files[n])
with zipfile.ZipFile(os.path.join(www, "snli_1.0.zip"), "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("snli_1.0/README.txt", "fake SNLI\n")
    for split in ("dev", "test", "train"):
        z.writestr(f"__MACOSX/snli_1.0/._snli_1.0_{split}.txt", "resource fork")
        z.writestr(f"snli_1.0/snli_1.0_{split}.txt", files[f"snli_1.0_{split}.txt"])
        z.writestr(f"snli_1.0/snli_1.0_{split}.jsonl", "{}\n")
EOF
wt_sha1=$(sha1sum "$tmp/www/wikitext-2-v1.zip" | cut -d' ' -f1)
snli_sha1=$(sha1sum "$tmp/www/snli_1.0.zip" | cut -d' ' -f1)
wt_size=$(stat -c %s "$tmp/www/wikitext-2-v1.zip")

# The server: GET /PATH serves www/PATH (www/mirror/ is empty), honouring "Range: bytes=N-" (206,
# or 416 past the end); GET /truncate/NAME without a Range header announces
# the whole length, sends half of it and closes. Each request is logged as
# "PATH RANGE" (RANGE "-" when absent).
cat >"$tmp/server.py" <<'EOF'
import http.server, os, re, sys
root, portfile, log = sys.argv[1:4]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        rng = self.headers.get("Range")
        with open(log, "a") as f:
            f.write(f"{self.path} {rng or '-'}\n")
        truncate = self.path.startswith("/truncate/")
        name = self.path[len("/truncate"):] if truncate else self.path
        path = os.path.join(root, name.lstrip("/"))
        if not os.path.isfile(path):
            self.send_error(404)
            return
        data = open(path, "rb").read()
        start = 0
        if rng:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncate and not rng else body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(portfile + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(portfile + ".tmp", portfile)
server.serve_forever()
EOF
python3 "$tmp/server.py" "$tmp/www" "$tmp/port" "$tmp/log" &
server_pid=$!
for _ in $(seq 100); do [ -f "$tmp/port" ] && break; sleep 0.05; done
[ -f "$tmp/port" ] || { echo "FAIL: the test server did not start"; exit 1; }
base="http://127.0.0.1:$(cat "$tmp/port")"
: >"$tmp/log"

sums=(--wikitext-sha1 "$wt_sha1" --snli-sha1 "$snli_sha1" --connect-timeout 2)
# same_files DIR: DIR's layout holds exactly the archives' files, byte for byte
same_files() {
  for f in wiki.train.tokens wiki.valid.tokens wiki.test.tokens; do
    cmp -s "$tmp/src/$f" "$1/wikitext-2/$f" || { echo "  $1/wikitext-2/$f differs or is missing"; return 1; }
  done
  for f in snli_1.0_train.txt snli_1.0_dev.txt snli_1.0_test.txt; do
    cmp -s "$tmp/src/$f" "$1/snli/$f" || { echo "  $1/snli/$f differs or is missing"; return 1; }
  done
}
# only_entries DIR NAME...: DIR's entries (hidden ones too) are exactly NAME...
only_entries() {
  local dir=$1; shift
  local got want
  got=$(ls -A "$dir" 2>/dev/null | sort | tr '\n' ' ')
  want=$([ $# -gt 0 ] && printf '%s\n' "$@" | sort | tr '\n' ' ')
  [ "$got" = "$want" ] || { echo "  $dir holds '$got', expected '$want'"; return 1; }
}

check "--help lists every option and the exit status" bash -c "'$GET' --help >'$tmp/help' &&
  for o in --data --only --wikitext-url --snli-url --wikitext-sha1 --snli-sha1 --connect-timeout --help \
    'Exit status'; do grep -q -- \"\$o\" '$tmp/help' || { echo \"  --help lacks \$o\"; exit 1; }; done"
check "an unknown option is a usage error (2)" bash -c "'$GET' --frobnicate 2>/dev/null; [ \$? -eq 2 ]"
check "a malformed SHA-1 is a usage error (2)" bash -c "'$GET' --snli-sha1 abc 2>/dev/null; [ \$? -eq 2 ]"

# 1. A good archive, WikiText-2 from its second mirror.
d="$tmp/good"
"$GET" --data "$d" "${sums[@]}" --wikitext-url "$base/mirror/wikitext-2-v1.zip" \
  --wikitext-url "$base/wikitext-2-v1.zip" --snli-url "$base/snli_1.0.zip" >"$tmp/out1" 2>&1
rc=$?
check "good archives: exit 0" test "$rc" = 0 || cat "$tmp/out1"
check "good archives: the files land in the layout bertrun reads" same_files "$d"
check "good archives: nothing else is left (no archive, part or temporary folder)" only_entries "$d" snli wikitext-2
check "good archives: only the files bertrun reads are extracted" only_entries "$d/snli" \
  snli_1.0_train.txt snli_1.0_dev.txt snli_1.0_test.txt
check "mirrors are tried in order, the missing one first" \
  test "$(cut -d' ' -f1 "$tmp/log" | tr '\n' ' ')" = "/mirror/wikitext-2-v1.zip /wikitext-2-v1.zip /snli_1.0.zip "
: >"$tmp/log"
"$GET" --data "$d" "${sums[@]}" --wikitext-url "$base/wikitext-2-v1.zip" --snli-url "$base/snli_1.0.zip" \
  >"$tmp/out2" 2>&1
rc=$?
check "second run: exit 0, says the data are present" bash -c "[ $rc = 0 ] && grep -q 'present in' '$tmp/out2'"
check "second run: no request at all" test ! -s "$tmp/log"
check "second run: the files are unchanged" same_files "$d"

# An archive placed by hand is verified and extracted without any address.
d="$tmp/hand"
mkdir -p "$d" && cp "$tmp/www/wikitext-2-v1.zip" "$d/"
"$GET" --data "$d" --only wikitext-2 "${sums[@]}" --wikitext-url "http://127.0.0.1:1/none.zip" >"$tmp/out" 2>&1
rc=$?
check "an archive placed by hand: exit 0, extracted, then deleted" bash -c \
  "[ $rc = 0 ] && cmp -s '$tmp/src/wiki.train.tokens' '$d/wikitext-2/wiki.train.tokens' && [ ! -e '$d/wikitext-2-v1.zip' ]" \
  || cat "$tmp/out"

# 2. A bad checksum.
d="$tmp/bad"
mkdir -p "$d"
bad=0123456789abcdef0123456789abcdef01234567
"$GET" --data "$d" --only wikitext-2 --wikitext-sha1 $bad --wikitext-url "$base/wikitext-2-v1.zip" \
  >"$tmp/out" 2>&1
rc=$?
check "bad checksum: exit 4" test "$rc" = 4 || cat "$tmp/out"
check "bad checksum: the error names the file, the expected and the actual SHA-1" bash -c \
  "grep 'checksum mismatch' '$tmp/out' | grep 'wikitext-2-v1.zip' | grep $bad | grep -q $wt_sha1" || cat "$tmp/out"
check "bad checksum: nothing is left in the data folder" only_entries "$d"

# An archive with the right checksum that lacks a file: nothing of it stays.
d="$tmp/incomplete"
mkdir -p "$d"
"$GET" --data "$d" --only wikitext-2 --wikitext-url "$base/incomplete/wikitext-2-v1.zip" \
  --wikitext-sha1 "$(sha1sum "$tmp/www/incomplete/wikitext-2-v1.zip" | cut -d' ' -f1)" >"$tmp/out" 2>&1
rc=$?
check "an archive that lacks a file: exit 4, the error names the file" bash -c \
  "[ $rc = 4 ] && grep -q 'lacks wiki.test.tokens' '$tmp/out'" || cat "$tmp/out"
check "an archive that lacks a file: nothing is left in the data folder" only_entries "$d"

# 3. A download cut short, then resumed.
d="$tmp/cut"
: >"$tmp/log"
"$GET" --data "$d" --only wikitext-2 "${sums[@]}" --wikitext-url "$base/truncate/wikitext-2-v1.zip" \
  >"$tmp/out" 2>&1
rc=$?
half=$((wt_size / 2))
check "cut short: exit 3, the part is kept and named" bash -c \
  "[ $rc = 3 ] && grep -q 'wikitext-2-v1.zip.part' '$tmp/out'" || cat "$tmp/out"
check "cut short: FILE.part holds the half that came, nothing else is there" bash -c \
  "[ \"\$(stat -c %s '$d/wikitext-2-v1.zip.part')\" = $half ] && [ ! -e '$d/wikitext-2' ]"
"$GET" --data "$d" --only wikitext-2 "${sums[@]}" --wikitext-url "$base/truncate/wikitext-2-v1.zip" \
  >"$tmp/out" 2>&1
rc=$?
check "resumed: exit 0" test "$rc" = 0 || cat "$tmp/out"
check "resumed: the second request asks for the rest (Range: bytes=$half-)" \
  test "$(sed -n 2p "$tmp/log")" = "/truncate/wikitext-2-v1.zip bytes=$half-"
check "resumed: the files are complete, the part is gone" bash -c \
  "cmp -s '$tmp/src/wiki.train.tokens' '$d/wikitext-2/wiki.train.tokens' && cmp -s '$tmp/src/wiki.test.tokens' \
  '$d/wikitext-2/wiki.test.tokens' && [ ! -e '$d/wikitext-2-v1.zip.part' ]"

# 4. The server is down: a port nobody listens on.
down=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
d="$tmp/down"
start=$(date +%s%N)
"$GET" --data "$d" "${sums[@]}" --wikitext-url "http://127.0.0.1:$down/wikitext-2-v1.zip" \
  --snli-url "http://127.0.0.1:$down/snli_1.0.zip" >"$tmp/out" 2>&1
rc=$?
ms=$((($(date +%s%N) - start) / 1000000))
check "server down: exit 3" test "$rc" = 3 || cat "$tmp/out"
check "server down: the message names the address tried and what to do" bash -c \
  "grep -q 'http://127.0.0.1:$down/wikitext-2-v1.zip: connection refused' '$tmp/out' &&
   grep -q 'http://127.0.0.1:$down/snli_1.0.zip' '$tmp/out' && grep -q 'copy it to $d/wikitext-2-v1.zip' '$tmp/out' &&
   grep -q 'pass --data DIR' '$tmp/out'" || cat "$tmp/out"
check "server down: quick (${ms} ms)" test "$ms" -lt 5000
check "server down: no data folder is left behind" test ! -e "$d"
exit $fail

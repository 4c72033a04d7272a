#!/usr/bin/env bash
# get-data.sh — downloads the chapter's data as d2l's data hub does:
# WikiText-2 (wikitext-2-v1.zip) and SNLI 1.0 (snli_1.0.zip), each checked
# against d2l's SHA-1, then extracted into the layout bertrun reads:
#   DATA/wikitext-2/wiki.{train,valid,test}.tokens
#   DATA/snli/snli_1.0_{train,dev,test}.txt
# Invariants: a file in DATA/wikitext-2/ or DATA/snli/ is complete (each
# archive is extracted into a temporary folder beside its target, then
# renamed into place); a download in progress is DATA/NAME.zip.part and the
# next run resumes it (HTTP Range); an archive that fails its checksum is
# deleted. It does not convert other formats (jsonl, parquet) and does not
# fetch the 1% SNLI sample or the extra subset (shared/data's README).
# Needs bash, curl, sha1sum and python3 (zip extraction). See --help.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
prog=scripts/get-data.sh

# d2l's DATA_HUB (d2l/torch.py): the addresses and SHA-1s of both archives.
# The S3 bucket d2l names for WikiText-2 refuses downloads (403) from many
# places now; its author's own mirror serves the same zip.
default_wikitext_urls="https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip https://wikitext.smerity.com/wikitext-2-v1.zip"
default_snli_urls="https://nlp.stanford.edu/projects/snli/snli_1.0.zip"
default_wikitext_sha1=3c914d17d80b1459be871a5039ac23e752a53cbe
default_snli_sha1=9fcde07509c7e87ec61c640c1b2753d9041758e4

usage() {
  cat <<EOF
Usage: $prog [options]

Downloads WikiText-2 and SNLI 1.0 from the addresses d2l uses, verifies
their SHA-1, and extracts them into DATA/wikitext-2/ and DATA/snli/ (the
layout bertrun --data DATA reads). A dataset whose files are all present is
skipped; an interrupted download (DATA/NAME.zip.part) is resumed on the
next run; an archive placed by hand at DATA/NAME.zip is verified and
extracted without downloading.

Options:
  --data DIR            data folder (default: \$BERT_DATA, else the repository's
                        data/, here $repo/data)
  --only NAME           only this dataset: wikitext-2 or snli (default: both)
  --wikitext-url URL    an address of wikitext-2-v1.zip; repeat for mirrors,
                        tried in order (default: \$BC_WIKITEXT_URLS, a
                        space-separated list, else
                          ${default_wikitext_urls// /$'\n                          '})
  --snli-url URL        an address of snli_1.0.zip; repeatable (default:
                        \$BC_SNLI_URLS, else
                          $default_snli_urls)
  --wikitext-sha1 HEX   expected SHA-1 of wikitext-2-v1.zip (default:
                        \$BC_WIKITEXT_SHA1, else d2l's $default_wikitext_sha1)
  --snli-sha1 HEX       expected SHA-1 of snli_1.0.zip (default: \$BC_SNLI_SHA1,
                        else d2l's $default_snli_sha1)
  --connect-timeout S   seconds to wait for each address to answer (default:
                        \$BC_CONNECT_TIMEOUT, else 15); a transfer that stalls
                        (under 1 byte/s) for 60 s is given up too
  -h, --help            this text

Files: wikitext-2-v1.zip gives wikitext-2/wiki.{train,valid,test}.tokens;
snli_1.0.zip gives snli/snli_1.0_{train,dev,test}.txt (the full train split:
550,152 pairs). Archives are deleted once extracted.

Offline: fetch the archive elsewhere and copy it to DATA/ (it is verified and
extracted on the next run), or place the extracted files in the layout above,
or pass --data DIR (bertrun, scripts/run.sh) a folder that holds them.

Exit status: 0 every dataset asked for is in place; 1 another error (no
curl or python3, data folder not writable, I/O); 2 usage error; 3 no address
could be reached or served the whole file (offline; a partial download is
kept and resumed next time); 4 a checksum mismatch or an unusable archive
(nothing of it is kept). With both datasets failing, the first one's status.
EOF
}

usage_error() {
  echo "get-data: $*" >&2
  echo "usage: $prog [--data DIR] [--only NAME] [--wikitext-url URL]... [--snli-url URL]... (--help for all)" >&2
  exit 2
}

data="${BERT_DATA:-}"
only=""
wikitext_urls=() snli_urls=()
wikitext_sha1="${BC_WIKITEXT_SHA1:-$default_wikitext_sha1}"
snli_sha1="${BC_SNLI_SHA1:-$default_snli_sha1}"
connect_timeout="${BC_CONNECT_TIMEOUT:-15}"
need_arg() { [ $# -ge 2 ] || usage_error "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --data) need_arg "$@"; data="$2"; shift 2 ;;
    --only) need_arg "$@"; only="$2"; shift 2 ;;
    --wikitext-url) need_arg "$@"; wikitext_urls+=("$2"); shift 2 ;;
    --snli-url) need_arg "$@"; snli_urls+=("$2"); shift 2 ;;
    --wikitext-sha1) need_arg "$@"; wikitext_sha1="$2"; shift 2 ;;
    --snli-sha1) need_arg "$@"; snli_sha1="$2"; shift 2 ;;
    --connect-timeout) need_arg "$@"; connect_timeout="$2"; shift 2 ;;
    *) usage_error "unknown option '$1'" ;;
  esac
done
[ -n "$data" ] || data="$repo/data"
case "$only" in ""|wikitext-2|snli) ;; *) usage_error "--only: '$only' is not wikitext-2 or snli" ;; esac
for s in "$wikitext_sha1" "$snli_sha1"; do
  [[ "$s" =~ ^[0-9a-fA-F]{40}$ ]] || usage_error "'$s' is not a SHA-1 (40 hexadecimal digits)"
done
[[ "$connect_timeout" =~ ^[0-9]+([.][0-9]+)?$ ]] || usage_error "--connect-timeout: '$connect_timeout' is not a number of seconds"
# shellcheck disable=SC2206 # the variables are space-separated lists
[ ${#wikitext_urls[@]} -gt 0 ] || wikitext_urls=(${BC_WIKITEXT_URLS:-$default_wikitext_urls})
# shellcheck disable=SC2206
[ ${#snli_urls[@]} -gt 0 ] || snli_urls=(${BC_SNLI_URLS:-$default_snli_urls})

for tool in curl sha1sum python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "get-data: error: $tool is not installed (scripts/install-deps.sh installs it)" >&2
    exit 1
  fi
done

# Cleanup on any exit: the temporary extraction folder of the moment, and the
# data folder itself when this run created it and left it empty.
extract_tmp=""
created_data=0
cleanup() {
  if [ -n "$extract_tmp" ]; then rm -rf "$extract_tmp"; fi
  if [ "$created_data" = 1 ]; then rmdir "$data" 2>/dev/null || true; fi
}
trap cleanup EXIT

say() { echo "get-data: $*"; }
err() { echo "get-data: error: $*" >&2; }
sha1_of() { sha1sum "$1" | cut -d' ' -f1; }
size_of() { stat -c %s "$1"; }

# Why curl failed, in words (its exit status; HTTP's code for 22).
curl_reason() {
  case "$1" in
    6) echo "could not resolve the host name" ;;
    7) echo "connection refused or no route to the host" ;;
    28) echo "no answer (timed out, or the transfer stalled)" ;;
    22) echo "the server answered HTTP $2" ;;
    18) echo "the connection closed before the whole file arrived" ;;
    35|60) echo "TLS failed (curl $1)" ;;
    52|56) echo "the connection broke (curl $1)" ;;
    *) echo "curl failed with status $1" ;;
  esac
}

complete() { # complete DIR FILE...: every file present and non-empty
  local dir=$1; shift
  for f in "$@"; do [ -s "$dir/$f" ] || return 1; done
}

# download NAME URL PART: fetches URL into PART, resuming from PART's size;
# returns curl's status and prints the HTTP code. A server that ignores the
# Range header gets the whole file asked for again.
download() {
  local name=$1 url=$2 part=$3 code rc have=0 progress=(-sS)
  [ -t 2 ] && progress=(--progress-bar)
  [ -f "$part" ] && have=$(size_of "$part")
  if [ "$have" -gt 0 ]; then
    say "$name: resuming $url at byte $have" >&2
  else
    say "$name: downloading $url" >&2
  fi
  local args=(-fL "${progress[@]}" --connect-timeout "$connect_timeout" --speed-limit 1 --speed-time 60
              -w '%{http_code}' -o "$part")
  rc=0
  code=$(curl "${args[@]}" -C - "$url") || rc=$?
  if [ "$rc" = 33 ]; then # the server cannot resume: start again from byte 0
    say "$name: $url does not resume downloads; starting again" >&2
    rm -f "$part"
    rc=0
    code=$(curl "${args[@]}" "$url") || rc=$?
  fi
  echo "$code"
  return "$rc"
}

# fetch NAME ARCHIVE SHA1 FOLDER FILES... (the URLs in the array urls):
# makes DATA/FOLDER/FILES present; returns this script's exit status.
fetch() {
  local name=$1 archive=$2 sha1=$3 folder=$4; shift 4
  local files=("$@") target="$data/$folder"
  sha1=${sha1,,}
  if complete "$target" "${files[@]}"; then
    say "$name: present in $target (${files[*]}); nothing to do"
    return 0
  fi
  if [ ! -d "$data" ]; then
    mkdir -p "$data" || { err "cannot create the data folder $data"; return 1; }
    created_data=1
  fi
  if [ ! -w "$data" ]; then
    err "$name: the data folder $data is not writable (pass --data DIR)"
    return 1
  fi
  local zip="$data/$archive" part="$data/$archive.part" got
  if [ -f "$zip" ]; then # placed by hand, or left by an extraction that did not finish
    say "$name: verifying $zip"
    got=$(sha1_of "$zip")
    if [ "$got" != "$sha1" ]; then
      err "$name: checksum mismatch for $archive ($zip): expected SHA-1 $sha1, got $got; deleted it"
      rm -f "$zip"
      return 4
    fi
  else
    # A part that already holds the whole file needs no request.
    if [ -s "$part" ] && [ "$(sha1_of "$part")" = "$sha1" ]; then mv -f "$part" "$zip"; fi
    local url code rc status=3 tried=()
    for url in "${urls[@]}"; do
      [ -f "$zip" ] && break
      rc=0
      code=$(download "$name" "$url" "$part") || rc=$?
      if [ "$rc" != 0 ]; then
        tried+=("$url: $(curl_reason "$rc" "$code")")
        continue
      fi
      got=$(sha1_of "$part")
      if [ "$got" != "$sha1" ]; then
        err "$name: checksum mismatch for $archive from $url: expected SHA-1 $sha1, got $got; deleted it"
        rm -f "$part"
        tried+=("$url: wrong checksum")
        status=4
        continue
      fi
      say "$name: $archive verified (SHA-1 $sha1, $(size_of "$part") bytes)"
      mv -f "$part" "$zip" || { err "$name: cannot rename $part"; return 1; }
    done
    if [ ! -f "$zip" ]; then
      [ "$status" = 4 ] && return 4
      err "$name: could not download $archive; tried:"
      local t
      for t in "${tried[@]}"; do echo "  $t" >&2; done
      if [ -s "$part" ]; then
        echo "  $(size_of "$part") bytes are kept in $part: running this again resumes the download" >&2
      fi
      local key=${name%%-*} # wikitext, snli: the names of the options
      cat >&2 <<EOF
  Offline or blocked? Fetch $archive (SHA-1 $sha1) on another machine
  and copy it to $zip, then run this again (it verifies and extracts it);
  or place ${files[*]} in $target/ by hand;
  or pass --data DIR (here, to bertrun, or to scripts/run.sh) a folder that holds them.
  Other addresses: --$key-url URL (repeatable) or BC_${key^^}_URLS.
EOF
      return 3
    fi
  fi
  # Extract beside the target, then rename: a file in the target is whole.
  extract_tmp=$(mktemp -d "$data/.$folder.tmp.XXXXXX")
  say "$name: extracting ${files[*]} into $target"
  local xrc=0
  python3 - "$zip" "$extract_tmp" "${files[@]}" <<'PY' || xrc=$?
import os, shutil, sys, zipfile
zpath, dest, want = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    z = zipfile.ZipFile(zpath)
    # A member is found by its base name wherever the archive puts it
    # (wikitext-2/..., snli_1.0/...); macOS resource forks are not files.
    found = {}
    for info in z.infolist():
        base = info.filename.rsplit("/", 1)[-1]
        if not info.is_dir() and not info.filename.startswith("__MACOSX/") and base in want:
            found.setdefault(base, info)
    missing = [w for w in want if w not in found]
    if missing:
        print(f"{zpath}: the archive lacks {', '.join(missing)}", file=sys.stderr)
        sys.exit(4)
    for w in want:
        with z.open(found[w]) as src, open(os.path.join(dest, w), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
    print(f"{zpath}: not a usable zip archive ({e})", file=sys.stderr)
    sys.exit(4)
except OSError as e:
    print(f"{zpath}: {e}", file=sys.stderr)
    sys.exit(1)
PY
  if [ "$xrc" != 0 ]; then
    rm -rf "$extract_tmp"
    extract_tmp=""
    if [ "$xrc" = 4 ]; then
      err "$name: cannot extract $zip; deleted it"
      rm -f "$zip"
    else
      err "$name: extracting $zip failed (it is kept; run this again)"
    fi
    return "$xrc"
  fi
  chmod u=rwx,go=rx "$extract_tmp"
  if [ ! -e "$target" ]; then
    mv -T "$extract_tmp" "$target" || { err "$name: cannot rename $extract_tmp to $target"; return 1; }
  else # a folder that holds other files (the SNLI sample): file by file
    local f
    for f in "${files[@]}"; do
      mv -f "$extract_tmp/$f" "$target/$f" || { err "$name: cannot move $f into $target"; return 1; }
    done
    rmdir "$extract_tmp"
  fi
  extract_tmp=""
  rm -f "$zip"
  say "$name: ready in $target ($(cd "$target" && du -ch "${files[@]}" | tail -1 | cut -f1))"
  return 0
}

status=0
if [ -z "$only" ] || [ "$only" = wikitext-2 ]; then
  urls=("${wikitext_urls[@]}")
  rc=0
  fetch wikitext-2 wikitext-2-v1.zip "$wikitext_sha1" wikitext-2 \
    wiki.train.tokens wiki.valid.tokens wiki.test.tokens || rc=$?
  [ "$status" = 0 ] && status=$rc
fi
if [ -z "$only" ] || [ "$only" = snli ]; then
  urls=("${snli_urls[@]}")
  rc=0
  fetch snli snli_1.0.zip "$snli_sha1" snli \
    snli_1.0_train.txt snli_1.0_dev.txt snli_1.0_test.txt || rc=$?
  [ "$status" = 0 ] && status=$rc
fi
exit "$status"

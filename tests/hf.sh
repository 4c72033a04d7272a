#!/usr/bin/env bash
# tests/hf.sh — a Hugging Face BERT through bertc and bertrun, end to end on
# the tiny BERT of tests/data/hf_tiny and the synthetic SNLI sample:
# `bertc import` writes a checkpoint and the model's YAML; `bertrun train
# --task snli --init` fine-tunes it with the WordPiece tokenizer on the raw
# sentences and learns; eval and predict read the tokenizer from a copy of
# the fine-tuned checkpoint alone; `bertc export` writes
# BertForSequenceClassification; importing that folder again gives the
# encoder back; usage errors and refusals are clear.
set -u
BERTC=${BERTC:-build/bertc}
BERTRUN=${BERTRUN:-build/bertrun}
DATA=$PWD/tests/data/sample
case $BERTRUN in /*) ;; *) BERTRUN=$PWD/$BERTRUN ;; esac
. "$(dirname "$0")/lib/check.sh" # check, fail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

check "import writes the checkpoint and the model" bash -c "
  '$BERTC' import tests/data/hf_tiny -o '$tmp/imp' >'$tmp/import.log' &&
  [ -f '$tmp/imp/checkpoint.safetensors' ] && [ -f '$tmp/imp/lib/nn.yaml' ] &&
  grep -q '^  hidden: 32 ' '$tmp/imp/hf_bert.yaml' && grep -q '^  ffn: 37 ' '$tmp/imp/hf_bert.yaml' &&
  grep -q 'BERT, 2 layers, hidden 32, 4 heads, vocabulary 1643' '$tmp/import.log'"
check "the written model compiles as it stands" bash -c "
  '$BERTC' compile '$tmp/imp/hf_bert.yaml' --graph nli --set dropout=0 >/dev/null"

# fine-tuning: the sample's classes follow its sentences' words, so a model
# that reads them learns; the d2l sample with WordPiece on the raw sentences
# (the tiny BERT's weights are random: the rate of a model trained afresh)
"$BERTRUN" train --task snli --init "$tmp/imp/checkpoint.safetensors" --data "$DATA" --epochs 3 --batch 16 \
  --lr 1e-3 --schedule constant --threads 1 --out "$tmp/ft" >"$tmp/ft.log" 2>&1
check "--init of an imported BERT picks the recipe hf" grep -q 'recipe hf (--recipe bertc for' "$tmp/ft.log"
check "... whose max_len is at most 128 (the model's 40 here)" grep -q 'longest 40' "$tmp/ft.log"
check "fine-tuning the imported model runs" grep -q 'snli done: 276 steps' "$tmp/ft.log"
check "... and learns (best dev accuracy above 0.8)" bash -c "
  sed -n 's/^best dev acc \([0-9.]*\) .*/\1/p' '$tmp/ft.log' | awk '{ v = \$1 } END { exit !(v > 0.8) }'"
mkdir -p "$tmp/alone"
cp "$tmp/ft/best.safetensors" "$tmp/alone/model.safetensors"
check "eval from the checkpoint alone" bash -c "
  cd '$tmp' && '$BERTRUN' eval --task snli alone/model.safetensors --data '$DATA' |
    sed -n 's/^test accuracy \([0-9.]*\) .*/\1/p' | awk '{ v = \$1 } END { exit !(v > 0.8) }'"
printf 'the old man is sleeping at home .\tthe team is tall .\nA café in Zürich!\tNobody is there.\n' >"$tmp/pairs.tsv"
check "predict tokenizes raw text with WordPiece" bash -c "
  '$BERTRUN' predict '$tmp/alone/model.safetensors' --input '$tmp/pairs.tsv' | grep -c '\"label\"' | grep -qx 2"

check "export writes BertForSequenceClassification" bash -c "
  '$BERTC' export '$tmp/ft/best.safetensors' -o '$tmp/exp' >/dev/null &&
  grep -q BertForSequenceClassification '$tmp/exp/config.json' && cmp -s tests/data/hf_tiny/vocab.txt '$tmp/exp/vocab.txt'"
check "its folder imports again (the classifier ignored, named)" bash -c "
  '$BERTC' import '$tmp/exp' -o '$tmp/reimp' | grep -q 'ignored (classifier.weight)'"

# encode: texts of the tokenizer fixture (single texts, lower-cased, no TAB
# or newline inside, shorter than the model's 40 positions), in batches of 2
# and of 8; the ids are transformers' and the rows do not depend on the batch
python3 - "$tmp/texts.txt" "$tmp/want.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open("tests/data/hf_tiny/tokenizer_refs.jsonl", encoding="utf-8")]
# (the rows where transformers' two tokenizers agree: encode uses the fast one's rules)
keep = [r for r in rows if r["kind"] == "single" and r["lower"] and "encodings" in r and "fast_ids" not in r and
        r["text"].strip() and
        not any(c in r["text"] for c in "\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029") and
        len(r["encodings"][0]["input_ids"]) <= 40][:5]
open(sys.argv[1], "w", encoding="utf-8").write("".join(r["text"] + "\n" for r in keep))
json.dump([r["encodings"][0]["input_ids"] for r in keep], open(sys.argv[2], "w"))
PY
"$BERTRUN" encode "$tmp/imp/checkpoint.safetensors" --input "$tmp/texts.txt" --out "$tmp/enc2.safetensors" \
  --batch 2 --hidden-rows 5 2>"$tmp/enc.log"
"$BERTRUN" encode "$tmp/imp/checkpoint.safetensors" --input "$tmp/texts.txt" --out "$tmp/enc8.safetensors" \
  --batch 8 2>>"$tmp/enc.log"
check "encode: transformers' ids, rows independent of the batch, mean pooling" python3 - "$tmp" <<'PY'
import json, struct, sys
def load(path):  # a safetensors file: {name: (shape, flat list)}
    f = open(path, "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); data = f.read()
    out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        a, b = v["data_offsets"]; fmt = "<%d%s" % ((b - a) // 4, "i" if v["dtype"] == "I32" else "f")
        out[k] = (v["shape"], struct.unpack(fmt, data[a:b]))
    return out
d = sys.argv[1]
e2, e8, want = load(d + "/enc2.safetensors"), load(d + "/enc8.safetensors"), json.load(open(d + "/want.json"))
(n, T), ids = e2["input_ids"]; lens = e2["lengths"][1]; H = e2["mean_pooled"][0][1]
assert n == len(want) == 5, n
for i, w in enumerate(want):
    assert list(ids[i * T:i * T + lens[i]]) == w, (i, ids[i * T:i * T + lens[i]], w)
for k in ("pooler_output", "mean_pooled"):
    gap = max(abs(a - b) for a, b in zip(e2[k][1], e8[k][1]))
    assert gap < 1e-5, (k, gap)
hs = e2["last_hidden_state"][1]
for i in range(n):
    for h in range(H):
        m = sum(hs[(i * T + t) * H + h] for t in range(lens[i])) / lens[i]
        assert abs(m - e2["mean_pooled"][1][i * H + h]) < 1e-5, (i, h)
PY

check "--graph nli_mlp fine-tunes d2l's head on [CLS]; eval and predict follow the checkpoint's graph" bash -c "
  '$BERTRUN' train --task snli --init '$tmp/imp/checkpoint.safetensors' --graph nli_mlp --data '$DATA' --epochs 1 \
    --batch 32 --lr 1e-3 --out '$tmp/mlp' >/dev/null 2>&1 &&
  '$BERTRUN' eval --task snli '$tmp/mlp' --data '$DATA' | grep -q 'test accuracy' &&
  '$BERTRUN' predict '$tmp/mlp/best.safetensors' --input '$tmp/pairs.tsv' | grep -c '\"label\"' | grep -qx 2 &&
  python3 -c 'import json,struct,sys; f=open(sys.argv[1],\"rb\"); n=struct.unpack(\"<Q\",f.read(8))[0]; h=json.loads(f.read(n)); sys.exit(not (\"mlp_hidden.W\" in h and \"classifier.W\" not in h))' '$tmp/mlp/best.safetensors'"
check "an unknown --graph names the model's graphs" bash -c "
  '$BERTRUN' train --task snli --init '$tmp/imp/checkpoint.safetensors' --graph nope --data '$DATA' --out '$tmp/n' 2>&1 |
    grep -q \"unknown graph 'nope' (the model has: encode, nli, nli_mlp)\""

# other backends: 4 fine-tuning steps of the imported model give the cpu
# backend's losses (HF_DEVICES, default interp; bench/gpu-check.sh: cuda)
steps4=(train --task snli --init "$tmp/imp/checkpoint.safetensors" --data "$DATA" --max-examples 64 --epochs 1
        --batch 16 --lr 1e-3 --report-every 1 --threads 1)
"$BERTRUN" "${steps4[@]}" --device cpu --out "$tmp/dev_cpu" >/dev/null 2>&1
for dev in ${HF_DEVICES:-interp}; do
  # interp computes in f64, cuda in f32 with atomics: relative 1e-5 and 1e-3
  tol=1e-5
  case $dev in cuda*) tol=1e-3 ;; esac
  "$BERTRUN" "${steps4[@]}" --device "$dev" --out "$tmp/dev_$dev" >/dev/null 2>&1
  check "fine-tuning the imported model on $dev: the cpu backend's losses (relative $tol)" python3 - \
    "$tmp/dev_cpu" "$tmp/dev_$dev" "$tol" <<'PY'
import json, sys
def losses(d):
    return [r["loss"] for r in map(json.loads, open(d + "/metrics.jsonl")) if "loss" in r and "dev_acc" not in r]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert len(a) == len(b) >= 4, (a, b)
gap = max(abs(x - y) / abs(x) for x, y in zip(a, b))
print(f"  {len(a)} steps, largest relative difference {gap:.2g}")
sys.exit(gap > float(sys.argv[3]))
PY
done

check "import without -o is a usage error (2)" bash -c "'$BERTC' import tests/data/hf_tiny 2>/dev/null; [ \$? -eq 2 ]"
check "import of a folder without config.json names it" bash -c "
  '$BERTC' import tests/data -o '$tmp/x' 2>&1 | grep -q 'tests/data: error: no config.json'"
check "export of a d2l checkpoint is refused" bash -c "
  '$BERTRUN' train --task snli --data '$DATA' --set hidden=16 --set ffn=32 --set heads=2 --set layers=1 \
    --max-len 32 --epochs 1 --batch 32 --out '$tmp/d2l' >/dev/null 2>&1 &&
  '$BERTC' export '$tmp/d2l/checkpoint.safetensors' -o '$tmp/y' 2>&1 | grep -q 'not a Hugging Face BERT checkpoint'"
exit $fail

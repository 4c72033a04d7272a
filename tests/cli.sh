#!/usr/bin/env bash
# tests/cli.sh — the bertc command line: help, exact parameter counts of the
# d2l BERT, DOT output that Graphviz renders, plan files, usage errors.
set -u
BERTC=${BERTC:-build/bertc}
BERTRUN=${BERTRUN:-build/bertrun}
fail=0
check() { # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fail=1; fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

check "--help exits 0 and documents compile" bash -c "'$BERTC' --help | grep -q 'bertc compile MODEL.yaml'"
check "compile --help" bash -c "'$BERTC' compile --help | grep -q -- '--dump-after'"
check "no arguments is a usage error (2)" bash -c "'$BERTC' >/dev/null 2>&1; [ \$? -eq 2 ]"
check "unknown option is a usage error (2)" bash -c "'$BERTC' compile models/bert.yaml --frobnicate 2>/dev/null; [ \$? -eq 2 ]"

count() { "$BERTC" compile models/bert.yaml "$@" | sed -n 's/.* \([0-9]*\) parameter elements/\1/p'; }
check "pretrain has 5,455,138 parameters" test "$(count --graph pretrain)" = 5455138
check "nli has 2,842,371 parameters" test "$(count --graph nli)" = 2842371
check "BERT-base nli has 109,087,747 parameters" test "$(count --graph nli --set vocab=30522 --set hidden=768 \
  --set ffn=3072 --set heads=12 --set layers=12 --set max_len=512 --batch 2)" = 109087747
check "training step keeps the parameter count" test "$(count --graph nli --train)" = 2842371

check "dump lists values with dtype, shape and location" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --dump | grep -Eq 'f32\[[0-9, ]+\] = matmul\(.*@ .*models/.*\.yaml:[0-9]+:[0-9]+'"
check "dump ends with counts" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --dump | tail -1 | grep -q '^counts: .* nodes, .* parameter tensors, 2842371 parameter elements'"
# the stages, as the error for an unknown one lists them
stages=$("$BERTC" compile models/bert.yaml --dump-after nope 2>&1 | sed -n 's/.*unknown pass .nope. for --dump-after (stages: \(.*\), all)/\1/p' | tr -d ,)
check "--dump-after with an unknown pass fails (1) and lists the 8 stages" bash -c \
  "'$BERTC' compile models/bert.yaml --dump-after nope >/dev/null 2>&1; [ \$? -eq 1 ] && [ \$(echo $stages | wc -w) -eq 8 ]"
check "--dump-after all shows every stage once, in order" bash -c \
  "[ \"\$('$BERTC' compile models/bert.yaml --graph nli --train --dump-after all | sed -n 's/^# after //p' | tr '\n' ' ')\" = '$(echo $stages) ' ]"
for s in $stages; do
  check "--dump-after $s dumps that stage" bash -c \
    "'$BERTC' compile models/bert.yaml --graph nli --train --dump-after $s | grep -c '^# after ' | grep -qx 1 &&
     '$BERTC' compile models/bert.yaml --graph nli --train --dump-after $s | grep -qx '# after $s'"
done
check "--dump-after fuse with --device interp is an error (1)" bash -c \
  "out=\$('$BERTC' compile models/bert.yaml --graph nli --device interp --dump-after fuse 2>&1); rc=\$?; echo \"\$out\" | grep -q 'needs --device cpu or cuda' && [ \$rc -eq 1 ]"

if command -v dot >/dev/null; then
  check "--dot renders with dot -Tsvg" bash -c \
    "'$BERTC' compile models/bert.yaml --graph nli --dot '$tmp/g.dot' >/dev/null && dot -Tsvg '$tmp/g.dot' -o '$tmp/g.svg' && grep -q '<svg' '$tmp/g.svg'"
else
  echo "FAIL: graphviz 'dot' is not installed (scripts/install-deps.sh installs it)"; fail=1
fi
check "-o writes the plan files" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli -o '$tmp/plan' >/dev/null && grep -q '^counts:' '$tmp/plan/graph.txt' && grep -q '^digraph' '$tmp/plan/graph.dot'"
check "-o writes kernels, the memory plan and every kernel's LLVM IR" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --train -o '$tmp/plan2' >/dev/null && grep -q '^kernels: ' '$tmp/plan2/kernels.txt' && grep -q '^memplan: memory reduced from' '$tmp/plan2/memplan.txt' && [ \$(grep -c '^define void @k' '$tmp/plan2/kernels.ll') -eq \$(grep -c '^kernel .*\[loop\]' '$tmp/plan2/kernels.txt') ]"
check "--dump-after fuse lists fusion groups with their ops and YAML lines" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --dump-after fuse | grep -A3 'reduce_max' | grep -q '@ models/lib/nn.yaml:[0-9]'"
check "--dump-after lower lists kernels with their ops and YAML lines" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --dump-after lower | grep -A3 '^kernel .*reduce_max' | grep -q '@ models/lib/nn.yaml:[0-9]'"
check "--dump-after memplan prints the arena layout" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --train --dump-after memplan | grep -q '^memplan: memory reduced from'"
check "the summary reports kernels and memory" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --train | grep -q '^kernels: [0-9]* ([0-9]* generated loops'"
check "--device interp compiles without kernels" bash -c \
  "out=\$('$BERTC' compile models/bert.yaml --graph nli --device interp); rc=\$?; [ \$rc -eq 0 ] &&
   echo \"\$out\" | grep -q '^counts: .* 2842371 parameter elements' && ! echo \"\$out\" | grep -q '^kernels:'"
check "an unknown device is an error (1)" bash -c \
  "out=\$('$BERTC' compile models/bert.yaml --device tpu 2>&1); rc=\$?; echo \"\$out\" | grep -q \"unknown device 'tpu'\" && [ \$rc -eq 1 ]"
check "bertc compile takes one device, not a list (1)" bash -c \
  "out=\$('$BERTC' compile models/bert.yaml --device cuda:0,1 2>&1); rc=\$?; echo \"\$out\" | grep -q 'only .bertrun train. runs replicas on several devices' && [ \$rc -eq 1 ]"
check "bertrun: a device list naming a device twice is refused (1)" bash -c \
  "out=\$('$BERTRUN' train --task pretrain --data tests/data/sample --device cpu:0,0 --steps 1 --out '$tmp/run' 2>&1); rc=\$?; echo \"\$out\" | grep -q \"device list 'cpu:0,0' names device 0 twice\" && [ \$rc -eq 1 ]"
check "bertrun: cpu:all is refused, all counts GPUs (1)" bash -c \
  "out=\$('$BERTRUN' train --task pretrain --data tests/data/sample --device cpu:all --steps 1 --out '$tmp/run' 2>&1); rc=\$?; echo \"\$out\" | grep -q \"'all' counts GPUs\" && [ \$rc -eq 1 ]"
check "bertrun: --batch the replicas of a device list cannot share is refused (1)" bash -c \
  "out=\$('$BERTRUN' train --task pretrain --data tests/data/sample --device cpu:0,1,2 --batch 8 --steps 1 --out '$tmp/run' 2>&1); rc=\$?; echo \"\$out\" | grep -q 'batch 8 cannot be split evenly over 3 replicas (--device cpu:0,1,2)' && [ \$rc -eq 1 ]"
check "bertrun eval takes one device (1)" bash -c \
  "out=\$('$BERTRUN' eval --task snli nonexistent.safetensors --data tests/data/sample --device cpu:0,1 2>&1); rc=\$?; echo \"\$out\" | grep -q 'names several devices' && [ \$rc -eq 1 ]"
check "a missing model file is an error naming it (1)" bash -c \
  "out=\$('$BERTC' compile '$tmp/none.yaml' 2>&1); rc=\$?; echo \"\$out\" | grep -q 'none.yaml: error: cannot open file' && [ \$rc -eq 1 ]"
check "--device cuda -o writes the CUDA C of every generated kernel, repeats once (no GPU needed)" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --train --device cuda -o '$tmp/plan3' >/dev/null && [ \$(( \$(grep -c '__global__' '$tmp/plan3/kernels.cu') + \$(grep -c 'the same code as' '$tmp/plan3/kernels.cu') )) -eq \$(grep -c '^kernel .*\[loop\]' '$tmp/plan3/kernels.txt') ]"
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
  check "bertrun --device cuda without a GPU driver fails clearly (1)" bash -c \
    "out=\$('$BERTRUN' train --task pretrain --data tests/data/sample --device cuda --steps 1 --out '$tmp/run' 2>&1); rc=\$?; echo \"\$out\" | grep -q 'cuda: no NVIDIA driver: libcuda.so.1' && [ \$rc -eq 1 ]"
  check "bertrun --device cuda:all without a GPU driver fails clearly (1)" bash -c \
    "out=\$('$BERTRUN' train --task pretrain --data tests/data/sample --device cuda:all --steps 1 --out '$tmp/run' 2>&1); rc=\$?; echo \"\$out\" | grep -q 'cuda: no NVIDIA driver: libcuda.so.1' && [ \$rc -eq 1 ]"
fi
exit $fail

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
# --outputs: the outputs kept (the step bertrun trains drops mlm_logits,
# and its MLM head then runs on the slots of nonzero weight); a name that
# is no output is an error naming it
check "--outputs keeps the outputs named" bash -c \
  "'$BERTC' compile models/bert.yaml --graph pretrain --train --outputs mlm_loss,nsp_loss | grep -qx 'outputs: mlm_loss nsp_loss'"
check "--outputs lets the MLM head's GEMM leave out dead slots" bash -c \
  "'$BERTC' compile models/bert.yaml --graph pretrain --train --outputs mlm_loss,nsp_loss --dump-after lower | grep -A1 '^kernel k[0-9]*_matmul[a-z_]* \[gemm\] rows guarded by pred_weights' | grep -q 'mlm.dense2.xw = matmul' &&
   ! '$BERTC' compile models/bert.yaml --graph pretrain --train --dump-after lower | grep -A1 '^kernel k[0-9]*_matmul[a-z_]* \[gemm\] rows guarded by pred_weights' | grep -q 'mlm.dense2.xw = matmul'"
check "--outputs with a name that is no output is an error naming it" bash -c \
  "'$BERTC' compile models/bert.yaml --graph pretrain --outputs mlm_loss,nope 2>&1 >/dev/null | grep -q \"has no output 'nope'\""

check "dump lists values with dtype, shape and location" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --dump | grep -Eq 'f32\[[0-9, ]+\] = matmul\(.*@ .*models/.*\.yaml:[0-9]+:[0-9]+'"
check "dump ends with counts" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --dump | tail -1 | grep -q '^counts: .* nodes, .* parameter tensors, 2842371 parameter elements'"
# the stages, as the error for an unknown one lists them
stages=$("$BERTC" compile models/bert.yaml --dump-after nope 2>&1 | sed -n 's/.*unknown pass .nope. for --dump-after (stages: \(.*\), all)/\1/p' | tr -d ,)
check "--dump-after with an unknown pass fails (1) and lists the 13 stages" bash -c \
  "'$BERTC' compile models/bert.yaml --dump-after nope >/dev/null 2>&1; [ \$? -eq 1 ] && [ \$(echo $stages | wc -w) -eq 13 ]"
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
check "--help documents --dot-level and its default" bash -c \
  "'$BERTC' --help | grep -A5 -- '--dot-level LEVEL' | grep -q 'default block with --train, node without'"
check "--dot-level takes block or node only (2)" bash -c \
  "'$BERTC' compile models/bert.yaml --dot-level edges --dot '$tmp/x.dot' 2>/dev/null; [ \$? -eq 2 ]"
# node level: every node says its value name, op, type and YAML line; block
# instances are clusters nested as the blocks are (encoder > blk > 0 > attention)
"$BERTC" compile models/bert.yaml --graph nli --dot "$tmp/nodes.dot" >/dev/null
check "--dot nodes carry value name, op, type and file:line" \
  grep -Eq 'label="encoder\.blk\.0\.attention\.[a-zA-Z_.%0-9]+\\nmatmul f32\[[0-9, ]+\]\\nmodels/lib/nn\.yaml:[0-9]+"' "$tmp/nodes.dot"
check "--dot: block instances are nested clusters" bash -c \
  "[ \$(awk '/^subgraph cluster_/{d++; if (d>m) m=d} /^}/{d--} END{print m+0}' '$tmp/nodes.dot') -ge 4 ] &&
   grep -A1 '^subgraph cluster_' '$tmp/nodes.dot' | grep -q 'label=\"attention: multi_head_attention'"
# block level, the default of a training step: few nodes, clusters, shapes on edges
"$BERTC" compile models/bert.yaml --graph pretrain --train --dot "$tmp/blocks.dot" >/dev/null
"$BERTC" compile models/bert.yaml --graph pretrain --train --dot-level node --dot "$tmp/train_nodes.dot" >/dev/null
check "--train --dot draws the block view: under 150 nodes (the node view has over 1,000)" bash -c \
  "[ \$(grep -Ec '^ +[bv][0-9]+ \\[' '$tmp/blocks.dot') -lt 150 ] && [ \$(grep -Ec '^ +[bv][0-9]+ \\[' '$tmp/train_nodes.dot') -gt 1000 ]"
check "the block view has clusters, shapes on its edges, the backward and Adam" bash -c \
  "grep -q '^subgraph cluster_' '$tmp/blocks.dot' && grep -Eq -- '-> b[0-9]+ \\[label=\"f32\\[8, 128, 128\\]' '$tmp/blocks.dot' &&
   grep -q '(backward)' '$tmp/blocks.dot' && grep -q 'label=\"adam: adam' '$tmp/blocks.dot'"
check "--dot-level block without --train draws the block view" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --dot-level block --dot '$tmp/nb.dot' >/dev/null && ! grep -q '(backward)' '$tmp/nb.dot' && [ \$(grep -Ec '^ +[bv][0-9]+ \\[' '$tmp/nb.dot') -lt 80 ]"
if command -v dot >/dev/null; then
  # only a small file is handed to dot: the node view of a training step
  # does not lay out in ten minutes
  check "the training step's block view renders with dot -Tsvg" bash -c \
    "[ \$(wc -l < '$tmp/blocks.dot') -lt 2000 ] && dot -Tsvg '$tmp/blocks.dot' -o '$tmp/blocks.svg' && grep -q '<svg' '$tmp/blocks.svg'"
fi

# names in dumps: a constant CSE shares is named for its value, not its first use
check "the layer norms' shared width constant is named const.128, not after the first layer norm" bash -c \
  "'$BERTC' compile models/bert.yaml --graph pretrain --train --dump > '$tmp/pt.txt' &&
   grep -q '^ *%[0-9]* const\\.128 : f32\\[8, 128, 1\\] = constant() value=128' '$tmp/pt.txt' &&
   ! grep -q 'ln\\.%[0-9]* : f32\\[8, 128, 1\\] = constant() value=128' '$tmp/pt.txt'"
check "optimizer nodes, states and lr are attributed to the optimizer" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --train --dump-after optim > '$tmp/opt.txt' &&
   [ \$(grep -c '@ <optimizer adam>\$' '$tmp/opt.txt') -gt 500 ] && ! grep -E 'adam[._].*@ models/' '$tmp/opt.txt' | grep -q . &&
   grep -q '^  %[0-9]* lr : f32\\[\\]  @ <optimizer adam>\$' '$tmp/opt.txt'"
for s in autodiff optim; do
  check "--dump-after $s without --train is a usage error (2) naming --train" bash -c \
    "out=\$('$BERTC' compile models/bert.yaml --graph nli --dump-after $s 2>&1); rc=\$?; [ \$rc -eq 2 ] && echo \"\$out\" | grep -q -- '--dump-after $s needs --train'"
done

# models/README.md's library table says how each embedding table starts; the
# graph says how it does
check "models/README.md: the embedding table's init is the one the graph draws, N(0, 1)" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --dump | grep -q '^  %[0-9]* encoder.token_embedding.table : f32\\[[0-9, ]*\\] init=normal(1) ' &&
   grep '^| .embedding. |' models/README.md | grep -q '.table. \\[n, units\\] N(0, 1) (.normal., scale 1'"
check "-o writes the plan files" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli -o '$tmp/plan' >/dev/null && grep -q '^counts:' '$tmp/plan/graph.txt' && grep -q '^digraph' '$tmp/plan/graph.dot'"
check "-o writes kernels, the memory plan and every kernel's LLVM IR" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --train -o '$tmp/plan2' >/dev/null && grep -q '^kernels: ' '$tmp/plan2/kernels.txt' && grep -q '^memplan: memory reduced from' '$tmp/plan2/memplan.txt' && [ \$(grep -c '^define void @k' '$tmp/plan2/kernels.ll') -eq \$(grep -c '^kernel .*\[loop\]' '$tmp/plan2/kernels.txt') ]"
check "--dump-after fuse lists fusion groups with their ops and YAML lines" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --dump-after fuse | grep -A3 'rsqrt' | grep -q '@ models/lib/nn.yaml:[0-9]'"
check "--dump-after lower lists kernels with their ops and YAML lines" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --dump-after lower | grep -A3 '^kernel .*reduce_max' | grep -q '@ models/lib/loss.yaml:[0-9]'"
check "--dump-after memplan prints the arena layout" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --train --dump-after memplan | grep -q '^memplan: memory reduced from'"
check "the memory plan explains its units: live ranges, pinned, bytes; and what the percentage is of" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --train -o '$tmp/plan4' >/dev/null &&
   sed -n '1,/^#   offset/p' '$tmp/plan4/memplan.txt' > '$tmp/mphead' &&
   grep -q 'live \\[a, b\\]: the steps that use the buffer, as positions in' '$tmp/mphead' &&
   grep -q 'the execution order of the [0-9]* nodes (0 to [0-9]*)' '$tmp/mphead' &&
   grep -q 'Not listed: pinned values, [0-9]* bytes' '$tmp/mphead' && grep -q 'offset and bytes: .* in bytes' '$tmp/mphead' &&
   grep -Eq '^memplan: memory reduced from [0-9]+ to [0-9]+ bytes \\([0-9.]+ MiB -> [0-9.]+ MiB: the arena is [0-9.]+% of the [0-9.]+ MiB one buffer per intermediate value would take\\)' '$tmp/plan4/memplan.txt'"
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
check "--device cpu -o writes the LLVM IR, no CUDA files" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --device cpu -o '$tmp/pcpu' >/dev/null && [ -s '$tmp/pcpu/kernels.ll' ] && [ ! -e '$tmp/pcpu/kernels.cu' ] && [ ! -e '$tmp/pcpu/launches.txt' ]"
check "--device cuda -o writes the CUDA C and each kernel's launch (grid, block), no LLVM IR; its plan is cpu's without GEMM epilogues" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --device cuda -o '$tmp/pcuda' >/dev/null && [ ! -e '$tmp/pcuda/kernels.ll' ] &&
   [ \$(grep -Ec '^k[0-9]+_[a-z0-9_]+ +[1-9][0-9]* +(256|512) +0\$' '$tmp/pcuda/launches.txt') -eq \$(grep -c '^kernel .*\\[loop\\]' '$tmp/pcuda/kernels.txt') ] &&
   BC_NO_EPILOGUE=1 '$BERTC' compile models/bert.yaml --graph nli --device cpu -o '$tmp/pcpu_noepi' >/dev/null &&
   cmp -s '$tmp/pcuda/kernels.txt' '$tmp/pcpu_noepi/kernels.txt' && cmp -s '$tmp/pcuda/memplan.txt' '$tmp/pcpu_noepi/memplan.txt' &&
   grep -q '^kernel k[0-9]*_matmul_add_relu \[gemm\]' '$tmp/pcpu/kernels.txt' && ! grep -q '^kernel k[0-9]*_matmul_[a-z_]* \[gemm\]' '$tmp/pcuda/kernels.txt'"
check "--device interp -o writes the graph only" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --device interp -o '$tmp/pint' >/dev/null && [ \$(ls '$tmp/pint' | wc -l) -eq 2 ] && [ -s '$tmp/pint/graph.txt' ] && [ -s '$tmp/pint/graph.dot' ]"
check "--device cuda -o writes the CUDA C of every generated kernel, repeats once (no GPU needed)" bash -c \
  "'$BERTC' compile models/bert.yaml --graph nli --train --device cuda -o '$tmp/plan3' >/dev/null && [ \$(( \$(grep -c '__global__' '$tmp/plan3/kernels.cu') + \$(grep -c 'the same code as' '$tmp/plan3/kernels.cu') )) -eq \$(grep -c '^kernel .*\[loop\]' '$tmp/plan3/kernels.txt') ]"
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
  check "bertrun --device cuda without a GPU driver fails clearly (1)" bash -c \
    "out=\$('$BERTRUN' train --task pretrain --data tests/data/sample --device cuda --steps 1 --out '$tmp/run' 2>&1); rc=\$?; echo \"\$out\" | grep -q 'cuda: no NVIDIA driver: libcuda.so.1' && [ \$rc -eq 1 ]"
  check "bertrun --device cuda:all without a GPU driver fails clearly (1)" bash -c \
    "out=\$('$BERTRUN' train --task pretrain --data tests/data/sample --device cuda:all --steps 1 --out '$tmp/run' 2>&1); rc=\$?; echo \"\$out\" | grep -q 'cuda: no NVIDIA driver: libcuda.so.1' && [ \$rc -eq 1 ]"
fi
exit $fail

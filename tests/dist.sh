#!/usr/bin/env bash
# tests/dist.sh — data-parallel training under mpirun (runtime/dist.c) with a
# tiny BERT on the synthetic sample data: two ranks at global batch B give the
# loss curve of one process at batch B, for fine-tuning and for pretraining
# (whose MLM normalizer is the global batch's; f32: within a relative 1e-5;
# the measured gap is ~1-2e-7, from the changed summation order of the
# gradients; the interpreter, in double: within 1e-8), with the same dropout
# masks, also with clipping of the global gradient norm, AdamW weight decay
# and a schedule, and the same averaged gradients as one process (tests/dist_grads.c:
# Adam makes a loss curve blind to the gradient's scale); one
# rank under mpirun is bit-identical to no mpirun; two-rank runs are
# bit-identical whatever the bucket size and across --resume (the all-reduce
# of two ranks is a0 + a1 on both); the replicas stay bit-identical
# (BC_DIST_CHECK=1); rank 0's checkpoint loads in one process; BC_TRACE shows
# all-reduces starting before the backward pass ends; a rank that dies or
# hangs ends the job with an error instead of a hang; a batch the ranks
# cannot share evenly is refused; several replicas in one process
# (--device cpu:0,1, interp:0,1) give the curves of as many ranks. Skips
# (77) where mpirun is not installed.
set -u
BERTRUN=${BERTRUN:-build/bertrun}
BERTC=${BERTC:-build/bertc}
DATA=tests/data/sample
if ! command -v mpirun >/dev/null; then
  echo "skip: mpirun is not installed (scripts/install-deps.sh installs openmpi-bin)"
  exit 77
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 # CI runs as root
export OMPI_MCA_rmaps_base_oversubscribe=1                       # 2 ranks on any core count
export OPENBLAS_NUM_THREADS=1
. "$(dirname "$0")/lib/check.sh" # check, fail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
tiny=(--set hidden=16 --set ffn=32 --set heads=2 --set layers=1 --max-len 32 --data "$DATA" --threads 1)
# step loss pairs of a run folder's metrics.jsonl
losses() { sed -E 's/.*"step":([0-9]+).*"loss":([^,}]*).*/\1 \2/;t;d' "$1/metrics.jsonl"; }
# max |a - b| / |a| over the steps of two runs (and the same steps in both)
rel_gap() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
def load(d):
    return {r["step"]: r["loss"] for r in map(json.loads, open(d + "/metrics.jsonl")) if "loss" in r}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys() and a, (sorted(a), sorted(b))
print(max(abs(a[k] - b[k]) / abs(a[k]) for k in a))
EOF
}
# the tensors of two checkpoints, bit for bit (their metadata hold times)
same_tensors() {
  python3 - "$1" "$2" <<'EOF'
import json, struct, sys
def tensors(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return h, b[8 + n:]
sys.exit(0 if tensors(sys.argv[1]) == tensors(sys.argv[2]) else 1)
EOF
}

out=$(mpirun -np 2 true 2>&1) || { echo "FAIL: mpirun -np 2 true does not run: $out"; exit 1; }

"$BERTRUN" train --task pretrain "${tiny[@]}" --steps 20 --batch 8 --report-every 1 --out "$tmp/pre" >"$tmp/pre.log" 2>&1 ||
  { cat "$tmp/pre.log"; exit 1; }
ft=(train --task snli "${tiny[@]}" --init "$tmp/pre/checkpoint.safetensors" --batch 16 --max-examples 160
    --report-every 1)

# (a) the same loss curve as one process at the same global batch
"$BERTRUN" "${ft[@]}" --epochs 2 --out "$tmp/one" >"$tmp/one.log" 2>&1
BC_DIST_CHECK=1 mpirun -np 2 "$BERTRUN" "${ft[@]}" --epochs 2 --out "$tmp/two" >"$tmp/two.log" 2>&1
rc=$?
check "mpirun -np 2 fine-tuning succeeds, replicas identical after every step" test $rc -eq 0
check "rank 0 alone prints progress and the summary" bash -c \
  "[ \$(grep -c '^snli epoch 1: loss' '$tmp/two.log') -eq 1 ] && grep -q 'examples/sec on cpu (2 ranks)' '$tmp/two.log'"
gap=$(rel_gap "$tmp/one" "$tmp/two" 2>&1)
echo "   two ranks vs one process, 20 steps: max relative loss difference $gap"
check "two ranks at batch 16 = one process at batch 16 (relative 1e-5)" \
  python3 -c "import sys; sys.exit(0 if float('$gap') < 1e-5 else 1)"
# ... also when the gradients are clipped (to 0.05, far below their norm:
# every step clips): the norm is the all-reduced gradient's, the same on
# both ranks and equal to one process's, or the ranks' parameters would part
opt=(--clip 0.05 --weight-decay 0.01 --schedule linear --warmup 3)
"$BERTRUN" "${ft[@]}" "${opt[@]}" --epochs 2 --out "$tmp/one_clip" >/dev/null 2>&1
BC_DIST_CHECK=1 mpirun -np 2 "$BERTRUN" "${ft[@]}" "${opt[@]}" --epochs 2 --out "$tmp/two_clip" >"$tmp/two_clip.log" 2>&1
check "mpirun -np 2 with --clip --weight-decay --schedule: replicas identical after every step" test $? -eq 0
gap=$(rel_gap "$tmp/one_clip" "$tmp/two_clip" 2>&1)
echo "   clipped, two ranks vs one process, 20 steps: max relative loss difference $gap"
check "clipped: two ranks at batch 16 = one process at batch 16 (relative 1e-5)" \
  python3 -c "import sys; sys.exit(0 if float('$gap') < 1e-5 else 1)"
mpirun -np 1 "$BERTRUN" "${ft[@]}" --epochs 2 --out "$tmp/np1" >/dev/null 2>&1
check "one rank under mpirun is bit-identical to no mpirun (losses, checkpoint)" bash -c \
  "diff <(sed -E 's/.*\"step\":([0-9]+).*\"loss\":([^,}]*).*/\\1 \\2/;t;d' '$tmp/one/metrics.jsonl') \
        <(sed -E 's/.*\"step\":([0-9]+).*\"loss\":([^,}]*).*/\\1 \\2/;t;d' '$tmp/np1/metrics.jsonl') >/dev/null" &&
  check "one rank under mpirun: same checkpoint tensors" same_tensors "$tmp/one/checkpoint.safetensors" "$tmp/np1/checkpoint.safetensors"
BC_DIST_BUCKET_BYTES=2048 mpirun -np 2 "$BERTRUN" "${ft[@]}" --epochs 2 --out "$tmp/small" >/dev/null 2>&1
check "two ranks: 2 KiB buckets give bit-identical losses and parameters" bash -c \
  "[ \"\$(sed -E 's/.*\"loss\":([^,}]*).*/\\1/; s/,\"time_s\":[^,}]*//' '$tmp/two/metrics.jsonl')\" = \"\$(sed -E 's/.*\"loss\":([^,}]*).*/\\1/; s/,\"time_s\":[^,}]*//' '$tmp/small/metrics.jsonl')\" ]" &&
  check "two ranks: same checkpoint tensors for both bucket sizes" same_tensors "$tmp/two/checkpoint.safetensors" "$tmp/small/checkpoint.safetensors"
ti=(--set hidden=8 --set ffn=16 --set heads=2 --set layers=1 --max-len 16 --data "$DATA")
"$BERTRUN" train --task pretrain "${ti[@]}" --steps 2 --batch 8 --out "$tmp/prei" >/dev/null 2>&1
fi_=(train --task snli "${ti[@]}" --init "$tmp/prei/checkpoint.safetensors" --device interp --epochs 1 --batch 8
     --max-examples 48 --eval-batch 64 --report-every 1)
"$BERTRUN" "${fi_[@]}" --out "$tmp/ione" >/dev/null 2>&1
mpirun -np 2 "$BERTRUN" "${fi_[@]}" --out "$tmp/itwo" >/dev/null 2>&1
gap=$(rel_gap "$tmp/ione" "$tmp/itwo" 2>&1)
check "interp (double), two ranks vs one process: relative 1e-8 (got $gap)" \
  python3 -c "import sys; sys.exit(0 if float('$gap') < 1e-8 else 1)"

# (a') pretraining: the MLM loss divides by the GLOBAL batch's masked-slot
# count over the ranks (the input mlm_norm), so the ranks' mean is the
# one-process loss and gradient here too (before: 5e-3 in f32, 8e-4 on interp)
BC_DIST_CHECK=1 mpirun -np 2 "$BERTRUN" train --task pretrain "${tiny[@]}" --steps 20 --batch 8 --report-every 1 \
  --out "$tmp/pre2" >"$tmp/pre2.log" 2>&1
check "mpirun -np 2 pretraining succeeds, replicas identical after every step" test $? -eq 0
gap=$(rel_gap "$tmp/pre" "$tmp/pre2" 2>&1)
echo "   pretraining, two ranks vs one process, 20 steps: max relative loss difference $gap"
check "pretraining: two ranks at batch 8 = one process at batch 8 (relative 1e-5)" \
  python3 -c "import sys; sys.exit(0 if float('$gap') < 1e-5 else 1)"
pi=(train --task pretrain --set hidden=8 --set ffn=16 --set heads=2 --set layers=1 --max-len 32 --data "$DATA"
    --device interp --steps 6 --batch 8 --report-every 1)
"$BERTRUN" "${pi[@]}" --out "$tmp/pione" >/dev/null 2>&1
mpirun -np 2 "$BERTRUN" "${pi[@]}" --out "$tmp/pitwo" >/dev/null 2>&1
gap=$(rel_gap "$tmp/pione" "$tmp/pitwo" 2>&1)
check "pretraining on interp (double), two ranks vs one process: relative 1e-8 (got $gap)" \
  python3 -c "import sys; sys.exit(0 if float('$gap') < 1e-8 else 1)"

# (a'') the averaged gradients themselves, which a loss curve hardly sees
# (Adam's step is nearly the same for a gradient and twice it): every
# parameter gradient of two ranks after the all-reduce = one process's on
# the global batch (tests/dist_grads.c; interp and cpu, pretrain and nli)
mpirun -np 2 "${BC_BUILD:-build}/dist_grads" >"$tmp/grads.log" 2>&1
rc=$?
grep -E '^  rank 0, .* gradients averaged' "$tmp/grads.log" | sed 's/^ */   /'
check "two ranks' averaged gradients = one process's gradients (dist_grads)" bash -c \
  "[ $rc -eq 0 ] && [ \$(grep -c 'gradients averaged over 2 ranks' '$tmp/grads.log') -eq 8 ]"
[ $rc -eq 0 ] || grep -v '^---\|^ *$' "$tmp/grads.log" | head -40

# (b) rank 0's checkpoints load in one process; resume under mpirun is exact
check "eval loads rank 0's checkpoint in one process" bash -c \
  "'$BERTRUN' eval --task snli '$tmp/two/checkpoint.safetensors' --data '$DATA' | grep -q '^test accuracy'"
cp -r "$tmp/two" "$tmp/cont"
check "one process resumes rank 0's checkpoint" bash -c \
  "'$BERTRUN' ${ft[*]} --epochs 3 --out '$tmp/cont' --resume 2>&1 | grep -q 'resuming from .* at step 20'"
mpirun -np 2 "$BERTRUN" "${ft[@]}" --epochs 1 --out "$tmp/half" >/dev/null 2>&1
mpirun -np 2 "$BERTRUN" "${ft[@]}" --epochs 2 --out "$tmp/half" --resume >"$tmp/half.log" 2>&1
check "mpirun -np 2 --resume continues bit-identically" bash -c \
  "grep -q 'resuming from .* at step 10' '$tmp/half.log' &&
   diff <(sed -E 's/.*\"step\":([0-9]+).*\"loss\":([^,}]*).*/\\1 \\2/;t;d' '$tmp/two/metrics.jsonl') \
        <(sed -E 's/.*\"step\":([0-9]+).*\"loss\":([^,}]*).*/\\1 \\2/;t;d' '$tmp/half/metrics.jsonl') >/dev/null"
check "bertrun eval under mpirun -np 2 is refused once" bash -c \
  "out=\$(mpirun -np 2 '$BERTRUN' eval --task snli '$tmp/two/checkpoint.safetensors' --data '$DATA' 2>&1);
   [ \$? -ne 0 ] && [ \$(echo \"\$out\" | grep -c 'runs in one process') -eq 1 ]"

# (c) overlap: an all-reduce starts before the backward pass ends
check "bertc --dump-after lower lists the gradient buckets" bash -c \
  "BC_DIST_BUCKET_BYTES=262144 '$BERTC' compile models/bert.yaml --graph nli --train --dump-after lower |
   grep -q '^bucket 3: [0-9]* gradients, [0-9]* bytes, ready after kernel k[0-9]*_'"
BC_TRACE="$tmp/trace.json" BC_DIST_BUCKET_BYTES=4096 mpirun -np 2 "$BERTRUN" train --task pretrain \
  --set hidden=32 --set ffn=64 --set heads=2 --set layers=2 --max-len 32 --data "$DATA" --threads 1 \
  --steps 8 --batch 16 --out "$tmp/tr" >"$tmp/tr.log" 2>&1
check "pretraining under mpirun -np 2 with BC_TRACE" test $? -eq 0 -a -s "$tmp/tr/checkpoint.safetensors"
check "the trace shows all-reduces overlapping the backward pass on both ranks" python3 - "$tmp/trace.json" <<'EOF'
import json, sys
for rank in (0, 1):
    ev = json.load(open(f"{sys.argv[1]}.{rank}"))["traceEvents"]
    spans = [e for e in ev if e["ph"] == "X"]
    assert all(e["pid"] == rank for e in spans)
    early = steps = 0
    for step in range(1, 8):  # step 0 warms up
        last = [e for e in spans if e["cat"] == "kernel" and e["args"]["step"] == step and e["args"].get("last_grad")]
        red = [e for e in spans if e["cat"] == "allreduce" and e["args"]["step"] == step]
        assert len(last) == 1 and len(red) >= 3, (step, len(last), len(red))
        backward_end = last[0]["ts"] + last[0]["dur"]
        steps += 1
        early += min(e["ts"] for e in red) < backward_end
    print(f"   rank {rank}: an all-reduce started before the last gradient kernel ended in {early} of {steps} steps")
    assert early * 2 >= steps
EOF

# (d) a rank that dies or hangs ends the job
t0=$SECONDS
BC_DIST_TIMEOUT=3 BC_DIST_TEST_FAULT=hang:5 mpirun -np 2 "$BERTRUN" "${ft[@]}" --epochs 1 --out "$tmp/hang" \
  >"$tmp/hang.log" 2>&1
rc=$?
check "a hung rank: the job fails within 30 s, naming the timed-out collective" bash -c \
  "[ $rc -ne 0 ] && [ $((SECONDS - t0)) -lt 30 ] &&
   grep -q 'rank 0: all-reduce of gradient bucket 0 (step 5) timed out after 3 s: another rank died or hangs' '$tmp/hang.log'"
t0=$SECONDS
BC_DIST_TEST_FAULT=kill:5 mpirun -np 2 "$BERTRUN" "${ft[@]}" --epochs 1 --out "$tmp/kill" >"$tmp/kill.log" 2>&1
rc=$?
check "a rank killed with SIGKILL: the job fails within 30 s" bash -c "[ $rc -ne 0 ] && [ $((SECONDS - t0)) -lt 30 ]"

# (e) the global batch must split evenly
check "--batch 15 over 2 ranks is refused, naming both numbers" bash -c \
  "out=\$(mpirun -np 2 '$BERTRUN' ${ft[*]} --batch 15 --epochs 1 --out '$tmp/odd' 2>&1);
   [ \$? -ne 0 ] && echo \"\$out\" | grep -q 'error: --batch 15 cannot be split evenly over 2 ranks'"
# (f) several replicas in one process (--device cpu:0,1): each on a thread
# of its own, averaged in memory in replica order, which for two replicas is
# MPI's a0 + a1: the same losses and parameters as two ranks, bit for bit
BC_DIST_CHECK=1 "$BERTRUN" "${ft[@]}" --epochs 2 --device cpu:0,1 --out "$tmp/rep" >"$tmp/rep.log" 2>&1
check "--device cpu:0,1 fine-tuning succeeds, replicas identical after every step" test $? -eq 0
check "--device cpu:0,1: the summary names the replicas" grep -q 'examples/sec on cpu:0,1 (2 replicas)' "$tmp/rep.log"
check "--device cpu:0,1 = mpirun -np 2 (losses, bit for bit)" bash -c \
  "diff <(sed -E 's/.*\"step\":([0-9]+).*\"loss\":([^,}]*).*/\\1 \\2/;t;d' '$tmp/two/metrics.jsonl') \
        <(sed -E 's/.*\"step\":([0-9]+).*\"loss\":([^,}]*).*/\\1 \\2/;t;d' '$tmp/rep/metrics.jsonl') >/dev/null"
check "--device cpu:0,1 = mpirun -np 2 (checkpoint tensors)" same_tensors "$tmp/two/checkpoint.safetensors" \
  "$tmp/rep/checkpoint.safetensors"
"$BERTRUN" "${ft[@]}" --epochs 1 --device cpu:0,1 --out "$tmp/rephalf" >/dev/null 2>&1
"$BERTRUN" "${ft[@]}" --epochs 2 --device cpu:0,1 --out "$tmp/rephalf" --resume >"$tmp/rephalf.log" 2>&1
check "--device cpu:0,1 --resume continues bit-identically" bash -c \
  "grep -q 'resuming from .* at step 10' '$tmp/rephalf.log' &&
   diff <(sed -E 's/.*\"step\":([0-9]+).*\"loss\":([^,}]*).*/\\1 \\2/;t;d' '$tmp/rep/metrics.jsonl') \
        <(sed -E 's/.*\"step\":([0-9]+).*\"loss\":([^,}]*).*/\\1 \\2/;t;d' '$tmp/rephalf/metrics.jsonl') >/dev/null"
"$BERTRUN" train --task pretrain "${tiny[@]}" --steps 20 --batch 8 --report-every 1 --device cpu:0,1 \
  --out "$tmp/prerep" >/dev/null 2>&1
check "pretraining: --device cpu:0,1 = mpirun -np 2 (checkpoint tensors)" same_tensors \
  "$tmp/pre2/checkpoint.safetensors" "$tmp/prerep/checkpoint.safetensors"
"$BERTRUN" "${ft[@]}" --epochs 2 --device cpu:0,1,2,3 --out "$tmp/rep4" >/dev/null 2>&1
gap=$(rel_gap "$tmp/one" "$tmp/rep4" 2>&1)
check "four replicas at batch 16 = one process at batch 16 (relative 1e-5, got $gap)" \
  python3 -c "import sys; sys.exit(0 if float('$gap') < 1e-5 else 1)"
"$BERTRUN" "${fi_[@]}" --device interp:0,1 --out "$tmp/irep" >/dev/null 2>&1
gap=$(rel_gap "$tmp/ione" "$tmp/irep" 2>&1)
check "interp:0,1 (double) vs one process: relative 1e-8 (got $gap)" \
  python3 -c "import sys; sys.exit(0 if float('$gap') < 1e-8 else 1)"
check "host replicas in one process under mpirun are refused" bash -c \
  "out=\$(mpirun -np 2 '$BERTRUN' ${ft[*]} --device cpu:0,1 --epochs 1 --out '$tmp/mix' 2>&1);
   [ \$? -ne 0 ] && echo \"\$out\" | grep -q 'host replicas in one process, which is not for mpirun'"
check "a GPU list shared by the ranks of one node is refused" bash -c \
  "out=\$(mpirun -np 2 '$BERTRUN' ${ft[*]} --device cuda:0,1 --epochs 1 --out '$tmp/mixgpu' 2>&1);
   [ \$? -ne 0 ] && echo \"\$out\" | grep -q 'would give each of the 2 ranks on this node the same 2 GPUs'"
echo "dist.sh: $((SECONDS - start)) s"
exit $fail

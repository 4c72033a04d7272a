#!/usr/bin/env python3
"""torch_ref.py — the PyTorch baseline for bench_step: d2l's BERT training
steps (forward, loss, backward, Adam) in PyTorch on the CPU (same thread
count as bertc) or on a GPU (--device cuda), eager and under torch.compile,
at the same configuration as bertc.

The model classes are d2l's own (d2l/torch.py: MultiHeadAttention with
masked_softmax filling -1e6, post-LN AddNorm blocks, BERTEncoder with a
learned position table, MaskLM, the tanh pooler + NextSentencePred), with
the 2020 chapter's NLI classifier (dense 256 + ReLU, dense 3) and the
weighted MLM loss (MXNet d2l's form, as models/bert.yaml; see
/work/shared/D2L.md). Batches are random but shaped like d2l's (valid_len
uniform in [T/4, T], 15% of tokens predicted in up to n_pred slots).

Not here: data loading or accuracy; this only times training steps.

For each graph it times every batch size of a small sweep and reports
examples/s, and PyTorch's best batch size (eager PyTorch on a CPU is often
faster at a middle batch size than at the largest). torch.compile failures
are caught and reported as null ("n/a" in the table). Output: a table on
stdout, JSON with --json.

On cuda a timed step is what bertc's is: copy the batch to the GPU, zero_grad,
forward + loss, backward, Adam.step, and float(loss), which waits for the
GPU; its wall time (perf_counter) is the headline, and CUDA events around
the same step give the GPU's own time (gpu_ms_per_step). Warmup steps come
first (cuBLAS handles, the caching allocator, autotuning). TF32 stays off
(PyTorch's default for float32 matmuls), as in bertc unless BC_TF32=1. d2l's
masked_softmax indexes with a boolean mask, which makes eager PyTorch wait
for the GPU once per attention layer: that is d2l's model, kept as it is.
"""
import argparse
import json
import math
import os
import platform
import resource
import sys
import time
import traceback

try:
    import torch
    from torch import nn
except ImportError:  # run.sh installs it, or skips this script
    sys.stderr.write("torch_ref.py: PyTorch is not installed (pip install torch)\n")
    sys.exit(3)


# ---- d2l's model (d2l/torch.py), unchanged except where noted ----

def masked_softmax(X, valid_lens):
    """Softmax over the last axis with key positions >= valid_len set to
    -1e6 first (d2l)."""
    def _sequence_mask(X, valid_len, value=0):
        maxlen = X.size(1)
        mask = torch.arange((maxlen), dtype=torch.float32,
                            device=X.device)[None, :] < valid_len[:, None]
        X[~mask] = value
        return X

    if valid_lens is None:
        return nn.functional.softmax(X, dim=-1)
    shape = X.shape
    if valid_lens.dim() == 1:
        valid_lens = torch.repeat_interleave(valid_lens, shape[1])
    else:
        valid_lens = valid_lens.reshape(-1)
    X = _sequence_mask(X.reshape(-1, shape[-1]), valid_lens, value=-1e6)
    return nn.functional.softmax(X.reshape(shape), dim=-1)


class DotProductAttention(nn.Module):
    def __init__(self, dropout):
        super().__init__()
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries, keys, values, valid_lens=None):
        d = queries.shape[-1]
        scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(d)
        # d2l keeps the weights in self.attention_weights for plotting; not
        # stored here (no effect on the computation, and a module attribute
        # written in forward costs torch.compile a side effect).
        attention_weights = masked_softmax(scores, valid_lens)
        return torch.bmm(self.dropout(attention_weights), values)


class MultiHeadAttention(nn.Module):
    def __init__(self, num_hiddens, num_heads, dropout, bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.attention = DotProductAttention(dropout)
        # d2l uses nn.LazyLinear; the input width is num_hiddens here
        self.W_q = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.W_k = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.W_v = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.W_o = nn.Linear(num_hiddens, num_hiddens, bias=bias)

    def forward(self, queries, keys, values, valid_lens):
        queries = self.transpose_qkv(self.W_q(queries))
        keys = self.transpose_qkv(self.W_k(keys))
        values = self.transpose_qkv(self.W_v(values))
        if valid_lens is not None:
            valid_lens = torch.repeat_interleave(valid_lens, repeats=self.num_heads, dim=0)
        output = self.attention(queries, keys, values, valid_lens)
        output_concat = self.transpose_output(output)
        return self.W_o(output_concat)

    def transpose_qkv(self, X):
        X = X.reshape(X.shape[0], X.shape[1], self.num_heads, -1)
        X = X.permute(0, 2, 1, 3)
        return X.reshape(-1, X.shape[2], X.shape[3])

    def transpose_output(self, X):
        X = X.reshape(-1, self.num_heads, X.shape[1], X.shape[2])
        X = X.permute(0, 2, 1, 3)
        return X.reshape(X.shape[0], X.shape[1], -1)


class PositionWiseFFN(nn.Module):
    def __init__(self, num_inputs, ffn_num_hiddens, ffn_num_outputs):
        super().__init__()
        self.dense1 = nn.Linear(num_inputs, ffn_num_hiddens)
        self.relu = nn.ReLU()
        self.dense2 = nn.Linear(ffn_num_hiddens, ffn_num_outputs)

    def forward(self, X):
        return self.dense2(self.relu(self.dense1(X)))


class AddNorm(nn.Module):
    """Post-LN residual: LayerNorm(X + dropout(Y)), eps 1e-5."""
    def __init__(self, norm_shape, dropout):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.ln = nn.LayerNorm(norm_shape)

    def forward(self, X, Y):
        return self.ln(self.dropout(Y) + X)


class TransformerEncoderBlock(nn.Module):
    def __init__(self, num_hiddens, ffn_num_hiddens, num_heads, dropout, use_bias=False):
        super().__init__()
        self.attention = MultiHeadAttention(num_hiddens, num_heads, dropout, use_bias)
        self.addnorm1 = AddNorm(num_hiddens, dropout)
        self.ffn = PositionWiseFFN(num_hiddens, ffn_num_hiddens, num_hiddens)
        self.addnorm2 = AddNorm(num_hiddens, dropout)

    def forward(self, X, valid_lens):
        Y = self.addnorm1(X, self.attention(X, X, X, valid_lens))
        return self.addnorm2(Y, self.ffn(Y))


class BERTEncoder(nn.Module):
    def __init__(self, vocab_size, num_hiddens, ffn_num_hiddens, num_heads, num_blks, dropout,
                 max_len=1000):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, num_hiddens)
        self.segment_embedding = nn.Embedding(2, num_hiddens)
        self.blks = nn.Sequential()
        for i in range(num_blks):
            self.blks.add_module(f"{i}", TransformerEncoderBlock(
                num_hiddens, ffn_num_hiddens, num_heads, dropout, True))
        # learnable positional embedding, N(0, 1)
        self.pos_embedding = nn.Parameter(torch.randn(1, max_len, num_hiddens))

    def forward(self, tokens, segments, valid_lens):
        X = self.token_embedding(tokens) + self.segment_embedding(segments)
        X = X + self.pos_embedding[:, :X.shape[1], :]
        for blk in self.blks:
            X = blk(X, valid_lens)
        return X


class MaskLM(nn.Module):
    def __init__(self, vocab_size, num_hiddens, num_inputs):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(num_inputs, num_hiddens), nn.ReLU(),
                                 nn.LayerNorm(num_hiddens), nn.Linear(num_hiddens, vocab_size))

    def forward(self, X, pred_positions):
        num_pred_positions = pred_positions.shape[1]
        pred_positions = pred_positions.reshape(-1)
        batch_size = X.shape[0]
        batch_idx = torch.arange(0, batch_size, device=X.device)
        batch_idx = torch.repeat_interleave(batch_idx, num_pred_positions)
        masked_X = X[batch_idx, pred_positions]
        masked_X = masked_X.reshape((batch_size, num_pred_positions, -1))
        return self.mlp(masked_X)


class NextSentencePred(nn.Module):
    def __init__(self, num_inputs):
        super().__init__()
        self.output = nn.Linear(num_inputs, 2)

    def forward(self, X):
        return self.output(X)


class BERTModel(nn.Module):
    def __init__(self, vocab_size, num_hiddens, ffn_num_hiddens, num_heads, num_blks, dropout,
                 max_len):
        super().__init__()
        self.encoder = BERTEncoder(vocab_size, num_hiddens, ffn_num_hiddens, num_heads,
                                   num_blks, dropout, max_len=max_len)
        self.hidden = nn.Sequential(nn.Linear(num_hiddens, num_hiddens), nn.Tanh())
        self.mlm = MaskLM(vocab_size, num_hiddens, num_hiddens)
        self.nsp = NextSentencePred(num_hiddens)

    def forward(self, tokens, segments, valid_lens=None, pred_positions=None):
        encoded_X = self.encoder(tokens, segments, valid_lens)
        mlm_Y_hat = self.mlm(encoded_X, pred_positions) if pred_positions is not None else None
        nsp_Y_hat = self.nsp(self.hidden(encoded_X[:, 0, :]))
        return encoded_X, mlm_Y_hat, nsp_Y_hat


class BERTClassifier(nn.Module):
    """The 2020 chapter's classifier: on the <cls> encoding, dense(256) +
    ReLU, dense(3) (models/bert.yaml's nli_classifier)."""
    def __init__(self, bert, num_hiddens):
        super().__init__()
        self.encoder = bert.encoder
        self.hidden = nn.Linear(num_hiddens, 256)
        self.relu = nn.ReLU()
        self.output = nn.Linear(256, 3)

    def forward(self, tokens, segments, valid_lens):
        encoded_X = self.encoder(tokens, segments, valid_lens)
        return self.output(self.relu(self.hidden(encoded_X[:, 0, :])))


# ---- losses (models/bert.yaml's) ----

def pretrain_loss(net, loss, tokens, segments, valid_lens, pred_positions, pred_weights,
                  mlm_labels, nsp_labels, vocab_size):
    """Weighted MLM cross-entropy / (sum of weights + 1e-8) + mean NSP CE."""
    _, mlm_Y_hat, nsp_Y_hat = net(tokens, segments, valid_lens, pred_positions)
    mlm_l = loss(mlm_Y_hat.reshape(-1, vocab_size), mlm_labels.reshape(-1)) * \
        pred_weights.reshape(-1)
    mlm_l = mlm_l.sum() / (pred_weights.sum() + 1e-8)
    nsp_l = loss(nsp_Y_hat, nsp_labels).mean()
    return mlm_l + nsp_l


def nli_loss(net, loss, tokens, segments, valid_lens, label):
    """Mean cross-entropy over the batch (bertc's choice; d2l sums)."""
    return loss(net(tokens, segments, valid_lens), label).mean()


# ---- batches shaped like d2l's (same rules as bench/bench_step.c) ----

PAD, CLS, SEP, MASK, FIRST_WORD = 0, 2, 3, 4, 5


def make_batch(graph, B, cfg, gen):
    T, V, P = cfg["max_len"], cfg["vocab"], cfg["n_pred"]
    words = max(V - FIRST_WORD, 1)
    lo = min(T, 5) if T // 4 < 5 else T // 4
    vl = torch.randint(lo, T + 1, (B,), generator=gen)
    tok = torch.full((B, T), PAD, dtype=torch.long)
    seg = torch.zeros((B, T), dtype=torch.long)
    pos = torch.zeros((B, P), dtype=torch.long)
    lab = torch.zeros((B, P), dtype=torch.long)
    wts = torch.zeros((B, P), dtype=torch.float32)
    for b in range(B):
        n = int(vl[b])
        tok[b, :n] = FIRST_WORD + torch.randint(0, words, (n,), generator=gen)
        tok[b, 0] = CLS
        if n >= 5:
            la = int(torch.randint(1, n - 3, (1,), generator=gen))
            tok[b, la + 1] = SEP
            tok[b, n - 1] = SEP
            seg[b, la + 2:n] = 1
        elif n >= 2:
            tok[b, n - 1] = SEP
        if graph == "pretrain" and P > 0:
            cand = [i for i in range(n) if int(tok[b, i]) not in (CLS, SEP)]
            k = min(max(1, round(n * 0.15)), P, len(cand))
            perm = torch.randperm(len(cand), generator=gen)[:k].tolist()
            chosen = sorted(cand[i] for i in perm)
            for j, p in enumerate(chosen):
                pos[b, j], lab[b, j], wts[b, j] = p, tok[b, p], 1.0
                r = int(torch.randint(0, 10, (1,), generator=gen))
                if r < 8:
                    tok[b, p] = MASK
                elif r == 8:
                    tok[b, p] = FIRST_WORD + int(torch.randint(0, words, (1,), generator=gen))
    if graph == "pretrain":
        nsp = torch.randint(0, 2, (B,), generator=gen)
        return (tok, seg, vl, pos, wts, lab, nsp)
    return (tok, seg, vl, torch.randint(0, 3, (B,), generator=gen))


# ---- one configuration ----

def build(graph, cfg):
    bert = BERTModel(cfg["vocab"], cfg["hidden"], cfg["ffn"], cfg["heads"], cfg["layers"],
                     cfg["dropout"], cfg["max_len"])
    if graph == "pretrain":
        return bert
    return BERTClassifier(bert, cfg["hidden"])


def time_steps(step, batches, warmup, steps, cuda=False):
    """Runs warmup + steps training steps; returns (seconds of each timed
    one, GPU seconds of each timed one from CUDA events (None on the CPU),
    first loss, last loss)."""
    first = last = None
    times, gpu_times = [], []
    if cuda:
        torch.cuda.synchronize()
    for s in range(warmup + steps):
        if cuda:
            ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            ev0.record()
        t0 = time.perf_counter()
        loss = step(batches[s % len(batches)])
        if cuda:
            ev1.record()
        last = float(loss)  # waits for the step, like bertc's exec_read of the loss
        dt = time.perf_counter() - t0
        if first is None:
            first = last
        if s >= warmup:
            times.append(dt)
            if cuda:
                ev1.synchronize()
                gpu_times.append(1e-3 * ev0.elapsed_time(ev1))
    return times, (gpu_times if cuda else None), first, last


def median(xs):
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else 0.5 * (ys[n // 2 - 1] + ys[n // 2])


def run_mode(graph, mode, batch_sizes, cfg, args, log):
    """Times `graph` at each batch size in one mode (eager or compile).
    Returns {batch: result dict}."""
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    net = build(graph, cfg).to(dev)
    net.train()
    lr = args.lr if args.lr else (0.01 if graph == "pretrain" else 1e-4)
    opt = torch.optim.Adam(net.parameters(), lr=lr,
                           **({"fused": True} if args.adam == "fused" else {}))
    ce = nn.CrossEntropyLoss(reduction="none")
    if graph == "pretrain":
        def fwd(*b):
            return pretrain_loss(net, ce, *b, vocab_size=cfg["vocab"])
    else:
        def fwd(*b):
            return nli_loss(net, ce, *b)
    compiled = None
    if mode == "compile":
        # dynamic=False: each batch size is its own static compile, as bertc
        # specializes each step to its batch size.
        compiled = torch.compile(fwd, dynamic=False)

    def step(b):
        if cuda:  # the batch's copy to the GPU is part of the step, as in bertc
            b = tuple(t.to(dev, non_blocking=True) for t in b)
        opt.zero_grad(set_to_none=True)
        loss = (compiled or fwd)(*b)
        loss.backward()
        opt.step()
        return loss.detach()

    gen = torch.Generator().manual_seed(args.seed + 1)
    out = {}
    for B in batch_sizes:
        res = {"batch": B, "examples_per_s": None, "ms_per_step": None, "compile_s": None,
               "error": None}
        try:
            batches = [make_batch(graph, B, cfg, gen) for _ in range(2)]
            if cuda:
                batches = [tuple(t.pin_memory() for t in b) for b in batches]
                torch.cuda.reset_peak_memory_stats(dev)
            t0 = time.perf_counter()
            if mode == "compile":  # the first step compiles (and runs): timed apart
                float(step(batches[0]))
                res["compile_s"] = time.perf_counter() - t0
            times, gpu_times, first, last = time_steps(step, batches, args.warmup, args.steps, cuda)
            # the median step: robust to other processes on a shared machine
            # (bench_step reports the same statistic)
            res.update(examples_per_s=B / median(times), ms_per_step=1e3 * median(times),
                       examples_per_s_mean=B * len(times) / sum(times),
                       ms_per_step_mean=1e3 * sum(times) / len(times),
                       ms_per_step_min=1e3 * min(times),
                       step_ms=[round(1e3 * t, 3) for t in times],
                       loss_first=first, loss_last=last)
            if cuda:
                res.update(gpu_ms_per_step=1e3 * median(gpu_times),
                           gpu_step_ms=[round(1e3 * t, 3) for t in gpu_times],
                           max_memory_allocated_bytes=torch.cuda.max_memory_allocated(dev))
            # the process's peak resident memory so far (Linux: KiB): this
            # configuration's own when it is the first a process runs
            # (bench/run.sh runs one per process for the memory table)
            res["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            if not math.isfinite(last):
                res["error"] = f"loss is {last}"
        except Exception as e:  # torch.compile failures are reported, not fatal
            res["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if args.verbose:
                traceback.print_exc()
            if cuda:  # a failed compile or an out-of-memory leaves tensors behind
                torch.cuda.empty_cache()
        log(f"  {graph:8s} {mode:7s} batch {B:4d}: " +
            (f"{res['examples_per_s']:8.1f} examples/s  {res['ms_per_step']:9.1f} ms/step" +
             (f"  (compile {res['compile_s']:.1f} s)" if res["compile_s"] else "")
             if res["error"] is None else f"failed: {res['error']}"))
        out[B] = res
    return out


def best_of(results):
    ok = [r for r in results.values() if r["error"] is None and r["examples_per_s"]]
    return max(ok, key=lambda r: r["examples_per_s"]) if ok else None


def main():
    ap = argparse.ArgumentParser(
        description="d2l's BERT training steps in PyTorch (eager and torch.compile) on the CPU "
                    "or a GPU: examples/s per batch size, and PyTorch's best batch size.",
        epilog="Defaults are the reference configuration of models/bert.yaml. A full default "
               "run takes about 5-8 minutes on 2 cores, 1-2 minutes on an H100 (mostly "
               "torch.compile). Exit status 3: torch missing (or no GPU for --device cuda).")
    ap.add_argument("--graph", action="append", choices=["nli", "pretrain"],
                    help="graph to time (repeatable; default both)")
    ap.add_argument("--device", default="cpu",
                    help="cpu (default), cuda or cuda:N")
    ap.add_argument("--batch", action="append", type=int,
                    help="batch size to time (repeatable; default sweep: nli 64 128 256 512, "
                         "pretrain 64 128 256; on cuda nli 128 256 512 1024, pretrain 128 256 "
                         "512)")
    ap.add_argument("--steps", type=int, default=None,
                    help="timed steps per batch size (4 on the CPU, 20 on cuda); examples/s uses "
                         "the median step")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed steps first (1 on the CPU, 3 on cuda)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch.set_num_threads (default: all CPUs)")
    ap.add_argument("--mode", action="append", choices=["eager", "compile"],
                    help="eager and/or compile (default both)")
    ap.add_argument("--compile-batch", action="append", type=int,
                    help="batch sizes for torch.compile (default: the same as eager on the CPU; "
                         "on cuda nli 512 and pretrain 256, the sizes d2l trains at); each is a "
                         "separate compile")
    ap.add_argument("--adam", choices=["default", "fused"], default="default",
                    help="torch.optim.Adam's implementation: default (foreach on cuda, as d2l) "
                         "or fused=True (cuda only)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="hyperparameter override like bertc's: vocab hidden ffn heads layers "
                         "max_len n_pred dropout")
    ap.add_argument("--lr", type=float, default=None,
                    help="learning rate (default: nli 1e-4, pretrain 0.01)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON (- = stdout)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of failures")
    args = ap.parse_args()

    cfg = {"vocab": 20256, "hidden": 128, "ffn": 128, "heads": 2, "layers": 2,
           "max_len": 128, "dropout": 0.2, "n_pred": 19}
    for s in args.set:
        k, _, v = s.partition("=")
        if k not in cfg or not v:
            ap.error(f"--set {s}: unknown hyperparameter or missing value (known: {' '.join(cfg)})")
        cfg[k] = float(v) if k == "dropout" else int(v)
    if cfg["hidden"] % cfg["heads"]:
        ap.error("heads must divide hidden")

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.stderr.write(f"torch_ref.py: --device {args.device}: torch.cuda is not available "
                         f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})\n")
        sys.exit(3)
    if not cuda and args.device != "cpu":
        ap.error(f"--device {args.device}: choose cpu, cuda or cuda:N")
    if args.adam == "fused" and not cuda:
        ap.error("--adam fused needs --device cuda")
    if args.steps is None:
        args.steps = 20 if cuda else 4
    if args.warmup is None:
        args.warmup = 3 if cuda else 1
    if cuda:
        if args.device == "cuda":
            args.device = "cuda:0"  # set_device and the memory counters want an index
        torch.cuda.set_device(torch.device(args.device))
        # PyTorch's defaults, written down: float32 matmuls in full f32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    torch.set_num_threads(args.threads)
    graphs = args.graph or ["nli", "pretrain"]
    modes = args.mode or ["eager", "compile"]
    sweep = ({"nli": [128, 256, 512, 1024], "pretrain": [128, 256, 512]} if cuda else
             {"nli": [64, 128, 256, 512], "pretrain": [64, 128, 256]})
    compile_sweep = {"nli": [512], "pretrain": [256]} if cuda else None

    def log(msg):
        print(msg, flush=True)

    gpu = torch.cuda.get_device_name(torch.device(args.device)) if cuda else None
    log(f"torch {torch.__version__}, device {args.device}" + (f" ({gpu})" if gpu else "") +
        f", {torch.get_num_threads()} threads, config {json.dumps(cfg)}")
    report = {"tool": "torch_ref", "torch": torch.__version__, "python": platform.python_version(),
              "device": args.device, "gpu": gpu, "cuda": torch.version.cuda if cuda else None,
              "allow_tf32": torch.backends.cuda.matmul.allow_tf32 if cuda else None,
              "adam": args.adam,
              "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "config": cfg, "steps": args.steps, "warmup": args.warmup,
              "loadavg_start": list(os.getloadavg()), "graphs": {}, "complete": False}

    def write_report():
        """The JSON so far: rewritten after every mode, so a run stopped by a
        time limit (bench/gpu-check.sh) still leaves what it measured."""
        if not args.json or args.json == "-":
            return
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, args.json)

    for graph in graphs:
        sizes = args.batch or sweep[graph]
        entry = {}
        for mode in modes:
            bs = sizes
            if mode == "compile" and args.compile_batch:
                bs = args.compile_batch
            elif mode == "compile" and compile_sweep and not args.batch:
                bs = compile_sweep[graph]  # on cuda: one compile per graph
            t0 = time.perf_counter()
            try:
                res = run_mode(graph, mode, bs, cfg, args, log)
            except Exception as e:
                log(f"  {graph} {mode} failed: {type(e).__name__}: {e}")
                res = {}
            best = best_of(res)
            entry[mode] = {
                "by_batch": {str(b): r for b, r in res.items()},
                "best_batch": best["batch"] if best else None,
                "best_examples_per_s": best["examples_per_s"] if best else None,
                "wall_s": time.perf_counter() - t0,
            }
            report["graphs"][graph] = entry
            write_report()

    cols = sorted({int(b) for entry in report["graphs"].values() for e in entry.values()
                   for b in e["by_batch"]})
    log("")
    log("examples/s by batch size:")
    log(f"{'graph':9s} {'mode':8s} " + " ".join(f"{'b' + str(b):>9s}" for b in cols) +
        f" {'best':>6s} {'best ex/s':>10s}")
    for graph, entry in report["graphs"].items():
        for mode, e in entry.items():
            cells = []
            for b in cols:
                r = e["by_batch"].get(str(b))
                v = r["examples_per_s"] if r and r["error"] is None else None
                # "n/a": tried and failed (torch.compile); "-": not tried
                cells.append(f"{v:9.1f}" if v else f"{'n/a' if r else '-':>9s}")
            best = e["best_examples_per_s"]
            log(f"{graph:9s} {mode:8s} " + " ".join(cells) +
                f" {e['best_batch'] or '-':>6} " + (f"{best:10.1f}" if best else f"{'n/a':>10s}"))
    report["loadavg_end"] = list(os.getloadavg())
    report["complete"] = True
    if args.json == "-":
        print(json.dumps(report, indent=2))
    write_report()


if __name__ == "__main__":
    main()

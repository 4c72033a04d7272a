#!/usr/bin/env python3
"""minilm_train.py — transformers' BertForSequenceClassification fine-tuning
steps on SNLI training pairs, timed the way `bertrun train --task snli`
batches them, for the examples/s ratio bench/minilm.sh reports.

Batches as bertrun's length-bucket sampler makes them (tasks/buckets.c):
the training pairs shuffled, sorted by length within windows of 64
batches, cut into batches, each padded to its longest rounded up to 16
(at most --max-len). A step is forward, cross-entropy, backward and AdamW
(lr 3e-5, linear decay: the work of bertrun's recipe hf), timed over
--steps batches after --warmup, eager and with torch.compile (which
compiles once per padded length: its warm-up covers every length first).
Prints one JSON object."""
import argparse
import json
import random
import time

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--train", nargs="+", required=True, help="snli_1.0_train*.txt")
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--max-len", type=int, default=128)
ap.add_argument("--steps", type=int, default=60)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--compile", type=int, default=1)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
labels = {"entailment": 0, "contradiction": 1, "neutral": 2}
pairs = []
for path in a.train:
    rows = open(path, encoding="utf-8").read().splitlines()
    head = rows[0].split("\t")
    s1, s2 = head.index("sentence1"), head.index("sentence2")
    for r in rows[1:]:
        f = r.split("\t")
        if f[0] in labels:
            pairs.append((f[s1], f[s2], labels[f[0]]))
tok = AutoTokenizer.from_pretrained(a.model)
enc = tok([p[0] for p in pairs], [p[1] for p in pairs], truncation="longest_first", max_length=a.max_len)
ids, types = enc["input_ids"], enc["token_type_ids"]

rng = random.Random(0)
order = list(range(len(pairs)))
rng.shuffle(order)
W = 64 * a.batch
order = [i for lo in range(0, len(order), W) for i in sorted(order[lo:lo + W], key=lambda i: len(ids[i]))]
batches = [order[lo:lo + a.batch] for lo in range(0, len(order) - a.batch + 1, a.batch)]
rng.shuffle(batches)

def tensors(rows):
    t = min(a.max_len, (max(len(ids[i]) for i in rows) + 15) // 16 * 16)
    x = torch.zeros(len(rows), t, dtype=torch.long)
    y = torch.zeros(len(rows), t, dtype=torch.long)
    m = torch.zeros(len(rows), t, dtype=torch.long)
    for r, i in enumerate(rows):
        n = len(ids[i])
        x[r, :n] = torch.tensor(ids[i])
        y[r, :n] = torch.tensor(types[i])
        m[r, :n] = 1
    return x, y, m, torch.tensor([pairs[i][2] for i in rows])

def run(compiled):
    model = BertForSequenceClassification.from_pretrained(a.model, num_labels=3)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / len(batches)))
    fwd = torch.compile(model) if compiled else model

    def step(rows):
        x, y, m, lab = tensors(rows)
        loss = torch.nn.functional.cross_entropy(fwd(input_ids=x, token_type_ids=y, attention_mask=m).logits, lab)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return float(loss)

    t0 = time.perf_counter()
    warm = batches[:a.warmup]
    if compiled:  # one batch of every padded length first
        seen = {}
        for b in batches:
            seen.setdefault(tensors(b)[0].shape[1], b)
        warm = list(seen.values())
    for b in warm:
        step(b)
    warm_s = time.perf_counter() - t0
    timed = batches[len(warm):len(warm) + a.steps]
    t0 = time.perf_counter()
    for b in timed:
        step(b)
    s = time.perf_counter() - t0
    return {"examples_per_s": len(timed) * a.batch / s, "steps": len(timed), "warmup_s": warm_s}

res = {"torch": torch.__version__, "threads": a.threads, "batch": a.batch, "pairs": len(pairs),
       "mean_padded_length": sum(tensors(b)[0].shape[1] for b in batches[:200]) / min(200, len(batches)),
       "eager": run(False)}
if a.compile:
    res["compile"] = run(True)
print(json.dumps(res))

#!/usr/bin/env python3
"""minilm_check.py — bench/minilm.sh's comparison of `bertrun encode`
output with transformers on the same pairs and machine: token ids, last
hidden states, mean-pooled embeddings, and forward examples/s (eager and
torch.compile) at the batch sizes bertc was timed at. Writes a JSON file and
prints a table."""
import argparse
import json
import time

import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--pairs", required=True)
ap.add_argument("--bertc", required=True, help="bertrun encode of every pair")
ap.add_argument("--speed", nargs="*", default=[], help="bertrun encode files of the speed runs (batch in the name)")
ap.add_argument("--speed-pairs", type=int, default=2048)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--compile", type=int, default=1)
ap.add_argument("--json", required=True)
a = ap.parse_args()
torch.set_num_threads(a.threads)

pairs = [l.rstrip("\n").split("\t") for l in open(a.pairs, encoding="utf-8")]
tok = AutoTokenizer.from_pretrained(a.model)
model = AutoModel.from_pretrained(a.model).eval()
b = load_file(a.bertc)
lens = b["lengths"].tolist()
T = b["input_ids"].shape[1]

# 1. token ids, every pair
enc = tok([p[0] for p in pairs], [p[1] for p in pairs], truncation="longest_first", max_length=512)
mismatch = [i for i, ids in enumerate(enc["input_ids"]) if ids != b["input_ids"][i, :lens[i]].tolist()]
types_bad = [i for i, t in enumerate(enc["token_type_ids"]) if t != b["token_type_ids"][i, :lens[i]].tolist()]

# 2. hidden states and mean pooling, in batches padded like bertc's
K = b["last_hidden_state"].shape[0] if "last_hidden_state" in b else 0
max_hidden, min_cos = 0.0, 1.0
ids = b["input_ids"]
types = b["token_type_ids"]
mask = (torch.arange(T)[None, :] < torch.tensor(lens)[:, None]).long()
with torch.no_grad():
    for at in range(0, len(pairs), 256):
        sl = slice(at, at + 256)
        h = model(input_ids=ids[sl].long(), token_type_ids=types[sl].long(), attention_mask=mask[sl]).last_hidden_state
        m = (h * mask[sl, :, None]).sum(1) / mask[sl].sum(1, keepdim=True)
        cos = torch.nn.functional.cosine_similarity(m.double(), b["mean_pooled"][sl].double(), dim=1)
        min_cos = min(min_cos, cos.min().item())
        for i in range(at, min(at + 256, K)):
            d = (h[i - at, :lens[i]] - b["last_hidden_state"][i, :lens[i]]).abs().max().item()
            max_hidden = max(max_hidden, d)

# 3. speed: bertc's batches (texts in order of length, each batch padded to
# its longest rounded up to 16), the same for PyTorch
def batches(lens, batch, L=512):
    order = sorted(range(len(lens)), key=lambda i: (lens[i], i))
    for at in range(0, len(order), batch):
        rows = order[at:at + batch]
        yield rows, min(L, (lens[rows[-1]] + 15) // 16 * 16)

def run_all(fn, ids, types, lens, batch):
    with torch.no_grad():
        for rows, t in batches(lens, batch):
            idx = torch.tensor(rows)
            m = (torch.arange(t)[None, :] < torch.tensor([lens[i] for i in rows])[:, None]).long()
            fn(input_ids=ids[idx, :t].long(), token_type_ids=types[idx, :t].long(), attention_mask=m)

def timed(fn, ids, types, lens, batch):
    t0 = time.perf_counter()
    run_all(fn, ids, types, lens, batch)
    return len(lens) / (time.perf_counter() - t0)

speed = []
compiled = torch.compile(model) if a.compile else None
for path in a.speed:
    s = load_file(path)
    with open(path, "rb") as f:
        meta = json.loads(f.read(int.from_bytes(f.read(8), "little"))).get("__metadata__", {})
    batch = int(path.rsplit("speed", 1)[1].split(".")[0])
    sl = s["lengths"].tolist()
    if s["input_ids"].shape[1] < max((l + 15) // 16 * 16 for l in sl):  # room for the rounded lengths
        pad = max((l + 15) // 16 * 16 for l in sl) - s["input_ids"].shape[1]
        s["input_ids"] = torch.nn.functional.pad(s["input_ids"], (0, pad))
        s["token_type_ids"] = torch.nn.functional.pad(s["token_type_ids"], (0, pad))
    run_all(model, s["input_ids"], s["token_type_ids"], sl[:batch], batch)  # warm-up
    row = {"batch": batch, "pairs": len(sl), "mean_length": sum(sl) / len(sl),
           "bertc": float(meta.get("examples_per_s", "nan")),
           "eager": timed(model, s["input_ids"], s["token_type_ids"], sl, batch)}
    if compiled is not None:
        t0 = time.perf_counter()
        run_all(compiled, s["input_ids"], s["token_type_ids"], sl, batch)  # compiles every length
        row["compile_s"] = time.perf_counter() - t0
        row["compile"] = timed(compiled, s["input_ids"], s["token_type_ids"], sl, batch)
    speed.append(row)

res = {"pairs": len(pairs), "token_id_mismatches": len(mismatch), "first_mismatches": mismatch[:10],
       "token_type_mismatches": len(types_bad), "hidden_rows_compared": K,
       "max_abs_hidden_diff": max_hidden, "min_mean_pooled_cosine": min_cos, "threads": a.threads,
       "torch": torch.__version__, "speed": speed}
json.dump(res, open(a.json, "w"), indent=2)
print(f"token ids: {len(pairs) - len(mismatch)} of {len(pairs)} pairs identical "
      f"(token types: {len(pairs) - len(types_bad)})")
print(f"last hidden states, first {K} pairs: max |bertc - transformers| = {max_hidden:.2e}")
print(f"mean-pooled embeddings, all pairs: smallest cosine {min_cos:.8f}")
print(f"forward examples/s ({a.threads} threads, torch {torch.__version__}):")
print(f"{'batch':>5} {'mean len':>8} {'bertc':>9} {'eager':>9} {'x':>5} {'compile':>9} {'x':>5}")
for r in speed:
    c = r.get("compile")
    print(f"{r['batch']:5d} {r['mean_length']:8.1f} {r['bertc']:9.1f} {r['eager']:9.1f} {r['bertc'] / r['eager']:5.2f} "
          + (f"{c:9.1f} {r['bertc'] / c:5.2f}" if c else f"{'-':>9} {'-':>5}"))

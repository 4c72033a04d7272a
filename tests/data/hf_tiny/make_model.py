#!/usr/bin/env python3
"""make_model.py — the tiny BERT of the Hugging Face import tests, and what
transformers computes with it.

Writes beside itself, in the layout `bertc import` reads:
  config.json, model.safetensors   a BertModel (2 layers, hidden 32, 4 heads,
                                   intermediate 37, 40 positions, GELU,
                                   LayerNorm eps 1e-12), weights drawn with
                                   std 0.2 so that every tensor moves the
                                   outputs well above rounding
  model_refs.json                  input ids, token types and lengths of a
                                   padded batch, and transformers' last
                                   hidden states and pooled output for it
                                   (eval mode, float32), which
                                   tests/test_hf.c compares bertc against
The vocabulary (vocab.txt, tokenizer_config.json) is make_tokenizer_refs.py's;
run that first. Needs torch, transformers and safetensors (pip); the tests
need neither Python nor network.

Usage: python3 tests/data/hf_tiny/make_model.py
"""
import json
import os

import torch
from transformers import BertConfig, BertModel

here = os.path.dirname(os.path.abspath(__file__))
vocab_path = os.path.join(here, "vocab.txt")
if not os.path.exists(vocab_path):
    raise SystemExit(f"{vocab_path} is missing: run make_tokenizer_refs.py first")
vocab = open(vocab_path, encoding="utf-8").read().splitlines()
pad_id = vocab.index("[PAD]")

torch.manual_seed(20261204)
config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=37, hidden_act="gelu", max_position_embeddings=40, type_vocab_size=2,
                    layer_norm_eps=1e-12, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                    pad_token_id=pad_id)
model = BertModel(config)
with torch.no_grad():
    for name, p in model.named_parameters():
        p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("LayerNorm.weight") else 0.0))
model.eval()
model.save_pretrained(here, safe_serialization=True)

# A batch of 3 sequences padded to 12: lengths 12, 7 and 3; ids avoid [PAD].
lengths = [12, 7, 3]
T = max(lengths)
g = torch.Generator().manual_seed(7)
ids = torch.randint(0, len(vocab), (len(lengths), T), generator=g)
ids[ids == pad_id] = (pad_id + 1) % len(vocab)
types = torch.zeros_like(ids)
mask = torch.zeros_like(ids)
for b, n in enumerate(lengths):
    ids[b, n:] = pad_id
    types[b, n // 2:n] = 1
    mask[b, :n] = 1
with torch.no_grad():
    out = model(input_ids=ids, token_type_ids=types, attention_mask=mask)
refs = {
    "input_ids": ids.tolist(),
    "token_type_ids": types.tolist(),
    "lengths": lengths,
    "last_hidden_state": [[[float(x) for x in row] for row in ex] for ex in out.last_hidden_state],
    "pooler_output": [[float(x) for x in ex] for ex in out.pooler_output],
}
with open(os.path.join(here, "model_refs.json"), "w", encoding="utf-8") as f:
    json.dump(refs, f)
    f.write("\n")
print(f"wrote config.json, model.safetensors, model_refs.json in {here} (vocabulary {len(vocab)})")

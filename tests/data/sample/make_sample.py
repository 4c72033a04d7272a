#!/usr/bin/env python3
"""Writes the synthetic sample data set of tests/data/sample/ (committed; run
again only to change it). It has the layout of the real data (wikitext-2/,
snli/) so that bertrun and the README's main command run end to end where no
real data is found. The text is generated from a small grammar, not taken
from WikiText-2 or SNLI. SNLI-style labels follow a learnable rule:
entailment when the hypothesis restates the premise's subject and verb,
contradiction when it negates them, neutral when it talks about another
subject."""
import random

r = random.Random(7)
subjects = ["a man", "a woman", "the dog", "two children", "a girl", "the old man", "a boy",
            "the band", "a cat", "the team", "a chef", "the students"]
verbs = ["is running", "is eating", "is sleeping", "is playing", "is singing", "is reading",
         "is cooking", "is dancing", "is swimming", "is walking"]
places = ["in the park", "at home", "on the beach", "in a kitchen", "near the river",
          "on a stage", "in the street", "at school"]
adj = ["happy", "tired", "young", "small", "busy", "quiet", "loud", "tall"]

def sentence():
    s, v, p = r.choice(subjects), r.choice(verbs), r.choice(places)
    extra = r.choice(["", " and smiles", " with a friend", " while it rains", ""])
    return f"{s} {v} {p}{extra}"

lines = [" = Sample = ", ""]
for para in range(400):
    n = r.randint(2, 6)
    lines.append(" " + " . ".join(sentence() for _ in range(n)) + " . ")
    if para % 10 == 0:
        lines.append(" = = Section = = ")
with open("wikitext-2/wiki.train.tokens", "w") as f:
    f.write("\n".join(lines) + "\n")

def parse(t):  # a binary-parse-like bracketing, as SNLI's columns 1 and 2
    words = t.split()
    return "( " + " ".join(f"( {w} )" if i % 3 else w for i, w in enumerate(words)) + " )"

header = "gold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence1\tsentence2"

def pair():
    s, v, p = r.choice(subjects), r.choice(verbs), r.choice(places)
    premise = f"{s} {v} {p} ."
    label = r.choice(["entailment", "contradiction", "neutral"])
    if label == "entailment":
        hyp = f"{s} {v} ."
    elif label == "contradiction":
        hyp = f"{s} {v.replace('is ', 'is not ')} ."
    else:
        hyp = f"{r.choice([x for x in subjects if x != s])} is {r.choice(adj)} ."
    if r.random() < 0.02:
        label = "-"  # no gold label: dropped, as d2l does
    return f"{label}\t{parse(premise)}\t{parse(hyp)}\t(ROOT)\t{premise}\t{hyp}"

for name, n in [("snli_1.0_train.txt", 1500), ("snli_1.0_test.txt", 300), ("snli_1.0_dev.txt", 100)]:
    with open(f"snli/{name}", "w") as f:
        f.write(header + "\n" + "\n".join(pair() for _ in range(n)) + "\n")

#!/usr/bin/env python3
"""make_tokenizer_refs.py — the WordPiece reference of tests/test_wordpiece.c.

Writes, beside itself:
  vocab.txt              a small BERT vocabulary (BERT's layout: [PAD] 0,
                         [unused0..98], [UNK] 100, [CLS] 101, [SEP] 102,
                         [MASK] 103, then characters, ## characters, words and
                         ## pieces picked deterministically from the sentences
                         below; nothing is trained)
  tokenizer_config.json  do_lower_case true and the special tokens
  tokenizer_refs.jsonl   one JSON object a line: the text(s), do_lower_case,
                         and what transformers computes for them

Each line is one of
  {"kind": "single", "lower": L, "text": T, "ids": [...],
   "encodings": [{"max_len": N or null, "input_ids": [...]}, ...]}
      ids: word pieces without specials; encodings ([CLS] T [SEP] cut to
      max_len, first 60 texts only): max_len null, 2, 3, 6
  {"kind": "pair", "lower": L, "a": A, "b": B,
   "truncations": [{"max_len": N or null, "input_ids": [...],
                    "token_type_ids": [...]}, ...]}
      [CLS] A [SEP] B [SEP], truncation 'longest_first'
Values come from the Python tokenizer (BertTokenizerLegacy in
transformers 5, BertTokenizer before); where the Rust one (BertTokenizer in
transformers 5, BertTokenizerFast before) differs, its value sits beside
under "fast_" + the key ("fast_ids", "fast_input_ids", ...). The script
prints those differences.

Needs `pip install transformers` (no torch). Deterministic: the same
transformers version writes the same bytes. The test reads no Python.
"""
import json
import os
import random
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))

try:  # transformers 5: BertTokenizer is the Rust-backed one
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as SlowTok
    from transformers import BertTokenizer as FastTok
except ImportError:  # transformers 4
    from transformers import BertTokenizer as SlowTok, BertTokenizerFast as FastTok
import transformers

LONG = "pneumonoultramicroscopicsilicovolcanoconiosis" * 3  # 135 chars
SENTENCES = [
    "",
    " ",
    "\t\n\r ",
    "Hello, world!",
    "A man is playing a guitar on stage.",
    "Two dogs are running through a field.",
    "The woman isn't sleeping; she's reading a book.",
    "Children smiling and waving at the camera",
    "An older man sits at a café drinking espresso.",
    "Señor Muñoz ate jalapeños in São Paulo.",
    "ÖSTERREICH and Österreich and österreich",
    "Crème brûlée, naïve façade, coöperate, résumé.",
    "The ﬁnal oﬃce: ligatures ﬁ ﬂ ﬀ æ Æ œ Œ ß.",
    "İstanbul ıs a cıty; DİYARBAKIR.",
    "ΟΔΟΣ and Οδός and ΣΙΣΥΦΟΣ.",
    "Кошка сидит на окне.",
    "我爱北京天安门。",
    "他说：“你好！”然后走了。",
    "日本語のテキストとカタカナ、ひらがな。",
    "한국어 텍스트도 있습니다.",
    "中文mixed with English文字 and 数字123.",
    "CJK compatibility: 豈 更 車 and extension B: 𠀀𠀁.",
    "Punctuation: !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "Unicode punctuation: ¡¿ «quotes» „low“ ‘single’ — dash – and … ellipsis ‰ § ¶ †",
    "Symbols that are not punctuation: $ + < = > ^ ` | ~ © ® ™ ° ± × ÷ € £ ¥",
    "email@example.com and https://example.org/path?q=1&r=2#frag",
    "Numbers: 3.14159, 1,000,000 and 42nd 7th 1990s.",
    "Tabs\tand\nnewlines\r\nand  double  spaces",
    "Control\x01chars\x07 and\x1b escape \x7f delete \x85 next line",
    "Format chars: zero\u200bwidth, soft\u00adhyphen, joiner\u200djoiner, BOM\ufeffhere.",
    "Replacement \ufffd char and private \ue000 use.",
    "Line\u2028separator and paragraph\u2029separator.",
    "No-break\u00a0space, em\u2003space and ideographic\u3000space.",
    "Emoji: 😀 👍🏽 ❤️ 🇫🇷 👨‍👩‍👧 are here.",
    "Combining: e\u0301 a\u0308 n\u0303 and lone \u0301 mark.",
    "Decomposed Cafe\u0301 vs composed Café.",
    "A long word: " + LONG + " and then more.",
    "Exactly one hundred: " + "a" * 100 + " then " + "b" * 101 + ".",
    LONG,
    "UPPER CASE SENTENCE WITH SHOUTING!!!",
    "MiXeD CaSe WoRdS LiKe iPhone and eBay.",
    "Unknown words: xyzzy qwfp zxcvbnmasdf glorbification.",
    "Special tokens in text: [CLS] [SEP] [MASK] [PAD] [UNK] and [cls] [mask].",
    "Glued specials: hello[SEP]world and [MASK]ed.",
    "Apostrophes: don't, won't, rock'n'roll, O'Neil's.",
    "Hyphens: well-known, state-of-the-art, e-mail.",
    "Math: x² + y³ = z½, ∑ ∫ √ ∞ ≠ ≤.",
    "Arabic: مرحبا بالعالم. Hebrew: שלום עולם.",
    "Hindi: नमस्ते दुनिया। Thai: สวัสดีชาวโลก",
    "Vietnamese: Tiếng Việt có dấu.",
    "Full-width: ＡＢＣ ａｂｃ １２３ ！？",
    "Roman numerals Ⅻ and circled ⓐ ⓑ and superscript ᵃ.",
    "Kelvin K and Angstrom Å and Ohm Ω signs.",
    "Dotted: i̇ and I and ı.",
    "Greek final: ΛΟΓΟΣ. ΛΟΓΟΣ's ΟΔΟΣ-ΟΔΟΣ",
    "Glued symbols: a+b=c, $5, x<y>z, 2^10, `code`, a|b, ~home, 50%off, café$.",
    "Partial matches: technique, aqua, Iraq, smile😀, 3ꙮ, go​al.",
]

WORDS = ("a an the man woman men women child children dog dogs cat cats is are was were "
         "playing plays played play running runs run walking walks sitting sits sit "
         "eating eats drinking drinks reading reads sleeping sleeps smiling waving "
         "on in at through with near under over beside behind of and or but not "
         "guitar field book camera café street park beach table chair car bike "
         "red blue green small large old young happy sad tall short "
         "two three four some many few people person group crowd "
         "outside inside together alone quickly slowly").split()
ACCENTED = "café naïve résumé jalapeño São Muñoz Österreich façade crème brûlée".split()
CJK = list("我爱北京天安门你好中文字数")
PUNCT = list(".,!?;:'\"()-[]{}…—«»¿¡")
EMOJI = ["😀", "👍", "🎸", "🐕"]


def generated(rng, n):
    """n sentences of random words, case, punctuation, accents, CJK."""
    out = []
    for _ in range(n):
        k = rng.randint(1, 18)
        toks = []
        for _ in range(k):
            r = rng.random()
            if r < 0.62:
                w = rng.choice(WORDS)
            elif r < 0.72:
                w = rng.choice(ACCENTED)
            elif r < 0.78:
                w = "".join(rng.choice(CJK) for _ in range(rng.randint(1, 3)))
            elif r < 0.84:
                w = rng.choice(WORDS) + rng.choice(["ing", "ed", "s", "ly", "ness", "er"])
            elif r < 0.88:
                w = rng.choice(EMOJI)
            elif r < 0.92:
                w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 12)))
            else:
                w = str(rng.randint(0, 99999))
            c = rng.random()
            if c < 0.1:
                w = w.upper()
            elif c < 0.3:
                w = w.capitalize()
            if rng.random() < 0.2:
                w += rng.choice(PUNCT)
            toks.append(w)
        sep = rng.choice([" ", " ", " ", "  ", "\t", "\n"])
        out.append(sep.join(toks))
    return out


def basic_words(texts, lower):
    """The words the Python BasicTokenizer makes of texts."""
    from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer
    bt = BasicTokenizer(do_lower_case=lower)
    words = []
    for t in texts:
        words.extend(bt.tokenize(t))
    return words


def make_vocab(texts):
    """BERT's layout: [PAD], 99 unused, [UNK] [CLS] [SEP] [MASK], then
    characters and ## characters (a few left out so that some words have
    no match), whole words (some left out so that they split into pieces)
    and ## pieces, in first-seen order."""
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    seen = set(vocab)

    def add(t):
        if t and t not in seen and not any(unicodedata.category(c).startswith("Z") or c.isspace() for c in t):
            seen.add(t)
            vocab.append(t)

    words = basic_words(texts, True) + basic_words(texts, False)
    # Characters left out: words holding one become [UNK].
    missing = set("qΩ😀ꙮ") | {"\u200b"}
    chars = sorted({c for w in words for c in w} - missing)
    for c in chars:
        add(c)
    for c in chars:
        if unicodedata.category(c)[0] not in "PS":
            add("##" + c)
    counts = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    for i, w in enumerate(sorted(counts, key=lambda w: (-counts[w], w))):
        if len(w) < 2 or len(w) > 30 or set(w) & missing:
            continue
        if i % 3 == 0 and len(w) >= 5:
            # Left out as a word: its halves instead, the second as ## piece.
            h = len(w) // 2
            add(w[:h])
            add("##" + w[h:])
        else:
            add(w)
    for s in ["ing", "ed", "s", "ly", "ness", "er", "##ing", "##ed", "##s", "##ly", "##ness", "##er",
              "un", "##un", "##aff", "##able", "##ation", "##ification"]:
        add(s)
    return vocab


def main():
    rng = random.Random(16)
    singles = SENTENCES + generated(rng, 150)
    vocab = make_vocab(singles)
    vocab_path = os.path.join(HERE, "vocab.txt")
    with open(vocab_path, "w", encoding="utf-8", newline="\n") as f:
        for t in vocab:
            f.write(t + "\n")
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                "cls_token": "[CLS]", "mask_token": "[MASK]"}
    with open(os.path.join(HERE, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer",
                   "tokenize_chinese_chars": True, "strip_accents": None,
                   "model_max_length": 512, **specials}, f, indent=2, sort_keys=True)
        f.write("\n")

    prng = random.Random(1616)
    pairs = []
    for _ in range(40):
        a, b = prng.choice(singles), prng.choice(singles)
        pairs.append((a, b))
    pairs += [("", ""), ("", "short one"), ("a b c d e f g h i j", "a b c d e f g h i j"),
              ("one two three", "four five six seven eight nine ten eleven twelve"),
              ("four five six seven eight nine ten eleven twelve", "one two three"),
              ("我爱北京天安门", "Señor Muñoz, résumé!")]
    max_lens = [None, 3, 4, 5, 8, 9, 16, 17]

    lines = []
    disagree = []

    def both(rec, key, slow_val, fast_val, what):
        """The Python tokenizer's value under key, the Rust one's under
        fast_key only where they differ."""
        rec[key] = slow_val
        if fast_val != slow_val:
            rec["fast_" + key] = fast_val
            disagree.append(what)

    for lower in (True, False):
        slow = SlowTok(vocab_file=vocab_path, do_lower_case=lower)
        if transformers.__version__.startswith("4."):
            fast = FastTok(vocab_file=vocab_path, do_lower_case=lower)
        else:
            fast = FastTok(vocab=_vocab_dict(vocab_path), do_lower_case=lower)
        for i, t in enumerate(singles):
            rec = {"kind": "single", "lower": lower, "text": t}
            both(rec, "ids", slow(t, add_special_tokens=False)["input_ids"],
                 fast(t, add_special_tokens=False)["input_ids"], ("single", lower, t))
            if i < 60:
                rec["encodings"] = []
                for m in (None, 2, 3, 6):
                    kw = {} if m is None else {"max_length": m, "truncation": "longest_first"}
                    e = {"max_len": m}
                    both(e, "input_ids", slow(t, **kw)["input_ids"], fast(t, **kw)["input_ids"],
                         ("encode", lower, t, m))
                    rec["encodings"].append(e)
            lines.append(rec)
        for a, b in pairs:
            rec = {"kind": "pair", "lower": lower, "a": a, "b": b, "truncations": []}
            for m in max_lens:
                kw = {} if m is None else {"max_length": m, "truncation": "longest_first"}
                s = slow(a, b, return_token_type_ids=True, **kw)
                fo = fast(a, b, return_token_type_ids=True, **kw)
                e = {"max_len": m}
                what = ("pair", lower, a, b, m)
                both(e, "input_ids", s["input_ids"], fo["input_ids"], what)
                both(e, "token_type_ids", s["token_type_ids"], fo["token_type_ids"], what)
                rec["truncations"].append(e)
            lines.append(rec)
    with open(os.path.join(HERE, "tokenizer_refs.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for rec in lines:
            f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"transformers {transformers.__version__}: {len(vocab)} tokens, {len(lines)} lines, "
          f"{len(disagree)} results where the Python and Rust tokenizers disagree")
    by_kind = {}
    for d in disagree:
        by_kind[d[0]] = by_kind.get(d[0], 0) + 1
    print("  by kind:", by_kind)
    for d in disagree:
        if d[0] == "single":
            print("  single text:", repr(d[2])[:120], "lower" if d[1] else "cased")


def _vocab_dict(path):
    with open(path, encoding="utf-8") as f:
        return {t.rstrip("\n"): i for i, t in enumerate(f.readlines())}


if __name__ == "__main__":
    main()

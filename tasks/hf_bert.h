/* hf_bert.h — BERT checkpoints in the Hugging Face layout, in and out:
 * `bertc import DIR -o OUT` and `bertc export CHECKPOINT -o DIR`.
 *
 * A Hugging Face BERT folder holds config.json (model_type "bert"),
 * model.safetensors (BertModel's tensors, with or without the "bert."
 * prefix of the task models), vocab.txt and tokenizer_config.json. The
 * import compiles models/hf_bert.yaml with the config's sizes and writes a
 * bertc checkpoint that carries that model, the config's hparams, the
 * WordPiece vocabulary and tokenizer settings (metadata below) and every
 * tensor under bertc's names (dense weights transposed to [in, out]). The
 * export writes the folder back; import then export gives the same tensors
 * bit for bit.
 *
 * Not here: tokenizing (wordpiece.h), fine-tuning (train.c: --init of an
 * imported checkpoint), pickled pytorch_model.bin files (refused). */
#ifndef BC_HF_BERT_H
#define BC_HF_BERT_H

#include "../runtime/checkpoint.h"
#include "vocab.h"

/* Checkpoint metadata an import writes (besides bertc's own). */
#define HF_META_TOKENIZER "tokenizer"       /* JSON: {"type": "wordpiece", "do_lower_case": true, tokens} */
#define HF_META_VOCAB "wordpiece_vocab"     /* vocab.txt's text */
#define HF_META_CONFIG "hf_config"          /* config.json's text */

/* The model file imports use: models/hf_bert.yaml beside the binary. */
#define HF_MODEL_FILE "hf_bert.yaml"

/* The sizes of a Hugging Face BERT config.json. */
typedef struct {
  int64_t vocab, hidden, ffn, heads, layers, positions, type_vocab;
  double eps, dropout;
} HfConfig;

/* Parses and checks config.json's text[0, n) (errors at `file`:line:col,
 * naming the key at fault). */
bool hf_config_read(const char *file, const char *text, size_t n, HfConfig *c, Diag *d);

/* Reads the Hugging Face folder `dir` and writes OUT/checkpoint.safetensors
 * (graph "encode" of `model`, NULL: models/hf_bert.yaml) and OUT/model.yaml
 * with its library files (the model as compiled, hparams filled in). Every
 * refusal is an error naming the file and, where one is at fault, the key:
 * another model_type, a position_embedding_type other than absolute, an
 * activation other than gelu, a missing or misshapen tensor, a pickled
 * checkpoint. Prints what it did to stdout. */
bool hf_import(const char *dir, const char *out, const char *model, Diag *d);

/* Whether checkpoint metadata hold a WordPiece tokenizer: an import, or a
 * run fine-tuned from one. */
bool hf_meta_has_tokenizer(const CheckpointMeta *m);
/* The WordPiece vocabulary of such metadata into the empty `v` (errors
 * naming `name`). */
bool hf_meta_vocab(const CheckpointMeta *m, const char *name, Vocab *v, Diag *d);
/* Records v's vocabulary and tokenizer (v->wordpiece set) in m, as the
 * import does. */
void hf_meta_set_vocab(CheckpointMeta *m, const Vocab *v);

/* Writes the Hugging Face folder `out` (config.json, model.safetensors,
 * vocab.txt, tokenizer_config.json) of a checkpoint made by hf_import or
 * fine-tuned from one: BertModel, or BertForSequenceClassification when the
 * checkpoint holds the `nli` graph's classifier. */
bool hf_export(const char *ckpt, const char *out, Diag *d);

#endif

/* hf_bert.c — Hugging Face BERT folders in and out (hf_bert.h).
 *
 * The one table below maps Hugging Face's tensor names onto the parameter
 * names models/hf_bert.yaml gives (and back); dense weights are stored
 * [out, in] there and [in, out] here, so they are transposed both ways,
 * which is exact. Sizes come from config.json into hparams, so a tensor
 * whose shape disagrees with the config is found by the graph's own shape.
 *
 * Not here: the tokenizer (wordpiece.c), training. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../graph/fileio.h"
#include "../graph/json.h"
#include "../runtime/checkpoint.h"
#include "hf_bert.h"
#include "train.h"
#include "train_util.h"
#include "wordpiece.h"

/* ---- the names ---------------------------------------------------------------- */

typedef enum { MAP_COPY, MAP_TRANSPOSE } MapKind;
typedef struct {
  const char *hf, *bc; /* "%d": the layer index */
  MapKind kind;
} NameMap;

static const NameMap model_names[] = {
    {"embeddings.word_embeddings.weight", "encoder.word_embeddings.table", MAP_COPY},
    {"embeddings.position_embeddings.weight", "encoder.position_embeddings", MAP_COPY},
    {"embeddings.token_type_embeddings.weight", "encoder.token_type_embeddings.table", MAP_COPY},
    {"embeddings.LayerNorm.weight", "encoder.embeddings_ln.gamma", MAP_COPY},
    {"embeddings.LayerNorm.bias", "encoder.embeddings_ln.beta", MAP_COPY},
    {"pooler.dense.weight", "encoder.pooler.W", MAP_TRANSPOSE},
    {"pooler.dense.bias", "encoder.pooler.b", MAP_COPY},
};

static const NameMap layer_names[] = {
    {"encoder.layer.%d.attention.self.query.weight", "encoder.layer.%d.attention.W_q.W", MAP_TRANSPOSE},
    {"encoder.layer.%d.attention.self.query.bias", "encoder.layer.%d.attention.W_q.b", MAP_COPY},
    {"encoder.layer.%d.attention.self.key.weight", "encoder.layer.%d.attention.W_k.W", MAP_TRANSPOSE},
    {"encoder.layer.%d.attention.self.key.bias", "encoder.layer.%d.attention.W_k.b", MAP_COPY},
    {"encoder.layer.%d.attention.self.value.weight", "encoder.layer.%d.attention.W_v.W", MAP_TRANSPOSE},
    {"encoder.layer.%d.attention.self.value.bias", "encoder.layer.%d.attention.W_v.b", MAP_COPY},
    {"encoder.layer.%d.attention.output.dense.weight", "encoder.layer.%d.attention.W_o.W", MAP_TRANSPOSE},
    {"encoder.layer.%d.attention.output.dense.bias", "encoder.layer.%d.attention.W_o.b", MAP_COPY},
    {"encoder.layer.%d.attention.output.LayerNorm.weight", "encoder.layer.%d.addnorm1.ln.gamma", MAP_COPY},
    {"encoder.layer.%d.attention.output.LayerNorm.bias", "encoder.layer.%d.addnorm1.ln.beta", MAP_COPY},
    {"encoder.layer.%d.intermediate.dense.weight", "encoder.layer.%d.intermediate.W", MAP_TRANSPOSE},
    {"encoder.layer.%d.intermediate.dense.bias", "encoder.layer.%d.intermediate.b", MAP_COPY},
    {"encoder.layer.%d.output.dense.weight", "encoder.layer.%d.output.W", MAP_TRANSPOSE},
    {"encoder.layer.%d.output.dense.bias", "encoder.layer.%d.output.b", MAP_COPY},
    {"encoder.layer.%d.output.LayerNorm.weight", "encoder.layer.%d.addnorm2.ln.gamma", MAP_COPY},
    {"encoder.layer.%d.output.LayerNorm.bias", "encoder.layer.%d.addnorm2.ln.beta", MAP_COPY},
};

/* BertForSequenceClassification's head (the `nli` graph's classifier). */
static const NameMap classifier_names[] = {
    {"classifier.weight", "classifier.W", MAP_TRANSPOSE},
    {"classifier.bias", "classifier.b", MAP_COPY},
};

typedef struct {
  char *hf, *bc; /* owned */
  MapKind kind;
} NamePair;

/* Every name pair of a model of `layers` layers (and the classifier). */
static NamePair *name_pairs(int layers, bool classifier, int *n) {
  int cap = (int)(sizeof model_names / sizeof *model_names) +
            layers * (int)(sizeof layer_names / sizeof *layer_names) + 2;
  NamePair *p = bc_malloc((size_t)cap * sizeof *p);
  int k = 0;
  for (size_t i = 0; i < sizeof model_names / sizeof *model_names; i++)
    p[k++] = (NamePair){bc_strdup(model_names[i].hf), bc_strdup(model_names[i].bc), model_names[i].kind};
  for (int l = 0; l < layers; l++)
    for (size_t i = 0; i < sizeof layer_names / sizeof *layer_names; i++)
      p[k++] = (NamePair){bc_asprintf(layer_names[i].hf, l), bc_asprintf(layer_names[i].bc, l), layer_names[i].kind};
  if (classifier)
    for (size_t i = 0; i < 2; i++)
      p[k++] = (NamePair){bc_strdup(classifier_names[i].hf), bc_strdup(classifier_names[i].bc),
                          classifier_names[i].kind};
  *n = k;
  return p;
}

static void name_pairs_free(NamePair *p, int n) {
  for (int i = 0; i < n; i++) free(p[i].hf), free(p[i].bc);
  free(p);
}

/* [rows, cols] -> [cols, rows] */
static void transpose(const float *src, float *dst, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
}

/* ---- config.json ------------------------------------------------------------- */


/* file:line:col of byte `pos` of `text`. */
static SrcLoc loc_at(const char *file, const char *text, size_t pos) {
  int line = 1, col = 1;
  for (size_t i = 0; i < pos && text[i]; i++) {
    if (text[i] == '\n') line++, col = 1;
    else col++;
  }
  return (SrcLoc){file, line, col};
}

/* The position of member `key` of object `o` (its key), or of `o`. */
static size_t key_pos(const JsonValue *o, const char *key) {
  for (int i = 0; i < o->n; i++)
    if (strcmp(o->keys[i], key) == 0) return o->key_pos[i];
  return o->pos;
}

typedef struct {
  const char *file, *text;
  const JsonValue *root;
  Diag *d;
  bool ok;
} ConfigReader;

static void config_error(ConfigReader *r, const char *key, const char *fmt, const char *arg) {
  diag_error(r->d, loc_at(r->file, r->text, key_pos(r->root, key)), fmt, key, arg);
  r->ok = false;
}

static int64_t config_int(ConfigReader *r, const char *key, int64_t dflt) {
  const JsonValue *v = json_get(r->root, key);
  if (!v) {
    if (dflt < 0) config_error(r, key, "\"%s\" is missing%s", "");
    return dflt;
  }
  if (v->kind != JSON_NUMBER || !v->is_uint || v->u == 0 || v->u > INT32_MAX) {
    config_error(r, key, "\"%s\" must be a positive integer%s", "");
    return 1;
  }
  return (int64_t)v->u;
}

static double config_number(ConfigReader *r, const char *key, double dflt) {
  const JsonValue *v = json_get(r->root, key);
  if (!v) return dflt;
  if (v->kind != JSON_NUMBER || !isfinite(v->num) || v->num < 0) {
    config_error(r, key, "\"%s\" must be a non-negative number%s", "");
    return dflt;
  }
  return v->num;
}

/* The string member `key`, or `dflt` when absent (an error when not a string). */
static const char *config_string(ConfigReader *r, const char *key, const char *dflt) {
  const JsonValue *v = json_get(r->root, key);
  if (!v || v->kind == JSON_NULL) return dflt;
  if (v->kind != JSON_STRING) {
    config_error(r, key, "\"%s\" must be a string%s", "");
    return dflt;
  }
  return v->str;
}

bool hf_config_read(const char *file, const char *text, size_t n, HfConfig *c, Diag *d) {
  Arena arena;
  arena_init(&arena);
  JsonValue root;
  JsonError err;
  bool ok = false;
  if (!json_parse(text, n, NULL, &arena, &root, &err)) {
    diag_error(d, loc_at(file, text, err.pos), "not valid JSON: %s", err.msg);
    goto done;
  }
  if (root.kind != JSON_OBJECT) {
    diag_error(d, (SrcLoc){file, 1, 1}, "expected a JSON object (a Hugging Face config)");
    goto done;
  }
  ConfigReader r = {file, text, &root, d, true};
  const char *type = config_string(&r, "model_type", NULL);
  if (!type) config_error(&r, "model_type", "\"%s\" is missing: bertc imports BERT models (model_type \"bert\")%s", "");
  else if (strcmp(type, "bert") != 0)
    config_error(&r, "model_type", "\"%s\" is \"%s\": bertc imports BERT models (model_type \"bert\") only", type);
  const char *pos = config_string(&r, "position_embedding_type", "absolute");
  if (strcmp(pos, "absolute") != 0)
    config_error(&r, "position_embedding_type",
                 "\"%s\" is \"%s\": bertc supports absolute (learned) position embeddings only", pos);
  const char *act = config_string(&r, "hidden_act", "gelu");
  if (strcmp(act, "gelu") != 0)
    config_error(&r, "hidden_act", "\"%s\" is \"%s\": bertc imports the exact (erf) gelu only", act);
  c->vocab = config_int(&r, "vocab_size", -1);
  c->hidden = config_int(&r, "hidden_size", -1);
  c->ffn = config_int(&r, "intermediate_size", -1);
  c->heads = config_int(&r, "num_attention_heads", -1);
  c->layers = config_int(&r, "num_hidden_layers", -1);
  c->positions = config_int(&r, "max_position_embeddings", -1);
  c->type_vocab = config_int(&r, "type_vocab_size", 2);
  c->eps = config_number(&r, "layer_norm_eps", 1e-12);
  c->dropout = config_number(&r, "hidden_dropout_prob", 0.1);
  double attn_dropout = config_number(&r, "attention_probs_dropout_prob", 0.1);
  if (r.ok && attn_dropout != c->dropout) {
    char buf[96];
    snprintf(buf, sizeof buf, "%g, hidden_dropout_prob %g", attn_dropout, c->dropout);
    config_error(&r, "attention_probs_dropout_prob",
                 "\"%s\" is %s: bertc's BERT has one dropout rate for both", buf);
  }
  if (r.ok && c->dropout >= 1) config_error(&r, "hidden_dropout_prob", "\"%s\" must be below 1%s", "");
  if (r.ok && c->hidden % c->heads != 0)
    config_error(&r, "num_attention_heads", "\"%s\" must divide hidden_size%s", "");
  ok = r.ok;
done:
  arena_free(&arena);
  return ok;
}

/* ---- import ------------------------------------------------------------------ */

/* The special tokens' keys in tokenizer_config.json and the metadata, and
 * BERT's defaults. */
static const char *const special_names[5][2] = {{"unk_token", "[UNK]"}, {"cls_token", "[CLS]"},
                                                {"sep_token", "[SEP]"}, {"pad_token", "[PAD]"},
                                                {"mask_token", "[MASK]"}};

/* The tokenizer metadata: {"type": "wordpiece", "do_lower_case": ..,
 * "unk_token": .., ...} (heap). */
static char *tokenizer_json(bool lower, const char *const specials[5]) {
  StrBuf b = {0};
  strbuf_puts(&b, "{");
  json_write_key(&b, "type");
  json_write_string(&b, "wordpiece");
  strbuf_puts(&b, ",");
  json_write_key(&b, "do_lower_case");
  strbuf_puts(&b, lower ? "true" : "false");
  for (int i = 0; i < 5; i++) {
    if (!specials[i]) continue;
    strbuf_puts(&b, ",");
    json_write_key(&b, special_names[i][0]);
    json_write_string(&b, specials[i]);
  }
  strbuf_puts(&b, "}");
  return strbuf_take(&b);
}

bool hf_meta_has_tokenizer(const CheckpointMeta *m) {
  return checkpoint_meta_get(m, HF_META_TOKENIZER) && checkpoint_meta_get(m, HF_META_VOCAB);
}

bool hf_meta_vocab(const CheckpointMeta *m, const char *name, Vocab *v, Diag *d) {
  const char *tok = checkpoint_meta_get(m, HF_META_TOKENIZER), *text = checkpoint_meta_get(m, HF_META_VOCAB);
  BC_ASSERT(tok && text);
  Arena a;
  arena_init(&a);
  JsonValue root;
  JsonError err;
  bool ok = json_parse(tok, strlen(tok), NULL, &a, &root, &err) && root.kind == JSON_OBJECT;
  const JsonValue *lc = ok ? json_get(&root, "do_lower_case") : NULL;
  if (!ok || !lc || lc->kind != JSON_BOOL) {
    diag_error(d, (SrcLoc){bc_intern(name), 0, 0}, "corrupt tokenizer metadata: %s", tok);
    ok = false;
  } else {
    ok = vocab_parse_wordpiece(v, name, text, strlen(text), lc->u != 0, d);
  }
  arena_free(&a);
  return ok;
}

bool train_init_is_hf(const char *checkpoint) {
  Diag d;
  diag_init(&d);
  CheckpointMeta m;
  bool hf = checkpoint_read_meta(checkpoint, &m, &d) && hf_meta_has_tokenizer(&m);
  checkpoint_meta_free(&m);
  diag_free(&d); /* an unreadable file is reported where the run reads it */
  return hf;
}

void hf_meta_set_vocab(CheckpointMeta *m, const Vocab *v) {
  BC_ASSERT(v->wordpiece);
  const char *specials[5] = {vocab_token(v, v->unk), vocab_token(v, v->cls), vocab_token(v, v->sep),
                             vocab_token(v, v->pad), v->mask >= 0 ? vocab_token(v, v->mask) : NULL};
  char *tok = tokenizer_json(v->wordpiece->lower_case, specials);
  char *text = vocab_text(v, NULL);
  checkpoint_meta_set(m, HF_META_TOKENIZER, tok);
  checkpoint_meta_set(m, HF_META_VOCAB, text);
  free(tok);
  free(text);
}

/* The tokenizer settings of tokenizer_config.json (absent: BERT's
 * defaults) as the checkpoint's tokenizer metadata. */
static char *tokenizer_meta(const char *path, Diag *d) {
  bool lower = true;
  const char *const(*names)[2] = special_names;
  const char *vals[5];
  for (int i = 0; i < 5; i++) vals[i] = names[i][1];
  Arena arena;
  arena_init(&arena);
  char *text = NULL;
  size_t n = 0;
  char *out = NULL;
  if (train_file_exists(path)) {
    const char *file = bc_intern(path); /* errors outlive the caller's path */
    text = bc_read_file(path, &n, d);
    if (!text) goto done;
    JsonValue root;
    JsonError err = {{0}, 0};
    if (!json_parse(text, n, NULL, &arena, &root, &err) || root.kind != JSON_OBJECT) {
      diag_error(d, loc_at(file, text, err.pos), "not a JSON object%s%s", err.msg[0] ? ": " : "", err.msg);
      goto done;
    }
    ConfigReader r = {file, text, &root, d, true};
    const JsonValue *lc = json_get(&root, "do_lower_case");
    if (lc && lc->kind != JSON_BOOL) config_error(&r, "do_lower_case", "\"%s\" must be true or false%s", "");
    else if (lc) lower = lc->u != 0;
    for (int i = 0; i < 5; i++) {
      /* a special token is a string, or {"content": "..."} in newer files */
      const JsonValue *v = json_get(&root, names[i][0]);
      if (v && v->kind == JSON_OBJECT) v = json_get(v, "content");
      if (v && v->kind == JSON_STRING) vals[i] = v->str;
      else if (v && v->kind != JSON_NULL) config_error(&r, names[i][0], "\"%s\" must be a string%s", "");
    }
    if (!r.ok) goto done;
  }
  out = tokenizer_json(lower, vals);
done:
  free(text);
  arena_free(&arena);
  return out;
}

static const CheckpointTensor *find_hf_tensor(const CheckpointInfo *info, const char *name) {
  for (int i = 0; i < info->tensors.n; i++) {
    const char *t = info->tensors.data[i].name;
    if (strncmp(t, "bert.", 5) == 0) t += 5;
    if (strcmp(t, name) == 0) return &info->tensors.data[i];
  }
  return NULL;
}

static float half_to_float(uint16_t h, bool bf16) {
  if (bf16) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 1024), e - 25);
  return s ? -v : v;
}

/* The tensor's data as f32 [numel] (heap), from F32, F16 or BF16. */
static float *read_as_f32(const char *path, const CheckpointInfo *info, const CheckpointTensor *t, Diag *d) {
  int64_t numel = shape_numel(&t->shape);
  bool half = t->other_dtype && (strcmp(t->other_dtype, "F16") == 0 || strcmp(t->other_dtype, "BF16") == 0);
  if ((t->other_dtype && !half) || (!t->other_dtype && t->dtype != DTYPE_F32)) {
    diag_error(d, (SrcLoc){path, 0, 0}, "tensor \"%s\" is %s: bertc imports F32, F16 and BF16 weights", t->name,
               t->other_dtype ? t->other_dtype : "I32");
    return NULL;
  }
  float *out = bc_malloc((size_t)(numel ? numel : 1) * sizeof(float));
  if (!half) {
    if (!checkpoint_read_tensor(path, info, t, out, d)) return free(out), NULL;
    return out;
  }
  unsigned char *raw = bc_malloc((size_t)(numel ? numel : 1) * 2);
  bool ok = checkpoint_read_tensor(path, info, t, raw, d);
  for (int64_t i = 0; ok && i < numel; i++)
    out[i] = half_to_float((uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8), t->other_dtype[0] == 'B');
  free(raw);
  if (!ok) return free(out), NULL;
  return out;
}

/* Writes every mapped tensor of the HF file into e's parameters. */
static bool import_tensors(const char *path, const CheckpointInfo *info, Exec *e, int layers, Diag *d) {
  const Graph *g = e->graph;
  int n_pairs;
  NamePair *pairs = name_pairs(layers, false, &n_pairs);
  bool ok = true;
  for (int i = 0; i < n_pairs && ok; i++) {
    const CheckpointTensor *t = find_hf_tensor(info, pairs[i].hf);
    ValueId id = graph_find(g, pairs[i].bc);
    BC_ASSERT(id >= 0); /* hf_bert.yaml names every parameter of the table */
    const Shape *want = &g->values.data[id].shape;
    if (!t) {
      diag_error(d, (SrcLoc){path, 0, 0}, "no tensor \"%s\" (the model of config.json needs it)", pairs[i].hf);
      ok = false;
      break;
    }
    Shape hf_shape = *want;
    if (pairs[i].kind == MAP_TRANSPOSE) hf_shape.dim[0] = want->dim[1], hf_shape.dim[1] = want->dim[0];
    if (!shape_eq(&t->shape, &hf_shape)) {
      char a[192], b[192];
      diag_error(d, (SrcLoc){path, 0, 0}, "tensor \"%s\" is %s, but config.json makes it %s", t->name,
                 shape_str(&t->shape, a), shape_str(&hf_shape, b));
      ok = false;
      break;
    }
    float *x = read_as_f32(path, info, t, d);
    if (!x) {
      ok = false;
      break;
    }
    if (pairs[i].kind == MAP_TRANSPOSE) {
      float *y = bc_malloc((size_t)shape_numel(want) * sizeof(float));
      transpose(x, y, hf_shape.dim[0], hf_shape.dim[1]);
      free(x);
      x = y;
    }
    ok = exec_write(e, id, x, DTYPE_F32, d);
    free(x);
  }
  /* what the file holds besides: task heads, position_ids */
  int ignored = 0;
  for (int i = 0; ok && i < info->tensors.n; i++) {
    const char *name = info->tensors.data[i].name;
    const char *bare = strncmp(name, "bert.", 5) == 0 ? name + 5 : name;
    bool mapped = strcmp(bare, "embeddings.position_ids") == 0;
    for (int k = 0; k < n_pairs && !mapped; k++) mapped = strcmp(bare, pairs[k].hf) == 0;
    if (!mapped) printf("%s ignored (%s)\n", ignored++ ? "        " : "import:", name);
  }
  name_pairs_free(pairs, n_pairs);
  return ok;
}

/* The model's files into `out` as `main_name` and paths relative to the
 * main file's folder, with the hparams lines of the main file set to the
 * values of `sets`. */
static bool write_model_files(const Graph *g, const char *out, const TrainSets *sets, Diag *d) {
  if (g->sources.n == 0) return true;
  const char *main_path = g->sources.data[0].path;
  const char *slash = strrchr(main_path, '/');
  size_t dir_len = slash ? (size_t)(slash - main_path + 1) : 0;
  for (int i = 0; i < g->sources.n; i++) {
    const SourceFile *f = &g->sources.data[i];
    const char *rel = strncmp(f->path, main_path, dir_len) == 0 ? f->path + dir_len : strrchr(f->path, '/') + 1;
    char *path = train_join(out, rel);
    char *dir = bc_strdup(path);
    *strrchr(dir, '/') = '\0';
    bool ok = train_make_dir(dir, d);
    free(dir);
    StrBuf b = {0};
    if (i == 0) {
      /* hparams: lines "  name: value  # comment" between "hparams:" and the next top-level key */
      bool in_hparams = false;
      for (const char *line = f->text; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line + 1) : strlen(line);
        if (line[0] != ' ' && line[0] != '#' && line[0] != '\n') in_hparams = strncmp(line, "hparams:", 8) == 0;
        const Setting *hit = NULL;
        /* batch keeps its default: tasks set it per run */
        for (int k = 0; in_hparams && k < sets->n && !hit; k++) {
          if (strcmp(sets->s[k].key, "batch") == 0) continue;
          size_t kl = strlen(sets->s[k].key);
          if (len > kl + 3 && strncmp(line, "  ", 2) == 0 && strncmp(line + 2, sets->s[k].key, kl) == 0 &&
              line[2 + kl] == ':')
            hit = &sets->s[k];
        }
        if (hit) {
          const char *hash = memchr(line, '#', len);
          strbuf_printf(&b, "  %s: ", hit->key);
          json_write_double(&b, strtod(hit->value, NULL)); /* the shortest exact form, 1e-12 not 9.99...e-13 */
          if (hash) strbuf_printf(&b, "   %.*s", (int)(line + len - hash), hash);
          else strbuf_puts(&b, "\n");
        } else {
          strbuf_printf(&b, "%.*s", (int)len, line);
        }
        line += len;
      }
    } else {
      strbuf_puts(&b, f->text);
    }
    ok = ok && file_write_atomic(path, b.data ? b.data : "", b.n, d);
    free(b.data);
    free(path);
    if (!ok) return false;
  }
  return true;
}

bool hf_import(const char *dir, const char *out, const char *model, Diag *d) {
  char *config_path = train_join(dir, "config.json"), *st_path = train_join(dir, "model.safetensors");
  char *vocab_path = train_join(dir, "vocab.txt"), *tok_path = train_join(dir, "tokenizer_config.json");
  char *ckpt_path = train_join(out, "checkpoint.safetensors");
  const char *cfg_file = bc_intern(config_path), *st_file = bc_intern(st_path);
  char *config_text = NULL, *vocab_text = NULL, *tokenizer = NULL;
  CheckpointInfo info = {0};
  TrainModel m = {0};
  TrainSets sets;
  train_sets_init(&sets, NULL, 0);
  Graph g;
  bool have_graph = false, ok = false;
  Exec *e = NULL;
  HfConfig c;
  Vocab vocab;
  bool have_vocab = false;

  size_t n;
  if (!train_file_exists(config_path)) {
    diag_error(d, (SrcLoc){bc_intern(dir), 0, 0}, "no config.json: not a Hugging Face model folder");
    goto done;
  }
  if (!(config_text = bc_read_file(config_path, &n, d)) || !hf_config_read(cfg_file, config_text, n, &c, d)) goto done;
  if (!train_file_exists(st_path)) {
    char *bin = train_join(dir, "pytorch_model.bin");
    if (train_file_exists(bin))
      diag_error(d, (SrcLoc){bc_intern(bin), 0, 0},
                 "bertc does not read pickled PyTorch checkpoints: convert it to model.safetensors first "
                 "(in Python: AutoModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True))");
    else diag_error(d, (SrcLoc){st_file, 0, 0}, "no model.safetensors in the folder");
    free(bin);
    goto done;
  }
  if (!(vocab_text = bc_read_file(vocab_path, &n, d))) goto done;
  if (!(tokenizer = tokenizer_meta(tok_path, d))) goto done;
  /* the vocabulary as training will read it: checked, and its hash recorded */
  CheckpointMeta probe;
  checkpoint_meta_init(&probe);
  checkpoint_meta_set(&probe, HF_META_TOKENIZER, tokenizer);
  checkpoint_meta_set(&probe, HF_META_VOCAB, vocab_text);
  vocab_init(&vocab);
  have_vocab = hf_meta_vocab(&probe, bc_intern(vocab_path), &vocab, d);
  checkpoint_meta_free(&probe);
  if (!have_vocab) goto done;
  if (vocab.n != c.vocab) {
    diag_error(d, (SrcLoc){bc_intern(vocab_path), 0, 0}, "%d tokens, but config.json's vocab_size is %lld",
               vocab.n, (long long)c.vocab);
    goto done;
  }
  if (!checkpoint_read_info(st_path, &info, d)) goto done;

  const struct {
    const char *key;
    double v;
  } hp[] = {{"vocab", (double)c.vocab},     {"hidden", (double)c.hidden}, {"ffn", (double)c.ffn},
            {"heads", (double)c.heads},     {"layers", (double)c.layers}, {"positions", (double)c.positions},
            {"type_vocab", (double)c.type_vocab}, {"ln_eps", c.eps},     {"dropout", c.dropout},
            {"batch", 1}};
  for (size_t i = 0; i < sizeof hp / sizeof *hp; i++) train_sets_add(&sets, hp[i].key, hp[i].v);
  if (model) train_model_file(&m, model);
  else {
    m.owned_path = train_model_beside_binary(HF_MODEL_FILE);
    m.path = m.owned_path;
  }
  graph_init(&g, "encode");
  have_graph = true;
  if (!train_compile(&g, &m, "encode", &sets, NULL, NULL, d)) goto done;
  if (!(e = exec_create_spec("interp", &g, d))) goto done;
  if (!import_tensors(st_file, &info, e, (int)c.layers, d)) goto done;
  if (!train_make_dir(out, d)) goto done;

  CheckpointMeta meta;
  checkpoint_meta_init(&meta);
  meta.model_path = bc_strdup(m.path);
  char hash[32];
  train_vocab_hash(&vocab, hash);
  meta.vocab_hash = bc_strdup(hash);
  hf_meta_set_vocab(&meta, &vocab);
  checkpoint_meta_set(&meta, HF_META_CONFIG, config_text);
  ok = checkpoint_save(ckpt_path, e, &meta, d);
  checkpoint_meta_free(&meta);
  if (!ok || !(ok = write_model_files(&g, out, &sets, d))) goto done;
  int64_t n_params = 0;
  for (int i = 0; i < g.params.n; i++) n_params += shape_numel(&g.values.data[g.params.data[i]].shape);
  printf("imported %s: BERT, %lld layers, hidden %lld, %lld heads, vocabulary %lld, %lld parameters\n", dir,
         (long long)c.layers, (long long)c.hidden, (long long)c.heads, (long long)c.vocab, (long long)n_params);
  printf("checkpoint %s (model %s/%s)\n", ckpt_path, out, strrchr(m.path, '/') ? strrchr(m.path, '/') + 1 : m.path);
done:
  if (e) exec_destroy(e);
  if (have_vocab) vocab_free(&vocab);
  if (have_graph) graph_free(&g);
  train_model_free(&m);
  train_sets_free(&sets);
  checkpoint_info_free(&info);
  free(config_text), free(vocab_text), free(tokenizer);
  free(config_path), free(st_path), free(vocab_path), free(tok_path), free(ckpt_path);
  return ok;
}

/* ---- export ------------------------------------------------------------------ */

/* The number `key` of a parsed JSON object, or NAN. */
static double json_number(const JsonValue *o, const char *key) {
  const JsonValue *v = json_get(o, key);
  return v && v->kind == JSON_NUMBER ? v->num : NAN;
}

static void put_num(StrBuf *b, const char *key, double v, bool *first) {
  strbuf_puts(b, *first ? "\n  " : ",\n  ");
  *first = false;
  json_write_key(b, key);
  strbuf_puts(b, " ");
  json_write_double(b, v);
}

static void put_str(StrBuf *b, const char *key, const char *v, bool *first) {
  strbuf_puts(b, *first ? "\n  " : ",\n  ");
  *first = false;
  json_write_key(b, key);
  strbuf_puts(b, " ");
  json_write_string(b, v);
}

/* config.json of the exported model. */
static char *export_config(const JsonValue *hp, bool classifier, int pad_id) {
  StrBuf b = {0};
  bool first = true;
  strbuf_puts(&b, "{");
  put_str(&b, "model_type", "bert", &first);
  strbuf_printf(&b, ",\n  \"architectures\": [\"%s\"]", classifier ? "BertForSequenceClassification" : "BertModel");
  put_num(&b, "vocab_size", json_number(hp, "vocab"), &first);
  put_num(&b, "hidden_size", json_number(hp, "hidden"), &first);
  put_num(&b, "num_hidden_layers", json_number(hp, "layers"), &first);
  put_num(&b, "num_attention_heads", json_number(hp, "heads"), &first);
  put_num(&b, "intermediate_size", json_number(hp, "ffn"), &first);
  put_str(&b, "hidden_act", "gelu", &first);
  put_num(&b, "max_position_embeddings", json_number(hp, "positions"), &first);
  put_num(&b, "type_vocab_size", json_number(hp, "type_vocab"), &first);
  put_num(&b, "layer_norm_eps", json_number(hp, "ln_eps"), &first);
  put_num(&b, "hidden_dropout_prob", json_number(hp, "dropout"), &first);
  put_num(&b, "attention_probs_dropout_prob", json_number(hp, "dropout"), &first);
  put_num(&b, "initializer_range", 0.02, &first);
  put_num(&b, "pad_token_id", pad_id, &first);
  put_str(&b, "position_embedding_type", "absolute", &first);
  if (classifier) {
    /* SNLI's classes as bertrun numbers them (snli.h) */
    strbuf_puts(&b, ",\n  \"id2label\": {\"0\": \"entailment\", \"1\": \"contradiction\", \"2\": \"neutral\"}");
    strbuf_puts(&b, ",\n  \"label2id\": {\"entailment\": 0, \"contradiction\": 1, \"neutral\": 2}");
  }
  strbuf_puts(&b, "\n}\n");
  return strbuf_take(&b);
}

/* tokenizer_config.json from the checkpoint's tokenizer metadata. */
static char *export_tokenizer(const JsonValue *tok, double max_len) {
  StrBuf b = {0};
  bool first = true;
  strbuf_puts(&b, "{");
  put_str(&b, "tokenizer_class", "BertTokenizer", &first);
  const JsonValue *lc = json_get(tok, "do_lower_case");
  strbuf_printf(&b, ",\n  \"do_lower_case\": %s", lc && lc->kind == JSON_BOOL && !lc->u ? "false" : "true");
  static const char *const keys[] = {"unk_token", "cls_token", "sep_token", "pad_token", "mask_token"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
    const JsonValue *v = json_get(tok, keys[i]);
    if (v && v->kind == JSON_STRING) put_str(&b, keys[i], v->str, &first);
  }
  put_num(&b, "model_max_length", max_len, &first);
  strbuf_puts(&b, "\n}\n");
  return strbuf_take(&b);
}

/* The line number (0-based) of `token` in the vocabulary text, or 0. */
static int vocab_line_of(const char *vocab, const char *token) {
  size_t n = strlen(token);
  int line = 0;
  for (const char *p = vocab; *p; line++) {
    const char *end = strchr(p, '\n');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len && p[len - 1] == '\r') len--;
    if (len == n && strncmp(p, token, n) == 0) return line;
    if (!end) break;
    p = end + 1;
  }
  return 0;
}

bool hf_export(const char *ckpt, const char *out, Diag *d) {
  CheckpointInfo info;
  Arena arena;
  arena_init(&arena);
  NamePair *pairs = NULL;
  int n_pairs = 0;
  CheckpointBlob *blobs = NULL;
  char *config = NULL, *tokcfg = NULL;
  char *paths[4] = {0};
  bool ok = false;
  const char *file = bc_intern(ckpt);
  if (!checkpoint_read_info(ckpt, &info, d)) goto done;
  const char *tok_json = checkpoint_meta_get(&info.meta, HF_META_TOKENIZER);
  const char *vocab = checkpoint_meta_get(&info.meta, HF_META_VOCAB);
  JsonValue hp, tok;
  JsonError err;
  if (!tok_json || !vocab || !info.meta.hparams_json) {
    diag_error(d, (SrcLoc){file, 0, 0},
               "not a Hugging Face BERT checkpoint (it carries no WordPiece vocabulary): export takes what "
               "`bertc import` made and the runs fine-tuned from it");
    goto done;
  }
  if (!json_parse(info.meta.hparams_json, strlen(info.meta.hparams_json), NULL, &arena, &hp, &err) ||
      !json_parse(tok_json, strlen(tok_json), NULL, &arena, &tok, &err)) {
    diag_error(d, (SrcLoc){file, 0, 0}, "corrupt checkpoint metadata: %s", err.msg);
    goto done;
  }
  double layers = json_number(&hp, "layers");
  if (!(layers >= 0 && layers <= 1000)) {
    diag_error(d, (SrcLoc){file, 0, 0}, "the checkpoint's hparams have no number of layers");
    goto done;
  }
  bool classifier = false;
  for (int i = 0; i < info.tensors.n; i++) classifier |= strcmp(info.tensors.data[i].name, "classifier.W") == 0;
  pairs = name_pairs((int)layers, classifier, &n_pairs);
  blobs = bc_malloc((size_t)n_pairs * sizeof *blobs);
  memset(blobs, 0, (size_t)n_pairs * sizeof *blobs);
  for (int i = 0; i < n_pairs; i++) {
    const CheckpointTensor *t = NULL;
    for (int k = 0; k < info.tensors.n && !t; k++)
      if (strcmp(info.tensors.data[k].name, pairs[i].bc) == 0) t = &info.tensors.data[k];
    if (!t || t->other_dtype || t->dtype != DTYPE_F32 || (pairs[i].kind == MAP_TRANSPOSE && t->shape.rank != 2)) {
      diag_error(d, (SrcLoc){file, 0, 0}, "%s tensor \"%s\": not a model of models/%s", t ? "unexpected" : "no",
                 pairs[i].bc, HF_MODEL_FILE);
      goto done;
    }
    float *x = bc_malloc((size_t)(shape_numel(&t->shape) ? shape_numel(&t->shape) : 1) * sizeof(float));
    blobs[i].data = x;
    if (!checkpoint_read_tensor(ckpt, &info, t, x, d)) goto done;
    blobs[i].dtype = DTYPE_F32;
    blobs[i].shape = t->shape;
    if (pairs[i].kind == MAP_TRANSPOSE) {
      float *y = bc_malloc((size_t)shape_numel(&t->shape) * sizeof(float));
      transpose(x, y, t->shape.dim[0], t->shape.dim[1]);
      free(x);
      blobs[i].data = y;
      blobs[i].shape.dim[0] = t->shape.dim[1], blobs[i].shape.dim[1] = t->shape.dim[0];
    }
    /* BertForSequenceClassification keeps the encoder under "bert." */
    bool head = strncmp(pairs[i].hf, "classifier.", 11) == 0;
    char *name = classifier && !head ? bc_asprintf("bert.%s", pairs[i].hf) : bc_strdup(pairs[i].hf);
    free(pairs[i].hf);
    pairs[i].hf = name;
    blobs[i].name = name;
  }
  if (!train_make_dir(out, d)) goto done;
  const JsonValue *pad = json_get(&tok, "pad_token");
  config = export_config(&hp, classifier, vocab_line_of(vocab, pad && pad->kind == JSON_STRING ? pad->str : "[PAD]"));
  tokcfg = export_tokenizer(&tok, json_number(&hp, "positions"));
  static const char *const names[] = {"model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json"};
  for (int i = 0; i < 4; i++) paths[i] = train_join(out, names[i]);
  CheckpointKV format = {"format", "pt"};
  if (!checkpoint_write_tensors(paths[0], blobs, n_pairs, &format, 1, d) ||
      !file_write_atomic(paths[1], config, strlen(config), d) ||
      !file_write_atomic(paths[2], vocab, strlen(vocab), d) || !file_write_atomic(paths[3], tokcfg, strlen(tokcfg), d))
    goto done;
  printf("exported %s to %s: %s, %d tensors (config.json, model.safetensors, vocab.txt, tokenizer_config.json)\n",
         ckpt, out, classifier ? "BertForSequenceClassification" : "BertModel", n_pairs);
  ok = true;
done:
  for (int i = 0; blobs && i < n_pairs; i++) free((void *)blobs[i].data);
  free(blobs);
  if (pairs) name_pairs_free(pairs, n_pairs);
  for (int i = 0; i < 4; i++) free(paths[i]);
  free(config), free(tokcfg);
  checkpoint_info_free(&info);
  arena_free(&arena);
  return ok;
}

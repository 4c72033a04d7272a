/* train_model.c — which model a run compiles and with which hparams
 * (train_util.h, "models"): the YAML file given with --model, the default
 * found beside the binary, or the files a checkpoint carries; the
 * checkpoint's hparams under the user's --set; the contract a task asks of
 * a model, checked before any data are read. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../graph/json.h"
#include "../runtime/checkpoint.h"
#include "hf_bert.h"
#include "train_util.h"

/* ---- where the model comes from ---- */

char *train_default_model(void) { return train_model_beside_binary("bert.yaml"); }

char *train_model_beside_binary(const char *file) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    /* the build folder of a checkout (build/bertrun), then an installation
     * (PREFIX/bin/bertrun, models in PREFIX/share/bertc/models) */
    static const char *const rel[] = {"/../models/", "/../share/bertc/models/"};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
      char *p = bc_asprintf("%s%s%s", exe, rel[i], file);
      char *real = realpath(p, NULL);
      free(p);
      if (real && train_file_exists(real)) return real;
      free(real);
    }
  }
  return bc_asprintf("models/%s", file);
}

void train_model_file(TrainModel *m, const char *path) {
  memset(m, 0, sizeof *m);
  m->owned_path = path ? bc_strdup(path) : train_default_model();
  m->path = m->owned_path;
}

void train_model_free(TrainModel *m) {
  free(m->owned_path);
  for (int i = 0; i < m->n_files; i++) {
    free((char *)m->files[i].path);
    free((char *)m->files[i].text);
  }
  free(m->files);
  memset(m, 0, sizeof *m);
}

/* The checkpoint's own files (moved out of meta), else (a checkpoint
 * written before checkpoints carried their model) the file it names. */
static void model_of_meta(TrainModel *m, CheckpointMeta *meta) {
  memset(m, 0, sizeof *m);
  if (meta->model_files.n > 0) {
    m->n_files = meta->model_files.n;
    m->files = meta->model_files.data;
    meta->model_files.data = NULL;
    meta->model_files.n = meta->model_files.cap = 0;
    m->path = m->files[0].path;
  } else {
    m->owned_path = bc_strdup(meta->model_path ? meta->model_path : "models/bert.yaml");
    m->path = m->owned_path;
  }
}

/* ---- checkpoints as starting points ---- */

void train_origin_free(TrainOrigin *s) {
  checkpoint_info_free(&s->info);
  free(s->hparams);
  memset(s, 0, sizeof *s);
}

/* The checkpoint's hparams {"name": number} into s->hparams. */
static bool origin_hparams(TrainOrigin *s, const char *ckpt, Diag *d) {
  const char *json = s->info.meta.hparams_json;
  if (!json) return true;
  Arena arena;
  arena_init(&arena);
  JsonValue root;
  JsonError err;
  bool ok = json_parse(json, strlen(json), NULL, &arena, &root, &err) && root.kind == JSON_OBJECT;
  /* They become settings of the run (train_origin_model), beside the user's
   * and the task's: half of TrainSets' room, so a hostile file cannot fill it. */
  if (ok && root.n > TRAIN_MAX_SETS / 2) {
    diag_error(d, (SrcLoc){bc_intern(ckpt), 0, 0},
               "checkpoint metadata: %d hparams, more than the %d a run can take", root.n,
               TRAIN_MAX_SETS / 2);
    arena_free(&arena);
    return false;
  }
  if (ok) s->hparams = bc_calloc((size_t)root.n + 1, sizeof(HParam));
  for (int i = 0; ok && i < root.n; i++) {
    ok = root.items[i].kind == JSON_NUMBER;
    if (ok) s->hparams[s->n_hparams++] = (HParam){bc_intern(root.keys[i]), root.items[i].num};
  }
  arena_free(&arena);
  if (!ok) diag_error(d, (SrcLoc){bc_intern(ckpt), 0, 0}, "checkpoint metadata: malformed hparams");
  return ok;
}

bool train_origin_read(TrainOrigin *s, const char *ckpt, Diag *d) {
  memset(s, 0, sizeof *s);
  s->path = ckpt;
  if (!checkpoint_read_info(ckpt, &s->info, d)) return false;
  if (s->info.meta.format_version == 0) {
    diag_error(d, (SrcLoc){bc_intern(ckpt), 0, 0}, "not a bertc checkpoint (no bertc metadata)");
    return false;
  }
  return origin_hparams(s, ckpt, d);
}

const HParam *train_origin_hparam(const TrainOrigin *s, const char *name) {
  for (int i = 0; i < s->n_hparams; i++)
    if (strcmp(s->hparams[i].name, name) == 0) return &s->hparams[i];
  return NULL;
}

bool train_origin_vocab(const TrainOrigin *s, Vocab *v, Diag *d) {
  vocab_init(v);
  const char *text = checkpoint_meta_get(&s->info.meta, TRAIN_META_VOCAB);
  bool ok;
  if (hf_meta_has_tokenizer(&s->info.meta)) {
    char *name = bc_asprintf("%s (its WordPiece vocabulary)", s->path);
    ok = hf_meta_vocab(&s->info.meta, name, v, d);
    free(name);
  } else if (text) {
    char *buf = bc_strdup(text);
    char *name = bc_asprintf("%s (its vocabulary)", s->path);
    ok = vocab_parse(v, name, buf, strlen(buf), d);
    free(name);
    free(buf);
  } else {
    ok = train_vocab_beside(v, s->path, d); /* older checkpoints: vocab.txt beside */
  }
  if (!ok) return false;
  char hash[32];
  train_vocab_hash(v, hash);
  if (s->info.meta.vocab_hash && *s->info.meta.vocab_hash && strcmp(hash, s->info.meta.vocab_hash) != 0) {
    diag_error(d, (SrcLoc){bc_intern(s->path), 0, 0},
               "the vocabulary (hash %s) is not the one the checkpoint was trained with (hash %s)", hash,
               s->info.meta.vocab_hash);
    vocab_free(v);
    return false;
  }
  return true;
}

bool train_origin_model(TrainOrigin *s, const char *model_flag, TrainModel *m, TrainSets *sets,
                        const char *const *skip, Diag *d) {
  if (model_flag) train_model_file(m, model_flag);
  else model_of_meta(m, &s->info.meta);
  /* --model: only the hparams that model declares (the others are not its) */
  Graph probe;
  bool have_probe = false;
  if (model_flag) {
    if (!train_expand(&probe, m, NULL, NULL, d)) return false;
    have_probe = true;
  }
  for (int i = 0; i < s->n_hparams; i++) {
    const HParam *h = &s->hparams[i];
    bool skipped = false;
    for (int k = 0; skip && skip[k] && !skipped; k++) skipped = strcmp(skip[k], h->name) == 0;
    if (skipped || (have_probe && isnan(graph_hparam(&probe, h->name, NAN)))) continue;
    train_sets_add(sets, h->name, h->value);
  }
  if (have_probe) graph_free(&probe);
  return true;
}

bool train_origin_check_shapes(const TrainOrigin *s, const Graph *g, const TrainSets *sets, Diag *d) {
  const Value *bad = NULL;
  const CheckpointTensor *had = NULL;
  for (int i = 0; i < g->params.n && !bad; i++) {
    const Value *v = &g->values.data[g->params.data[i]];
    for (int k = 0; k < s->info.tensors.n && !bad; k++) {
      const CheckpointTensor *t = &s->info.tensors.data[k];
      if (strcmp(t->name, v->name) == 0 && !shape_eq(&t->shape, &v->shape)) bad = v, had = t;
    }
  }
  if (!bad) return true;
  /* the settings (flags and the task's) that differ from the checkpoint's hparams */
  char diff[512] = "", a[96], b[96];
  size_t at = 0;
  for (int i = 0; i < sets->n && at < sizeof diff; i++) {
    const HParam *h = train_origin_hparam(s, sets->s[i].key);
    double v = strtod(sets->s[i].value, NULL);
    if (!h || h->value == v) continue;
    at += (size_t)snprintf(diff + at, sizeof diff - at, "%s%s=%s (the checkpoint's: %.17g)", at ? ", " : "",
                           sets->s[i].key, sets->s[i].value, h->value);
  }
  shape_str(&had->shape, a);
  shape_str(&bad->shape, b);
  diag_error(d, (SrcLoc){bc_intern(s->path), 0, 0},
             "the flags change the shapes of the parameters this checkpoint holds (%s: %s here, %s in the "
             "checkpoint)%s%s; the checkpoint's hparams apply by themselves: drop the flags that change them",
             bad->name, b, a, at ? ": " : "", diff);
  return false;
}

/* ---- compiling ---- */

static void compile_options(CompileOptions *c, const TrainModel *m, const char *graph, const TrainSets *s) {
  compile_options_default(c);
  c->model_path = m->path;
  c->model_sources = m->files;
  c->n_model_sources = m->n_files;
  c->graph_name = graph;
  c->sets = s ? s->s : NULL;
  c->n_sets = s ? s->n : 0;
}

bool train_compile(Graph *g, const TrainModel *m, const char *graph, const TrainSets *s, const AdamOptions *adam,
                   const char *const *outputs, Diag *d) {
  CompileOptions c;
  compile_options(&c, m, graph, s);
  c.outputs = outputs;
  c.train = adam != NULL;
  if (adam) c.adam = *adam;
  return pipeline_run(g, &c, d);
}

bool train_compile_bucket(Graph *g, const TrainModel *m, const char *graph, const TrainSets *s, int seq, int max_len,
                          const AdamOptions *adam, const char *const *outputs, Diag *d) {
  char max_s[16];
  snprintf(max_s, sizeof max_s, "%d", max_len);
  Setting keyed[1] = {{"seq", max_s}};
  TrainSets all;
  train_sets_init(&all, s->s, s->n);
  train_sets_add(&all, "seq", seq);
  CompileOptions c;
  compile_options(&c, m, graph, &all);
  c.outputs = outputs;
  c.train = adam != NULL;
  if (adam) c.adam = *adam;
  c.key_sets = keyed;
  c.n_key_sets = 1;
  bool ok = pipeline_run(g, &c, d);
  train_sets_free(&all);
  return ok;
}

bool train_expand(Graph *g, const TrainModel *m, const char *graph, const TrainSets *s, Diag *d) {
  CompileOptions c;
  compile_options(&c, m, graph, s);
  return m->n_files > 0 ? model_expand_sources(g, m->files, m->n_files, graph, c.sets, c.n_sets, d)
                        : model_expand(g, m->path, graph, c.sets, c.n_sets, d);
}

/* ---- the contract of a task ---- */

static bool listed(const char *const *names, const char *name) {
  for (int i = 0; names[i]; i++)
    if (strcmp(names[i], name) == 0) return true;
  return false;
}

bool train_check_contract(const Graph *g, const char *model_path, const TrainContract *c, Diag *d) {
  SrcLoc at = {bc_intern(model_path), 0, 0};
  int err0 = d->n_errors;
  char list[512];
  for (int i = 0; c->hparams[i]; i++)
    if (isnan(graph_hparam(g, c->hparams[i], NAN))) {
      train_contract_list(c->hparams, list, sizeof list);
      diag_error(d, at,
                 "the model declares no hparam '%s', which --task %s sets from its data (a model for "
                 "--task %s declares the hparams %s: see models/README.md)",
                 c->hparams[i], c->task, c->task, list);
    }
  for (int i = 0; i < g->inputs.n; i++) {
    const char *name = g->values.data[g->inputs.data[i]].name;
    if (listed(c->inputs, name)) continue;
    train_contract_list(c->inputs, list, sizeof list);
    diag_error(d, at, "graph '%s' has an input '%s' that --task %s does not feed (it feeds: %s; see models/README.md)",
               c->graph, name, c->task, list);
  }
  for (int i = 0; c->outputs[i]; i++)
    if (train_output(g, c->outputs[i]) < 0) {
      train_contract_list(c->outputs, list, sizeof list);
      diag_error(d, at, "graph '%s' has no output '%s', which --task %s reads (it reads: %s; see models/README.md)",
                 c->graph, c->outputs[i], c->task, list);
    }
  if (g->loss < 0)
    diag_error(d, at, "graph '%s' declares no `loss:`, so --task %s cannot train it", c->graph, c->task);
  return d->n_errors == err0;
}

void train_contract_list(const char *const *names, char *buf, size_t n) {
  buf[0] = '\0';
  size_t at = 0;
  for (int i = 0; names[i] && at < n; i++) at += (size_t)snprintf(buf + at, n - at, "%s%s", i ? ", " : "", names[i]);
}

/* train_util.c — the helpers training, evaluation and prediction share
 * (train_util.h): run folders, settings, compiling, batches, checkpoints of
 * a run. */
#include "train_util.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "../graph/json.h"
#include "../runtime/checkpoint.h"
#include "../runtime/dist.h"
#include "hf_bert.h"
#include "train_optim.h"

char *train_join(const char *a, const char *b) { return bc_asprintf("%s/%s", a, b); }

bool train_file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

bool train_make_dir(const char *p, Diag *d) {
  char *s = bc_strdup(p);
  bool ok = true;
  for (char *c = s + 1; ok; c++) {
    if (*c != '/' && *c != '\0') continue;
    char saved = *c;
    *c = '\0';
    if (mkdir(s, 0777) != 0 && errno != EEXIST) ok = false;
    *c = saved;
    if (!saved) break;
  }
  free(s);
  if (!ok) diag_error(d, (SrcLoc){bc_intern(p), 0, 0}, "cannot create the run folder: %s", strerror(errno));
  return ok;
}

const char *train_data_dir(const char *given, Diag *d) {
  const char *dir = given ? given : getenv("BERT_DATA");
  if (!dir || !*dir)
    diag_error(d, (SrcLoc){"<command line>", 0, 0}, "no data folder: pass --data DIR or set BERT_DATA");
  return dir && *dir ? dir : NULL;
}

bool train_is_root(const TrainOptions *o) { return dist_rank(o->dist) == 0; }

void train_info(const TrainOptions *o, const char *fmt, ...) {
  if (!train_is_root(o)) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
}

/* ---- settings ---- */

void train_sets_init(TrainSets *s, const Setting *user, int n_user) {
  memset(s, 0, sizeof(*s));
  for (int i = 0; i < n_user; i++) s->s[s->n++] = user[i];
}

void train_sets_add(TrainSets *s, const char *key, double value) {
  BC_ASSERT(s->n_owned < TRAIN_MAX_SETS && s->n < 2 * TRAIN_MAX_SETS);
  char *v = bc_asprintf("%.17g", value);
  s->owned[s->n_owned++] = v;
  s->s[s->n++] = (Setting){key, v};
}

void train_sets_free(TrainSets *s) {
  for (int i = 0; i < s->n_owned; i++) free(s->owned[i]);
}

void train_sets_push(TrainSets *s, const Setting *user, int n_user) {
  BC_ASSERT(s->n + n_user <= 2 * TRAIN_MAX_SETS);
  for (int i = 0; i < n_user; i++) s->s[s->n++] = user[i];
}

/* ---- the compiled step ---- */

ValueId train_output(const Graph *g, const char *name) {
  for (int i = 0; i < g->outputs.n; i++)
    if (strcmp(g->values.data[g->outputs.data[i]].name, name) == 0) return g->outputs.data[i];
  return -1;
}

bool train_write_batch(Exec *e, const Graph *g, const DataBatch *b, double lr, Diag *d) {
  for (int i = 0; i < b->data.n_fields; i++) {
    const DataField *f = &b->data.fields[i];
    ValueId v = graph_find(g, f->name);
    if (v < 0) continue; /* e.g. pretraining fields the nli graph does not read */
    const Shape *s = &g->values.data[v].shape;
    const void *src = f->data;
    void *packed = NULL;
    if (s->rank == 2 && s->dim[0] == b->batch_size && s->dim[1] < f->width) {
      /* a length bucket: the first dim[1] positions of each row (the rest is padding) */
      size_t el = (size_t)data_field_row_bytes(f) / (size_t)f->width, keep = el * (size_t)s->dim[1];
      packed = bc_malloc(keep * (size_t)b->batch_size);
      for (int r = 0; r < b->batch_size; r++)
        memcpy((char *)packed + keep * (size_t)r, (const char *)f->data + (size_t)data_field_row_bytes(f) * (size_t)r,
               keep);
      src = packed;
    }
    bool ok = exec_write(e, v, src, f->dtype == DATA_I32 ? DTYPE_I32 : DTYPE_F32, d);
    free(packed);
    if (!ok) return false;
  }
  ValueId lv = graph_find(g, "lr");
  if (lv >= 0) {
    float x = (float)lr;
    if (!exec_write(e, lv, &x, DTYPE_F32, d)) return false;
  }
  return true;
}

/* ---- vocabularies and checkpoints ---- */

void train_vocab_hash(const Vocab *v, char buf[32]) {
  snprintf(buf, 32, "%016llx", (unsigned long long)vocab_hash(v));
}

bool train_vocab_beside(Vocab *v, const char *checkpoint, Diag *d) {
  const char *slash = strrchr(checkpoint, '/');
  char *vp = slash ? bc_asprintf("%.*s/vocab.txt", (int)(slash - checkpoint), checkpoint)
                   : bc_strdup("./vocab.txt");
  vocab_init(v);
  bool ok = vocab_load(v, vp, d);
  free(vp);
  return ok;
}

bool train_save_path(const char *path, const TrainOptions *o, int64_t total, Exec *e, const TrainModel *model,
                     int64_t step, const Vocab *v, double time_s, const CheckpointMeta *extra, Diag *d) {
  CheckpointMeta m;
  checkpoint_meta_init(&m);
  m.step = step;
  m.seed = o->seed;
  char hash[32];
  train_vocab_hash(v, hash);
  m.vocab_hash = bc_strdup(hash);
  m.model_path = bc_strdup(model->path);
  if (v->wordpiece) {
    hf_meta_set_vocab(&m, v); /* a Hugging Face model's: vocabulary and tokenizer */
  } else {
    char *vtext = vocab_text(v, NULL);
    checkpoint_meta_set(&m, TRAIN_META_VOCAB, vtext);
    free(vtext);
  }
  /* graph name and hparams: checkpoint_save writes the graph's own */
  char ts[32];
  snprintf(ts, sizeof ts, "%.3f", time_s);
  checkpoint_meta_set(&m, "time_s", ts);
  train_optim_record(o, total, &m);
  for (int i = 0; extra && i < extra->extra.n; i++)
    checkpoint_meta_set(&m, extra->extra.data[i].key, extra->extra.data[i].value);
  bool ok = checkpoint_save(path, e, &m, d);
  checkpoint_meta_free(&m);
  return ok;
}

bool train_save(const TrainOptions *o, int64_t total, Exec *e, const TrainModel *model, int64_t step, const Vocab *v,
                double time_s, Diag *d) {
  char *path = train_join(o->out, TRAIN_CHECKPOINT_FILE);
  bool ok = train_save_path(path, o, total, e, model, step, v, time_s, NULL, d);
  free(path);
  return ok;
}

bool train_resume(const TrainOptions *o, const char *ckpt, Exec *e, const Vocab *v, int64_t *start,
                  double *time_offset, Diag *d) {
  if (!train_file_exists(ckpt)) return true;
  char hash[32];
  train_vocab_hash(v, hash);
  CheckpointLoadOptions lo = {CHECKPOINT_LOAD_ALL, hash};
  CheckpointMeta m;
  int n = checkpoint_load(ckpt, e, &lo, &m, d);
  if (n >= 0) {
    *start = m.step;
    const char *t = checkpoint_meta_get(&m, "time_s");
    *time_offset = t ? atof(t) : 0;
    train_info(o, "%s: resuming from %s at step %lld\n", o->task, ckpt, (long long)*start);
  }
  checkpoint_meta_free(&m);
  return n >= 0;
}

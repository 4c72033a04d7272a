/* checkpoint.h — training checkpoints as safetensors files: every parameter
 * and optimizer state value of a graph, by name, plus metadata (step, seed,
 * hyperparameters, vocabulary hash, model file, graph name, extra pairs).
 *
 * File layout (safetensors): 8-byte little-endian header length N; N bytes
 * of JSON {"<value name>": {"dtype": "F32"|"I32", "shape": [...],
 * "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}, padded
 * with spaces to a multiple of 8; then the raw little-endian tensor data,
 * offsets relative to its start, tensors back to back with no holes.
 *
 * Invariants: a save is atomic (graph/fileio.h: temporary file
 * `<path>.tmp.<pid>`, fsync, rename, fsync of the directory): a crash at any
 * moment leaves the old file or the new one, never a torn one. A load validates the whole header and
 * every tensor against the graph before it writes anything into the Exec.
 * No input file, however corrupt, crashes a load; every refusal is a Diag
 * error naming the file.
 *
 * Not here: what the vocabulary hash is (tasks/ computes it), choosing when
 * to save, dtypes other than F32/I32, checksums of the tensor data. */
#ifndef BC_CHECKPOINT_H
#define BC_CHECKPOINT_H

#include "backend.h"

/* The value of __metadata__["format_version"] this build writes, and the
 * newest it reads. */
#define BC_CHECKPOINT_VERSION 1

typedef struct {
  char *key, *value; /* owned */
} CheckpointKV;

/* Every string is heap-owned by the meta (NULL = absent); free with
 * checkpoint_meta_free. On save, graph_name, hparams_json, model_files and
 * format_version are ignored: the graph's own name, hparams and sources and
 * BC_CHECKPOINT_VERSION are written. On load all fields are filled. */
typedef struct {
  int64_t step;
  uint64_t seed;
  char *vocab_hash;   /* as tasks/ computes it; NULL or "" = none */
  char *model_path;   /* the model YAML the graph came from */
  char *graph_name;   /* "pretrain", "nli" */
  char *hparams_json; /* {"name": number, ...} from Graph.hparams */
  /* The model's files (Graph.sources, main file first; paths and texts
   * owned), so the graph compiles again without them on the disk. */
  VEC(SourceFile) model_files;
  int format_version; /* 0 when the file is not a bertc checkpoint */
  /* Other string pairs, kept in order; keys must not be a reserved key
   * (format, format_version, step, seed, vocab_hash, model, graph, hparams,
   * model_files). */
  VEC(CheckpointKV) extra;
} CheckpointMeta;

void checkpoint_meta_init(CheckpointMeta *m);
void checkpoint_meta_free(CheckpointMeta *m);
/* Sets extra[key] = value (copies both), replacing an existing pair. */
void checkpoint_meta_set(CheckpointMeta *m, const char *key, const char *value);
/* extra[key], or NULL. */
const char *checkpoint_meta_get(const CheckpointMeta *m, const char *key);

/* One tensor as the file's header describes it. */
typedef struct {
  char *name; /* owned */
  DType dtype;
  /* NULL for F32 and I32; else the safetensors dtype ("F16", "BF16",
   * "I64", ...): listed, converted by importers, never loaded */
  const char *other_dtype;
  Shape shape;
  uint64_t begin, end; /* byte offsets in the data section, end exclusive */
  int elem_bytes;      /* of the file's dtype: end - begin = numel * elem_bytes */
} CheckpointTensor;

/* The whole header of a checkpoint file (`bertrun eval` prints it). */
typedef struct {
  CheckpointMeta meta;
  VEC(CheckpointTensor) tensors; /* in header order */
  uint64_t header_bytes;         /* N, padding included */
  uint64_t data_bytes;           /* size of the data section */
} CheckpointInfo;

/* Writes every parameter and state of e->graph (as stored: f32 or i32) and
 * `meta` (may be NULL: step 0, seed 0, nothing else) to `path`, atomically.
 * Stale `<path>.tmp.<pid>` files of processes that no longer exist are
 * removed first. False, with an error naming the file and the system's
 * message, on failure; the old file (if any) is then untouched, except when
 * only the final directory fsync failed (the new file is in place but its
 * durability is not confirmed). One save of a given path at a time per
 * process (the temporary file is named by the pid). */
bool checkpoint_save(const char *path, Exec *e, const CheckpointMeta *meta, Diag *d);

typedef enum {
  /* Resume: every parameter and state of the graph must be in the file, and
   * every tensor of the file must be a parameter or state of the graph. */
  CHECKPOINT_LOAD_ALL,
  /* Initialize from another graph's checkpoint (the pretraining encoder
   * under the NLI classifier): load each parameter of the graph that the
   * file has, by name; leave the others and every state as they are. An
   * error when none matches. */
  CHECKPOINT_LOAD_PARAMS_PRESENT,
} CheckpointLoadMode;

typedef struct {
  CheckpointLoadMode mode;
  /* Non-NULL and non-empty: refuse a file whose vocab_hash differs (or that
   * has none). */
  const char *expect_vocab_hash;
} CheckpointLoadOptions;

/* Validates `path` against e->graph and writes its tensors into e; fills
 * `meta_out` (may be NULL; initialized here, the caller frees it with
 * checkpoint_meta_free, also on failure). Returns the number of tensors
 * loaded (LOAD_PARAMS_PRESENT: >= 1), or -1 with errors naming the file:
 * unreadable, truncated, corrupt header, unknown dtype, wrong shape or dtype
 * (both named), missing or unexpected tensor (with a note on the hparams
 * that differ), vocabulary mismatch, newer format. On -1 nothing was
 * written into e, except after a read error in the data section. */
int checkpoint_load(const char *path, Exec *e, const CheckpointLoadOptions *opt,
                    CheckpointMeta *meta_out, Diag *d);

/* Reads and validates the header only. `out` is initialized here; free it
 * with checkpoint_info_free (also on failure). */
bool checkpoint_read_info(const char *path, CheckpointInfo *out, Diag *d);
void checkpoint_info_free(CheckpointInfo *info);
/* checkpoint_read_info, keeping only the metadata; free with
 * checkpoint_meta_free (also on failure). */
bool checkpoint_read_meta(const char *path, CheckpointMeta *out, Diag *d);
/* The data of tensor `t` (one of info's, read from `path`) into dst
 * (t->end - t->begin bytes): F32 and I32 in host byte order, other dtypes
 * as the file stores them (little-endian). False with an error naming
 * the file when it cannot be read. */
bool checkpoint_read_tensor(const char *path, const CheckpointInfo *info, const CheckpointTensor *t, void *dst,
                            Diag *d);

/* One tensor to write, from host memory (f32 or i32, host byte order). */
typedef struct {
  const char *name;
  DType dtype;
  Shape shape;
  const void *data;
} CheckpointBlob;

/* Writes a plain safetensors file (not a bertc checkpoint: what other
 * tools read, e.g. a Hugging Face model.safetensors): the tensors in the
 * order given and the metadata pairs (may be none), atomically. False with
 * an error naming the file on failure or on names that cannot be written. */
bool checkpoint_write_tensors(const char *path, const CheckpointBlob *t, int n, const CheckpointKV *meta,
                              int n_meta, Diag *d);

#endif

/* dataset.h — host-side datasets as named int32/float32 columns, the seeded
 * PRNG of the data pipeline, and the batcher that copies shuffled batches
 * out of a dataset. Shared by wikitext.c (pretraining) and snli.c
 * (fine-tuning); implemented in vocab.c, the base of the data modules.
 *
 * Not here: reading files (wikitext.h, snli.h), graphs or devices. A field's
 * name is the graph input it feeds (tokens, segments, valid_len, ...), so
 * a training loop copies `field.data` into the input of the same name.
 *
 * Invariants: every field of a Dataset has n_examples rows of `width`
 * elements, row-major and contiguous ([n_examples, width]); a Dataset owns
 * its field buffers; field names are static strings. */
#ifndef BC_DATASET_H
#define BC_DATASET_H

#include <stdbool.h>
#include <stdint.h>

typedef enum { DATA_I32, DATA_F32 } DataDType;

typedef struct {
  const char *name; /* graph input name; a static string */
  DataDType dtype;  /* DATA_I32: int32_t, DATA_F32: float */
  int width;        /* elements per example: max_len, n_pred or 1 */
  void *data;       /* [n_examples, width], owned by the Dataset */
} DataField;

#define DATASET_MAX_FIELDS 8
typedef struct {
  int n_examples;
  int n_fields;
  DataField fields[DATASET_MAX_FIELDS];
} Dataset;

/* An empty dataset with n_examples rows and no fields. */
void dataset_init(Dataset *ds, int n_examples);
/* Adds a zero-filled field [n_examples, width] and returns its data. The
 * name must be new and static; at most DATASET_MAX_FIELDS fields. */
void *dataset_add_field(Dataset *ds, const char *name, DataDType dtype, int width);
/* Changes the row count of every field; new rows are zero. */
void dataset_resize(Dataset *ds, int n_examples);
/* The field called `name`, or NULL. */
const DataField *dataset_field(const Dataset *ds, const char *name);
/* Typed views of a field's data; BC_ASSERT that it exists with that dtype. */
int32_t *dataset_i32(const Dataset *ds, const char *name);
float *dataset_f32(const Dataset *ds, const char *name);
/* Bytes of one element / one row of a field. */
int data_field_row_bytes(const DataField *f);
void dataset_free(Dataset *ds);

/* ---- PRNG ----------------------------------------------------------------
 * xoshiro256** (Blackman & Vigna) seeded through splitmix64. d2l draws from
 * Python's `random` (Mersenne Twister); bertc keeps d2l's rules and the
 * order of the draws, not MT's bit stream. (seed, stream) pairs give
 * independent sequences: the WikiText builder uses DATA_STREAM_WIKI, the
 * batcher DATA_STREAM_BATCH + epoch. */
typedef struct {
  uint64_t s[4];
} DataRng;
#define DATA_STREAM_WIKI 1u
#define DATA_STREAM_BATCH 0x100000000ull

void data_rng_seed(DataRng *r, uint64_t seed, uint64_t stream);
uint64_t data_rng_u64(DataRng *r);
/* Uniform in [0, 1) with 53 random bits, as Python's random.random(). */
double data_rng_uniform(DataRng *r);
/* Uniform integer in [0, n), n >= 1, without modulo bias. */
uint32_t data_rng_below(DataRng *r, uint32_t n);
/* Fisher-Yates with Python's random.shuffle draw order:
 * for i = n-1 .. 1: swap(a[i], a[below(i + 1)]). */
void data_rng_shuffle(DataRng *r, int32_t *a, int n);

/* ---- batching ------------------------------------------------------------
 * Usage, one epoch:
 *   Batcher b; batcher_init(&b, ds.n_examples, 512, true, true);
 *   DataBatch batch; data_batch_init(&batch, &ds, 512);
 *   batcher_set_epoch(&b, seed, epoch);
 *   for (int i = 0; i < b.n_batches; i++) {
 *     batcher_fill(&b, &ds, i, &batch);
 *     ... copy batch.data.fields[k].data into the input named fields[k].name;
 *         only rows < batch.n_real are real examples ...
 *   }
 * The order of an epoch depends only on (seed, epoch), so a run resumed at
 * any step sees the same batches. */
typedef struct {
  int n_examples, batch_size;
  bool shuffle;   /* false: dataset order (evaluation) */
  bool drop_last; /* true: no partial last batch */
  int n_batches;  /* per epoch */
  int32_t *order; /* [n_examples] this epoch's permutation; owned */
  /* length buckets (batcher_bucket): per example its length, and per batch
   * the length it is padded to; NULL: every batch is padded to max_len */
  const int32_t *lengths;
  int max_len, granule;
  int32_t *batch_len; /* [n_batches]; owned */
} Batcher;

typedef struct {
  int batch_size; /* rows of every field */
  int n_real;     /* rows 0..n_real-1 are examples; later rows repeat row n_real-1 */
  int32_t *rows;  /* [batch_size] the dataset row of each batch row; owned */
  Dataset data;   /* the source's fields with batch_size rows; owned */
} DataBatch;

/* buckets.c: groups this epoch's shuffled order by length (r: the epoch's
 * stream, after its shuffle). */
void bucket_epoch(Batcher *b, DataRng *r);
/* batch_size >= 1. Until batcher_set_epoch the order is the identity. */
void batcher_init(Batcher *b, int n_examples, int batch_size, bool shuffle, bool drop_last);
/* The permutation of epoch `epoch` (identity when !shuffle). */
void batcher_set_epoch(Batcher *b, uint64_t seed, int epoch);
/* Copies batch `index` (0 <= index < n_batches) of `src` into `out`, which
 * was made by data_batch_init from a dataset with the same fields. A partial
 * last batch is padded by repeating its last example (n_real says how many
 * are real), so every row holds valid inputs. */
void batcher_fill(const Batcher *b, const Dataset *src, int index, DataBatch *out);
void batcher_free(Batcher *b);

/* ---- length buckets (buckets.c) -------------------------------------------
 * batcher_bucket makes every later epoch group examples of like length:
 * the epoch's shuffle (as above), then within each window of
 * BUCKET_WINDOW batches a stable sort by length, cut into batches, then a
 * shuffle of the batches (seeded by seed and epoch: a resumed run sees the
 * same batches). Batch i is padded to batcher_len(b, i): its longest
 * example rounded up to a multiple of `granule`, at most max_len. With
 * several replicas each takes a slice of the same global batch, so all
 * pad to the same length. */
#define BUCKET_WINDOW 64
void batcher_bucket(Batcher *b, const int32_t *lengths, int max_len, int granule);
/* For evaluation (no shuffle): the examples in order of length (ties in
 * dataset order), so each batch pads to its own bucket; results are
 * counted per row (DataBatch.rows), so the order changes nothing else. */
void batcher_sort_by_length(Batcher *b, const int32_t *lengths, int max_len, int granule);
/* The sequence length batch `index` of this epoch is padded to (max_len
 * without buckets). */
int batcher_len(const Batcher *b, int index);
/* The lengths a batch can have: granule, 2 granule, ..., max_len. */
int bucket_lengths(int max_len, int granule, int *out, int cap);

void data_batch_init(DataBatch *out, const Dataset *like, int batch_size);
void data_batch_free(DataBatch *out);

#endif

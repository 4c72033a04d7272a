/* buckets.c — length buckets for the batcher (dataset.h): batches of
 * examples of like length, each padded only to its own longest example
 * (rounded up to the granule), so attention and GEMMs skip most padding.
 * SNLI pairs average 25 tokens of a 128-token max_len. The sampler is the
 * usual one (shuffle, sort within windows of many batches, shuffle the
 * batches): batches stay random, and one batch of long examples does not
 * always follow another. */
#include "tasks/dataset.h"

#include "graph/base.h"

#include <stdlib.h>
#include <string.h>

/* b's lengths, max_len and granule, and a batch_len per batch (max_len). */
static void use_lengths(Batcher *b, const int32_t *lengths, int max_len, int granule) {
  BC_ASSERT(max_len >= 1 && granule >= 1);
  b->lengths = lengths;
  b->max_len = max_len;
  b->granule = granule;
  free(b->batch_len);
  b->batch_len = bc_calloc((size_t)(b->n_batches ? b->n_batches : 1), sizeof(int32_t));
  for (int i = 0; i < b->n_batches; i++) b->batch_len[i] = max_len;
}

void batcher_bucket(Batcher *b, const int32_t *lengths, int max_len, int granule) {
  BC_ASSERT(b->drop_last);
  use_lengths(b, lengths, max_len, granule);
}

int batcher_len(const Batcher *b, int index) {
  BC_ASSERT(index >= 0 && index < b->n_batches);
  return b->lengths ? b->batch_len[index] : b->max_len;
}

int bucket_lengths(int max_len, int granule, int *out, int cap) {
  int n = 0;
  for (int t = granule; n < cap; t += granule) {
    out[n++] = t < max_len ? t : max_len;
    if (t >= max_len) break;
  }
  return n;
}

/* Stable sort of rows[0..n) by length (insertion order breaks ties). */
static void sort_by_length(int32_t *rows, int n, const int32_t *lengths) {
  int64_t *key = bc_malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
  for (int i = 0; i < n; i++) key[i] = ((int64_t)lengths[rows[i]] << 32) | (uint32_t)i;
  /* (length, position) pairs are distinct, so any sort is stable */
  int64_t *tmp = bc_malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
  for (int w = 1; w < n; w *= 2) { /* bottom-up merge sort: deterministic on every libc */
    for (int lo = 0; lo < n; lo += 2 * w) {
      int mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n, i = lo, j = mid, k = lo;
      while (i < mid && j < hi) tmp[k++] = key[i] <= key[j] ? key[i++] : key[j++];
      while (i < mid) tmp[k++] = key[i++];
      while (j < hi) tmp[k++] = key[j++];
    }
    memcpy(key, tmp, sizeof(int64_t) * (size_t)n);
  }
  int32_t *out = bc_malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
  for (int i = 0; i < n; i++) out[i] = rows[(uint32_t)key[i]];
  memcpy(rows, out, sizeof(int32_t) * (size_t)n);
  free(out);
  free(tmp);
  free(key);
}

/* Batch i's length: its longest example rounded up to the granule, at most max_len. */
static void set_batch_lengths(Batcher *b) {
  for (int i = 0; i < b->n_batches; i++) {
    int longest = 1, first = i * b->batch_size;
    for (int k = first; k < first + b->batch_size && k < b->n_examples; k++)
      if (b->lengths[b->order[k]] > longest) longest = b->lengths[b->order[k]];
    int t = (longest + b->granule - 1) / b->granule * b->granule;
    b->batch_len[i] = t < b->max_len ? t : b->max_len;
  }
}

void batcher_sort_by_length(Batcher *b, const int32_t *lengths, int max_len, int granule) {
  BC_ASSERT(!b->shuffle);
  use_lengths(b, lengths, max_len, granule);
  for (int i = 0; i < b->n_examples; i++) b->order[i] = i;
  sort_by_length(b->order, b->n_examples, lengths);
  set_batch_lengths(b);
}

void bucket_epoch(Batcher *b, DataRng *r) {
  int bs = b->batch_size, nb = b->n_batches, used = nb * bs;
  for (int lo = 0; lo < used; lo += BUCKET_WINDOW * bs) {
    int n = used - lo < BUCKET_WINDOW * bs ? used - lo : BUCKET_WINDOW * bs;
    sort_by_length(b->order + lo, n, b->lengths);
  }
  /* shuffle whole batches: a permutation of batch indices applied to order */
  int32_t *perm = bc_malloc(sizeof(int32_t) * (size_t)(nb ? nb : 1));
  for (int i = 0; i < nb; i++) perm[i] = i;
  data_rng_shuffle(r, perm, nb);
  int32_t *order = bc_malloc(sizeof(int32_t) * (size_t)(used ? used : 1));
  for (int i = 0; i < nb; i++)
    memcpy(order + (size_t)i * bs, b->order + (size_t)perm[i] * bs, sizeof(int32_t) * (size_t)bs);
  memcpy(b->order, order, sizeof(int32_t) * (size_t)used);
  free(order);
  free(perm);
  set_batch_lengths(b);
}

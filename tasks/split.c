/* split.c — the batch split of a data-parallel run (split.h). */
#include "split.h"

#include <stdlib.h>
#include <string.h>

#include "../runtime/dist.h"

bool split_init(Split *sp, const TrainOptions *o, Diag *d) {
  memset(sp, 0, sizeof(*sp));
  sp->backend = backend_parse_list(o->device, sp->devices, &sp->n_local, d);
  if (!sp->backend) return false;
  /* under mpirun, `--device cuda` means one GPU per rank: rank r of a node
   * takes cuda:(its local rank); cuda:N pins every rank to GPU N */
  int lr = dist_launcher_local_rank();
  if (sp->backend->device_count && strcmp(o->device, sp->backend->name) == 0 && lr >= 0) sp->devices[0] = lr;
  sp->n_ranks = dist_size(o->dist);
  if (sp->n_local > 1 && !sp->backend->device_count && sp->n_ranks > 1) {
    diag_error(d, (SrcLoc){"<command line>", 0, 0},
               "--device %s runs %d host replicas in one process, which is not for mpirun: give each rank one "
               "(--device %s)",
               o->device, sp->n_local, sp->backend->name);
    return false;
  }
  int ls = dist_launcher_local_ranks();
  if (sp->n_local > 1 && sp->backend->device_count && ls > 1) {
    diag_error(d, (SrcLoc){"<command line>", 0, 0},
               "--device %s would give each of the %d ranks on this node the same %d GPUs: with several ranks "
               "per node use --device cuda (rank r takes GPU r)",
               o->device, ls, sp->n_local);
    return false;
  }
  sp->size = sp->n_ranks * sp->n_local;
  sp->first = dist_rank(o->dist) * sp->n_local;
  if (o->batch % sp->size != 0) {
    char over[96];
    if (sp->n_local == 1) snprintf(over, sizeof over, "%d ranks", sp->size);
    else if (sp->n_ranks == 1) snprintf(over, sizeof over, "%d replicas (--device %s)", sp->size, o->device);
    else snprintf(over, sizeof over, "%d replicas (%d ranks x %d devices)", sp->size, sp->n_ranks, sp->n_local);
    diag_error(d, (SrcLoc){"<command line>", 0, 0},
               "--batch %d cannot be split evenly over %s (%d %% %d = %d): pass a global batch that is a "
               "multiple of the number of replicas",
               o->batch, over, o->batch, sp->size, o->batch % sp->size);
    return false;
  }
  sp->local = o->batch / sp->size;
  const char *c = getenv("BC_DIST_CHECK");
  sp->check_every = c && *c ? atoll(c) : 0;
  return true;
}

/* Global index of local replica k's first example in a batch. */
int64_t split_first(const Split *sp, int k) { return (int64_t)(sp->first + k) * sp->local; }

/* "cuda:0,1 (2 replicas)", "cpu (2 ranks)", "cuda" */
void split_where(const Split *sp, const char *device, char *buf, size_t cap) {
  if (sp->size == 1) snprintf(buf, cap, "%s", device);
  else if (sp->n_local == 1) snprintf(buf, cap, "%s (%d ranks)", device, sp->size);
  else if (sp->n_ranks == 1) snprintf(buf, cap, "%s (%d replicas)", device, sp->size);
  else snprintf(buf, cap, "%s (%d ranks x %d devices)", device, sp->n_ranks, sp->n_local);
}

/* The batch local replica k runs: the global one, or its rows of it. */
const DataBatch *split_batch(Split *sp, const DataBatch *global, int k) {
  if (sp->size == 1) return global;
  DataBatch *lb = &sp->batch[k];
  if (!sp->have_batch[k]) {
    data_batch_init(lb, &global->data, sp->local);
    sp->have_batch[k] = true;
  }
  int64_t first = split_first(sp, k);
  for (int f = 0; f < global->data.n_fields; f++) {
    size_t row = (size_t)data_field_row_bytes(&global->data.fields[f]);
    memcpy(lb->data.fields[f].data, (const char *)global->data.fields[f].data + (size_t)first * row,
           (size_t)sp->local * row);
  }
  memcpy(lb->rows, global->rows + first, sizeof(int32_t) * (size_t)sp->local);
  int64_t real = global->n_real - first;
  lb->n_real = real < 0 ? 0 : real > sp->local ? sp->local : (int)real;
  return lb;
}

void split_free(Split *sp) {
  for (int k = 0; k < BC_MAX_REPLICAS; k++)
    if (sp->have_batch[k]) data_batch_free(&sp->batch[k]);
}

/* One Exec of g per local replica; false with an error (es[] then holds
 * those made, for destroy_execs). */
bool split_make_execs(const Split *sp, const Graph *g, Exec **es, Diag *d) {
  for (int k = 0; k < sp->n_local; k++)
    if (!(es[k] = exec_create_on(sp->backend, sp->devices[k], g, d))) return false;
  return true;
}

void split_destroy_execs(Exec **es) {
  for (int k = 0; k < BC_MAX_REPLICAS; k++) {
    exec_destroy(es[k]);
    es[k] = NULL;
  }
}

/* Rank 0's parameters, optimizer state, start step and training time, on
 * every rank (after initialization, --init or --resume on rank 0). */
bool split_sync_start(const TrainOptions *o, const Split *sp, Exec **es, int64_t *start, double *time_offset,
                       Diag *d) {
  double x[2] = {(double)*start, *time_offset};
  if (!dist_broadcast(o->dist, x, 2, d) || !dist_broadcast_exec(o->dist, es, sp->n_local, d)) return false;
  *start = (int64_t)x[0];
  *time_offset = x[1];
  return dist_attach(o->dist, es, sp->n_local, d);
}

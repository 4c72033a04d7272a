/* memplan.h — the memory planner (DESIGN §4 item 7): where every value of a
 * scheduled graph lives during one training step.
 *
 * Two address spaces, each meant to be one device allocation:
 *   pinned  values that outlive the step or are seen from outside it: inputs,
 *           parameters, states, parameter gradients (Value.grad), graph
 *           outputs, the loss, and the target of every assign. Each has its
 *           own region; no two overlap. Except: one of these made by a
 *           reshape of an intermediate (an output [B, P, V] of logits computed
 *           as [B*P, V]) pins that intermediate too and is a view of it.
 *   arena   every other materialized value, placed by lifetime over the node
 *           order (the node array is the schedule): best fit among the free
 *           holes, 64-byte aligned, holes merged on free. Buffers of at
 *           most 256 KiB (row statistics, bias gradients) are placed the
 *           same way in a block of their own after the large ones, so that
 *           none sits in a large hole a later large buffer needs.
 * In place: an elementwise op (OPF_ELEMENTWISE, select, cast) whose input dies
 * at that node, lives in the arena and has the output's byte size writes into
 * that input's buffer, unless the node's kernel also reads that input
 * through a fused non-pointwise value (a fused reduction or broadcast: the
 * kernel would read elements it already overwrote); a reshape whose input
 * dies there is a zero-copy view of it, and so is one whose input lives on
 * (neither is written again while both live; the buffer is freed when the
 * last value on it dies), and so is a slice of rows (graph/ir.h's
 * shape_slice_offset) when it starts 64-byte aligned in its input. The
 * attention backward writes d q, d k and d v (its output's rows, in that
 * order) over its q, k and v where those three die there and own their
 * buffers: they are placed as one block, q | k | v, when the first of
 * them is made (off->attention_in_place, set for backends whose kernel
 * cannot, turns this off). Assign outputs never get a buffer: an assign's output is its target
 * (which holds the old value until the step ends, as in runtime/interp.c), so
 * it aliases the target.
 *
 * Not here: choosing the schedule, fusion (it only says, through
 * `materialized`, which values need a buffer), allocating device memory. */
#ifndef BC_MEMPLAN_H
#define BC_MEMPLAN_H

#include "../graph/ir.h"
#include "options.h"

enum {
  MEM_NONE,   /* no buffer: lives inside a fused kernel */
  MEM_PINNED, /* offset into the pinned block */
  MEM_ARENA,  /* offset into the arena */
};

/* Where one value lives. A value with alias_of >= 0 owns no buffer: it uses
 * alias_of's (same kind, same offset). For a reshape that means the node is a
 * no-op view; for an elementwise node, that the kernel writes in place; for an
 * assign, that its output is its target. */
typedef struct {
  int64_t offset;   /* bytes from the start of its block; 64-aligned; -1 for MEM_NONE */
  int64_t bytes;    /* numel * dtype size (the region reserved is this rounded up to 64) */
  ValueId alias_of; /* -1, or the value whose buffer it reuses */
  uint8_t kind;     /* MEM_NONE, MEM_PINNED, MEM_ARENA */
  NodeId first, last; /* live range over the node order (inclusive) for arena
                       * values: producer .. last node reading it, reads by
                       * fused (MEM_NONE) values counting where those are read;
                       * -1, -1 for pinned and MEM_NONE values */
} MemSlot;

typedef struct {
  MemSlot *slots; /* n_values, indexed by ValueId; owned */
  int n_values;
  int64_t pinned_bytes;           /* size of the pinned block */
  int64_t arena_bytes;            /* size of the arena (its peak) */
  int64_t sum_intermediate_bytes; /* arena values with a 64-aligned buffer each (aliases too) */
  int n_inplace, n_views;         /* elementwise in place; reshape views */
  bool disabled;                  /* planned with disable = true */
  int *kernel_of;                 /* per node, or NULL: see memplan_run_kernels */
} MemPlan;

/* Plans `g` into *out (caller-owned storage, freed with memplan_free).
 * materialized[v] false (NULL = all true) means v needs no buffer; pinned
 * values get one whatever it says. disable = true (BC_NO_MEMPLAN=1, checked by
 * the caller) gives every arena value its own region and nothing in place, so
 * arena_bytes == sum_intermediate_bytes. Requires: a verified graph whose node
 * order is the schedule. Returns false (internal error in `d`, *out zeroed)
 * only on a value of a dtype that is not a graph dtype (F64). */
bool memplan_run(const Graph *g, const bool *materialized, bool disable, MemPlan *out, Diag *d);
/* The same with kernels: kernel_of[i] (non-decreasing over the node order)
 * is the kernel that runs node i. A kernel reads and writes all its buffers
 * at once and on several threads, so lifetimes are counted in kernels: a
 * buffer freed by kernel k is reused from kernel k+1 on, never within k,
 * except for exact in-place writes of an elementwise node into an input it
 * reads only pointwise. NULL = one kernel per node (memplan_run). The plan
 * keeps a copy for memplan_check. off->memplan is memplan_run's `disable`;
 * off->inplace (BC_NO_INPLACE=1) keeps reuse but writes nothing in place
 * (reshapes still alias their input); off NULL = all on. */
bool memplan_run_kernels(const Graph *g, const bool *materialized, const int *kernel_of, const OptSwitches *off,
                         MemPlan *out, Diag *d);
void memplan_free(MemPlan *p);

/* The arena layout in offset order (offset, bytes, live range, value name,
 * in place / view of what), then the summary line of memplan_print_summary. */
void memplan_print(const Graph *g, const MemPlan *p, FILE *f);
/* One line: "memplan: memory reduced from X to Y (Z%); pinned P; ...". */
void memplan_print_summary(const MemPlan *p, FILE *f);

/* Independent verifier: recomputes every live range its own way (sharing
 * with the planner only the list of what is pinned and which ops may run in
 * place), then checks that pinned values are pinned and pairwise disjoint,
 * every region lies in bounds, is aligned and big enough, aliases are legal,
 * and no two arena values live at the same node overlap, except a value and
 * its alias at the node that makes it (where the source dies), and an
 * attention backward's output and the q, k and v it lies over, in that
 * order, where they die. Returns false
 * with one internal error per violation. */
bool memplan_check(const Graph *g, const MemPlan *p, Diag *d);

#endif

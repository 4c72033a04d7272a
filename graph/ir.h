/* ir.h — the graph IR: values and nodes in arrays indexed by dense integer
 * ids, shapes static, one output per node.
 *
 * Invariants (checked by graph_verify): every input of node i is a graph
 * input, parameter, state, or the output of a node j < i (so the node array
 * is always a valid execution order); every value has a dtype and a full
 * shape; inputs, params and states have unique names. Passes that add nodes
 * append them; passes that remove nodes call graph_compact.
 *
 * Not here: loading YAML (yaml_load.h), passes, execution. */
#ifndef BC_IR_H
#define BC_IR_H

#include "base.h"

#define BC_MAX_RANK 6

typedef int32_t ValueId; /* -1 = none */
typedef int32_t NodeId;  /* -1 = none */

typedef enum {
#define UNARY(ID, ...) OP_##ID,
#define BINARY(ID, ...) OP_##ID,
#define OP(ID, ...) OP_##ID,
#include "ops.def"
  OP_COUNT
} Op;

enum {
  OPF_ELEMENTWISE = 1 << 0, /* unary and binary rows */
  OPF_DIFF = 1 << 1,        /* has a VJP */
  OPF_LAYOUT = 1 << 2,      /* moves elements, no arithmetic */
  OPF_REDUCE = 1 << 3,
  OPF_SIDE_EFFECT = 1 << 4, /* never removed (assign) */
  OPF_UNARY = 1 << 5,
  OPF_BINARY = 1 << 6,
  OPF_INTERNAL = 1 << 7,    /* made by passes, not written in YAML (assign, attention_grad) */
};

typedef struct {
  const char *name; /* "add", as written in YAML */
  int n_in;         /* -1 = variadic */
  unsigned flags;
  const char *attrs;    /* YAML attributes, space-separated ("" none) */
  const char *required; /* those needed; "a|b" = one of a, b */
  const char *dom;      /* elementwise: test domain letter per input (ops.def) */
  double tol;           /* elementwise: tolerance against the interpreter */
} OpInfo;
extern const OpInfo op_info[OP_COUNT];
/* Op by YAML name, or OP_COUNT when there is none. */
Op op_from_name(const char *name);
/* Elementwise, select or cast: each output element from the same element
 * of each input. */
bool op_is_pointwise(Op op);

/* F64 appears only as a host transfer type (runtime read/write) and inside
 * the reference interpreter; graph values are F32 or I32. */
typedef enum { DTYPE_F32, DTYPE_I32, DTYPE_F64 } DType;
const char *dtype_name(DType t); /* "f32" */
bool dtype_from_name(const char *s, DType *out);
size_t dtype_size(DType t);

typedef struct {
  int rank;
  int64_t dim[BC_MAX_RANK];
} Shape;
int64_t shape_numel(const Shape *s);
bool shape_eq(const Shape *a, const Shape *b);
/* How a random op of shape `s` keys its stream: element (c_0, .., c_r-1)
 * of example offset x draws Philox index x * per_example + sum c_d
 * stride[d], strides row-major over `key` (rank 0: s itself). A bucketed
 * graph keys by the padded graph's shape, so the element at (example,
 * position, feature) draws the same number at every sequence length.
 * Returns whether the map is the plain row-major index of s. */
bool random_key_map(const Shape *s, const Shape *key, int64_t stride[], int64_t *per_example);
/* Where slice [start, end) along `axis` of a row-major tensor of shape s
 * starts, in elements, when the slice is one contiguous run of it (every
 * dim before axis is 1: slices of rows); else -1. */
int64_t shape_slice_offset(const Shape *s, int axis, int64_t start);
/* shape_of(2, 3, 4): dims passed as int. */
Shape shape_of(int rank, ...);
/* "[2, 128, 64]" into buf (at least 96 bytes); returns buf. */
char *shape_str(const Shape *s, char *buf);
/* numpy broadcasting of a and b; false when incompatible. */
bool shape_broadcast(const Shape *a, const Shape *b, Shape *out);
/* A MATMUL C = op(A) op(B) (graph/ops.def) as GEMM libraries see it, for
 * the CPU (runtime/cpu_ops.c) and cuBLAS (runtime/cublas.c) paths alike.
 * C's trailing batch dims fold into M where B does not vary along them and
 * A's matrices are consecutive there (A not transposed): x (B, T, K) times
 * W (K, N) is one (B*T, K) x (K, N) GEMM. The batch dims left, C's dims
 * [0, n_batch_dims), step through A and B by a_stride / b_stride elements
 * (0 where an operand broadcasts); C is contiguous. */
typedef struct {
  int64_t M, N, K;  /* M after folding (A's own rows times the folded dims) */
  int64_t M_unfolded;
  int n_batch_dims;
  int64_t dim[BC_MAX_RANK], a_stride[BC_MAX_RANK], b_stride[BC_MAX_RANK];
} MatmulLayout;
void shape_matmul_layout(const Shape *a, bool trans_a, const Shape *b, bool trans_b, const Shape *c,
                         MatmulLayout *l);

typedef enum { VALUE_NODE, VALUE_INPUT, VALUE_PARAM, VALUE_STATE } ValueKind;

/* Initial values of parameters and optimizer state (runtime/exec.c draws
 * them). XAVIER: uniform in ±sqrt(6 / (fan_in + fan_out)), fans = the last
 * two dims (MXNet's Xavier(): magnitude 3, factor avg). NORMAL: N(0, scale²).
 * UNIFORM: in ±scale. */
typedef enum { INIT_ZEROS, INIT_ONES, INIT_XAVIER, INIT_NORMAL, INIT_UNIFORM } InitKind;
typedef struct {
  InitKind kind;
  double scale;
} Init;
const char *init_name(InitKind k);
bool init_from_name(const char *s, InitKind *out);

typedef struct {
  const char *name; /* interned; scoped ("enc.0.attn.W_q"); unique for inputs/params/states */
  DType dtype;
  Shape shape;
  ValueKind kind;
  NodeId node; /* producer, for VALUE_NODE; else -1 */
  SrcLoc loc;
  Init init;    /* params and states */
  ValueId grad; /* params: d loss / d param once autodiff ran; else -1 */
} Value;

/* Attributes of a node. Which fields an op reads is written beside its row
 * in ops.def; unused fields stay zero. */
typedef struct {
  int axis;                 /* reduce, slice, concat, iota (normalized >= 0) */
  int64_t start, end;       /* slice */
  int perm[BC_MAX_RANK];    /* permute */
  bool trans_a, trans_b;    /* matmul */
  double scalar;            /* constant */
  uint32_t key;             /* random */
  Shape shape;              /* broadcast, reshape, iota, random, constant, scatter_add */
  DType dtype;              /* cast, iota, constant */
  Shape key_shape;          /* random: the shape whose row-major index keys the
                             * stream (rank 0: its own; see random_key_map) */
  int heads;                /* attention, attention_grad */
  double dropout;           /* attention, attention_grad: the weights' dropout rate */
} Attrs;

typedef int32_t BlockId; /* index in Graph.blocks; -1 = the graph itself */

typedef struct {
  Op op;
  int n_in;
  ValueId *in; /* n_in ids, in the graph arena */
  ValueId out;
  SrcLoc loc; /* the YAML line it came from; pass-made nodes inherit it */
  BlockId block; /* the block instance it belongs to (Graph.cur_block when made) */
  Attrs a;
  bool stop_gradient; /* autodiff sends no gradient back through it (YAML
                       * `stop_gradient: true`; PyTorch's detach) */
  bool remat;         /* a copy made by passes/remat.c, recomputing a forward
                       * value for the backward node after it: fuse puts it
                       * in that node's kernel */
} Node;

/* One instance of a YAML block: one call, or one round of a `repeat`
 * (whose rounds sit in an instance of their own, the repeated call). The
 * expand pass records them; autodiff adds the backward instance of each
 * forward one whose nodes it differentiates, optim one for the optimizer.
 * They only describe where nodes came from (DOT clusters, the block view);
 * no pass reads them to decide anything. */
typedef struct {
  const char *path; /* scope of its values: "encoder.blk.0"; interned */
  const char *type; /* the block's name in the YAML ("encoder_layer"), or "adam" */
  SrcLoc loc;       /* the call */
  BlockId parent;   /* the enclosing instance, -1 = the graph */
  BlockId forward;  /* for a backward instance, the forward one; else -1 */
  int repeat;       /* the repeated call: its number of rounds; else 0 */
} BlockInst;

typedef struct {
  const char *name;
  double value;
} HParam;

/* A model file as the front end read it (passes/expand.c): its path as the
 * loader named it (an import joined to its importer's folder) and its text.
 * Checkpoints carry them, so a model compiles again anywhere. */
typedef struct {
  const char *path;
  const char *text;
} SourceFile;

typedef struct Graph {
  Arena arena; /* node input arrays, strings */
  const char *name;
  VEC(Value) values;
  VEC(Node) nodes;
  VEC(ValueId) inputs, params, states, outputs;
  ValueId loss; /* -1 when the graph has none */
  VEC(HParam) hparams; /* as resolved when the model was expanded */
  VEC(SourceFile) sources; /* the model files it came from, main file first (strings in the arena) */
  VEC(BlockInst) blocks; /* parents before children */
  /* Builder context: nodes made by graph_op get this location and block
   * instance, and their outputs a name under this scope ("scope.%id" when
   * the caller gives none). */
  SrcLoc cur_loc;
  const char *cur_scope;
  BlockId cur_block;
} Graph;

void graph_init(Graph *g, const char *name);
void graph_free(Graph *g);
/* Deep copy into caller-owned storage `dst` (uninitialized). */
void graph_copy(Graph *dst, const Graph *src);
/* g->sources := copies of files[0..n) in g's arena. */
void graph_set_sources(Graph *g, const SourceFile *files, int n);

ValueId graph_add_input(Graph *g, const char *name, DType t, Shape s, SrcLoc loc);
ValueId graph_add_param(Graph *g, const char *name, DType t, Shape s, Init init, SrcLoc loc);
ValueId graph_add_state(Graph *g, const char *name, DType t, Shape s, Init init, SrcLoc loc);
/* Input, param or state named `name`, or -1. */
ValueId graph_find(const Graph *g, const char *name);
double graph_hparam(const Graph *g, const char *name, double fallback);

/* Appends a node computing op(in...) with attributes `a` (NULL = zeros),
 * infers its output's dtype and shape, and returns the output. On a type or
 * shape error it adds a diagnostic at g->cur_loc and returns -1, adding
 * nothing. `d` may be NULL only where an error is a bug (then BC_ASSERT). */
ValueId graph_op(Graph *g, Op op, int n_in, const ValueId *in, const Attrs *a, Diag *d);
void graph_set_name(Graph *g, ValueId v, const char *name);
/* Appends a block instance and returns its id (parent must exist). */
BlockId graph_add_block(Graph *g, const char *path, const char *type, SrcLoc loc, BlockId parent);
/* The innermost instance enclosing both a and b (-1: only the graph). */
BlockId graph_block_common(const Graph *g, BlockId a, BlockId b);

/* Keeps the nodes with keep[i] true, renumbering nodes and values; values
 * that no kept node produces and that are not inputs/params/states go away.
 * Value ids held elsewhere are invalid afterwards except through the
 * returned map (old id -> new id or -1), which the caller frees; may be NULL. */
ValueId *graph_compact(Graph *g, const bool *keep);

/* Removes the nodes that no root (outputs, the loss, parameter gradients)
 * reaches; nodes with side effects (assign) stay. */
void graph_drop_dead(Graph *g);

/* A pass that rebuilds g into a new graph: graph_rebuild_begin makes *ng
 * with g's name, block instances, inputs, parameters and states, and
 * returns the map of g's value ids to ng's (-1 until the pass emits the
 * value; the caller frees it); graph_rebuild_end gives ng g's outputs,
 * loss and parameter gradients through the map, its hparams and sources. */
ValueId *graph_rebuild_begin(Graph *ng, const Graph *g);
void graph_rebuild_end(Graph *ng, const Graph *g, const ValueId *map);

/* Reorders the nodes: new node k is old node order[k]. Value ids stay; the
 * order must be topological (BC_ASSERT). */
void graph_reorder(Graph *g, const NodeId *order);
/* Moves the nodes from first_new to the end to run just before node `at`
 * (a pass's rewrite placed where its first reader ran). */
void graph_move_to(Graph *g, NodeId first_new, NodeId at);
/* New nodes get node n's YAML line and block instance, and names under
 * no scope (a pass's copies of n). */
void graph_at_node(Graph *g, const Node *n);
/* A copy of node n on inputs `in` (n->n_in of them) with output shape s:
 * a constant, iota, broadcast or reshape of that shape, any other op's
 * shape from its inputs; a remat copy stays one. */
ValueId graph_copy_node(Graph *g, const Node *n, const ValueId *in, Shape s);
/* Node n becomes a reshape of src (n's output keeps its id and shape): a
 * rewritten value's old producer, so that every id keeps its meaning. */
void graph_node_to_reshape(Graph *g, NodeId n, ValueId src);
/* kept[v] (values.n entries, cleared by the caller) for the values that
 * live to the end of a step: outputs, the loss, parameter gradients, and
 * the source of a reshape that is one of those (the memory plan makes it a
 * view). */
void graph_kept_values(const Graph *g, bool *kept);

/* Builders for passes: they assert on errors (a pass that builds a bad node
 * is a bug). Binary builders broadcast operands with numpy rules. */
ValueId graph_unary(Graph *g, Op op, ValueId a);
ValueId graph_binary(Graph *g, Op op, ValueId a, ValueId b);
ValueId graph_select(Graph *g, ValueId c, ValueId a, ValueId b);
ValueId graph_const(Graph *g, double v, DType t, Shape s);
ValueId graph_const_like(Graph *g, double v, ValueId like);
ValueId graph_broadcast(Graph *g, ValueId a, Shape s);
ValueId graph_reshape(Graph *g, ValueId a, Shape s);
ValueId graph_permute(Graph *g, ValueId a, const int *perm);
ValueId graph_slice(Graph *g, ValueId a, int axis, int64_t start, int64_t end);
ValueId graph_concat(Graph *g, int n, const ValueId *parts, int axis);
ValueId graph_reduce(Graph *g, Op op, ValueId a, int axis);
/* Sums `a` down to shape `s` (the inverse of broadcasting s to a's shape). */
ValueId graph_sum_to(Graph *g, ValueId a, Shape s);
ValueId graph_matmul(Graph *g, ValueId a, ValueId b, bool trans_a, bool trans_b);
ValueId graph_gather(Graph *g, ValueId table, ValueId idx);
ValueId graph_scatter_add(Graph *g, ValueId idx, ValueId upd, Shape s);
ValueId graph_cast(Graph *g, ValueId a, DType t);
ValueId graph_iota(Graph *g, Shape s, int axis, DType t);
ValueId graph_random(Graph *g, Shape s, uint32_t key);
ValueId graph_assign(Graph *g, ValueId target, ValueId value);

/* Shape and dtype rule of one op (graph/shape.c). Reports errors at `loc`
 * naming the op and the offending shapes. Normalizes negative axes in `a`. */
bool shape_infer(const Graph *g, Op op, int n_in, const ValueId *in, Attrs *a, DType *out_t,
                 Shape *out_s, SrcLoc loc, Diag *d);

/* Checks every invariant above and re-runs shape inference on each node;
 * errors are reported as internal errors at the node's location. */
bool graph_verify(const Graph *g, Diag *d);

/* Canonical text form: every value with dtype, shape and location, then
 * counts (nodes, parameter tensors, parameter elements). Deterministic. */
void graph_print(const Graph *g, FILE *f);
void graph_print_summary(const Graph *g, FILE *f);
/* Graphviz DOT form. */
/* Graphviz DOT (graph/dot.c): every node, block instances as nested
 * clusters (DOT_NODES), or one node per block instance with the types
 * crossing between them on the edges (DOT_BLOCKS). */
typedef enum { DOT_NODES, DOT_BLOCKS } DotLevel;
void graph_print_dot(const Graph *g, DotLevel level, FILE *f);
int64_t graph_param_elements(const Graph *g);

#endif

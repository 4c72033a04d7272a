/* expand.h — private to the model front end (expand.c, expand_prim.c,
 * expand_check.c, expr.c): the expansion context, scopes of values and
 * block attributes (expand.c), primitive and param nodes (expand_prim.c),
 * blocks' contracts (expand_check.c), and the expression evaluator that
 * shape dims, numeric attributes and contracts go through (expr.c).
 * Nothing outside those four files includes this. */
#ifndef BC_EXPAND_H
#define BC_EXPAND_H

#include "../graph/yaml_load.h"
#include "passes.h"

#define VID_POISON (-2) /* a value whose node failed; readers are skipped */

/* A number of an expression: integers stay integers (dims, axes), floats
 * (scales, probabilities) stay floats. A dtype (dtype(x), f32, i32) is an
 * integer with is_dtype set (i: the DType); only comparisons accept it. */
typedef struct {
  bool is_int;
  int64_t i;
  double f;
  bool is_dtype;
} Num;

static inline double expr_num_f(Num n) { return n.is_int ? (double)n.i : n.f; }

typedef struct {
  const char *name; /* interned */
  ValueId v;        /* or VID_POISON */
  SrcLoc loc;
} ValBind;

struct Scope;
/* A block attribute: the YAML node that gives its value and the scope it is
 * evaluated in (the caller's; NULL for a default: hparams only). */
typedef struct {
  const char *name;
  const YNode *node;
  struct Scope *env;
  bool failed; /* its evaluation as a number failed (reported); later uses fail silently */
} AttrBind;

typedef struct Scope {
  const char *prefix; /* full scope path; NULL at a graph's top level */
  VEC(ValBind) vals;
  AttrBind *attrs;
  int n_attrs;
} Scope;

/* A block as declared under `blocks:` (of the main file or an import). */
typedef struct {
  const char *name; /* interned */
  SrcLoc loc;       /* its key */
  const YNode *def;
  const char **in, **out;
  SrcLoc *in_loc, *out_loc;
  int n_in, n_out;
  const YNode *attrs; /* mapping name -> default (null = required), or NULL */
  const YNode *require; /* list of {that, error} (expand_check.c), or NULL */
  const YNode *nodes; /* list, or NULL */
  bool active;        /* being expanded (recursion check) */
  bool failed;        /* an instance failed: later calls are skipped silently */
} BlockDef;

/* A loaded model file; imports are loaded once each. */
typedef struct {
  YDoc doc;
  const char *real; /* canonical path, for import de-duplication */
  bool loading;     /* on the import stack */
} ModelFile;

/* A hyperparameter after --set (loc: the YAML value or the command line). */
typedef struct {
  const char *name; /* interned */
  Num value;
  SrcLoc loc;
  const char *same_as; /* declared `$other` (an earlier hparam): its value, unless --set */
} HP;
typedef VEC(const HP *) HPRefs;

/* One expansion: the loaded files, blocks, hparams and the graph built. */
typedef struct {
  Diag *d;
  Arena arena; /* scratch for everything that dies with the expansion */
  VEC(ModelFile *) files;
  VEC(BlockDef) blocks;
  VEC(HP) hparams;
  VEC(BlockDef *) call_stack;
  VEC(SrcLoc) call_locs; /* where each block of call_stack was called */
  HPRefs *hp_read;       /* when set, expressions record the hparams they read */
  VEC(ValBind) scopes; /* scopes of block instances so far (name) and their calls (loc) */
  const YNode *root;   /* main file */
  Graph *g;            /* NULL when only listing graphs */
  const SourceFile *src; /* n_src > 0: read the model files from these (a checkpoint's), not the disk */
  int n_src;
} Ctx;

/* Tokens of expressions (expr_lex). */
typedef enum { TK_END, TK_NUM, TK_IDENT, TK_OP, TK_CMP, TK_LP, TK_RP, TK_COMMA, TK_BAD } TokKind;
typedef struct {
  TokKind k;
  int pos, len;      /* the token's bytes */
  int name, name_len; /* TK_IDENT: the name without its `$` */
} Tok;

/* Scalar `n`'s location moved to byte `off` of its text, when the scalar is
 * on one line (else its start). */
SrcLoc expr_loc(const YNode *n, int off);
bool expr_is_ident(const char *s); /* [A-Za-z_][A-Za-z0-9_]* */
/* A number literal spanning all of `s`: "12" is an integer, "1e3" a float. */
bool expr_parse_number(const char *s, Num *out);
/* The token at or after byte `pos` of `s` (spaces skipped). */
Tok expr_lex(const char *s, int pos);

/* Evaluates scalar `n` in scope `env` (NULL: hparams only): numbers, names
 * (block attributes of env, then hparams; bare or `$`), + - * / // % ( ),
 * unary minus, dim(value, axis), rank(value), one comparison (== != < <=
 * > >=: 1 or 0). False with an error at the offending token; a dtype result
 * is an error. */
bool expr_num(Ctx *c, Scope *env, const YNode *n, Num *out);
/* The same over bytes [off, off + len) of n's text (len < 0: to its end),
 * errors located in n; the result may also be a dtype (dtype(value), f32,
 * i32), which compares with == and != only. */
bool expr_eval(Ctx *c, Scope *env, const YNode *n, int off, int len, Num *out);
/* Same, requiring an integer (an integral float is accepted); `what` names
 * it in the error ("a dimension must be an integer, got 3.5"). */
bool expr_int(Ctx *c, Scope *env, const YNode *n, const char *what, int64_t *out);
/* Follows `$attr` pass-throughs to the node that gives the value, and the
 * scope that node is evaluated in. */
void expr_resolve(Scope **env, const YNode **n);
/* Text of a string attribute (dtype, init, like) after expr_resolve; NULL
 * with an error when it is not a scalar or names an unknown `$attr`. */
const char *expr_str(Ctx *c, Scope **env, const YNode **n);

/* ---- expand.c ---- */

/* Scopes: the value bound to a local name (last binding wins), or NULL. */
ValBind *expand_scope_find(Scope *s, const char *name);
void expand_scope_bind(Scope *s, const char *name, ValueId v, SrcLoc loc);
/* The full (scope-path) name of local name `local`, interned. */
const char *expand_scope_full_name(Ctx *c, const Scope *s, const char *local);
/* Block attribute `name` (len bytes) of scope s (may be NULL), or NULL. */
AttrBind *expand_attr(const Scope *s, const char *name, size_t len);
const HP *expand_hparam(Ctx *c, const char *name, size_t len);
/* Whether an `in` entry is a number or an expression, not a value name. */
bool expand_is_literal(const YNode *n);

enum { NK_PRIM, NK_PARAM, NK_BLOCK };

/* One node of a node list, parsed. */
typedef struct {
  const YNode *map;
  SrcLoc loc; /* the op's value: where errors about the node point */
  const char *op_name;
  int kind;
  Op op;
  int block; /* index into ctx.blocks */
  const YNode *in_node;
  const YNode **in;
  int n_in;
  const char **out;
  SrcLoc *out_loc;
  int n_out;
  const char **dep; /* value names read: inputs, `like`, dim()/rank() arguments */
  SrcLoc *dep_loc;
  int *dep_node; /* producer's index in the list, or -1 when bound in scope */
  int n_dep;
  bool bad;
  int state; /* sort: 0 new, 1 on the stack, 2 done */
} NodeSpec;

/* ---- expand_prim.c ---- */

/* Checks a node's attribute keys against `allowed` ("a b c") and `required`
 * ("a b|c": one of b, c); `what` names the op for messages. */
bool expand_prim_check_attrs(Ctx *c, const NodeSpec *ns, const char *allowed, const char *required,
                             const char *what, bool block_call);
/* A primitive op node / a `param` node into the graph, its output bound in
 * s; false with errors. */
bool expand_prim_node(Ctx *c, Scope *s, NodeSpec *ns);
bool expand_prim_param(Ctx *c, Scope *s, NodeSpec *ns);
/* The inputs of a node: names to values, literals to constants of the
 * other operands' dtype, shaped like their broadcast when broadcast_lits. */
bool expand_prim_resolve_inputs(Ctx *c, Scope *s, const NodeSpec *ns, bool broadcast_lits, ValueId *in);
/* A graph's `inputs:` mapping as graph inputs bound in top. */
bool expand_prim_inputs(Ctx *c, Scope *top, const YNode *inputs);
/* "did you mean 'x'?" for an unknown op name, or the list of primitives
 * (in c's arena). */
const char *expand_prim_suggest(Ctx *c, const char *name);

/* ---- expand_check.c ---- */

/* Checks the structure of block b's `require:` list v and stores it in b;
 * false with errors. */
bool expand_check_parse(Ctx *c, BlockDef *b, const YNode *v);
/* Evaluates b's requirements in the scope of one of its instances (inputs
 * and attributes bound, no nodes yet; c->call_locs ends with this call);
 * false with the first broken one's error at the user's call site. */
bool expand_check_block(Ctx *c, const BlockDef *b, Scope *inner);
/* Reports an expression a YAML flow collection under n cut at a comma
 * (`[dim(x, 0)]` read as `dim(x` and `0)`); true when it found one. */
bool expand_check_split(Ctx *c, const YNode *n);

#endif

/* ops.c — the op info table generated from ops.def, names of dtypes and
 * initializers. */
#include "ir.h"

#include <string.h>

const OpInfo op_info[OP_COUNT] = {
#define UNARY(ID, name, ref, cuda, llvm, vjp, dom, tol, ex) \
  [OP_##ID] = {name, 1, OPF_ELEMENTWISE | OPF_DIFF | OPF_UNARY, "", "", dom, tol},
#define BINARY(ID, name, ref, cuda, llvm, va, vb, dom, tol, ex) \
  [OP_##ID] = {name, 2, OPF_ELEMENTWISE | OPF_DIFF | OPF_BINARY, "", "", dom, tol},
#define OP(ID, name, n_in, flags, attrs, required) [OP_##ID] = {name, n_in, flags, attrs, required, "", 0},
#include "ops.def"
};

Op op_from_name(const char *name) {
  for (int i = 0; i < OP_COUNT; i++)
    if (strcmp(op_info[i].name, name) == 0) return (Op)i;
  return OP_COUNT;
}

bool op_is_pointwise(Op op) { return (op_info[op].flags & OPF_ELEMENTWISE) || op == OP_SELECT || op == OP_CAST; }

const char *dtype_name(DType t) {
  switch (t) {
  case DTYPE_F32: return "f32";
  case DTYPE_I32: return "i32";
  case DTYPE_F64: return "f64";
  }
  return "?";
}

bool dtype_from_name(const char *s, DType *out) {
  if (strcmp(s, "f32") == 0) *out = DTYPE_F32;
  else if (strcmp(s, "i32") == 0) *out = DTYPE_I32;
  else return false;
  return true;
}

size_t dtype_size(DType t) { return t == DTYPE_F64 ? 8 : 4; }

static const char *const init_names[] = {"zeros", "ones", "xavier", "normal", "uniform"};

const char *init_name(InitKind k) { return init_names[k]; }

bool init_from_name(const char *s, InitKind *out) {
  for (int i = 0; i < 5; i++)
    if (strcmp(s, init_names[i]) == 0) {
      *out = (InitKind)i;
      return true;
    }
  return false;
}

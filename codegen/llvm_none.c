/* llvm_none.c — llvm_emit.h for a build without LLVM (-DBC_LLVM=OFF, for
 * machines that lack LLVM 14, such as a bare GPU machine): nothing is
 * JIT-compiled; every call fails with an error saying so, and the cpu
 * backend runs kernels through the C kernel evaluator instead. In an LLVM
 * build this file compiles to nothing. */
#ifdef BC_NO_LLVM
#include "llvm_emit.h"

static const char *const why = "this bertc was built without LLVM (-DBC_LLVM=OFF)";

bool llvm_jit_available(void) { return false; }

LlvmJit *llvm_jit_create(Diag *d) {
  diag_error(d, SRCLOC_NONE, "%s", why);
  return NULL;
}

void llvm_jit_free(LlvmJit *j) { (void)j; }

int llvm_jit_vector_width(const LlvmJit *j) {
  (void)j;
  return 1;
}

void llvm_jit_set_vector_width(LlvmJit *j, int w) {
  (void)j;
  (void)w;
}

void llvm_jit_set_picks(LlvmJit *j, bool on) {
  (void)j;
  (void)on;
}

const char *llvm_jit_describe(const LlvmJit *j) {
  (void)j;
  return why;
}

bool llvm_jit_gemm_panel(LlvmJit *j, int64_t K, LlvmGemmPanelFn *out, Diag *d) {
  (void)j;
  (void)K;
  *out = NULL;
  diag_error(d, SRCLOC_NONE, "%s", why);
  return false;
}

bool llvm_jit_compile(LlvmJit *j, const Kernel *const *kernels, int n, KernelFn *fns_out, Diag *d) {
  (void)j;
  (void)kernels;
  (void)n;
  (void)fns_out;
  diag_error(d, SRCLOC_NONE, "%s", why);
  return false;
}

char *llvm_emit_ir_text(const Kernel *k, Diag *d) {
  (void)k;
  diag_error(d, SRCLOC_NONE, "%s", why);
  return NULL;
}
#else
typedef int bc_llvm_none_empty; /* ISO C forbids an empty translation unit */
#endif

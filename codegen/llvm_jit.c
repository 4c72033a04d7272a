/* llvm_jit.c — the host and the JIT of the LLVM CPU code generator: the
 * native target and a TargetMachine for the host CPU, one module per
 * compile call optimized with default<O3> for it, ORC LLJIT holding the
 * code (llvm_emit.h's LlvmJit), and the IR text for `bertc -o`.
 * Not here: the IR of a kernel (llvm_emit.c, llvm_math.c). Invariants: a
 * module's triple and data layout come from the same TargetMachine its
 * passes run with (else nothing vectorizes); a failed compile leaves
 * nothing in the JIT. */
#include "llvm_internal.h"

#include "kernel_eval.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include <pthread.h>
#include <string.h>

/* ---- the host ----------------------------------------------------------- */

static pthread_once_t llvm_once = PTHREAD_ONCE_INIT;
static bool llvm_init_ok;
static void llvm_init(void) {
  llvm_init_ok = !LLVMInitializeNativeTarget() && !LLVMInitializeNativeAsmPrinter() &&
                 !LLVMInitializeNativeAsmParser();
}

/* Reports an LLVMErrorRef (consuming it) as a library error at our call. */
static void llvm_error(Diag *d, const char *call, LLVMErrorRef err) {
  char *msg = LLVMGetErrorMessage(err);
  diag_error(d, SRCLOC_NONE, "llvm_jit.c: %s failed: %s", call, msg);
  LLVMDisposeErrorMessage(msg);
}

static void host_free(Host *h) {
  if (h->tm) LLVMDisposeTargetMachine(h->tm);
  if (h->triple) LLVMDisposeMessage(h->triple);
  if (h->cpu) LLVMDisposeMessage(h->cpu);
  if (h->features) LLVMDisposeMessage(h->features);
  if (h->layout) LLVMDisposeMessage(h->layout);
  memset(h, 0, sizeof *h);
}

/* Triple, CPU, features and a TargetMachine for the host. The CPU name may be
 * "generic" on CPUs newer than LLVM 14; the feature string is complete. */
static bool host_init(Host *h, Diag *d) {
  memset(h, 0, sizeof *h);
  pthread_once(&llvm_once, llvm_init);
  if (!llvm_init_ok) {
    diag_error(d, SRCLOC_NONE, "llvm_jit.c: LLVMInitializeNativeTarget failed: no native target in this LLVM");
    return false;
  }
  char *def = LLVMGetDefaultTargetTriple();
  h->triple = LLVMNormalizeTargetTriple(def);
  LLVMDisposeMessage(def);
  h->cpu = LLVMGetHostCPUName();
  h->features = LLVMGetHostCPUFeatures();
  LLVMTargetRef target;
  char *err = NULL;
  if (LLVMGetTargetFromTriple(h->triple, &target, &err)) {
    diag_error(d, SRCLOC_NONE, "llvm_jit.c: LLVMGetTargetFromTriple(%s) failed: %s", h->triple, err);
    LLVMDisposeMessage(err);
    host_free(h);
    return false;
  }
  h->tm = LLVMCreateTargetMachine(target, h->triple, h->cpu, h->features, LLVMCodeGenLevelAggressive,
                                  LLVMRelocDefault, LLVMCodeModelJITDefault);
  if (!h->tm) {
    diag_error(d, SRCLOC_NONE, "llvm_jit.c: LLVMCreateTargetMachine(%s, %s) failed", h->triple, h->cpu);
    host_free(h);
    return false;
  }
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(h->tm);
  h->layout = LLVMCopyStringRepOfTargetData(td);
  LLVMDisposeTargetData(td);
  h->width = strstr(h->features, "+avx512f") ? 16 : 8;
  return true;
}

/* ---- modules -------------------------------------------------------------------- */

static LLVMModuleRef module_new(LLVMContextRef C, const Host *h, const char *name) {
  LLVMModuleRef M = LLVMModuleCreateWithNameInContext(name, C);
  LLVMSetTarget(M, h->triple);
  LLVMSetDataLayout(M, h->layout);
  return M;
}

/* Verifies and optimizes M in place. Loop vectorization is off: the code is
 * vectorized already and the scalar remainders are short; SLP stays on. */
static bool module_optimize(LLVMModuleRef M, const Host *h, Diag *d) {
  char *msg = NULL;
  if (LLVMVerifyModule(M, LLVMReturnStatusAction, &msg)) {
    diag_error(d, SRCLOC_NONE, "llvm_jit.c: LLVMVerifyModule failed (a bug in the emitter): %s", msg);
    LLVMDisposeMessage(msg);
    return false;
  }
  LLVMDisposeMessage(msg);
  LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(opts, 0);
  LLVMErrorRef err = LLVMRunPasses(M, "default<O3>", h->tm, opts);
  LLVMDisposePassBuilderOptions(opts);
  if (err) {
    llvm_error(d, "LLVMRunPasses(default<O3>)", err);
    return false;
  }
  return true;
}

/* ---- the JIT ------------------------------------------------------------------- */

struct LlvmJit {
  Host host;
  int width;
  bool no_picks; /* llvm_jit_set_picks(false) */
  LLVMOrcThreadSafeContextRef tsctx;
  LLVMOrcLLJITRef jit;
  VEC(char *) names; /* function names defined in this JIT */
  int n_modules;
  char desc[160];
};

bool llvm_jit_available(void) { return true; }

LlvmJit *llvm_jit_create(Diag *d) {
  LlvmJit *j = bc_calloc(1, sizeof *j);
  if (!host_init(&j->host, d)) {
    free(j);
    return NULL;
  }
  j->width = j->host.width;
  /* A null builder: LLJIT detects the host (CPU and features) itself. */
  LLVMErrorRef err = LLVMOrcCreateLLJIT(&j->jit, NULL);
  if (err) {
    llvm_error(d, "LLVMOrcCreateLLJIT", err);
    host_free(&j->host);
    free(j);
    return NULL;
  }
  /* Process symbols, in case LLVM lowers something to a libc/libm call. */
  LLVMOrcDefinitionGeneratorRef gen;
  err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(j->jit), NULL, NULL);
  if (err) {
    llvm_error(d, "LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess", err);
    llvm_jit_free(j);
    return NULL;
  }
  LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->jit), gen);
  j->tsctx = LLVMOrcCreateNewThreadSafeContext();
  llvm_jit_set_vector_width(j, j->width);
  return j;
}

void llvm_jit_free(LlvmJit *j) {
  if (!j) return;
  if (j->jit) {
    LLVMErrorRef err = LLVMOrcDisposeLLJIT(j->jit);
    if (err) LLVMConsumeError(err);
  }
  if (j->tsctx) LLVMOrcDisposeThreadSafeContext(j->tsctx);
  for (int i = 0; i < j->names.n; i++) free(j->names.data[i]);
  vec_free(&j->names);
  host_free(&j->host);
  free(j);
}

int llvm_jit_vector_width(const LlvmJit *j) { return j->width; }

void llvm_jit_set_vector_width(LlvmJit *j, int w) {
  BC_ASSERT(w >= 2 && w <= MAX_W / 4 * 4 && (w & (w - 1)) == 0);
  j->width = w;
  snprintf(j->desc, sizeof j->desc, "cpu=%s W=%d", j->host.cpu, w);
}

void llvm_jit_set_picks(LlvmJit *j, bool on) { j->no_picks = !on; }

const char *llvm_jit_describe(const LlvmJit *j) { return j->desc; }

static bool name_taken(const LlvmJit *j, char **fresh, int n_fresh, const char *s) {
  for (int i = 0; i < j->names.n; i++)
    if (!strcmp(j->names.data[i], s)) return true;
  for (int i = 0; i < n_fresh; i++)
    if (fresh[i] && !strcmp(fresh[i], s)) return true;
  return false;
}

/* Optimizes M (built by the caller; consumed) and adds it to the JIT, then
 * sets addrs[i] to function names[i] (NULL names skipped). On failure
 * nothing of M stays in the JIT. The names are the caller's. */
static bool jit_add_module(LlvmJit *j, LLVMModuleRef M, char *const *names, int n, uintptr_t *addrs, Diag *d) {
  if (!module_optimize(M, &j->host, d)) {
    LLVMDisposeModule(M);
    return false;
  }
  LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(j->jit);
  LLVMOrcResourceTrackerRef rt = LLVMOrcJITDylibCreateResourceTracker(jd);
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(M, j->tsctx); /* owns M */
  LLVMErrorRef err = LLVMOrcLLJITAddLLVMIRModuleWithRT(j->jit, rt, tsm);           /* owns tsm */
  bool ok = true;
  if (err) {
    llvm_error(d, "LLVMOrcLLJITAddLLVMIRModule", err);
    ok = false;
  }
  for (int i = 0; i < n && ok; i++) {
    if (!names[i]) continue;
    LLVMOrcExecutorAddress addr = 0;
    err = LLVMOrcLLJITLookup(j->jit, &addr, names[i]);
    if (err) {
      llvm_error(d, "LLVMOrcLLJITLookup", err);
      ok = false;
    }
    addrs[i] = (uintptr_t)addr;
  }
  if (!ok) {
    LLVMErrorRef e2 = LLVMOrcResourceTrackerRemove(rt);
    if (e2) LLVMConsumeError(e2);
  }
  LLVMOrcReleaseResourceTracker(rt); /* on success the code stays in the JITDylib */
  return ok;
}

/* A fresh module for j's next compile. */
static LLVMModuleRef jit_module(LlvmJit *j) {
  char mname[32];
  snprintf(mname, sizeof mname, "bertc_kernels_%d", j->n_modules++);
  return module_new(LLVMOrcThreadSafeContextGetContext(j->tsctx), &j->host, mname);
}

/* names[i] taken from here on (freed with the JIT), or freed on failure. */
static void jit_keep_names(LlvmJit *j, char **names, int n, bool ok) {
  for (int i = 0; i < n; i++) {
    if (ok && names[i]) vec_push(&j->names, names[i]);
    else free(names[i]);
  }
}

bool llvm_jit_compile(LlvmJit *j, const Kernel *const *kernels, int n, KernelFn *fns_out, Diag *d) {
  LLVMContextRef C = LLVMOrcThreadSafeContextGetContext(j->tsctx);
  LLVMModuleRef M = jit_module(j);
  char **names = bc_calloc((size_t)n + 1, sizeof(char *));
  uintptr_t *addrs = bc_calloc((size_t)n + 1, sizeof(uintptr_t));
  bool ok = true;
  Em E;
  llvm_em_init(&E, C, M, &j->host, j->width, d);
  E.no_picks = j->no_picks;
  for (int i = 0; i < n && ok; i++) {
    const Kernel *k = kernels[i];
    fns_out[i] = NULL;
    if (k->kind != KERNEL_LOOP) continue;
    if (!kernel_eval_supported(k, d)) {
      ok = false;
      break;
    }
    const char *base = k->name ? k->name : "kernel";
    names[i] = bc_strdup(base);
    for (int s = 2; name_taken(j, names, i, names[i]); s++) {
      free(names[i]);
      names[i] = bc_asprintf("%s.%d", base, s);
    }
    ok = llvm_emit_kernel(&E, k, names[i]);
  }
  llvm_em_free(&E);
  if (ok) ok = jit_add_module(j, M, names, n, addrs, d);
  else LLVMDisposeModule(M);
  for (int i = 0; i < n && ok; i++) fns_out[i] = names[i] ? (KernelFn)addrs[i] : NULL;
  jit_keep_names(j, names, n, ok);
  free(names);
  free(addrs);
  return ok;
}

bool llvm_jit_gemm_panel(LlvmJit *j, int64_t K, LlvmGemmPanelFn *out, Diag *d) {
  char *name = bc_asprintf("gemm_panel_k%lld", (long long)K);
  for (int s = 2; name_taken(j, &name, 0, name); s++) {
    free(name);
    name = bc_asprintf("gemm_panel_k%lld.%d", (long long)K, s);
  }
  LLVMModuleRef M = jit_module(j);
  uintptr_t addr = 0;
  bool ok = llvm_emit_gemm_panel(LLVMOrcThreadSafeContextGetContext(j->tsctx), M, &j->host, K, name) &&
            jit_add_module(j, M, &name, 1, &addr, d);
  *out = ok ? (LlvmGemmPanelFn)addr : NULL;
  jit_keep_names(j, &name, 1, ok);
  return ok;
}

char *llvm_emit_ir_text(const Kernel *k, Diag *d) {
  Host h;
  if (!host_init(&h, d)) return NULL;
  if (k->kind != KERNEL_LOOP || !kernel_eval_supported(k, d)) {
    if (k->kind != KERNEL_LOOP)
      diag_error(d, SRCLOC_NONE, "llvm_jit.c: kernel %s is not a LOOP kernel", k->name ? k->name : "(unnamed)");
    host_free(&h);
    return NULL;
  }
  LLVMContextRef C = LLVMContextCreate();
  LLVMModuleRef M = module_new(C, &h, k->name ? k->name : "kernel");
  Em E;
  llvm_em_init(&E, C, M, &h, h.width, d);
  bool ok = llvm_emit_kernel(&E, k, k->name ? k->name : "kernel");
  llvm_em_free(&E);
  char *out = NULL;
  if (ok && module_optimize(M, &h, d)) {
    char dom[96];
    char *ir = LLVMPrintModuleToString(M);
    out = bc_asprintf("; bertc kernel %s: domain %s, col_axis %d, %d instructions, W=%d (cpu %s)\n%s",
                      k->name ? k->name : "kernel", shape_str(&k->domain, dom), k->col_axis, k->insts.n, h.width,
                      h.cpu, ir);
    LLVMDisposeMessage(ir);
  }
  LLVMDisposeModule(M);
  LLVMContextDispose(C);
  host_free(&h);
  return out;
}

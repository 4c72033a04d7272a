/* test_cuda_emit.c — the CUDA code generator (codegen/cuda_emit.c) and the
 * NVRTC loader (runtime/nvrtc.c), on a machine without a GPU (NVRTC needs
 * none):
 *  - the exact text of small hand-built kernels: 16-byte float4 accesses
 *    when every view is aligned, scalar code when one is not, a softmax
 *    row kernel (warp shuffles, two phases, stores only in the last loop),
 *    a long-row softmax (block reduction), a column reduction (slices
 *    combined through shared memory), literals, launch shapes, an empty
 *    domain (grid 0), an unsupported kernel (an error);
 *  - every hand-built kernel (i32 ops, casts, select, iota, random, inf/NaN
 *    constants, layer norm and its backward) compiled by NVRTC for sm_90;
 *  - the whole training steps of the reference BERT (`pretrain`, `nli`) and
 *    of BERT-base `nli`, one NVRTC program per plan: every LOOP kernel gets
 *    a launch shape and the CUBIN is not empty (timings printed);
 *  - NVRTC errors (numbered source and log written, named in the error)
 *    and the on-disk cache (a second compile is a hit with the same bytes).
 * Exits 77 when libnvrtc cannot be loaded. Numerics on a device are
 * tests/test_gpu*.c's job. BC_CUDA_EMIT_OUT=DIR writes the BERT modules. */
#include "codegen/cuda_emit.h"
#include "codegen/kernel.h"
#include "passes/passes.h"
#include "runtime/nvrtc.h"
#include "runtime/cuda.h"
#include "runtime/cublas.h"
#include "tests/test.h"

#include <dirent.h>
#include <dlfcn.h>
#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MODEL BC_SOURCE_DIR "/models/bert.yaml"

/* ---- setup: a temporary directory for the cache and failure dumps ---------------- */

static char tmp_root[64];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void cleanup_tmp(void) {
  if (tmp_root[0]) nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* True when NVRTC loads; the first call makes the temporary directory and
 * points BC_CACHE_DIR (a fresh cache, so plans really compile) and
 * BC_DUMP_DIR there. */
static bool have_nvrtc(void) {
  static int state; /* 0 unknown, 1 yes, -1 no */
  if (state) return state > 0;
  Diag d;
  diag_init(&d);
  state = rtc_available(&d) ? 1 : -1;
  if (state < 0) diag_print(&d, stderr);
  diag_free(&d);
  if (state > 0) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/bc_cuda_emit_XXXXXX");
    BC_ASSERT(mkdtemp(tmp_root));
    atexit(cleanup_tmp);
    char *c = bc_asprintf("%s/cache", tmp_root), *u = bc_asprintf("%s/dump", tmp_root);
    setenv("BC_CACHE_DIR", c, 1);
    setenv("BC_DUMP_DIR", u, 1);
    free(c);
    free(u);
    fprintf(stderr, "  nvrtc %s, files in %s\n", rtc_version_string(), tmp_root);
  }
  return state > 0;
}

/* Every case needs NVRTC (also the text checks: without it the program
 * exits 77 rather than pass on half its cases). */
#define NEED_NVRTC() \
  do { \
    if (!have_nvrtc()) TEST_SKIP("libnvrtc not available"); \
  } while (0)

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Compiles src for sm_90; returns the CUBIN size (0 on failure, printed). */
static size_t compile(const char *src, const char *name, bool *from_cache, double *secs) {
  Diag d;
  diag_init(&d);
  void *cubin = NULL;
  size_t n = 0;
  double t0 = now();
  bool ok = rtc_compile(src, name, 90, &cubin, &n, from_cache, &d);
  if (secs) *secs = now() - t0;
  if (!ok) diag_print(&d, stderr);
  CHECK_MSG(ok, "%s compiles", name);
  free(cubin);
  diag_free(&d);
  return ok ? n : 0;
}

/* NVRTC's log for src compiled with nvrtc.c's options (rtc_compile keeps
 * the log of a success to itself): emitted code must compile without a
 * warning. Returns a malloc'd log, "" when clean. */
static char *nvrtc_log(const char *src) {
  typedef int (*Create)(void **, const char *, const char *, int, const char *const *, const char *const *);
  typedef int (*Compile)(void *, int, const char *const *);
  typedef int (*LogSize)(void *, size_t *);
  typedef int (*Log)(void *, char *);
  typedef int (*Destroy)(void **);
  void *lib = dlopen("libnvrtc.so.13", RTLD_NOW | RTLD_LOCAL);
  if (!lib) lib = dlopen("libnvrtc.so", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return bc_strdup("cannot load libnvrtc");
  Create create = (Create)dlsym(lib, "nvrtcCreateProgram");
  Compile comp = (Compile)dlsym(lib, "nvrtcCompileProgram");
  LogSize log_size = (LogSize)dlsym(lib, "nvrtcGetProgramLogSize");
  Log get_log = (Log)dlsym(lib, "nvrtcGetProgramLog");
  Destroy destroy = (Destroy)dlsym(lib, "nvrtcDestroyProgram");
  const char *opts[] = {"--gpu-architecture=sm_90", "-default-device", "--std=c++17", "-lineinfo", "--fmad=false"};
  void *prog = NULL;
  char *log = NULL;
  size_t n = 0;
  if (create(&prog, src, "module.cu", 0, NULL, NULL) == 0) {
    int rc = comp(prog, 5, opts);
    if (log_size(prog, &n) == 0) {
      log = bc_calloc(n + 1, 1);
      get_log(prog, log);
    }
    if (rc != 0 && log && !*log) {
      free(log);
      log = bc_strdup("compile failed");
    }
    destroy(&prog);
  }
  dlclose(lib);
  return log ? log : bc_strdup("cannot create a program");
}

/* ---- building kernels by hand (as tests/llvm_kernels.h) ------------------------------ */

static void kinit(Kernel *k, const char *name, Shape dom, int col_axis) {
  memset(k, 0, sizeof *k);
  k->kind = KERNEL_LOOP;
  k->name = bc_intern(name);
  k->first_node = -1;
  k->domain = dom;
  k->col_axis = col_axis;
}

static void kfree(Kernel *k) {
  vec_free(&k->views);
  vec_free(&k->insts);
  vec_free(&k->nodes);
}

static int64_t lastdim(const Kernel *k) { return k->domain.rank ? k->domain.dim[k->domain.rank - 1] : 1; }

static int kview(Kernel *k, int64_t offset, const int64_t *stride) {
  KView v = {0};
  v.value = k->views.n;
  v.offset = offset;
  for (int d = 0; d < k->domain.rank; d++) v.stride[d] = stride[d];
  vec_push(&k->views, v);
  return k->views.n - 1;
}
#define ST(...) ((const int64_t[]){__VA_ARGS__})

static const KInst *kat(const Kernel *k, int i) { return &k->insts.data[i]; }

static int kpush(Kernel *k, KInstKind kind, DType t, Op op, int a, int b, int c, bool row) {
  KInst in = {0};
  in.kind = kind;
  in.op = op;
  in.a = a;
  in.b = b;
  in.c = c;
  in.view = -1;
  in.node = -1;
  in.dtype = t;
  in.row = row;
  vec_push(&k->insts, in);
  return k->insts.n - 1;
}

static int kload(Kernel *k, int view, DType t) {
  bool row = k->col_axis < 0 && k->domain.rank && k->views.data[view].stride[k->domain.rank - 1] == 0 && lastdim(k) > 1;
  int i = kpush(k, KI_LOAD, t, OP_COUNT, -1, -1, -1, row);
  k->insts.data[i].view = view;
  return i;
}
static int kconst(Kernel *k, double v, DType t) {
  int i = kpush(k, KI_CONST, t, OP_COUNT, -1, -1, -1, k->col_axis < 0);
  k->insts.data[i].imm = v;
  return i;
}
static int kun(Kernel *k, Op op, int a) { return kpush(k, KI_UNARY, kat(k, a)->dtype, op, a, -1, -1, kat(k, a)->row); }
static int kbin(Kernel *k, Op op, int a, int b) {
  return kpush(k, KI_BINARY, kat(k, a)->dtype, op, a, b, -1, kat(k, a)->row && kat(k, b)->row);
}
static int ksel(Kernel *k, int c, int a, int b) {
  return kpush(k, KI_SELECT, kat(k, a)->dtype, OP_COUNT, c, a, b, kat(k, c)->row && kat(k, a)->row && kat(k, b)->row);
}
static int kcast(Kernel *k, int a, DType t) { return kpush(k, KI_CAST, t, OP_COUNT, a, -1, -1, kat(k, a)->row); }
static int kiota(Kernel *k, int axis, DType t) {
  int i = kpush(k, KI_IOTA, t, OP_COUNT, -1, -1, -1, k->col_axis < 0 && axis != k->domain.rank - 1);
  k->insts.data[i].axis = axis;
  return i;
}
static int krand(Kernel *k, uint32_t key) {
  int i = kpush(k, KI_RANDOM, DTYPE_F32, OP_COUNT, -1, -1, -1, false);
  k->insts.data[i].key = key;
  return i;
}
static int kreduce(Kernel *k, Op op, int a) {
  int i = kpush(k, KI_REDUCE, kat(k, a)->dtype, op, a, -1, -1, k->col_axis < 0);
  k->insts.data[i].axis = k->col_axis >= 0 ? k->col_axis : k->domain.rank - 1;
  return i;
}
static void kstore(Kernel *k, int view, int a) {
  int i = kpush(k, KI_STORE, kat(k, a)->dtype, OP_COUNT, a, -1, -1, kat(k, a)->row);
  k->insts.data[i].view = view;
}

/* y = a + b over [rows, L] through views at offset `off` (contiguous). */
static void build_add(Kernel *k, const char *name, int64_t rows, int64_t L, int64_t off) {
  kinit(k, name, shape_of(2, (int)rows, (int)L), -1);
  int va = kview(k, off, ST(L, 1)), vb = kview(k, 0, ST(L, 1)), vy = kview(k, 0, ST(L, 1));
  int a = kload(k, va, DTYPE_F32), b = kload(k, vb, DTYPE_F32);
  kstore(k, vy, kbin(k, OP_ADD, a, b));
}

/* Every elementwise row of graph/ops.def on f32 operands and on i32 ones
 * (the integer forms, and the f32 round trip of the others), each stored
 * to a view of its own: NVRTC then compiles every op's CUDA form. */
static void build_every_op(Kernel *k, const char *name, int64_t L) {
  kinit(k, name, shape_of(2, 3, (int)L), -1);
  int x = kload(k, kview(k, 0, ST(L, 1)), DTYPE_F32), y = kload(k, kview(k, 0, ST(L, 1)), DTYPE_F32);
  int xi = kload(k, kview(k, 0, ST(L, 1)), DTYPE_I32), yi = kload(k, kview(k, 0, ST(L, 1)), DTYPE_I32);
  for (int o = 0; o < OP_COUNT; o++) {
    const OpInfo *info = &op_info[o];
    if (!(info->flags & OPF_ELEMENTWISE)) continue;
    bool un = info->n_in == 1;
    kstore(k, kview(k, 0, ST(L, 1)), un ? kun(k, (Op)o, x) : kbin(k, (Op)o, x, y));
    kstore(k, kview(k, 0, ST(L, 1)), un ? kun(k, (Op)o, xi) : kbin(k, (Op)o, xi, yi));
  }
}

/* y = softmax(x) over the last axis of [rows, L]. */
static void build_softmax(Kernel *k, const char *name, int64_t rows, int64_t L) {
  kinit(k, name, shape_of(2, (int)rows, (int)L), -1);
  int vx = kview(k, 0, ST(L, 1)), vy = kview(k, 0, ST(L, 1));
  int x = kload(k, vx, DTYPE_F32);
  int m = kreduce(k, OP_REDUCE_MAX, x);
  int e = kun(k, OP_EXP, kbin(k, OP_SUB, x, m));
  int s = kreduce(k, OP_REDUCE_SUM, e);
  kstore(k, vy, kbin(k, OP_DIV, e, s));
}

/* db = sum over axis 0 of g [C, L] (a bias gradient). */
static void build_colsum(Kernel *k, const char *name, int64_t C, int64_t L) {
  kinit(k, name, shape_of(2, (int)C, (int)L), 0);
  int vg = kview(k, 0, ST(L, 1)), vb = kview(k, 0, ST(0, 1));
  kstore(k, vb, kreduce(k, OP_REDUCE_SUM, kload(k, vg, DTYPE_F32)));
}

/* Layer norm over [rows, L] with gamma, beta: mean, then variance (two
 * phases); also stores the row's rstd (a row value, once per row). */
static void build_layernorm(Kernel *k, const char *name, int64_t rows, int64_t L) {
  kinit(k, name, shape_of(2, (int)rows, (int)L), -1);
  int vx = kview(k, 0, ST(L, 1)), vg = kview(k, 0, ST(0, 1)), vbeta = kview(k, 0, ST(0, 1));
  int vy = kview(k, 0, ST(L, 1)), vr = kview(k, 0, ST(1, 0));
  int x = kload(k, vx, DTYPE_F32);
  int invL = kconst(k, 1.0 / (double)L, DTYPE_F32);
  int mean = kbin(k, OP_MUL, kreduce(k, OP_REDUCE_SUM, x), invL);
  int xc = kbin(k, OP_SUB, x, mean);
  int var = kbin(k, OP_MUL, kreduce(k, OP_REDUCE_SUM, kbin(k, OP_MUL, xc, xc)), invL);
  int rstd = kun(k, OP_RSQRT, kbin(k, OP_ADD, var, kconst(k, 1e-5, DTYPE_F32)));
  int y = kbin(k, OP_ADD, kbin(k, OP_MUL, kbin(k, OP_MUL, xc, rstd), kload(k, vg, DTYPE_F32)), kload(k, vbeta, DTYPE_F32));
  kstore(k, vy, y);
  kstore(k, vr, rstd);
}

/* Layer-norm parameter gradients: dgamma = sum_k g*xhat, dbeta = sum_k g
 * over axis 0 of [C, L], with a post-reduction scale. */
static void build_ln_param_grads(Kernel *k, const char *name, int64_t C, int64_t L) {
  kinit(k, name, shape_of(2, (int)C, (int)L), 0);
  int vg = kview(k, 0, ST(L, 1)), vx = kview(k, 0, ST(L, 1)), vdg = kview(k, 0, ST(0, 1)), vdb = kview(k, 0, ST(0, 1));
  int g = kload(k, vg, DTYPE_F32), x = kload(k, vx, DTYPE_F32);
  int s1 = kreduce(k, OP_REDUCE_SUM, kbin(k, OP_MUL, g, x));
  int s2 = kreduce(k, OP_REDUCE_SUM, g);
  kstore(k, vdg, kbin(k, OP_MUL, s1, kconst(k, 0.5, DTYPE_F32)));
  kstore(k, vdb, s2);
}

/* Dropout with iota, cast and i32 arithmetic: y = u < p ? 0 : x * 2 where
 * u is Philox; idx = i32(iota) * 3 / (iota - 5) (division by zero -> 0). */
static void build_dropout_int(Kernel *k, const char *name, int64_t rows, int64_t L) {
  kinit(k, name, shape_of(2, (int)rows, (int)L), -1);
  int vx = kview(k, 0, ST(L, 1)), vy = kview(k, 0, ST(L, 1)), vi = kview(k, 0, ST(L, 1));
  int x = kload(k, vx, DTYPE_F32);
  int u = krand(k, 0xC0FFEEu);
  int drop = kbin(k, OP_LT, u, kconst(k, 0.1, DTYPE_F32));
  kstore(k, vy, ksel(k, drop, kconst(k, 0.0, DTYPE_F32), kbin(k, OP_MUL, x, kconst(k, 2.0, DTYPE_F32))));
  int j = kiota(k, 1, DTYPE_I32);
  int q = kbin(k, OP_DIV, kbin(k, OP_MUL, j, kconst(k, 3, DTYPE_I32)), kbin(k, OP_SUB, j, kconst(k, 5, DTYPE_I32)));
  int big = kcast(k, kconst(k, 3e9, DTYPE_F32), DTYPE_I32);
  int r = kun(k, OP_EXP, kun(k, OP_NEG, kbin(k, OP_MAX, q, big)));
  kstore(k, vi, kbin(k, OP_ADD, r, kcast(k, kun(k, OP_TANH, kcast(k, j, DTYPE_F32)), DTYPE_I32)));
}

/* Cross-entropy style row kernel over i32 labels: picked = sum(select(iota
 * == label, x, 0)), lse = max + log(sum(exp(x - max))); loss = lse - picked
 * (a row value stored once per row); also an inf and a NaN constant. */
static void build_xent(Kernel *k, const char *name, int64_t rows, int64_t L) {
  kinit(k, name, shape_of(2, (int)rows, (int)L), -1);
  int vx = kview(k, 0, ST(L, 1)), vl = kview(k, 0, ST(1, 0)), vloss = kview(k, 0, ST(1, 0));
  int vd = kview(k, 0, ST(L, 1));
  int x = kload(k, vx, DTYPE_F32), lab = kload(k, vl, DTYPE_I32);
  int hit = kbin(k, OP_EQ, kiota(k, 1, DTYPE_I32), lab);
  int picked = kreduce(k, OP_REDUCE_SUM, ksel(k, hit, x, kconst(k, 0.0, DTYPE_F32)));
  int m = kreduce(k, OP_REDUCE_MAX, kbin(k, OP_MIN, x, kconst(k, INFINITY, DTYPE_F32)));
  int s = kreduce(k, OP_REDUCE_SUM, kun(k, OP_EXP, kbin(k, OP_SUB, x, m)));
  int lse = kbin(k, OP_ADD, m, kun(k, OP_LOG, s));
  kstore(k, vloss, kbin(k, OP_SUB, lse, picked));
  int nan = kconst(k, NAN, DTYPE_F32);
  int cnt = kreduce(k, OP_REDUCE_SUM, kcast(k, hit, DTYPE_I32));
  kstore(k, vd, ksel(k, kcast(k, cnt, DTYPE_F32), kun(k, OP_RECIP, kun(k, OP_SQRT, kun(k, OP_RELU, x))), nan));
}

/* Row sums and maxes of i32 (wrapping, *1000003) over [6, L]; i32 division. */
static void build_int_rows(Kernel *k, const char *name, int64_t L) {
  kinit(k, name, shape_of(2, 6, (int)L), -1);
  int vx = kview(k, 0, ST(L, 1)), vs = kview(k, 0, ST(1, 0)), vm = kview(k, 0, ST(1, 0)), vy = kview(k, 0, ST(L, 1));
  int x = kload(k, vx, DTYPE_I32);
  int s = kreduce(k, OP_REDUCE_SUM, kbin(k, OP_MUL, x, kconst(k, 1000003, DTYPE_I32)));
  int m = kreduce(k, OP_REDUCE_MAX, kun(k, OP_NEG, x));
  kstore(k, vs, s);
  kstore(k, vm, m);
  kstore(k, vy, kbin(k, OP_DIV, kbin(k, OP_SUB, x, m), kbin(k, OP_SUB, x, kconst(k, 3, DTYPE_I32))));
}

/* An elementwise kernel over [3, 5, L] with a per-row load, a per-row store
 * (once per row), iota along two axes and random; x at offset 4. */
static void build_row_store(Kernel *k, const char *name, int64_t L) {
  kinit(k, name, shape_of(3, 3, 5, (int)L), -1);
  int vx = kview(k, 4, ST(5 * L, L, 1)), vr = kview(k, 0, ST(5, 1, 0)), vo = kview(k, 0, ST(5, 1, 0));
  int vy = kview(k, 0, ST(5 * L, L, 1));
  int x = kload(k, vx, DTYPE_F32), r = kload(k, vr, DTYPE_F32);
  int r2 = kbin(k, OP_MUL, r, kconst(k, 3.0, DTYPE_F32));
  kstore(k, vo, r2);
  int io = kcast(k, kiota(k, 2, DTYPE_I32), DTYPE_F32), i1 = kiota(k, 1, DTYPE_F32);
  kstore(k, vy, kbin(k, OP_ADD, kbin(k, OP_MUL, x, r2), kbin(k, OP_ADD, io, kbin(k, OP_MUL, i1, krand(k, 9)))));
}

/* A column kernel over the middle axis of [D0, 300, 33]: a stored tanh (in
 * the loop), a sum scaled by a column-invariant load after it, an i32 max,
 * and random (every index of the point). */
static void build_col_mid(Kernel *k, const char *name, int D0) {
  kinit(k, name, shape_of(3, D0, 300, 33), 1);
  int64_t s0 = D0 > 1 ? 300 * 33 : 0;
  int vx = kview(k, 0, ST(s0, 33, 1)), vsc = kview(k, 0, ST(D0 > 1 ? 33 : 0, 0, 1));
  int vo = kview(k, 0, ST(D0 > 1 ? 33 : 0, 0, 1)), vpre = kview(k, 0, ST(s0, 33, 1));
  int vi = kview(k, 0, ST(D0 > 1 ? 33 : 0, 0, 1));
  int x = kload(k, vx, DTYPE_F32);
  int x2 = kbin(k, OP_MUL, kun(k, OP_TANH, x), krand(k, 5));
  kstore(k, vpre, x2);
  int s = kreduce(k, OP_REDUCE_SUM, x2);
  kstore(k, vo, kbin(k, OP_MUL, s, kload(k, vsc, DTYPE_F32)));
  int ci = kcast(k, kbin(k, OP_MUL, x, kconst(k, 100.0, DTYPE_F32)), DTYPE_I32);
  kstore(k, vi, kreduce(k, OP_REDUCE_MAX, ci));
}

/* The text of kernel `name` in src (from its comment to its closing brace). */
static char *kernel_text(const char *src, const char *name) {
  char key[128];
  snprintf(key, sizeof key, "\n// %s: ", name);
  const char *s = strstr(src, key);
  if (!s) return bc_strdup("");
  s++;
  const char *e = strstr(s, "\n}\n");
  return e ? bc_asprintf("%.*s", (int)(e - s + 3), s) : bc_strdup(s);
}

static char *emit1(const Kernel *k, CudaLaunch *l) {
  Diag d;
  diag_init(&d);
  char *src = cuda_emit_kernel(NULL, k, l, &d);
  if (!src) diag_print(&d, stderr);
  diag_free(&d);
  CHECK_MSG(src != NULL, "%s emits", k->name);
  return src;
}

/* ---- exact text ------------------------------------------------------------------------------ */

TEST(elementwise_add_float4_exact) {
  NEED_NVRTC();
  Kernel k;
  build_add(&k, "k1_add", 64, 128, 0);
  CudaLaunch l = {0};
  char *src = emit1(&k, &l);
  if (src) {
    char *t = kernel_text(src, "k1_add");
    CHECK_STR(t,
              "// k1_add: domain [64, 128], elementwise, 4 elements per thread (16-byte accesses)\n"
              "extern \"C\" __global__ void __launch_bounds__(256) k1_add(float *v0, float *v1, float *v2, const BcRunInfo *info) {\n"
              "  const long long t = (long long)blockIdx.x * 256 + threadIdx.x;\n"
              "  if (t >= 2048) return;\n"
              "  const int q = (int)t;  // 4 consecutive elements of the last axis\n"
              "  const int j = q % 32 * 4;\n"
              "  const int i0 = q / 32;\n"
              "  const int p0 = i0 * 128;\n"
              "  const int p1 = i0 * 128;\n"
              "  const int p2 = i0 * 128;\n"
              "  const float4 q0 = *(const float4 *)(v0 + p0 + j);\n"
              "  const float4 q1 = *(const float4 *)(v1 + p1 + j);\n"
              "  float4 w3;\n"
              "  #pragma unroll\n"
              "  for (int e = 0; e < 4; e++) {\n"
              "    const float x0 = bc_lane(q0, e);\n"
              "    const float x1 = bc_lane(q1, e);\n"
              "    const float x2 = x0 + x1;\n"
              "    bc_set_lane(w3, e, x2);\n"
              "  }\n"
              "  *(float4 *)(v2 + p2 + j) = w3;\n"
              "}\n");
    free(t);
    CHECK_STR(l.name, "k1_add");
    CHECK_EQ_INT(l.grid, 8);
    CHECK_EQ_INT(l.block, 256);
    CHECK_EQ_INT(l.smem_bytes, 0);
  }
  free(src);
  kfree(&k);
}

TEST(elementwise_unaligned_is_scalar) {
  NEED_NVRTC();
  /* a view at offset 1 (16-byte loads would be misaligned), and L = 6 */
  static const struct {
    int64_t L, off;
  } cases[] = {{128, 1}, {6, 0}};
  for (int c = 0; c < 2; c++) {
    Kernel k;
    build_add(&k, "k2_add", 64, cases[c].L, cases[c].off);
    CudaLaunch l = {0};
    char *src = emit1(&k, &l);
    if (src) {
      char *t = kernel_text(src, "k2_add");
      CHECK_MSG(!strstr(t, "float4"), "scalar code:\n%s", t);
      CHECK(strstr(t, "const float x0 = v0[p0 + j];\n") != NULL);
      CHECK(strstr(t, "v2[p2 + j] = x2;\n") != NULL);
      CHECK(strstr(t, cases[c].off ? "const int p0 = 1 + i0 * 128;\n" : "const int p0 = i0 * 6;\n") != NULL);
      CHECK_EQ_INT(l.grid, (64 * cases[c].L + 255) / 256);
      free(t);
    }
    free(src);
    kfree(&k);
  }
}

TEST(softmax_row_kernel_exact) {
  NEED_NVRTC();
  Kernel k;
  build_softmax(&k, "k3_softmax", 100, 128);
  CudaLaunch l = {0};
  char *src = emit1(&k, &l);
  if (src) {
    char *t = kernel_text(src, "k3_softmax");
    CHECK_STR(t,
              "// k3_softmax: domain [100, 128], row kernel: one warp per row (100 rows)\n"
              "extern \"C\" __global__ void __launch_bounds__(256) k3_softmax(float *v0, float *v1, const BcRunInfo *info) {\n"
              "  const int lane = threadIdx.x & 31;\n"
              "  const int row = (int)blockIdx.x * 8 + (threadIdx.x >> 5);  // one warp per row\n"
              "  if (row >= 100) return;  // the whole warp\n"
              "  const int i0 = row;\n"
              "  const int p0 = i0 * 128;\n"
              "  const int p1 = i0 * 128;\n"
              "  // phase 0: 1 reduction\n"
              "  float acc1 = __int_as_float(0xff800000);\n"
              "  for (int j = lane; j < 128; j += 32) {\n"
              "    const float x0 = v0[p0 + j];\n"
              "    acc1 = bc_acc_max(acc1, x0);\n"
              "  }\n"
              "  const float x1 = bc_warp_max(acc1);\n"
              "  // phase 1: 1 reduction\n"
              "  float acc4 = -0.0f;\n"
              "  for (int j = lane; j < 128; j += 32) {\n"
              "    const float x0 = v0[p0 + j];\n"
              "    const float x2 = x0 - x1;\n"
              "    const float x3 = expf(x2);\n"
              "    acc4 = bc_acc_sum(acc4, x3);\n"
              "  }\n"
              "  const float x4 = bc_warp_sum(acc4);\n"
              "  // stores\n"
              "  for (int j = lane; j < 128; j += 32) {\n"
              "    const float x0 = v0[p0 + j];\n"
              "    const float x2 = x0 - x1;\n"
              "    const float x3 = expf(x2);\n"
              "    const float x5 = x3 / x4;\n"
              "    v1[p1 + j] = x5;\n"
              "  }\n"
              "}\n");
    free(t);
    /* the warp reductions are shuffles */
    CHECK(strstr(src, "template <class T> __device__ __forceinline__ T bc_warp_max(T v) {") != NULL);
    CHECK(strstr(src, "__shfl_xor_sync(0xffffffffu, v, m)") != NULL);
    CHECK_EQ_INT(l.grid, 13); /* 100 rows, 8 per block */
    CHECK_EQ_INT(l.block, 256);
  }
  free(src);
  kfree(&k);
}

TEST(long_rows_use_a_block) {
  NEED_NVRTC();
  static const struct {
    int64_t L;
    int block;
  } cases[] = {{2000, 256}, {30522, 512}};
  for (int c = 0; c < 2; c++) {
    Kernel k;
    build_softmax(&k, "k4_softmax", 10, cases[c].L);
    CudaLaunch l = {0};
    char *src = emit1(&k, &l);
    if (src) {
      char *t = kernel_text(src, "k4_softmax");
      char want[128];
      snprintf(want, sizeof want, "const float x1 = bc_block_max<%d>(acc1, sm_float);", cases[c].block / 32);
      CHECK_MSG(strstr(t, want) != NULL, "%s in\n%s", want, t);
      CHECK(strstr(t, "__shared__ float sm_float[32];") != NULL);
      snprintf(want, sizeof want, "for (int j = threadIdx.x; j < %lld; j += %d) {", (long long)cases[c].L, cases[c].block);
      CHECK_MSG(strstr(t, want) != NULL, "%s", want);
      CHECK_EQ_INT(l.grid, 10);
      CHECK_EQ_INT(l.block, cases[c].block);
      free(t);
    }
    free(src);
    kfree(&k);
  }
}

TEST(column_kernel_exact) {
  NEED_NVRTC();
  Kernel k;
  build_colsum(&k, "k5_reduce_sum", 48, 40);
  CudaLaunch l = {0};
  char *src = emit1(&k, &l);
  if (src) {
    char *t = kernel_text(src, "k5_reduce_sum");
    CHECK_STR(t,
              "// k5_reduce_sum: domain [48, 40], column reduction over axis 0: blocks of 32 outputs x 8 slices of the axis\n"
              "extern \"C\" __global__ void __launch_bounds__(256) k5_reduce_sum(float *v0, float *v1, const BcRunInfo *info) {\n"
              "  __shared__ float part1[8][32];\n"
              "  const int tj = threadIdx.x & 31, tk = threadIdx.x >> 5;  // output, slice of axis 0\n"
              "  const int j = (int)(blockIdx.x % 2) * 32 + tj;\n"
              "  const int p0 = 0;\n"
              "  const int p1 = 0;\n"
              "  float acc1 = -0.0f;\n"
              "  if (j < 40) {\n"
              "    for (int i0 = tk; i0 < 48; i0 += 8) {\n"
              "      const float x0 = v0[p0 + i0 * 40 + j];\n"
              "      acc1 = bc_acc_sum(acc1, x0);\n"
              "    }\n"
              "  }\n"
              "  part1[tk][tj] = acc1;\n"
              "  __syncthreads();\n"
              "  if (tk == 0 && j < 40) {  // slices combined in order; then what follows the reduction\n"
              "    float x1 = part1[0][tj];\n"
              "    for (int s = 1; s < 8; s++) x1 = bc_acc_sum(x1, part1[s][tj]);\n"
              "    v1[p1 + j] = x1;\n"
              "  }\n"
              "}\n");
    free(t);
    CHECK_EQ_INT(l.grid, 2);
    CHECK_EQ_INT(l.block, 256);
  }
  free(src);
  kfree(&k);
  /* a long column with few outputs: blocks of 8 outputs x 64 slices */
  build_colsum(&k, "k6_reduce_sum", 1024, 768);
  src = emit1(&k, &l);
  if (src) {
    CHECK(strstr(src, "const int tj = threadIdx.x & 7, tk = threadIdx.x >> 3;") != NULL);
    CHECK(strstr(src, "__shared__ float part1[64][8];") != NULL);
    CHECK(strstr(src, "for (int i0 = tk; i0 < 1024; i0 += 64) {") != NULL);
  }
  CHECK_EQ_INT(l.block, 512);
  CHECK_EQ_INT(l.grid, 96);
  free(src);
  kfree(&k);
}

TEST(literals_and_row_stores) {
  NEED_NVRTC();
  Kernel k;
  build_xent(&k, "k7_xent", 4, 50);
  CudaLaunch l = {0};
  char *src = emit1(&k, &l);
  if (src) {
    char *t = kernel_text(src, "k7_xent");
    CHECK(strstr(t, "= __int_as_float(0x7f800000);") != NULL);      /* inf */
    CHECK(strstr(t, "= __int_as_float(0x7fc00000);") != NULL);      /* NaN */
    CHECK(strstr(t, "const int x1 = v1[p1];") != NULL);             /* a row load, once */
    CHECK(strstr(t, "const int x2 = (int)j;") != NULL);             /* iota along the rows */
    CHECK(strstr(t, "__syncwarp();") != NULL);
    CHECK(strstr(t, "if (lane == 0) {\n    v2[p2] = x") != NULL);   /* the loss, once per row */
    /* the three reductions of phase 0 share one loop, the sum of phase 1 another */
    CHECK(strstr(t, "// phase 0: 3 reductions") != NULL);
    CHECK(strstr(t, "// phase 1: 1 reduction\n") != NULL);
    CHECK(strstr(t, "bc_warp_sum(acc") != NULL);
    free(t);
  }
  free(src);
  kfree(&k);
  /* i32 constants convert like a cast at emit time; floats keep a point */
  kinit(&k, "k8_const", shape_of(1, 8), -1);
  int vi = kview(&k, 0, ST(1)), vf = kview(&k, 0, ST(1)), vg = kview(&k, 0, ST(1));
  int c0 = kconst(&k, 3e9, DTYPE_I32), c1 = kconst(&k, -2147483648.0, DTYPE_I32);
  kstore(&k, vi, kbin(&k, OP_ADD, c0, c1));
  int c4 = kconst(&k, 1.0, DTYPE_F32), c5 = kconst(&k, 0.1, DTYPE_F32);
  kstore(&k, vf, kbin(&k, OP_ADD, c4, c5));
  int c8 = kconst(&k, -0.0, DTYPE_F32), c9 = kconst(&k, 1e30, DTYPE_F32);
  kstore(&k, vg, kbin(&k, OP_MUL, c8, c9));
  src = emit1(&k, &l);
  if (src) {
    char *t = kernel_text(src, "k8_const");
    CHECK(strstr(t, "const int x0 = -1294967296;") != NULL);
    CHECK(strstr(t, "const int x1 = (-2147483647 - 1);") != NULL);
    CHECK(strstr(t, "const float x4 = 1.0f;") != NULL);
    CHECK(strstr(t, "const float x5 = 0.100000001f;") != NULL);
    CHECK(strstr(t, "const float x8 = -0.0f;") != NULL);
    CHECK(strstr(t, "const float x9 = 1.00000002e+30f;") != NULL);
    CHECK(strstr(t, "const int x2 = bc_add(x0, x1);") != NULL);
    free(t);
  }
  free(src);
  kfree(&k);
}

TEST(empty_domain_launches_nothing) {
  NEED_NVRTC();
  Kernel k;
  build_softmax(&k, "k10_softmax", 0, 8);
  CudaLaunch l = {0};
  char *src = emit1(&k, &l);
  if (src) {
    CHECK(strstr(src, "// k10_softmax: domain [0, 8], no elements\n") != NULL);
    CHECK_EQ_INT(l.grid, 0);
    char *log = nvrtc_log(src);
    CHECK_MSG(!*log, "NVRTC says:\n%s", log);
    free(log);
  }
  free(src);
  kfree(&k);
}

TEST(unsupported_kernel_is_an_error) {
  NEED_NVRTC();
  Kernel k;
  kinit(&k, "k9_bad", shape_of(2, 4, 8), -1);
  int vx = kview(&k, 0, ST(8, 1)), vy = kview(&k, 0, ST(0, 1));
  int r = kreduce(&k, OP_REDUCE_SUM, kload(&k, vx, DTYPE_F32));
  k.insts.data[r].axis = 0; /* a row kernel reducing a leading axis */
  kstore(&k, vy, r);
  Diag d;
  diag_init(&d);
  CudaLaunch l = {0};
  char *src = cuda_emit_kernel(NULL, &k, &l, &d);
  CHECK(src == NULL);
  CHECK(d.n_errors > 0 && strstr(diag_first(&d), "k9_bad") != NULL);
  free(src);
  diag_free(&d);
  kfree(&k);
}

/* ---- NVRTC -------------------------------------------------------------------------------------- */

/* Every hand-built kernel in one module, compiled for sm_90. */
TEST(hand_built_kernels_compile) {
  NEED_NVRTC();
  KernelPlan p = {0};
  Kernel k;
  build_add(&k, "k1_add", 64, 128, 0);
  vec_push(&p.kernels, k);
  build_add(&k, "k2_add", 64, 128, 1);
  vec_push(&p.kernels, k);
  build_softmax(&k, "k3_softmax", 100, 128);
  vec_push(&p.kernels, k);
  build_softmax(&k, "k4_softmax", 10, 30522);
  vec_push(&p.kernels, k);
  build_colsum(&k, "k5_reduce_sum", 64, 48);
  vec_push(&p.kernels, k);
  build_layernorm(&k, "k6_layernorm", 33, 768);
  vec_push(&p.kernels, k);
  build_layernorm(&k, "k7_layernorm", 3, 3000);
  vec_push(&p.kernels, k);
  build_ln_param_grads(&k, "k8_ln_grads", 1024, 100);
  vec_push(&p.kernels, k);
  build_dropout_int(&k, "k9_dropout", 16, 64);
  vec_push(&p.kernels, k);
  build_dropout_int(&k, "k10_dropout", 16, 10);
  vec_push(&p.kernels, k);
  build_xent(&k, "k11_xent", 4, 50);
  vec_push(&p.kernels, k);
  build_xent(&k, "k12_xent", 4, 5000);
  vec_push(&p.kernels, k);
  kinit(&k, "k13_scalar", shape_of(0), -1); /* rank 0 */
  kstore(&k, kview(&k, 0, ST(0)), kun(&k, OP_LOG, kconst(&k, 2.0, DTYPE_F32)));
  vec_push(&p.kernels, k);
  build_int_rows(&k, "k14_int_rows", 77);
  vec_push(&p.kernels, k);
  build_int_rows(&k, "k15_int_rows", 2000);
  vec_push(&p.kernels, k);
  build_row_store(&k, "k16_row_store", 8);
  vec_push(&p.kernels, k);
  build_row_store(&k, "k17_row_store", 7);
  vec_push(&p.kernels, k);
  build_col_mid(&k, "k18_col_mid", 4);
  vec_push(&p.kernels, k);
  build_col_mid(&k, "k19_col_mid", 1);
  vec_push(&p.kernels, k);
  build_softmax(&k, "k20_softmax", 1, 5000); /* one row */
  k.domain = shape_of(1, 5000);
  for (int v = 0; v < k.views.n; v++) k.views.data[v].stride[0] = 1;
  for (int i = 0; i < k.insts.n; i++)
    if (k.insts.data[i].kind == KI_REDUCE) k.insts.data[i].axis = 0;
  vec_push(&p.kernels, k);
  build_every_op(&k, "k21_every_op", 129);
  vec_push(&p.kernels, k);
  CudaLaunch launches[32] = {{0}};
  Diag d;
  diag_init(&d);
  char *src = cuda_emit_plan(NULL, &p, launches, &d);
  if (!src) diag_print(&d, stderr);
  CHECK(src != NULL);
  if (src) {
    double secs = 0;
    bool hit = true;
    size_t n = compile(src, "hand_built", &hit, &secs);
    CHECK(n > 0);
    CHECK(!hit);
    fprintf(stderr, "  %d kernels, %zu bytes of CUDA C: CUBIN %zu bytes in %.2f s\n", p.kernels.n, strlen(src), n, secs);
    char *log = nvrtc_log(src);
    CHECK_MSG(!*log, "NVRTC says:\n%s", log);
    free(log);
    CHECK(strstr(src, "extern \"C\" __global__ void __launch_bounds__(256) k6_layernorm(") != NULL);
    CHECK(strstr(src, "// phase 1: 1 reduction") != NULL);
    for (int i = 0; i < p.kernels.n; i++) {
      CHECK_MSG(launches[i].grid > 0 && launches[i].block >= 32 && launches[i].block % 32 == 0,
                "%s: grid %lld block %d", p.kernels.data[i].name, (long long)launches[i].grid, launches[i].block);
      CHECK_STR(launches[i].name, p.kernels.data[i].name);
    }
    CHECK_EQ_INT(launches[12].grid, 1);
  }
  free(src);
  diag_free(&d);
  for (int i = 0; i < p.kernels.n; i++) kfree(&p.kernels.data[i]);
  vec_free(&p.kernels);
}

TEST(nvrtc_error_writes_source_and_log) {
  NEED_NVRTC();
  const char *bad = "extern \"C\" __global__ void k(float *x) {\n  x[0] = undefined_thing;\n}\n";
  Diag d;
  diag_init(&d);
  void *cubin = (void *)1;
  size_t n = 7;
  CHECK(!rtc_compile(bad, "broken_module", 90, &cubin, &n, NULL, &d));
  CHECK(cubin == NULL && n == 0);
  const char *msg = diag_first(&d);
  char *cu = bc_asprintf("%s/dump/broken_module.cu", tmp_root), *lg = bc_asprintf("%s/dump/broken_module.log", tmp_root);
  CHECK_MSG(strstr(msg, cu) && strstr(msg, lg), "message names both files: %s", msg);
  CHECK_MSG(strstr(msg, "broken_module.cu(2): error") && strstr(msg, "undefined_thing"), "first error quoted: %s", msg);
  struct stat sb;
  CHECK(stat(cu, &sb) == 0 && sb.st_size > 0);
  CHECK(stat(lg, &sb) == 0 && sb.st_size > 0);
  size_t nb = 0;
  char *text = bc_read_file(cu, &nb, &d);
  CHECK(text && strstr(text, "    2    x[0] = undefined_thing;\n"));
  free(text);
  free(cu);
  free(lg);
  diag_free(&d);
}

TEST(nvrtc_cache_hit) {
  NEED_NVRTC();
  const char *src = "extern \"C\" __global__ void k_cache(float *x) { x[threadIdx.x] *= 2.0f; }\n";
  Diag d;
  diag_init(&d);
  void *a = NULL, *b = NULL;
  size_t na = 0, nb = 0;
  bool hit_a = true, hit_b = false;
  double t0 = now();
  CHECK(rtc_compile(src, "cache_test", 90, &a, &na, &hit_a, &d));
  double t1 = now();
  CHECK(rtc_compile(src, "cache_test", 90, &b, &nb, &hit_b, &d));
  double t2 = now();
  CHECK(!hit_a);
  CHECK(hit_b);
  CHECK(na > 0 && na == nb && a && b && memcmp(a, b, na) == 0);
  fprintf(stderr, "  compile %.3f s, cache hit %.4f s\n", t1 - t0, t2 - t1);
  /* another architecture is another entry */
  void *c = NULL;
  size_t nc = 0;
  bool hit_c = true;
  CHECK(rtc_compile(src, "cache_test", 80, &c, &nc, &hit_c, &d));
  CHECK(!hit_c);
  /* BC_CACHE_DIR=off: never a hit */
  char *saved = bc_strdup(getenv("BC_CACHE_DIR"));
  setenv("BC_CACHE_DIR", "off", 1);
  void *e = NULL;
  size_t ne = 0;
  bool hit_e = true;
  CHECK(rtc_compile(src, "cache_test", 90, &e, &ne, &hit_e, &d));
  CHECK(!hit_e && ne == na);
  setenv("BC_CACHE_DIR", saved, 1);
  free(saved);
  if (d.n_errors) diag_print(&d, stderr);
  free(a);
  free(b);
  free(c);
  free(e);
  diag_free(&d);
}

/* The names in dir other than . and .., sorted, joined by spaces. */
static void list_dir(const char *dir, char *out, size_t n) {
  struct dirent **es = NULL;
  int k = scandir(dir, &es, NULL, alphasort);
  out[0] = '\0';
  for (int i = 0; i < k; i++) {
    if (strcmp(es[i]->d_name, ".") && strcmp(es[i]->d_name, ".."))
      snprintf(out + strlen(out), n - strlen(out), "%s%s", out[0] ? " " : "", es[i]->d_name);
    free(es[i]);
  }
  free(es);
}

/* A cache entry is the CUBIN's bytes under <hash>.cubin, with nothing left
 * beside it; when it cannot be written (here its name is taken by a
 * directory) the compile still succeeds, without an error. */
TEST(nvrtc_cache_write) {
  NEED_NVRTC();
  const char *src = "extern \"C\" __global__ void k_write(float *x) { x[threadIdx.x] += 1.0f; }\n";
  char *saved = bc_strdup(getenv("BC_CACHE_DIR"));
  char *dir = bc_asprintf("%s/cache_write", tmp_root); /* does not exist yet */
  setenv("BC_CACHE_DIR", dir, 1);
  Diag d;
  diag_init(&d);
  void *a = NULL, *b = NULL;
  size_t na = 0, nb = 0;
  bool hit = true;
  CHECK_MSG(rtc_compile(src, "cache_write", 90, &a, &na, &hit, &d), "%s", diag_first(&d));
  CHECK(!hit);
  char names[512];
  list_dir(dir, names, sizeof names);
  CHECK_MSG(strlen(names) == 22 && !strcmp(names + 16, ".cubin"), "cache holds '%s'", names);
  char *entry = bc_asprintf("%s/%s", dir, names);
  size_t ne = 0;
  char *bytes = bc_read_file(entry, &ne, &d);
  CHECK(bytes && a && ne == na && memcmp(bytes, a, na) == 0);
  free(bytes);
  /* the entry's name taken by a directory: the rename over it fails */
  CHECK(unlink(entry) == 0 && mkdir(entry, 0755) == 0);
  hit = true;
  CHECK(rtc_compile(src, "cache_write", 90, &b, &nb, &hit, &d));
  CHECK(!hit && nb == na);
  CHECK_MSG(d.n_errors == 0, "%s", diag_first(&d));
  char after[512];
  list_dir(dir, after, sizeof after);
  CHECK_STR(after, names);
  rmdir(entry);
  setenv("BC_CACHE_DIR", saved, 1);
  free(saved);
  free(entry);
  free(dir);
  free(a);
  free(b);
  diag_free(&d);
}

/* ---- whole BERT training steps ------------------------------------------------------------------- */

/* outputs: as CompileOptions.outputs (NULL: all) */
static void check_plan(const char *graph, const char *tag, const Setting *sets, int n_sets,
                       const char *const *outputs) {
  NEED_NVRTC();
  CompileOptions o;
  compile_options_default(&o);
  o.model_path = MODEL;
  o.graph_name = graph;
  o.sets = sets;
  o.n_sets = n_sets;
  o.outputs = outputs;
  o.train = true;
  o.off.epilogue = backend_cuda.gemm_epilogues == NULL; /* the plan the cuda backend makes */
  Diag d;
  diag_init(&d);
  Graph g, eg;
  KernelPlan plan;
  MemPlan mem;
  double t0 = now();
  bool ok = pipeline_run(&g, &o, &d);
  if (ok) {
    ok = kernel_plan_compile(&g, &o, &eg, &plan, &mem, &d);
    graph_free(&g);
  }
  if (!ok) {
    diag_print(&d, stderr);
    diag_free(&d);
    CHECK(ok);
    return;
  }
  double t1 = now();
  CudaLaunch *launches = bc_calloc((size_t)plan.kernels.n + 1, sizeof(CudaLaunch));
  char *src = cuda_emit_plan(&eg, &plan, launches, &d);
  double t2 = now();
  if (!src) diag_print(&d, stderr);
  CHECK(src != NULL);
  if (src) {
    int n_loop = 0, n_vec = 0, n_row = 0, n_col = 0, n_same = 0;
    for (int i = 0; i < plan.kernels.n; i++) {
      const Kernel *k = &plan.kernels.data[i];
      if (k->kind != KERNEL_LOOP) continue;
      n_loop++;
      const CudaLaunch *l = &launches[i];
      CHECK_MSG(l->grid > 0 && l->block >= 32 && l->block <= 1024 && l->block % 32 == 0,
                "%s %s: grid %lld block %d", tag, k->name, (long long)l->grid, l->block);
      /* its own entry point, or that of an earlier kernel with the same code
       * (cuda_emit_plan emits repeats once): then the source says so */
      CHECK_MSG(l->name, "%s: launch without a name", k->name);
      if (l->name && strcmp(l->name, k->name) != 0) {
        char *note = bc_asprintf("// %s: the same code as %s (launched through it)", k->name, l->name);
        char *entry = bc_asprintf("void __launch_bounds__(%d) %s(", l->block, l->name);
        CHECK_MSG(strstr(src, note) && strstr(src, entry), "%s: launched through %s, which is not emitted", k->name,
                  l->name);
        n_same++;
        free(note);
        free(entry);
      }
      n_col += k->col_axis >= 0;
    }
    for (const char *s = src; (s = strstr(s, "(16-byte accesses)")); s++) n_vec++;
    for (const char *s = src; (s = strstr(s, ", row kernel: ")); s++) n_row++;
    /* the comments point at the YAML */
    CHECK(strstr(src, "@ " MODEL ":") != NULL || strstr(src, "models/lib/nn.yaml:") != NULL);
    const char *dir = getenv("BC_CUDA_EMIT_OUT");
    if (dir) {
      char *path = bc_asprintf("%s/%s.cu", dir, tag);
      FILE *f = fopen(path, "w");
      if (f) {
        fputs(src, f);
        fclose(f);
      }
      free(path);
    }
    if (strcmp(tag, "bert_nli_train") == 0) { /* once: the others have the same kinds of kernels */
      char *log = nvrtc_log(src);
      CHECK_MSG(!*log, "NVRTC says:\n%.4000s", log);
      free(log);
    }
    double secs = 0;
    bool hit = true;
    size_t n = compile(src, tag, &hit, &secs);
    CHECK(n > 0);
    CHECK(!hit);
    fprintf(stderr,
            "  %s: %d LOOP kernels (%d column; %d emitted: %d vectorized, %d row; %d repeats), %zu KB of CUDA C; "
            "plan %.2f s, emit %.3f s, NVRTC %.2f s, CUBIN %zu KB\n",
            tag, n_loop, n_col, n_loop - n_same, n_vec, n_row, n_same, strlen(src) / 1024, t1 - t0, t2 - t1, secs,
            n / 1024);
  }
  free(src);
  free(launches);
  memplan_free(&mem);
  kernel_plan_free(&plan);
  graph_free(&eg);
  diag_free(&d);
}

/* cuBLAS planning is host code: check the batching of the GEMM shapes the
 * BERT steps use (attention, a shared weight folded into M) and of a
 * broadcast operand that needs a host loop. */
TEST(cublas_gemm_plans) {
  if (!cuda_lib_source()[0]) TEST_SKIP("built without the CUDA headers");
  GemmPlan p;
  Shape a = shape_of(4, 2, 3, 5, 4), b = shape_of(4, 2, 3, 4, 5), c = shape_of(4, 2, 3, 5, 5);
  cublas_plan_gemm(&a, false, &b, false, &c, &p); /* attention: 6 matrices, one strided-batched call */
  CHECK(p.M == 5 && p.N == 5 && p.K == 4 && p.n_batch == 6 && p.n_outer == 0);
  CHECK(p.sa == 20 && p.sb == 20 && p.sc == 25 && p.lda == 4 && p.ldb == 5);
  a = shape_of(3, 2, 7, 4), b = shape_of(2, 4, 3), c = shape_of(3, 2, 7, 3);
  cublas_plan_gemm(&a, false, &b, false, &c, &p); /* x W: batch folded into M */
  CHECK(p.M == 14 && p.N == 3 && p.K == 4 && p.n_batch == 1 && p.n_outer == 0 && p.lda == 4 && p.ldb == 3);
  a = shape_of(4, 2, 3, 5, 4), b = shape_of(3, 3, 5, 6), c = shape_of(4, 2, 3, 4, 6);
  cublas_plan_gemm(&a, true, &b, false, &c, &p); /* A^T B, B broadcast over dim 0 */
  CHECK(p.M == 4 && p.N == 6 && p.K == 5 && p.lda == 4 && p.ldb == 6);
  CHECK(p.n_batch == 3 && p.sa == 20 && p.sb == 30 && p.sc == 24);
  CHECK(p.n_outer == 1 && p.outer_dim[0] == 2 && p.outer_sa[0] == 60 && p.outer_sb[0] == 0 && p.outer_sc[0] == 72);
}

/* The cuda backend's own kernels (runtime/cuda.c: row copies, attention
 * and its backward) compile too. */
TEST(runtime_library_kernels_compile) {
  NEED_NVRTC();
  const char *src = cuda_lib_source();
  CHECK(strstr(src, "bc_gather") && strstr(src, "bc_scatter_add") && strstr(src, "bc_concat_part"));
  CHECK(strstr(src, "void bc_attention(") && strstr(src, "void bc_attention_grad("));
  Diag d;
  diag_init(&d);
  void *cubin = NULL;
  size_t n = 0;
  CHECK_MSG(rtc_compile(src, "bertc_lib", 90, &cubin, &n, NULL, &d), "%s", diag_first(&d));
  CHECK(cubin && n > 0);
  free(cubin);
  diag_free(&d);
}

TEST(bert_pretrain_train_step) { check_plan("pretrain", "bert_pretrain_train", NULL, 0, NULL); }
/* As the trainer compiles it at batch 64: no output kept, so the MLM logits
 * are made by blocks of rows (passes/row_blocks.c) */
TEST(bert_pretrain_train_step_by_row_blocks) {
  static const Setting batch64[] = {{"batch", "64"}};
  static const char *const none[] = {NULL};
  check_plan("pretrain", "bert_pretrain_train_rows", batch64, 1, none);
}
TEST(bert_nli_train_step) { check_plan("nli", "bert_nli_train", NULL, 0, NULL); }
TEST(bert_base_nli_train_step) {
  static const Setting base[] = {{"vocab", "30522"}, {"hidden", "768"}, {"ffn", "3072"},
                                 {"heads", "12"},    {"layers", "12"},  {"max_len", "512"}};
  check_plan("nli", "bert_base_nli_train", base, 6, NULL);
}

TEST_MAIN()

/* bertc.c — the compiler's command line: `bertc compile MODEL.yaml ...`
 * loads a YAML model, runs the pass pipeline and prints the optimized
 * graph's summary (or dumps, DOT, and the plan files with -o). Only this
 * file and bertrun.c call exit; everything below reports through Diag. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "codegen/cuda_emit.h"
#include "codegen/kernel.h"
#include "codegen/llvm_emit.h"
#include "graph/fileio.h"
#include "passes/passes.h"
#include "runtime/backend.h"
#include "tasks/hf_bert.h"

static const char usage[] =
    "usage: bertc compile MODEL.yaml [options]\n"
    "       bertc import HF_DIR -o OUT [--model FILE]\n"
    "       bertc export CHECKPOINT -o HF_DIR\n"
    "       bertc --help | --version\n"
    "\n"
    "Compiles a graph of a YAML model (see models/README.md) and prints a\n"
    "summary of the optimized graph: its inputs, outputs, node count and\n"
    "parameter counts.\n"
    "\n"
    "options:\n"
    "  --graph NAME        graph to compile (default: the first in the file)\n"
    "  --set NAME=VALUE    override a hyperparameter (repeatable)\n"
    "  --batch N           same as --set batch=N\n"
    "  --train             compile the whole training step: forward, loss,\n"
    "                      backward (autodiff) and the Adam update\n"
    "  --outputs A,B,..    keep only these of the graph's outputs (default: all;\n"
    "                      empty: none but the loss), as a trainer that reads\n"
    "                      only them compiles it: what no one reads is not computed\n"
    "  --beta1 X --beta2 X --eps X --weight-decay X --clip X\n"
    "                      Adam settings (defaults 0.9, 0.999, 1e-8, 0, 0; weight\n"
    "                      decay is AdamW's, on parameters of rank 2+; clip > 0\n"
    "                      clips the global gradient norm; the learning rate is\n"
    "                      the run-time input `lr`)\n"
    "  --dump              print the optimized graph in full\n"
    "  --dump-after STAGE  print what a stage of the pipeline made, or every\n"
    "                      stage's (all): the graph after expand, narrow,\n"
    "                      autodiff and optim (these two need --train),\n"
    "                      simplify, schedule, remat, row_blocks, chunk and\n"
    "                      gemm_layout;\n"
    "                      the fusion groups after fuse, the kernels after\n"
    "                      lower, the arena layout after memplan (remat to\n"
    "                      memplan: cpu and cuda);\n"
    "                      with --train, schedule and lower also list the\n"
    "                      gradient buckets data-parallel training all-reduces\n"
    "                      (their gradients, bytes, and the node or kernel\n"
    "                      after which each is ready; BC_DIST_BUCKET_BYTES)\n"
    "  --dot FILE          write the optimized graph as Graphviz DOT\n"
    "  --dot-level LEVEL   what --dot and -o's graph.dot draw: block (one node\n"
    "                      per block instance, edges labelled with the types\n"
    "                      crossing them) or node (every node, with its value\n"
    "                      name and YAML line, block instances as clusters);\n"
    "                      default block with --train, node without\n"
    "  --device NAME       backend the plan is for: cpu (default), cuda, cuda:N or\n"
    "                      interp (compiling needs no GPU)\n"
    "  -o DIR              write the plan as readable files: graph.txt (the\n"
    "                      optimized graph) and graph.dot; with cpu or cuda\n"
    "                      also kernels.txt (fused kernels and their YAML\n"
    "                      lines) and memplan.txt (arena layout), the same for\n"
    "                      both; then what --device runs: cpu kernels.ll (the\n"
    "                      LLVM IR of every kernel, as the JIT optimizes it),\n"
    "                      cuda kernels.cu (their CUDA C, as NVRTC compiles it)\n"
    "                      and launches.txt (each kernel's grid and block)\n"
    "  -h, --help          this text\n"
    "\n"
    "import: reads a Hugging Face BERT folder (config.json with model_type\n"
    "bert, model.safetensors, vocab.txt, tokenizer_config.json) and writes\n"
    "OUT/checkpoint.safetensors, which carries the model (models/hf_bert.yaml\n"
    "with the config's sizes, also written to OUT), its weights and the\n"
    "WordPiece vocabulary; `bertrun train --task snli --init\n"
    "OUT/checkpoint.safetensors` fine-tunes it. --model FILE: another model\n"
    "file with hf_bert.yaml's parameter names.\n"
    "export: writes a checkpoint made by import (or fine-tuned from one) as a\n"
    "Hugging Face folder that transformers loads: BertModel, or\n"
    "BertForSequenceClassification when it holds the nli classifier.\n"
    "\n"
    "environment: BC_VERIFY=1 checks the plan after every stage; BC_DUMP=STAGE\n"
    "is --dump-after STAGE; BC_NO_<NAME>=1 switches an optimization off\n"
    "(SIMPLIFY, FUSE, MEMPLAN, PICK, ...: every one, and what it does, in\n"
    "README.md's environment variables).\n"
    "exit status: 0 success, 1 errors in the model or options, 2 bad usage.\n";

static int bad_usage(const char *fmt, const char *arg) {
  fprintf(stderr, "bertc: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'bertc --help'.\n");
  return 2;
}

static bool parse_double(const char *s, double *out) {
  char *end;
  errno = 0;
  *out = strtod(s, &end);
  return *s && !*end && errno == 0;
}

typedef enum { WRITE_GRAPH, WRITE_DOT, WRITE_KERNELS, WRITE_MEMPLAN, WRITE_LLVM, WRITE_CUDA, WRITE_LAUNCHES } WriteKind;
typedef struct {
  const KernelPlan *plan;
  const MemPlan *mem;
} PlanFiles;

/* LLVM IR of every generated kernel, optimized as the JIT compiles it. */
static bool write_llvm(FILE *f, const PlanFiles *pf, Diag *d) {
  for (int i = 0; i < pf->plan->kernels.n; i++) {
    const Kernel *k = &pf->plan->kernels.data[i];
    if (k->kind != KERNEL_LOOP) continue;
    char *ir = llvm_emit_ir_text(k, d);
    if (!ir) return false;
    fprintf(f, "; ---- kernel %s\n%s\n", k->name, ir);
    free(ir);
  }
  return true;
}

/* CUDA C of every generated kernel (codegen/cuda_emit.c), as NVRTC compiles it. */
static bool write_cuda(FILE *f, const Graph *g, const PlanFiles *pf, Diag *d) {
  CudaLaunch *launches = bc_calloc((size_t)pf->plan->kernels.n + 1, sizeof(CudaLaunch));
  char *src = cuda_emit_plan(g, pf->plan, launches, d);
  if (src) fputs(src, f);
  free(src);
  free(launches);
  return src != NULL;
}

/* The launch configuration of every generated kernel, as runtime/cuda.c
 * launches it (codegen/cuda_emit.h's CudaLaunch). */
static bool write_launches(FILE *f, const Graph *g, const PlanFiles *pf, Diag *d) {
  CudaLaunch *launches = bc_calloc((size_t)pf->plan->kernels.n + 1, sizeof(CudaLaunch));
  char *src = cuda_emit_plan(g, pf->plan, launches, d);
  if (src) {
    fprintf(f, "# CUDA launch of every generated kernel, in execution order: a 1-D grid of\n"
               "# `grid` blocks of `block` threads, `smem` bytes of dynamic shared memory\n"
               "# (kernels use static shared memory only); grid 0: nothing to launch.\n"
               "# The other kernels of kernels.txt are not listed: GEMMs are cuBLAS calls;\n"
               "# gather, scatter-add and concat are the runtime's own code; aliases do no work.\n"
               "#  kernel                                          grid  block  smem\n");
    for (int i = 0; i < pf->plan->kernels.n; i++) {
      const Kernel *k = &pf->plan->kernels.data[i];
      if (k->kind != KERNEL_LOOP) continue;
      fprintf(f, "%-44s %10lld %6d %5d\n", k->name, (long long)launches[i].grid, launches[i].block,
              launches[i].smem_bytes);
    }
  }
  free(src);
  free(launches);
  return src != NULL;
}

/* Writes one plan file atomically (graph/fileio.h). */
static bool write_file(const char *dir, const char *name, const Graph *g, WriteKind kind,
                       const PlanFiles *pf, DotLevel dot_level, Diag *d) {
  char *path = bc_asprintf("%s/%s", dir, name);
  AtomicFile af;
  bool ok = file_atomic_begin(&af, path, d);
  if (ok) {
    FILE *f = af.f;
    switch (kind) {
    case WRITE_GRAPH: graph_print(g, f); break;
    case WRITE_DOT: graph_print_dot(g, dot_level, f); break;
    case WRITE_KERNELS: kernel_plan_print(g, pf->plan, f); break;
    case WRITE_MEMPLAN: memplan_print(g, pf->mem, f); break;
    case WRITE_LLVM: ok = write_llvm(f, pf, d); break;
    case WRITE_CUDA: ok = write_cuda(f, g, pf, d); break;
    case WRITE_LAUNCHES: ok = write_launches(f, g, pf, d); break;
    }
    if (ok) ok = file_atomic_commit(&af, d);
    else file_atomic_abort(&af);
  }
  free(path);
  return ok;
}

static int cmd_compile(int argc, char **argv) {
  CompileOptions o;
  compile_options_default(&o);
  VEC(Setting) sets = {0};
  VEC(char *) owned = {0};
  VEC(const char *) keep = {0};
  bool keep_set = false;
  const char *dot_path = NULL, *out_dir = NULL, *device = "cpu", *dot_level_arg = NULL;
  bool dump = false;
  int rc = 2;
  Diag d;
  diag_init(&d);
  Graph g;
  bool have_graph = false, have_plan = false;
  Graph eg; /* the graph in kernel execution order */
  KernelPlan plan;
  MemPlan mem;

  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VAL() \
  do { \
    if (!val) { \
      rc = bad_usage("option %s needs a value", a); \
      goto done; \
    } \
    i++; \
  } while (0)
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(usage, stdout);
      rc = 0;
      goto done;
    } else if (strcmp(a, "--graph") == 0) {
      NEED_VAL();
      o.graph_name = val;
    } else if (strcmp(a, "--set") == 0) {
      NEED_VAL();
      const char *eq = strchr(val, '=');
      if (!eq || eq == val) {
        rc = bad_usage("--set needs NAME=VALUE, got '%s'", val);
        goto done;
      }
      char *key = bc_strdup(val);
      key[eq - val] = '\0';
      vec_push(&owned, key);
      vec_push(&sets, ((Setting){key, eq + 1}));
    } else if (strcmp(a, "--batch") == 0) {
      NEED_VAL();
      vec_push(&sets, ((Setting){"batch", val}));
    } else if (strcmp(a, "--train") == 0) {
      o.train = true;
    } else if (strcmp(a, "--outputs") == 0) {
      NEED_VAL();
      keep_set = true;
      char *names = bc_strdup(val);
      vec_push(&owned, names);
      for (char *s = strtok(names, ","); s; s = strtok(NULL, ",")) vec_push(&keep, s);
    } else if (strcmp(a, "--beta1") == 0 || strcmp(a, "--beta2") == 0 || strcmp(a, "--eps") == 0 ||
               strcmp(a, "--weight-decay") == 0 || strcmp(a, "--clip") == 0) {
      NEED_VAL();
      double x;
      if (!parse_double(val, &x)) {
        rc = bad_usage("not a number: '%s'", val);
        goto done;
      }
      if (a[2] == 'b' && a[6] == '1') o.adam.beta1 = x;
      else if (a[2] == 'b') o.adam.beta2 = x;
      else if (a[2] == 'e') o.adam.eps = x;
      else if (a[2] == 'c') o.adam.clip = x;
      else o.adam.weight_decay = x;
    } else if (strcmp(a, "--dump") == 0) {
      dump = true;
    } else if (strcmp(a, "--dump-after") == 0) {
      NEED_VAL();
      o.dump_after = val;
    } else if (strcmp(a, "--dot") == 0) {
      NEED_VAL();
      dot_path = val;
    } else if (strcmp(a, "--dot-level") == 0) {
      NEED_VAL();
      if (strcmp(val, "block") != 0 && strcmp(val, "node") != 0) {
        rc = bad_usage("--dot-level is block or node, got '%s'", val);
        goto done;
      }
      dot_level_arg = val;
    } else if (strcmp(a, "--device") == 0) {
      NEED_VAL();
      device = val;
    } else if (strcmp(a, "-o") == 0) {
      NEED_VAL();
      out_dir = val;
    } else if (a[0] == '-' && a[1]) {
      rc = bad_usage("unknown option '%s'", a);
      goto done;
    } else if (!o.model_path) {
      o.model_path = a;
    } else {
      rc = bad_usage("unexpected argument '%s' (one model file at a time)", a);
      goto done;
    }
#undef NEED_VAL
  }
  if (!o.model_path) {
    rc = bad_usage("%s", "compile needs a model file");
    goto done;
  }
  /* autodiff and optim run only for a training step: without --train
   * there is nothing to dump after them */
  if (!o.train && o.dump_after && (strcmp(o.dump_after, "autodiff") == 0 || strcmp(o.dump_after, "optim") == 0)) {
    rc = bad_usage("--dump-after %s needs --train (the autodiff and optim stages build the training step)",
                   o.dump_after);
    goto done;
  }
  /* a training step has thousands of nodes, which dot cannot lay out in
   * minutes: its default picture is the block view */
  DotLevel dot_level = o.train ? DOT_BLOCKS : DOT_NODES;
  if (dot_level_arg) dot_level = strcmp(dot_level_arg, "block") == 0 ? DOT_BLOCKS : DOT_NODES;
  int device_index;
  const Backend *backend = backend_parse(device, &device_index, &d);
  if (!backend) {
    rc = 1;
    goto done;
  }
  o.sets = sets.data;
  o.n_sets = sets.n;
  if (keep_set) {
    vec_push(&keep, NULL);
    o.outputs = keep.data;
  }
  /* a compiled backend runs the plan stages (remat to memplan) after
   * the graph stages; the interpreter runs the graph */
  bool compiled = backend->compiled;
  if (!compiled && o.dump_after && strcmp(o.dump_after, "all") != 0 && !pipeline_is_graph_stage(o.dump_after)) {
    const char *const *names = pipeline_pass_names();
    bool known = false;
    for (int i = 0; names[i]; i++) known |= strcmp(names[i], o.dump_after) == 0;
    if (known) {
      diag_error(&d, (SrcLoc){"<command line>", 0, 0}, "--dump-after %s needs --device cpu or cuda", o.dump_after);
      rc = 1;
      goto done;
    }
  }
  rc = 1;
  if (!pipeline_run(&g, &o, &d)) goto done;
  have_graph = true;
  if (compiled) {
    if (!backend->gemm_epilogues || !backend->gemm_epilogues()) o.off.epilogue = true;
    if (!kernel_plan_compile(&g, &o, &eg, &plan, &mem, &d)) goto done;
    have_plan = true;
  }
  if (dump) graph_print(&g, stdout);
  else {
    printf("graph %s of %s%s\n", g.name, o.model_path, o.train ? " (training step)" : "");
    printf("inputs:");
    for (int i = 0; i < g.inputs.n; i++) {
      const Value *v = &g.values.data[g.inputs.data[i]];
      char b[96];
      printf(" %s:%s%s", v->name, dtype_name(v->dtype), shape_str(&v->shape, b));
    }
    printf("\noutputs:");
    for (int i = 0; i < g.outputs.n; i++) printf(" %s", g.values.data[g.outputs.data[i]].name);
    printf("\n");
    graph_print_summary(&g, stdout);
    if (compiled) {
      int nk = plan.kernels.n;
      printf("kernels: %d (%d generated loops, %d GEMMs, %d other)\n", nk,
             kernel_plan_count(&plan, KERNEL_LOOP), kernel_plan_count(&plan, KERNEL_GEMM),
             nk - kernel_plan_count(&plan, KERNEL_LOOP) - kernel_plan_count(&plan, KERNEL_GEMM));
      memplan_print_summary(&mem, stdout);
    }
  }
  if (dot_path) {
    AtomicFile af;
    if (!file_atomic_begin(&af, dot_path, &d)) goto done;
    graph_print_dot(&g, dot_level, af.f);
    if (!file_atomic_commit(&af, &d)) goto done;
  }
  if (out_dir) {
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
      diag_error(&d, (SrcLoc){bc_intern(out_dir), 0, 0}, "cannot create directory: %s", strerror(errno));
      goto done;
    }
    if (!write_file(out_dir, "graph.txt", &g, WRITE_GRAPH, NULL, dot_level, &d)) goto done;
    if (!write_file(out_dir, "graph.dot", &g, WRITE_DOT, NULL, dot_level, &d)) goto done;
    if (compiled) {
      PlanFiles pf = {&plan, &mem};
      if (!write_file(out_dir, "kernels.txt", &eg, WRITE_KERNELS, &pf, dot_level, &d)) goto done;
      if (!write_file(out_dir, "memplan.txt", &eg, WRITE_MEMPLAN, &pf, dot_level, &d)) goto done;
      /* the code of the backend the plan is for: a compiled backend on the
       * host runs the LLVM JIT's kernels, one with device memory CUDA's */
      if (!backend->host_memory) {
        if (!write_file(out_dir, "kernels.cu", &eg, WRITE_CUDA, &pf, dot_level, &d)) goto done;
        if (!write_file(out_dir, "launches.txt", &eg, WRITE_LAUNCHES, &pf, dot_level, &d)) goto done;
      } else if (llvm_jit_available() && !write_file(out_dir, "kernels.ll", &eg, WRITE_LLVM, &pf, dot_level, &d)) {
        goto done;
      }
    }
  }
  rc = 0;
done:
  diag_print(&d, stderr);
  diag_free(&d);
  if (have_plan) {
    memplan_free(&mem);
    kernel_plan_free(&plan);
    graph_free(&eg);
  }
  if (have_graph) graph_free(&g);
  for (int i = 0; i < owned.n; i++) free(owned.data[i]);
  vec_free(&owned);
  vec_free(&keep);
  vec_free(&sets);
  return rc;
}

/* bertc import HF_DIR -o OUT [--model FILE] / bertc export CHECKPOINT -o HF_DIR */
static int cmd_hf(bool import, int argc, char **argv) {
  const char *in = NULL, *out = NULL, *model = NULL;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(usage, stdout);
      return 0;
    }
    if ((strcmp(a, "-o") == 0 || (import && strcmp(a, "--model") == 0)) && i + 1 >= argc)
      return bad_usage("option %s needs a value", a);
    if (strcmp(a, "-o") == 0) out = argv[++i];
    else if (import && strcmp(a, "--model") == 0) model = argv[++i];
    else if (a[0] == '-' && a[1]) return bad_usage("unknown option '%s'", a);
    else if (in) return bad_usage("unexpected argument '%s'", a);
    else in = a;
  }
  if (!in) return bad_usage("%s", import ? "import needs a Hugging Face model folder" : "export needs a checkpoint");
  if (!out) return bad_usage("%s", "-o is required (the folder to write)");
  Diag d;
  diag_init(&d);
  bool ok = import ? hf_import(in, out, model, &d) : hf_export(in, out, &d);
  diag_print(&d, stderr);
  diag_free(&d);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
      strcmp(argv[1], "help") == 0) {
    fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("bertc 0.1\n");
    return 0;
  }
  if (strcmp(argv[1], "compile") == 0) return cmd_compile(argc - 2, argv + 2);
  if (strcmp(argv[1], "import") == 0) return cmd_hf(true, argc - 2, argv + 2);
  if (strcmp(argv[1], "export") == 0) return cmd_hf(false, argc - 2, argv + 2);
  return bad_usage("unknown command '%s' (commands: compile, import, export)", argv[1]);
}

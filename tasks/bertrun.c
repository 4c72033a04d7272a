/* bertrun.c — the training command line: `bertrun train`, `bertrun eval`,
 * `bertrun predict` (tasks/train.c and eval.c do the work). Only this file and
 * bertc.c call exit (and runtime/dist.c's MPI_Abort when a collective
 * times out). `bertrun train` under mpirun is data-parallel training: this
 * file joins the job (runtime/dist.h) and leaves it when training ends. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/dist.h"
#include "tasks/train.h"

static const char usage[] =
    "usage: bertrun train --task pretrain|snli [options]\n"
    "       bertrun eval --task snli CHECKPOINT [--data DIR] [--device D] [--batch N]\n"
    "       bertrun predict CHECKPOINT \"premise\" \"hypothesis\" [--device D]\n"
    "\n"
    "train options:\n"
    "  --task pretrain     masked LM + next sentence prediction on WikiText-2\n"
    "                      (d2l: --steps 4000 --batch 256 --lr 0.01)\n"
    "  --task snli         fine-tune every encoder parameter and the new classifier\n"
    "                      on SNLI (d2l: --epochs 5 --batch 512 --lr 1e-4); needs --init\n"
    "  --model FILE        model YAML (default models/bert.yaml)\n"
    "  --set NAME=VALUE    override a hyperparameter (repeatable)\n"
    "  --data DIR          data folder with wikitext-2/ and snli/ (default $BERT_DATA)\n"
    "  --init CHECKPOINT   snli: the pretraining checkpoint (vocab.txt beside it)\n"
    "  --snli-train FILE   snli: a training file (repeatable; default: the full\n"
    "                      train file, else snli_1.0_train_0.01.txt + _extra.txt)\n"
    "  --steps N           pretrain: steps\n"
    "  --epochs N          snli: epochs\n"
    "  --batch N           examples per step\n"
    "  --eval-batch N      examples per evaluation step (default 256)\n"
    "  --lr X              learning rate\n"
    "  --max-len N         tokens per example (default 128)\n"
    "  --max-examples N    use only the first N training examples\n"
    "  --seed N            seed of initialization, data order, masking, dropout\n"
    "  --device NAME       cpu (default), cuda, cuda:N (GPU N) or interp (the reference);\n"
    "                      train also takes a list: cuda:0,1 or cuda:all (one replica\n"
    "                      per GPU in this process), cpu:0,1 (host replicas: a check)\n"
    "  --threads N         threads of the cpu backend (default: one per core)\n"
    "  --out DIR           run folder: checkpoint.safetensors, vocab.txt,\n"
    "                      metrics.jsonl, curves.svg (default runs/TASK)\n"
    "  --save-every N      also checkpoint every N steps\n"
    "  --report-every N    a progress line and metrics record every N steps\n"
    "                      (default: every 10 seconds)\n"
    "  --resume            continue from the run folder's checkpoint\n"
    "  -h, --help          this text\n"
    "\n"
    "data-parallel training: `mpirun -np N bertrun train ...` runs N replicas\n"
    "(processes) on --device cpu or interp. --batch is the global batch: each\n"
    "rank trains on batch/N examples of it (N must divide it), gradients are\n"
    "averaged over ranks in buckets while the backward pass runs, and the loss\n"
    "curve is that of one process at the same --batch (to float rounding;\n"
    "the MLM loss is normalized by the global batch). Rank 0 broadcasts the\n"
    "parameters after --init/--resume and alone prints and writes the run\n"
    "folder; its checkpoints load in one process. Threads per rank default to\n"
    "cores / ranks on the node. As root add --allow-run-as-root. Environment:\n"
    "BC_DIST_BUCKET_BYTES (gradient bucket size, default 262144),\n"
    "BC_DIST_TIMEOUT (seconds a collective may wait for another rank before\n"
    "the job is aborted, default 120), BC_DIST_CHECK=N (compare the replicas'\n"
    "parameters every N steps; always at checkpoints and the end),\n"
    "BC_TRACE=FILE (Chrome trace of kernels and all-reduces; rank R of several\n"
    "writes FILE.R). eval and predict run in one process.\n"
    "\n"
    "several GPUs: `--device cuda:0,1` (or cuda:all) drives one replica per GPU\n"
    "from this process, a thread each, gradients averaged by NCCL; or one\n"
    "process per GPU: `mpirun -np N bertrun train ... --device cuda` (rank r\n"
    "takes GPU r of its node). Either way --batch is the global batch.\n"
    "`--device cpu:0,1` runs two replicas in one process on the same cores\n"
    "(threads default to cores / replicas), averaged in memory: no faster,\n"
    "but bit for bit the numerics of two MPI ranks.\n"
    "\n"
    "exit status: 0 success, 1 errors (data, model, checkpoint), 2 bad usage.\n";

static int bad_usage(const char *fmt, const char *arg) {
  fprintf(stderr, "bertrun: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'bertrun --help'.\n");
  return 2;
}

static bool to_i64(const char *s, int64_t *out) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (!*s || *end || v < 0) return false;
  *out = v;
  return true;
}

static bool to_f64(const char *s, double *out) {
  char *end;
  *out = strtod(s, &end);
  return *s && !*end;
}

static int finish(bool ok, Diag *d) {
  diag_print(d, stderr);
  diag_free(d);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
    fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "train") && strcmp(cmd, "eval") && strcmp(cmd, "predict"))
    return bad_usage("unknown command '%s' (commands: train, eval, predict)", cmd);
  const char *task = NULL, *pos[3] = {0};
  int n_pos = 0;
  for (int i = 2; i + 1 < argc; i++)
    if (!strcmp(argv[i], "--task")) task = argv[i + 1];
  TrainOptions o;
  train_options_default(&o, task ? task : "snli");
  bool set_out = false, set_threads = false;
  int64_t x;
  double f;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VAL() \
  do { \
    if (!v) return bad_usage("option %s needs a value", a); \
    i++; \
  } while (0)
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(usage, stdout);
      return 0;
    } else if (!strcmp(a, "--task")) {
      VAL();
    } else if (!strcmp(a, "--model")) {
      VAL();
      o.model = v;
    } else if (!strcmp(a, "--set")) {
      VAL();
      const char *eq = strchr(v, '=');
      if (!eq || eq == v) return bad_usage("--set needs NAME=VALUE, got '%s'", v);
      if (o.n_sets >= TRAIN_MAX_SETS) return bad_usage("%s", "too many --set options");
      char *key = strndup(v, (size_t)(eq - v));
      o.sets[o.n_sets++] = (Setting){bc_intern(key), eq + 1}; /* interned: lives until exit */
      free(key);
    } else if (!strcmp(a, "--data")) {
      VAL();
      o.data = v;
    } else if (!strcmp(a, "--init")) {
      VAL();
      o.init = v;
    } else if (!strcmp(a, "--snli-train")) {
      VAL();
      if (o.n_snli_train >= TRAIN_MAX_FILES) return bad_usage("%s", "too many --snli-train files");
      o.snli_train[o.n_snli_train++] = v;
    } else if (!strcmp(a, "--device")) {
      VAL();
      o.device = v;
    } else if (!strcmp(a, "--out")) {
      VAL();
      o.out = v;
      set_out = true;
    } else if (!strcmp(a, "--resume")) {
      o.resume = true;
    } else if (!strcmp(a, "--threads")) {
      VAL();
      if (!to_i64(v, &x) || x < 1) return bad_usage("--threads needs a positive integer, got '%s'", v);
      setenv("BC_THREADS", v, 1);
      set_threads = true;
    } else if (!strcmp(a, "--steps") || !strcmp(a, "--epochs") || !strcmp(a, "--batch") ||
               !strcmp(a, "--eval-batch") || !strcmp(a, "--max-len") || !strcmp(a, "--seed") ||
               !strcmp(a, "--save-every") || !strcmp(a, "--max-examples") || !strcmp(a, "--report-every")) {
      VAL();
      if (!to_i64(v, &x)) return bad_usage("not a non-negative integer: '%s'", v);
      if (!strcmp(a, "--steps")) o.steps = x;
      else if (!strcmp(a, "--epochs")) o.epochs = (int)x;
      else if (!strcmp(a, "--batch")) o.batch = (int)x;
      else if (!strcmp(a, "--eval-batch")) o.eval_batch = (int)x;
      else if (!strcmp(a, "--max-len")) o.max_len = (int)x;
      else if (!strcmp(a, "--seed")) o.seed = (uint64_t)x;
      else if (!strcmp(a, "--save-every")) o.save_every = x;
      else if (!strcmp(a, "--report-every")) o.report_every = x;
      else o.max_examples = x;
      if ((!strcmp(a, "--batch") || !strcmp(a, "--eval-batch") || !strcmp(a, "--max-len")) && x < 1)
        return bad_usage("%s must be at least 1", a);
    } else if (!strcmp(a, "--lr")) {
      VAL();
      if (!to_f64(v, &f) || !(f > 0)) return bad_usage("--lr needs a positive number, got '%s'", v);
      o.lr = f;
    } else if (a[0] == '-' && a[1]) {
      return bad_usage("unknown option '%s'", a);
    } else if (n_pos < 3) {
      pos[n_pos++] = a;
    } else {
      return bad_usage("unexpected argument '%s'", a);
    }
#undef VAL
  }
  Diag d;
  diag_init(&d);
  int np = dist_launcher_ranks();
  if (!strcmp(cmd, "train")) {
    if (!task) return bad_usage("%s", "train needs --task pretrain or --task snli");
    if (n_pos) return bad_usage("unexpected argument '%s'", pos[0]);
    if (strcmp(task, "pretrain") && strcmp(task, "snli"))
      return bad_usage("unknown task '%s' (tasks: pretrain, snli)", task);
    if (!set_out) o.out = !strcmp(task, "pretrain") ? "runs/pretrain" : "runs/snli";
    int devices[BC_MAX_REPLICAS], n_replicas;
    const Backend *backend = backend_parse_list(o.device, devices, &n_replicas, &d);
    if (!backend) return finish(false, &d);
    /* ranks sharing a node share its cores, and so do host replicas */
    long sharing = (long)dist_launcher_local_ranks() * (backend->device_count ? 1 : n_replicas);
    if (!set_threads && !getenv("BC_THREADS") && sharing > 1) {
      long cores = sysconf(_SC_NPROCESSORS_ONLN), per = cores / sharing;
      char buf[32];
      snprintf(buf, sizeof buf, "%ld", per > 1 ? per : 1);
      setenv("BC_THREADS", buf, 1);
    }
    /* mpirun forwards each write on its own: whole lines keep rank 0's
     * stderr and stdout from splicing into each other */
    if (np > 0) setvbuf(stderr, NULL, _IOLBF, 0);
    o.dist = dist_start(&d);
    if (!o.dist) return finish(false, &d);
    bool ok = !strcmp(task, "pretrain") ? train_pretrain(&o, &d) : train_snli(&o, &d);
    /* Most failures (options, data) happen on every rank alike: give rank 0
     * time to say so and abort the job before this rank repeats it. */
    if (!ok && dist_rank(o.dist) > 0) usleep(500000);
    diag_print(&d, stderr);
    fflush(stderr);
    dist_stop(o.dist, ok); /* !ok with several ranks: aborts the job, does not return */
    diag_free(&d);
    return ok ? 0 : 1;
  }
  if (np > 1) {
    if (dist_launcher_rank() == 0) /* every rank gets here: say it once */
      diag_error(&d, (SrcLoc){"<command line>", 0, 0}, "bertrun %s runs in one process: start it without mpirun", cmd);
    diag_print(&d, stderr);
    diag_free(&d);
    return 1;
  }
  int device;
  if (!backend_parse(o.device, &device, &d)) return finish(false, &d); /* one device, before any file */
  if (!strcmp(cmd, "eval")) {
    if (task && strcmp(task, "snli")) return bad_usage("eval supports --task snli, not '%s'", task);
    if (n_pos != 1) return bad_usage("%s", "eval needs one CHECKPOINT");
    return finish(train_eval_snli(pos[0], o.data, o.device, o.eval_batch, &d), &d);
  }
  if (n_pos != 3) return bad_usage("%s", "predict needs CHECKPOINT \"premise\" \"hypothesis\"");
  return finish(train_predict(pos[0], o.device, pos[1], pos[2], &d), &d);
}

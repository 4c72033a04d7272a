/* bertrun.c — the training command line: `bertrun train`, `bertrun eval`,
 * `bertrun predict` (tasks/train.c and eval.c do the work). Only this file and
 * bertc.c call exit (and runtime/dist.c's MPI_Abort when a collective
 * times out). `bertrun train` under mpirun is data-parallel training: this
 * file joins the job (runtime/dist.h) and leaves it when training ends. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph/strbuf.h"
#include "runtime/dist.h"
#include "tasks/interrupt.h"
#include "tasks/train.h"

static const char usage[] =
    "usage: bertrun train --task pretrain|snli [options]\n"
    "       bertrun eval --task snli RUN_DIR|CHECKPOINT [--data DIR] [--device D] [--eval-batch N] [--model FILE]\n"
    "       bertrun predict CHECKPOINT \"premise\" \"hypothesis\" [--device D] [--model FILE]\n"
    "       bertrun predict CHECKPOINT --input FILE|- [--eval-batch N] [--device D] [--model FILE]\n"
    "       bertrun encode CHECKPOINT --input FILE|- --out FILE.safetensors [--batch N] [--device D]\n"
    "                      [--max-len N] [--hidden-rows K]\n"
    "\n"
    "train options (defaults: the bertc recipe; --recipe d2l gives the chapter's):\n"
    "  --task pretrain     masked LM + next sentence prediction on WikiText-2\n"
    "  --task snli         SNLI classification: fine-tunes the encoder of --init's\n"
    "                      checkpoint and a new classifier, or trains a model from\n"
    "                      scratch without --init (models/README.md: what a model\n"
    "                      offers each task)\n"
    "  --recipe NAME       bertc (default): settings that learn; d2l: the chapter's;\n"
    "                      hf: BERT's fine-tuning settings, the default for --init\n"
    "                      of a Hugging Face BERT (`bertc import`)\n"
    "                        recipe     pretrain                      snli\n"
    "                        bertc      --steps 4000 --batch 256      --epochs 15 --batch 128\n"
    "                                   --lr 1e-3                     --lr 1e-3\n"
    "                        d2l        --steps 4000 --batch 256      --epochs 5 --batch 512\n"
    "                                   --lr 0.01                     --lr 1e-4\n"
    "                        hf         -                             --epochs 3 --batch 32\n"
    "                                                                 --lr 3e-5 --schedule linear\n"
    "                                                                 max_len at most 128\n"
    "  --model FILE        model YAML (default: the checkpoint's own model with --init\n"
    "                      or --resume, else models/bert.yaml beside bertrun)\n"
    "  --set NAME=VALUE    override a hyperparameter (repeatable; with --init or\n"
    "                      --resume the checkpoint's hparams apply, and a flag that\n"
    "                      changes its parameters' shapes is an error)\n"
    "  --data DIR          data folder with wikitext-2/ and snli/ (default $BERT_DATA)\n"
    "  --init CHECKPOINT   snli: the pretrained checkpoint to start from (default:\n"
    "                      none, train from scratch)\n"
    "  --graph NAME        snli: the model's graph to fine-tune (default nli; an\n"
    "                      imported BERT's nli is BertForSequenceClassification,\n"
    "                      its nli_mlp d2l's MLP head on [CLS])\n"
    "  --allow-partial-init  snli: start from --init even when it holds none of the\n"
    "                      model's encoder parameters\n"
    "  --vocab FILE        snli from scratch: vocab.txt to use (default: built from the\n"
    "                      training data, tokens seen 5 times)\n"
    "  --snli-train FILE   snli: a training file (repeatable; default: the full\n"
    "                      train file, else snli_1.0_train_0.01.txt + _extra.txt)\n"
    "  --steps N           pretrain: steps (see --recipe)\n"
    "  --epochs N          snli: epochs (see --recipe)\n"
    "  --batch N           examples per step (see --recipe)\n"
    "  --eval-batch N      examples per evaluation or prediction step (default 256)\n"
    "  --eval-every N      snli: also measure SNLI dev accuracy every N steps (default:\n"
    "                      only at each epoch's end); pretraining has no dev set\n"
    "  --lr X              learning rate, the peak of the schedule (see --recipe)\n"
    "  --schedule NAME     the rate after the warmup: constant (default), or linear\n"
    "                      or cosine decay to 0 at the run's end (--steps, or\n"
    "                      --epochs x batches per epoch), computed per step as\n"
    "                      Hugging Face's get_*_schedule_with_warmup\n"
    "  --warmup N          steps of linear warmup from 0 to --lr (default 0)\n"
    "  --weight-decay X    AdamW's decoupled weight decay (p -= lr X p each step)\n"
    "                      of weight matrices and embedding tables (parameters of\n"
    "                      rank 2+), not of biases and layer norms (default 0)\n"
    "  --clip X            scale the gradients so that their global norm is at\n"
    "                      most X (torch's clip_grad_norm_; default 0: no clipping)\n"
    "  --max-len N         tokens per example (default: the checkpoint's with --init\n"
    "                      or --resume, else 128)\n"
    "  --pad-to-max        pad every batch to max_len, as d2l does (default: batches\n"
    "                      group examples of like length, each padded to a multiple\n"
    "                      of 16, in training, evaluation and prediction; --recipe\n"
    "                      d2l pads)\n"
    "  --max-examples N    use only the first N training examples (default: all)\n"
    "  --seed N            seed of initialization, data order, masking, dropout\n"
    "                      (default 0)\n"
    "  --device NAME       cpu (default), cuda, cuda:N (GPU N) or interp (the reference);\n"
    "                      train also takes a list: cuda:0,1 or cuda:all (one replica\n"
    "                      per GPU in this process), cpu:0,1 (host replicas: a check)\n"
    "  --threads N         threads of the cpu backend (default: one per core)\n"
    "  --out DIR           run folder: checkpoint.safetensors, vocab.txt,\n"
    "                      metrics.jsonl, curves.svg (default runs/TASK); snli also\n"
    "                      keeps best.safetensors, the model of the best dev accuracy\n"
    "  --resume            continue from the run folder's checkpoint (with the same\n"
    "                      --lr, --schedule, --warmup, --weight-decay, --clip, and\n"
    "                      under a decaying schedule the same length; another\n"
    "                      value is refused, naming the checkpoint's)\n"
    "  --overwrite         start afresh in a run folder that holds an earlier run\n"
    "                      (default: refuse, naming it)\n"
    "  --save-every N      also checkpoint every N steps (default: only at the end,\n"
    "                      and when SIGINT or SIGTERM stops the run)\n"
    "  --report-every N    a progress line and metrics record every N steps\n"
    "                      (default: every 10 seconds)\n"
    "  -h, --help          this text\n"
    "\n"
    "predict options:\n"
    "  --input FILE        pairs to predict, \"-\" for standard input: JSON lines\n"
    "                      {\"premise\": ..., \"hypothesis\": ...} or premise<TAB>hypothesis\n"
    "                      lines; writes one JSON line per pair (label, probabilities,\n"
    "                      whether it was truncated to max_len)\n"
    "\n"
    "encode (a Hugging Face BERT: `bertc import`): one text, or two separated by\n"
    "a TAB, per line of --input, tokenized with the checkpoint's WordPiece, run\n"
    "in length buckets; writes input_ids, token_type_ids, lengths,\n"
    "pooler_output and mean_pooled (mean of the last hidden states over each\n"
    "text's tokens) to --out, and last_hidden_state of the first K texts with\n"
    "--hidden-rows K (default 0); prints the examples/s of the encoding steps.\n"
    "--batch N: texts per step (default 256); --max-len N: truncation (default\n"
    "the model's max_len).\n"
    "\n"
    "model selection (snli): after each epoch (and every --eval-every steps) the\n"
    "model is scored on snli/snli_1.0_dev.txt (read as the test file is; the run\n"
    "refuses to start without it); the best (ties keep the earlier) is written as\n"
    "best.safetensors with its step, epoch and dev_acc, and --resume remembers it.\n"
    "The summary gives the test accuracy of the last model and of the best one.\n"
    "`bertrun eval RUN_DIR` evaluates RUN_DIR/best.safetensors (else its\n"
    "checkpoint.safetensors) and names the file; dev chooses, test only reports.\n"
    "Pretraining keeps no best model.\n"
    "\n"
    "A checkpoint carries its model (the YAML files), hparams and vocabulary, so\n"
    "eval, predict, --init and --resume work from any folder and machine.\n"
    "SIGINT (Ctrl-C) or SIGTERM ends a run after the current step with a checkpoint\n"
    "and the command that continues it (exit 130); a second signal ends at once.\n"
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
    "exit status: 0 success, 1 errors (data, model, checkpoint), 2 bad usage,\n"
    "130 stopped by SIGINT or SIGTERM (checkpoint written).\n";

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

/* Where each option applies. */
enum { PRE = 1, SNLI = 2, EVAL = 4, PREDICT = 8, ENCODE = 16, TRAIN = PRE | SNLI, ALL = 31 };

typedef struct {
  const char *name;
  bool value; /* takes a value */
  int where;
} OptionSpec;

static const OptionSpec options[] = {
    {"--task", true, TRAIN | EVAL},  {"--recipe", true, TRAIN},   {"--model", true, ALL},
    {"--set", true, TRAIN},          {"--data", true, TRAIN | EVAL},   {"--init", true, SNLI},
    {"--vocab", true, SNLI},         {"--snli-train", true, SNLI},     {"--device", true, ALL},
    {"--out", true, TRAIN | ENCODE},          {"--resume", false, TRAIN},       {"--overwrite", false, TRAIN},
    {"--allow-partial-init", false, SNLI},                             {"--threads", true, ALL},
    {"--steps", true, PRE},          {"--epochs", true, SNLI},         {"--batch", true, TRAIN | EVAL | PREDICT | ENCODE},
    {"--eval-batch", true, ALL},     {"--max-len", true, TRAIN | ENCODE},       {"--seed", true, TRAIN},
    {"--save-every", true, TRAIN},   {"--max-examples", true, TRAIN},  {"--report-every", true, TRAIN},
    {"--lr", true, TRAIN},           {"--input", true, PREDICT | ENCODE},       {"--schedule", true, TRAIN},
    {"--warmup", true, TRAIN},       {"--weight-decay", true, TRAIN},  {"--clip", true, TRAIN},
    {"--pad-to-max", false, TRAIN | EVAL | PREDICT}, {"--eval-every", true, SNLI},
    {"--hidden-rows", true, ENCODE}, {"--graph", true, SNLI},
};

static const OptionSpec *find_option(const char *a) {
  for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
    if (!strcmp(options[i].name, a)) return &options[i];
  return NULL;
}

/* A shell word: as is when safe, else in single quotes. */
static void put_word(StrBuf *b, const char *w) {
  bool safe = *w != '\0';
  for (const char *c = w; *c && safe; c++) safe = strchr("+-./:=,_@%", *c) || (*c >= '0' && *c <= '9') ||
                                                   (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z');
  if (safe) {
    strbuf_puts(b, w);
    return;
  }
  strbuf_putc(b, '\'');
  for (const char *c = w; *c; c++) {
    if (*c == '\'') strbuf_puts(b, "'\\''");
    else strbuf_putc(b, *c);
  }
  strbuf_putc(b, '\'');
}

/* This command line without --overwrite, with --resume. */
static char *resume_command(int argc, char **argv) {
  StrBuf b = {0};
  strbuf_puts(&b, dist_launcher_ranks() > 0 ? "mpirun -np N bertrun" : "bertrun");
  bool has = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--overwrite")) continue;
    has |= !strcmp(argv[i], "--resume");
    strbuf_putc(&b, ' ');
    put_word(&b, argv[i]);
  }
  if (!has) strbuf_puts(&b, " --resume");
  return strbuf_take(&b);
}

int main(int argc, char **argv) {
  interrupt_init(); /* before any thread: they inherit its signal mask */
  if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
    fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "train") && strcmp(cmd, "eval") && strcmp(cmd, "predict") && strcmp(cmd, "encode"))
    return bad_usage("unknown command '%s' (commands: train, eval, predict, encode)", cmd);
  const char *task = NULL, *recipe = NULL, *pos[3] = {0};
  int n_pos = 0;
  for (int i = 2; i + 1 < argc; i++) {
    if (!strcmp(argv[i], "--task")) task = argv[i + 1];
    if (!strcmp(argv[i], "--recipe")) recipe = argv[i + 1];
  }
  if (!strcmp(cmd, "train")) {
    for (int i = 2; i < argc; i++)
      if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
        fputs(usage, stdout);
        return 0;
      }
    if (!task) return bad_usage("%s", "train needs --task pretrain or --task snli");
    if (strcmp(task, "pretrain") && strcmp(task, "snli"))
      return bad_usage("unknown task '%s' (tasks: pretrain, snli)", task);
  }
  int where = !strcmp(cmd, "eval") ? EVAL : !strcmp(cmd, "predict") ? PREDICT : !strcmp(cmd, "encode") ? ENCODE
               : !strcmp(task, "pretrain") ? PRE : SNLI;
  const char *where_name = where == EVAL ? "bertrun eval" : where == PREDICT ? "bertrun predict"
                           : where == ENCODE ? "bertrun encode" : where == PRE ? "--task pretrain" : "--task snli";
  TrainOptions o;
  if (where == SNLI && !recipe) {
    /* a Hugging Face BERT is fine-tuned as BERT is, unless asked otherwise */
    const char *init = NULL;
    for (int i = 2; i + 1 < argc; i++)
      if (!strcmp(argv[i], "--init")) init = argv[i + 1];
    if (init && train_init_is_hf(init)) {
      recipe = "hf";
      fprintf(stderr, "snli: --init is a Hugging Face BERT: recipe hf (--recipe bertc for bertc's)\n");
    }
  }
  if (!train_options_default(&o, where == PRE ? "pretrain" : "snli", recipe))
    return bad_usage(where == PRE && recipe && !strcmp(recipe, "hf") ? "recipe '%s' is for fine-tuning (--task snli)"
                                                                     : "unknown recipe '%s' (recipes: bertc, d2l, hf)",
                     recipe);
  bool set_out = false, set_threads = false, set_batch = false, set_eval_batch = false;
  const char *input = NULL;
  int64_t x, hidden_rows = 0;
  double f;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(usage, stdout);
      return 0;
    }
    const OptionSpec *spec = find_option(a);
    if (!spec) {
      if (a[0] == '-' && a[1]) return bad_usage("unknown option '%s'", a);
      if (n_pos >= 3) return bad_usage("unexpected argument '%s'", a);
      pos[n_pos++] = a;
      continue;
    }
    if (!(spec->where & where)) {
      fprintf(stderr, "bertrun: %s does not apply to %s", a, where_name);
      if (!strcmp(a, "--epochs")) fprintf(stderr, " (pretraining runs --steps)");
      else if (!strcmp(a, "--steps")) fprintf(stderr, " (fine-tuning runs --epochs)");
      else if (!strcmp(a, "--eval-every")) fprintf(stderr, " (only fine-tuning has a dev set)");
      fprintf(stderr, "\nTry 'bertrun --help'.\n");
      return 2;
    }
    if (spec->value) {
      if (!v) return bad_usage("option %s needs a value", a);
      i++;
    }
    if (!strcmp(a, "--task") || !strcmp(a, "--recipe")) {
      /* read above */
    } else if (!strcmp(a, "--model")) {
      o.model = v;
    } else if (!strcmp(a, "--set")) {
      const char *eq = strchr(v, '=');
      if (!eq || eq == v) return bad_usage("--set needs NAME=VALUE, got '%s'", v);
      if (o.n_sets >= TRAIN_MAX_SETS) return bad_usage("%s", "too many --set options");
      char *key = strndup(v, (size_t)(eq - v));
      o.sets[o.n_sets++] = (Setting){bc_intern(key), eq + 1}; /* interned: lives until exit */
      free(key);
    } else if (!strcmp(a, "--data")) {
      o.data = v;
    } else if (!strcmp(a, "--init")) {
      o.init = v;
    } else if (!strcmp(a, "--graph")) {
      o.graph = v;
    } else if (!strcmp(a, "--vocab")) {
      o.vocab = v;
    } else if (!strcmp(a, "--input")) {
      input = v;
    } else if (!strcmp(a, "--snli-train")) {
      if (o.n_snli_train >= TRAIN_MAX_FILES) return bad_usage("%s", "too many --snli-train files");
      o.snli_train[o.n_snli_train++] = v;
    } else if (!strcmp(a, "--device")) {
      o.device = v;
    } else if (!strcmp(a, "--out")) {
      o.out = v;
      set_out = true;
    } else if (!strcmp(a, "--resume")) {
      o.resume = true;
    } else if (!strcmp(a, "--overwrite")) {
      o.overwrite = true;
    } else if (!strcmp(a, "--pad-to-max")) {
      o.pad_to_max = true;
    } else if (!strcmp(a, "--allow-partial-init")) {
      o.allow_partial_init = true;
    } else if (!strcmp(a, "--threads")) {
      if (!to_i64(v, &x) || x < 1) return bad_usage("--threads needs a positive integer, got '%s'", v);
      setenv("BC_THREADS", v, 1);
      set_threads = true;
    } else if (!strcmp(a, "--lr")) {
      if (!to_f64(v, &f) || !(f > 0)) return bad_usage("--lr needs a positive number, got '%s'", v);
      o.lr = f;
    } else if (!strcmp(a, "--weight-decay") || !strcmp(a, "--clip")) {
      if (!to_f64(v, &f) || !(f >= 0)) return bad_usage("%s needs a number >= 0", a);
      if (!strcmp(a, "--clip")) o.clip = f;
      else o.weight_decay = f;
    } else if (!strcmp(a, "--schedule")) {
      if (!train_schedule_parse(v, &o.schedule))
        return bad_usage("unknown schedule '%s' (schedules: constant, linear, cosine)", v);
    } else { /* the integer options */
      if (!to_i64(v, &x)) return bad_usage("not a non-negative integer: '%s'", v);
      if ((!strcmp(a, "--batch") || !strcmp(a, "--eval-batch") || !strcmp(a, "--max-len") ||
           !strcmp(a, "--steps") || !strcmp(a, "--epochs")) && x < 1)
        return bad_usage("%s must be at least 1", a);
      if (!strcmp(a, "--steps")) o.steps = x;
      else if (!strcmp(a, "--epochs")) o.epochs = (int)x;
      else if (!strcmp(a, "--batch")) o.batch = (int)x, set_batch = true;
      else if (!strcmp(a, "--eval-batch")) o.eval_batch = (int)x, set_eval_batch = true;
      else if (!strcmp(a, "--max-len")) o.max_len = (int)x;
      else if (!strcmp(a, "--seed")) o.seed = (uint64_t)x;
      else if (!strcmp(a, "--save-every")) o.save_every = x;
      else if (!strcmp(a, "--report-every")) o.report_every = x;
      else if (!strcmp(a, "--warmup")) o.warmup = x;
      else if (!strcmp(a, "--eval-every")) o.eval_every = x;
      else if (!strcmp(a, "--hidden-rows")) hidden_rows = x;
      else o.max_examples = x;
    }
  }
  Diag d;
  diag_init(&d);
  int np = dist_launcher_ranks();
  if (where & TRAIN) {
    if (n_pos) return bad_usage("unexpected argument '%s'", pos[0]);
    if (o.allow_partial_init && !o.init) return bad_usage("%s", "--allow-partial-init goes with --init");
    if (!set_out) o.out = where == PRE ? "runs/pretrain" : "runs/snli";
    char *again = resume_command(argc, argv);
    o.resume_command = again;
    int devices[BC_MAX_REPLICAS], n_replicas;
    const Backend *backend = backend_parse_list(o.device, devices, &n_replicas, &d);
    if (!backend) {
      free(again);
      return finish(false, &d);
    }
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
    if (!o.dist) {
      free(again);
      return finish(false, &d);
    }
    TrainStatus st = where == PRE ? train_pretrain(&o, &d) : train_snli(&o, &d);
    bool ok = st != TRAIN_FAILED;
    /* Most failures (options, data) happen on every rank alike: give rank 0
     * time to say so and abort the job before this rank repeats it. */
    if (!ok && dist_rank(o.dist) > 0) usleep(500000);
    diag_print(&d, stderr);
    fflush(stderr);
    dist_stop(o.dist, ok); /* !ok with several ranks: aborts the job, does not return */
    diag_free(&d);
    free(again);
    return st == TRAIN_DONE ? 0 : st == TRAIN_INTERRUPTED ? 130 : 1;
  }
  if (np > 1) {
    if (dist_launcher_rank() == 0) /* every rank gets here: say it once */
      diag_error(&d, (SrcLoc){"<command line>", 0, 0}, "bertrun %s runs in one process: start it without mpirun", cmd);
    diag_print(&d, stderr);
    diag_free(&d);
    return 1;
  }
  if (set_batch && !set_eval_batch) o.eval_batch = o.batch; /* eval and predict: --batch is the evaluation batch */
  int device;
  if (!backend_parse(o.device, &device, &d)) return finish(false, &d); /* one device, before any file */
  if (where == EVAL) {
    if (task && strcmp(task, "snli")) return bad_usage("eval supports --task snli, not '%s'", task);
    if (n_pos != 1) return bad_usage("%s", "eval needs one RUN_DIR or CHECKPOINT");
    return finish(train_eval_snli(pos[0], &o, &d), &d);
  }
  if (where == ENCODE) {
    if (n_pos != 1 || !input || !set_out)
      return bad_usage("%s", "encode needs CHECKPOINT --input FILE --out FILE.safetensors");
    return finish(train_encode(pos[0], &o, input, o.out, (int)hidden_rows, &d), &d);
  }
  if (input ? n_pos != 1 : n_pos != 3)
    return bad_usage("%s", "predict needs CHECKPOINT \"premise\" \"hypothesis\", or CHECKPOINT --input FILE");
  return finish(train_predict(pos[0], &o, input ? NULL : pos[1], input ? NULL : pos[2], input, &d), &d);
}

/* fuzz_checkpoint.c — libFuzzer harness of a whole checkpoint load as
 * bertrun does it from --init/--resume/eval: the header and hparams
 * (train_origin_read), the vocabulary the metadata carries
 * (train_origin_vocab), the model files it carries expanded from memory
 * (train_origin_model, train_expand, train_origin_check_shapes), and the
 * tensors validated and written into an Exec of models/tiny/mlp.yaml
 * (checkpoint_load, both modes). A checkpoint naming a model file on the
 * disk instead of carrying it is not expanded (the fuzzer would read
 * arbitrary files).
 *
 * `BC_FUZZ_WRITE_SEED=FILE fuzz_checkpoint -runs=0` saves the small graph's
 * checkpoint (with its model files and a vocabulary) as a seed. */
#include <string.h>

#include "fuzz.h"
#include "passes/passes.h"
#include "runtime/checkpoint.h"
#include "tasks/train_util.h"

static Graph graph;
static Exec *exec;

static const char seed_vocab[] = "<cls>\n<mask>\n<pad>\n<sep>\n<unk>\nthe\n";

/* models/tiny/mlp.yaml as the graph: its checkpoints carry its three files. */
static void build_graph(Diag *d) {
  if (chdir(BC_SOURCE_DIR) != 0 || !model_expand(&graph, "models/tiny/mlp.yaml", "train", NULL, 0, d)) {
    diag_print(d, stderr);
    abort();
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  Diag d;
  diag_init(&d);
  build_graph(&d);
  exec = exec_create(&backend_interp, &graph, &d);
  if (!exec || !exec_init_params(exec, 7, &d)) {
    diag_print(&d, stderr);
    abort();
  }
  const char *seed = getenv("BC_FUZZ_WRITE_SEED");
  if (seed && *seed) {
    CheckpointMeta m;
    checkpoint_meta_init(&m);
    m.step = 3;
    m.seed = 7;
    m.model_path = strdup("models/tiny/mlp.yaml");
    checkpoint_meta_set(&m, TRAIN_META_VOCAB, seed_vocab);
    if (!checkpoint_save(seed, exec, &m, &d)) {
      diag_print(&d, stderr);
      abort();
    }
    checkpoint_meta_free(&m);
  }
  diag_free(&d);
  return 0;
}

static void load_as_bertrun(const char *path, Diag *d) {
  TrainOrigin o;
  if (train_origin_read(&o, path, d)) {
    Vocab v;
    if (train_origin_vocab(&o, &v, d)) vocab_free(&v);
    if (o.info.meta.model_files.n > 0) {
      TrainModel m;
      TrainSets sets;
      train_sets_init(&sets, NULL, 0);
      if (train_origin_model(&o, NULL, &m, &sets, NULL, d)) {
        Graph g;
        if (train_expand(&g, &m, o.info.meta.graph_name, &sets, d)) {
          (void)train_origin_check_shapes(&o, &g, &sets, d);
          graph_free(&g);
        }
        train_model_free(&m);
      }
      train_sets_free(&sets);
    }
  }
  train_origin_free(&o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_as_file(data, size);
  Diag d;
  diag_init(&d);
  load_as_bertrun(path, &d);
  for (int mode = 0; mode < 2; mode++) {
    CheckpointLoadOptions opt = {mode ? CHECKPOINT_LOAD_PARAMS_PRESENT : CHECKPOINT_LOAD_ALL, NULL};
    CheckpointMeta meta;
    int n = checkpoint_load(path, exec, &opt, &meta, &d);
    if (n > graph.params.n + graph.states.n) abort();
    checkpoint_meta_free(&meta);
  }
  fuzz_diag_done(&d);
  return 0;
}

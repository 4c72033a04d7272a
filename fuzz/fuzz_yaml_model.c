/* fuzz_yaml_model.c — libFuzzer harness of the model front end: the input
 * as a model YAML file through graph/yaml_load.h (ydoc_load_string) and
 * passes/expand.c (model_expand_sources: imports, hparams, blocks, repeats,
 * shapes), each graph it declares (up to 3), errors included.
 *
 * The input is models/tiny/fuzz.yaml among files held in memory: the
 * library (models/lib/{nn,loss}.yaml, also under models/tiny/lib/ so that
 * `import: [lib/nn.yaml]` resolves as in models/), models/bert.yaml and
 * models/tiny/blocks.yaml, read once at start. Any other import is an
 * error; nothing is read from the disk per input. */
#include <string.h>

#include "fuzz.h"
#include "graph/yaml_load.h"
#include "passes/passes.h"

static SourceFile files[8];
static int n_files = 1;

static void add_file(const char *as, const char *from) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", BC_SOURCE_DIR, from);
  size_t n;
  Diag d;
  diag_init(&d);
  char *text = bc_read_file(path, &n, &d);
  if (!text) {
    diag_print(&d, stderr);
    abort();
  }
  diag_free(&d);
  files[n_files++] = (SourceFile){as, text};
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  files[0].path = "models/tiny/fuzz.yaml";
  add_file("models/lib/nn.yaml", "models/lib/nn.yaml");
  add_file("models/lib/loss.yaml", "models/lib/loss.yaml");
  add_file("models/tiny/lib/nn.yaml", "models/lib/nn.yaml");
  add_file("models/tiny/lib/loss.yaml", "models/lib/loss.yaml");
  add_file("models/bert.yaml", "models/bert.yaml");
  add_file("models/tiny/blocks.yaml", "models/tiny/blocks.yaml");
  return 0;
}

static void expand(const char *graph_name) {
  Graph g;
  Diag d;
  diag_init(&d);
  if (model_expand_sources(&g, files, n_files, graph_name, NULL, 0, &d)) graph_free(&g);
  fuzz_diag_done(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  memcpy(text, data, size);
  text[size] = '\0';

  YDoc doc;
  Diag d;
  diag_init(&d);
  const YNode *gs = NULL;
  if (ydoc_load_string(&doc, files[0].path, text, size, &d)) gs = ynode_get(doc.root, "graphs");
  fuzz_diag_done(&d);

  files[0].text = text; /* NUL-terminated: the loader reads it up to the first NUL */
  expand(NULL);
  for (int i = 1; gs && gs->kind == YNODE_MAP && i < gs->n && i < 3; i++) expand(gs->pairs[i].key);
  ydoc_free(&doc);
  free(text);
  return 0;
}

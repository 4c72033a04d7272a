/* fuzz_hf_config.c — libFuzzer harness of the config.json reader of
 * `bertc import` (tasks/hf_bert.h: hf_config_read). A config it accepts
 * must describe a model bertc can build: positive sizes, heads dividing
 * hidden, a dropout rate in [0, 1). */
#include <math.h>

#include "fuzz.h"
#include "tasks/hf_bert.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Diag d;
  diag_init(&d);
  HfConfig c;
  if (hf_config_read("config.json", (const char *)data, size, &c, &d)) {
    if (c.vocab < 1 || c.hidden < 1 || c.ffn < 1 || c.heads < 1 || c.layers < 1 || c.positions < 1 ||
        c.type_vocab < 1 || c.hidden % c.heads != 0 || !(c.dropout >= 0 && c.dropout < 1) || !(c.eps >= 0) ||
        !isfinite(c.eps))
      abort();
  }
  fuzz_diag_done(&d);
  return 0;
}

/* fuzz_safetensors.c — libFuzzer harness of the safetensors header reader
 * of runtime/checkpoint.h: the input as a checkpoint file through
 * checkpoint_read_info (length prefix, JSON header, tensor table, offsets,
 * __metadata__) and checkpoint_read_meta. What reads must be consistent:
 * tensors inside the data section, extents matching dtype and shape. */
#include "fuzz.h"
#include "runtime/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_as_file(data, size);
  CheckpointInfo info;
  Diag d;
  diag_init(&d);
  if (checkpoint_read_info(path, &info, &d)) {
    if (8 + info.header_bytes + info.data_bytes != size) abort();
    for (int i = 0; i < info.tensors.n; i++) {
      const CheckpointTensor *t = &info.tensors.data[i];
      if (t->begin > t->end || t->end > info.data_bytes) abort();
      if (t->end - t->begin != (uint64_t)shape_numel(&t->shape) * (uint64_t)t->elem_bytes) abort();
    }
  }
  checkpoint_info_free(&info);
  CheckpointMeta m;
  (void)checkpoint_read_meta(path, &m, &d);
  checkpoint_meta_free(&m);
  fuzz_diag_done(&d);
  return 0;
}

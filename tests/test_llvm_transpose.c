/* test_llvm_transpose.c — LOOP kernels that only transpose
 * (codegen/llvm_transpose.c): out[r D + c] = in[c S + r], bit for bit
 * against the C evaluator at every JIT width (host, 8 and 4 lanes: tiles
 * of 16, 8 and 4), with rows split into uneven ranges (rows left over
 * from the tiles) and columns that are no multiple of the tile; f32 and
 * i32. The tiles are taken (their loops are in the IR), and a kernel that
 * computes anything on the way keeps the generic body. */
#include "tests/test.h"
#include "tests/llvm_kernels.h"

/* [R, C] = the transpose of a [C, R] block of a wider input (S = R + 5
 * elements a row) into a wider output (D = C + 3); `squared`: x * x
 * stored instead, no transpose for llvm_transpose.c. */
static void build_transpose(Case *c, int64_t R, int64_t C, DType t, bool squared) {
  snprintf(c->name, sizeof c->name, "transpose_%lldx%lld_%s%s", (long long)R, (long long)C,
           t == DTYPE_I32 ? "i32" : "f32", squared ? "_squared" : "");
  kinit(&c->k, c->name, shape_of(2, (int)R, (int)C), -1);
  int64_t S = R + 5, D = C + 3;
  addbuf(c, 3 + C * S, t, t == DTYPE_I32 ? FILL_INT : FILL_SIGNED, CMP_NONE, 0, 0);
  addbuf(c, 2 + R * D, t, FILL_OUT, CMP_EXACT, 0, 0);
  int x = kload(&c->k, kview(&c->k, 0, 3, ST(1, S)), t);
  if (squared) x = kbin(&c->k, OP_MUL, x, x);
  kstore(&c->k, kview(&c->k, 1, 2, ST(D, 1)), x);
}

TEST(transposes_match_the_evaluator) {
  if (!have_jits()) TEST_SKIP("no LLVM JIT");
  /* whole tiles; rows and columns left over; fewer rows than a tile */
  static const int64_t shapes[][2] = {{64, 128}, {37, 48}, {19, 20}, {100, 17}, {5, 40}, {3, 16}};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    for (int t = 0; t < 2; t++) {
      Case c = {0};
      build_transpose(&c, shapes[i][0], shapes[i][1], t ? DTYPE_I32 : DTYPE_F32, false);
      check_case(&c);
    }
}

/* Whether kernel k's IR has the tile loops (llvm_transpose.c names them
 * tile_row and tile_col); -1 when the IR cannot be made. */
static int has_tiles(const Kernel *k) {
  char *ir = ir_of(k);
  int has = ir ? strstr(ir, "tile_row") != NULL : -1;
  free(ir);
  return has;
}

TEST(only_transposes_take_tiles) {
  if (!have_jits()) TEST_SKIP("no LLVM JIT");
  for (int squared = 0; squared < 2; squared++) {
    Case c = {0};
    build_transpose(&c, 64, 128, DTYPE_F32, squared);
    CHECK_MSG(has_tiles(&c.k) == !squared, "%s", c.name);
    check_case(&c);
  }
}

int main_tests(int argc, char **argv);
#define main main_tests
TEST_MAIN()
#undef main
LLVM_TEST_MAIN(free_jits)

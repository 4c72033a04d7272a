/* peak_fma.c — this CPU's peak single-precision FMA rate, the ceiling that
 * GEMM and generated-kernel GFLOP/s are judged against. Runs chains of
 * independent vector FMAs (AVX-512 when the CPU has it, else AVX2+FMA) from
 * registers, on one thread and then on one thread per CPU, and prints
 *   {"isa": ..., "peak_gflops_1core": ..., "peak_gflops_all": ..., "threads": N}
 *
 * Not a test and not part of any library: standalone, built with its own
 * -O3 -march=native. An FMA counts as 2 flops per lane. Usage:
 * peak_fma [seconds per measurement, default 0.3]. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* 16 independent accumulators: FMA latency (4 cycles) times 2 FMA ports
 * needs at least 8 in flight; 16 leaves room on every core we know. */
#define N_ACC 16
#define INNER 1024 /* iterations per timed block */

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* acc = acc * m + c converges to c / (1 - m) and never overflows or goes
 * denormal, so the rate is that of normal FMAs. Returns flops done. */
__attribute__((target("avx512f"))) static double fma_avx512(double seconds, float *sink) {
  __m512 acc[N_ACC];
  for (int i = 0; i < N_ACC; i++) acc[i] = _mm512_set1_ps((float)i);
  const __m512 m = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(1e-4f);
  double t0 = now_s(), flops = 0;
  do {
    for (int it = 0; it < INNER; it++)
      for (int i = 0; i < N_ACC; i++) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
    flops += (double)INNER * N_ACC * 16 * 2;
  } while (now_s() - t0 < seconds);
  __m512 s = acc[0];
  for (int i = 1; i < N_ACC; i++) s = _mm512_add_ps(s, acc[i]);
  *sink = _mm512_reduce_add_ps(s);
  return flops;
}

__attribute__((target("avx2,fma"))) static double fma_avx2(double seconds, float *sink) {
  __m256 acc[N_ACC];
  for (int i = 0; i < N_ACC; i++) acc[i] = _mm256_set1_ps((float)i);
  const __m256 m = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-4f);
  double t0 = now_s(), flops = 0;
  do {
    for (int it = 0; it < INNER; it++)
      for (int i = 0; i < N_ACC; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, c);
    flops += (double)INNER * N_ACC * 8 * 2;
  } while (now_s() - t0 < seconds);
  __m256 s = acc[0];
  for (int i = 1; i < N_ACC; i++) s = _mm256_add_ps(s, acc[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  *sink = out[0];
  return flops;
}

static int use_avx512;
static double g_seconds;
static pthread_barrier_t g_start;

typedef struct {
  double flops, t0, t1;
  float sink;
} Result;

static double run(double seconds, float *sink) {
  return use_avx512 ? fma_avx512(seconds, sink) : fma_avx2(seconds, sink);
}

static void *thread_main(void *arg) {
  Result *r = arg;
  pthread_barrier_wait(&g_start);
  r->t0 = now_s();
  r->flops = run(g_seconds, &r->sink);
  r->t1 = now_s();
  return NULL;
}

static int n_cpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

int main(int argc, char **argv) {
  g_seconds = argc > 1 ? atof(argv[1]) : 0.3;
  if (g_seconds <= 0) g_seconds = 0.3;
  __builtin_cpu_init();
  use_avx512 = __builtin_cpu_supports("avx512f");
  if (!use_avx512 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
    fprintf(stderr, "peak_fma: this CPU has neither AVX-512 nor AVX2+FMA\n");
    return 1;
  }
  float sink = 0;
  run(0.05, &sink); /* warm up: frequency and license transitions */
  double best1 = 0;
  for (int rep = 0; rep < 3; rep++) {
    double t0 = now_s();
    double f = run(g_seconds, &sink);
    double g = f / (now_s() - t0) * 1e-9;
    if (g > best1) best1 = g;
  }

  int n = n_cpus();
  pthread_t *th = calloc((size_t)n, sizeof(*th));
  Result *res = calloc((size_t)n, sizeof(*res));
  if (!th || !res) {
    fprintf(stderr, "peak_fma: out of memory\n");
    return 1;
  }
  double best_all = 0;
  for (int rep = 0; rep < 3; rep++) {
    pthread_barrier_init(&g_start, NULL, (unsigned)n);
    for (int i = 1; i < n; i++)
      if (pthread_create(&th[i], NULL, thread_main, &res[i]) != 0) {
        fprintf(stderr, "peak_fma: pthread_create failed\n");
        return 1;
      }
    thread_main(&res[0]);
    for (int i = 1; i < n; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&g_start);
    double t0 = res[0].t0, t1 = res[0].t1, flops = 0;
    for (int i = 0; i < n; i++) {
      if (res[i].t0 < t0) t0 = res[i].t0;
      if (res[i].t1 > t1) t1 = res[i].t1;
      flops += res[i].flops;
      sink += res[i].sink;
    }
    double g = flops / (t1 - t0) * 1e-9;
    if (g > best_all) best_all = g;
  }
  printf("{\"isa\": \"%s\", \"peak_gflops_1core\": %.1f, \"peak_gflops_all\": %.1f, "
         "\"threads\": %d}\n",
         use_avx512 ? "avx512" : "avx2", best1, best_all, n);
  if (sink == 12345.0f) fprintf(stderr, "%g\n", sink); /* keep the results live */
  free(th);
  free(res);
  return 0;
}

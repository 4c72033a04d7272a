/* philox.h — Philox4x32-10 counter-based random numbers (Salmon et al.,
 * SC'11), the one generator of bertc: dropout masks and parameter
 * initialization draw from it, and every backend computes the same bits.
 *
 * The uniform of stream index i is word i % 4 of the output for counter
 * (c lo, c hi, op key, step), c = i / 4, and key (seed lo, seed hi): its
 * top 24 bits times 2^-24, exact in f32, in [0, 1). One Philox call thus
 * draws four consecutive indices' uniforms. */
#ifndef BC_PHILOX_H
#define BC_PHILOX_H

#include <stdint.h>

/* Philox4x32's multipliers and key increments (Random123). */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u /* golden ratio */
#define PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
/* The uniform of stream index `index`, as described above. */
float philox_uniform(uint64_t seed, uint32_t step, uint32_t op_key, uint64_t index);

#endif

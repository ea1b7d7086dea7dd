/* splitmix64 and the Fisher-Yates shuffle of sf_train (ABI.md, "Shuffling"). */
#ifndef SF_PRNG_H
#define SF_PRNG_H

#include <stdint.h>

typedef struct {
    uint64_t state;
} sf_prng;

static inline uint64_t sf_prng_next(sf_prng *rng) {
    uint64_t z = (rng->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* One Fisher-Yates pass over perm[0..n); j = ((next >> 32) * (i + 1)) >> 32. */
void sf__shuffle(int32_t *perm, int32_t n, sf_prng *rng);

#endif

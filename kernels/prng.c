/* The shuffle of sf_train: the same bits in every host and in kernels/reference.py. */
#include "prng.h"

void sf__shuffle(int32_t *perm, int32_t n, sf_prng *rng) {
    for (int32_t i = n - 1; i >= 1; --i) {
        /* Multiply-shift maps the top 32 random bits onto [0, i]; no modulo bias worth a loop. */
        uint64_t j = ((sf_prng_next(rng) >> 32) * (uint64_t)(i + 1)) >> 32;
        int32_t swap = perm[i];
        perm[i] = perm[j];
        perm[j] = swap;
    }
}

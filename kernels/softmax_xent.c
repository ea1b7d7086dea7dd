/* Softmax cross-entropy on logits, with the max subtracted before exp (log-sum-exp).
 *
 * NaN/Inf follow numpy's max-subtracted formula exactly: the row max propagates NaN, and an
 * +inf logit gives inf - inf = NaN, so any non-finite row gives a NaN loss and NaN gradients.
 * A label outside [0, classes) gives that sample a NaN loss and a NaN gradient row (the layer
 * kernel has no status to report it; the model entries reject such labels before running).
 *
 * Vectorised along the classes: exp was a fifth of a small MLP's training step when scalar.
 * The last partial vector of a row is padded with -inf, whose exp is 0.
 */
#include <wasm_simd128.h>

#include "lanes.h"
#include "sandflower.h"
#include "sf_math.h"

static inline float horizontal_max(v128_t v) {
    /* f32x4.max propagates NaN, like numpy's max. */
    v = wasm_f32x4_max(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
    v = wasm_f32x4_max(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
    return wasm_f32x4_extract_lane(v, 0);
}

static inline float horizontal_sum(v128_t v) {
    v = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
    v = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
    return wasm_f32x4_extract_lane(v, 0);
}

/* The last `tail` (1..3) values of a row, the other lanes -inf. */
static inline v128_t load_tail(const float *z, int32_t tail) {
    v128_t v = wasm_f32x4_splat(-__builtin_inff());
    switch (tail) {
    case 3:
        v = wasm_f32x4_replace_lane(v, 2, z[2]);
        /* fall through */
    case 2:
        v = wasm_f32x4_replace_lane(v, 1, z[1]);
        /* fall through */
    case 1:
        v = wasm_f32x4_replace_lane(v, 0, z[0]);
        break;
    default:
        break;
    }
    return v;
}

/* Rows per block of the three passes below (their maxima and sums live on the stack). */
#define SF_SOFTMAX_BLOCK 64

double sf__softmax_xent_sum(const float *logits, const int32_t *labels, int32_t batch,
                            int32_t classes, float *dlogits, float grad_scale) {
    double total = 0.0;
    const float nan = __builtin_nanf("");
    int32_t whole = classes & ~3, tail = classes - whole;
    for (int32_t i0 = 0; i0 < batch; i0 += SF_SOFTMAX_BLOCK) {
        int32_t rows = batch - i0 < SF_SOFTMAX_BLOCK ? batch - i0 : SF_SOFTMAX_BLOCK;
        const float *block = logits + (size_t)i0 * classes;
        float *dblock = dlogits ? dlogits + (size_t)i0 * classes : NULL;
        float row_max[SF_SOFTMAX_BLOCK], row_sum[SF_SOFTMAX_BLOCK] __attribute__((aligned(16)));
        /* The work is split in passes over the rows because one row's max -> exp -> sum -> log
         * is a long dependency chain: done row by row, the CPU sat waiting on it (3 us for a
         * 32x10 batch). In the pass of exps each one depends only on its row's stored max. */
        for (int32_t r = 0; r < rows; ++r) {
            const float *z = block + (size_t)r * classes;
            v128_t vmax = load_tail(z + whole, tail);
            int32_t j = 0;
            /* Two vectors per iteration (and the classes of a typical model in one): each
             * loop back-edge costs a fuel/epoch check. */
            for (; j + 8 <= whole; j += 8) {
                vmax = wasm_f32x4_max(vmax, wasm_v128_load(z + j));
                vmax = wasm_f32x4_max(vmax, wasm_v128_load(z + j + 4));
            }
            if (j < whole) vmax = wasm_f32x4_max(vmax, wasm_v128_load(z + j));
            row_max[r] = horizontal_max(vmax);
        }
        for (int32_t r = 0; r < rows; ++r) {
            const float *z = block + (size_t)r * classes;
            float *dz = dblock ? dblock + (size_t)r * classes : NULL;
            v128_t vrow_max = wasm_f32x4_splat(row_max[r]);
            v128_t vsum = wasm_f32x4_splat(0.0f);
            int32_t j = 0;
            for (; j + 8 <= whole; j += 8) {
                v128_t e0 = sf_expf4(wasm_f32x4_sub(wasm_v128_load(z + j), vrow_max));
                v128_t e1 = sf_expf4(wasm_f32x4_sub(wasm_v128_load(z + j + 4), vrow_max));
                vsum = wasm_f32x4_add(vsum, wasm_f32x4_add(e0, e1));
                if (dz) {
                    wasm_v128_store(dz + j, e0);
                    wasm_v128_store(dz + j + 4, e1);
                }
            }
            if (j < whole) {
                v128_t e = sf_expf4(wasm_f32x4_sub(wasm_v128_load(z + j), vrow_max));
                vsum = wasm_f32x4_add(vsum, e);
                if (dz) wasm_v128_store(dz + j, e);
            }
            if (tail) {
                v128_t e = sf_expf4(wasm_f32x4_sub(load_tail(z + whole, tail), vrow_max));
                vsum = wasm_f32x4_add(vsum, e);
                if (dz) sf_store_lanes(dz + whole, e, tail);
            }
            row_sum[r] = horizontal_sum(vsum);
        }
        /* Logs and gradient scales four rows at a time. */
        float row_log[SF_SOFTMAX_BLOCK] __attribute__((aligned(16)));
        float row_scale[SF_SOFTMAX_BLOCK] __attribute__((aligned(16)));
        for (int32_t r = 0; r < rows; r += 4) {
            v128_t sums = sf_load_lanes(row_sum + r, rows - r);
            sf_store_lanes(row_log + r, sf_logf4(sums), rows - r);
            sf_store_lanes(row_scale + r, wasm_f32x4_div(wasm_f32x4_splat(grad_scale), sums),
                           rows - r);
        }
        for (int32_t r = 0; r < rows; ++r) {
            const float *z = block + (size_t)r * classes;
            float *dz = dblock ? dblock + (size_t)r * classes : NULL;
            int32_t label = labels[i0 + r];
            if (label < 0 || label >= classes) {
                total += (double)nan;
                if (dz)
                    for (int32_t j = 0; j < classes; ++j) dz[j] = nan;
                continue;
            }
            total += (double)(row_log[r] - (z[label] - row_max[r]));
            if (dz) {
                v128_t scale = wasm_f32x4_splat(row_scale[r]);
                for (int32_t j = 0; j < classes; j += 12) {
                    for (int32_t v = 0; v < 12; v += 4) {
                        int32_t count = classes - j - v;
                        v128_t scaled = wasm_f32x4_mul(sf_load_lanes(dz + j + v, count), scale);
                        sf_store_lanes(dz + j + v, scaled, count);
                    }
                }
                dz[label] -= grad_scale;
            }
        }
    }
    return total;
}

float sf_softmax_xent(const float *logits, const int32_t *labels, int32_t batch, int32_t classes,
                      float *dlogits) {
    if (batch <= 0 || classes <= 0) return __builtin_nanf("");
    float inv_batch = 1.0f / (float)batch;
    return (float)(sf__softmax_xent_sum(logits, labels, batch, classes, dlogits, inv_batch) /
                   (double)batch);
}

/* Dense (fully connected) layer: y = x @ w + b and its gradients, on top of sf__sgemm. */
#include <wasm_simd128.h>

#include "lanes.h"
#include "sandflower.h"

void sf__dense_forward(const float *x, const float *w, const float *b, float *y, int32_t batch,
                       int32_t in_dim, int32_t out_dim, int relu) {
    /* Bias and ReLU are applied as the GEMM stores its tiles: no extra pass over y. */
    sf__sgemm_fused(0, 0, batch, out_dim, in_dim, x, w, y, 0, b, relu, NULL);
}

void sf__dense_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                        float *db, int32_t batch, int32_t in_dim, int32_t out_dim,
                        int accumulate, const float *relu_output) {
    if (in_dim <= 0 || out_dim <= 0) return;
    sf__sgemm(1, 0, in_dim, out_dim, batch, x, dy, dw, accumulate);
    /* db: column sums, 8 columns at a time held in registers over all rows. */
    for (int32_t j = 0; j < out_dim; j += 8) {
        int32_t count = out_dim - j;
        v128_t low = accumulate ? sf_load_lanes(db + j, count) : wasm_f32x4_splat(0.0f);
        v128_t high = accumulate ? sf_load_lanes(db + j + 4, count - 4) : wasm_f32x4_splat(0.0f);
        const float *column = dy + j;
        /* Four rows per iteration: a loop back-edge costs a fuel/epoch check. */
        int32_t i = 0;
        for (; i + 4 <= batch; i += 4, column += 4 * (size_t)out_dim) {
            for (int q = 0; q < 4; ++q) {
                const float *row = column + (size_t)q * out_dim;
                low = wasm_f32x4_add(low, sf_load_lanes(row, count));
                high = wasm_f32x4_add(high, sf_load_lanes(row + 4, count - 4));
            }
        }
        for (; i < batch; ++i, column += out_dim) {
            low = wasm_f32x4_add(low, sf_load_lanes(column, count));
            high = wasm_f32x4_add(high, sf_load_lanes(column + 4, count - 4));
        }
        sf_store_lanes(db + j, low, count);
        sf_store_lanes(db + j + 4, high, count - 4);
    }
    if (dx) sf__sgemm_fused(0, 1, batch, in_dim, out_dim, dy, w, dx, 0, NULL, 0, relu_output);
}

void sf_dense_forward(const float *x, const float *w, const float *b, float *y, int32_t batch,
                      int32_t in_dim, int32_t out_dim) {
    sf__dense_forward(x, w, b, y, batch, in_dim, out_dim, 0);
}

void sf_dense_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                       float *db, int32_t batch, int32_t in_dim, int32_t out_dim) {
    sf__dense_backward(x, w, dy, dx, dw, db, batch, in_dim, out_dim, 0, NULL);
}

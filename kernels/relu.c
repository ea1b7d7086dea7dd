/* ReLU and its gradient. f32x4.max propagates NaN (unlike a compare-and-select), as numpy's
 * np.maximum does, so a NaN input stays NaN. Loops take 16 floats per iteration: each loop
 * back-edge costs a check under fuel or epoch metering. */
#include <wasm_simd128.h>

#include "lanes.h"
#include "sandflower.h"

static inline v128_t relu4(v128_t x) { return wasm_f32x4_max(x, wasm_f32x4_splat(0.0f)); }

/* dy * (y > 0) as a product, not a select: a NaN or Inf in dy propagates as in numpy. */
static inline v128_t relu_grad4(v128_t y, v128_t dy) {
    v128_t mask = wasm_f32x4_gt(y, wasm_f32x4_splat(0.0f));
    return wasm_f32x4_mul(dy, wasm_v128_and(mask, wasm_f32x4_splat(1.0f)));
}

void sf__relu(const float *x, float *y, int32_t n) {
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        v128_t x0 = wasm_v128_load(x + i), x1 = wasm_v128_load(x + i + 4);
        v128_t x2 = wasm_v128_load(x + i + 8), x3 = wasm_v128_load(x + i + 12);
        wasm_v128_store(y + i, relu4(x0));
        wasm_v128_store(y + i + 4, relu4(x1));
        wasm_v128_store(y + i + 8, relu4(x2));
        wasm_v128_store(y + i + 12, relu4(x3));
    }
    for (; i < n; i += 4) sf_store_lanes(y + i, relu4(sf_load_lanes(x + i, n - i)), n - i);
}

void sf__relu_backward(const float *y, const float *dy, float *dx, int32_t n) {
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int v = 0; v < 16; v += 4)
            wasm_v128_store(dx + i + v,
                            relu_grad4(wasm_v128_load(y + i + v), wasm_v128_load(dy + i + v)));
    }
    for (; i < n; i += 4)
        sf_store_lanes(dx + i, relu_grad4(sf_load_lanes(y + i, n - i), sf_load_lanes(dy + i, n - i)),
                       n - i);
}

void sf_relu(const float *x, float *y, int32_t n) { sf__relu(x, y, n); }

void sf_relu_backward(const float *y, const float *dy, float *dx, int32_t n) {
    sf__relu_backward(y, dy, dx, n);
}

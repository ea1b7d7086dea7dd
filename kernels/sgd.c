/* SGD step with the FedProx proximal term: w -= lr * (grad + mu * (w - w_global)).
 * 32 floats per loop iteration: each loop back-edge costs a check under fuel metering. */
#include <wasm_simd128.h>

#include "lanes.h"
#include "sandflower.h"

static inline v128_t plain_step(v128_t w, v128_t grad, v128_t lr) {
    return wasm_f32x4_sub(w, wasm_f32x4_mul(lr, grad));
}

static inline v128_t proximal_step(v128_t w, v128_t grad, v128_t w_global, v128_t lr,
                                   v128_t mu) {
    v128_t prox = wasm_f32x4_mul(mu, wasm_f32x4_sub(w, w_global));
    return wasm_f32x4_sub(w, wasm_f32x4_mul(lr, wasm_f32x4_add(grad, prox)));
}

void sf__sgd_update(float *w, const float *grad, const float *w_global, int32_t n, float lr,
                    float mu) {
    const v128_t lr_v = wasm_f32x4_splat(lr), mu_v = wasm_f32x4_splat(mu);
    int32_t i = 0;
    /* mu == 0 skips the term (w_global is then not read and may be 0). */
    if (mu == 0.0f || !w_global) {
        for (; i + 32 <= n; i += 32)
            for (int v = 0; v < 32; v += 4)
                wasm_v128_store(w + i + v, plain_step(wasm_v128_load(w + i + v),
                                                      wasm_v128_load(grad + i + v), lr_v));
        for (; i < n; i += 4)
            sf_store_lanes(w + i, plain_step(sf_load_lanes(w + i, n - i),
                                             sf_load_lanes(grad + i, n - i), lr_v), n - i);
        return;
    }
    for (; i + 32 <= n; i += 32)
        for (int v = 0; v < 32; v += 4)
            wasm_v128_store(w + i + v,
                            proximal_step(wasm_v128_load(w + i + v), wasm_v128_load(grad + i + v),
                                          wasm_v128_load(w_global + i + v), lr_v, mu_v));
    for (; i < n; i += 4)
        sf_store_lanes(w + i,
                       proximal_step(sf_load_lanes(w + i, n - i), sf_load_lanes(grad + i, n - i),
                                     sf_load_lanes(w_global + i, n - i), lr_v, mu_v),
                       n - i);
}

void sf_sgd_update(float *w, const float *grad, const float *w_global, int32_t n, float lr,
                   float mu) {
    sf__sgd_update(w, grad, w_global, n, lr, mu);
}

/* Partial-vector loads and stores: the last 1..3 floats of an array as one v128, without
 * reading or writing past them and without a scalar loop (each loop back-edge costs a fuel or
 * epoch check under wasmtime's metering). */
#ifndef SF_LANES_H
#define SF_LANES_H

#include <stdint.h>
#include <wasm_simd128.h>

/* The first `count` floats at src (zeros past them); never reads beyond them. */
static inline v128_t sf_load_lanes(const float *src, int32_t count) {
    if (count >= 4) return wasm_v128_load(src);
    if (count == 3) return wasm_v128_load32_lane(src + 2, wasm_v128_load64_zero(src), 2);
    if (count == 2) return wasm_v128_load64_zero(src);
    if (count == 1) return wasm_v128_load32_zero(src);
    return wasm_f32x4_splat(0.0f);
}

/* Store the first `count` lanes of v; no loop, so no loop back-edge for fuel checks. */
static inline void sf_store_lanes(float *dst, v128_t v, int32_t count) {
    if (count >= 4) {
        wasm_v128_store(dst, v);
    } else if (count == 3) {
        wasm_v128_store64_lane(dst, v, 0);
        wasm_v128_store32_lane(dst + 2, v, 2);
    } else if (count == 2) {
        wasm_v128_store64_lane(dst, v, 0);
    } else if (count == 1) {
        wasm_v128_store32_lane(dst, v, 0);
    }
}

#endif

/* expf and logf on four float lanes, for a module without libm.
 *
 * Both are within 2 ulp of numpy's float32 results (the tests compare against numpy with
 * float32 tolerances). Special values follow IEEE: exp(-inf) = 0, exp(+inf) = inf,
 * log(0) = -inf, log(x < 0) = NaN, NaN in gives NaN out: the NaN/Inf parity tests rely on it.
 */
#ifndef SF_MATH_H
#define SF_MATH_H

#include <stdint.h>
#include <wasm_simd128.h>

/* a * b + c: fused with relaxed SIMD (wasmtime runs it deterministically, as a real FMA), which
 * shortens the latency chain of a polynomial; a multiply and an add otherwise. */
#if defined(__wasm_relaxed_simd__)
#define SF_POLY_MADD(a, b, c) wasm_f32x4_relaxed_madd((a), (b), (c))
#else
#define SF_POLY_MADD(a, b, c) wasm_f32x4_add(wasm_f32x4_mul((a), (b)), (c))
#endif

/* expf on four lanes in float arithmetic (Cephes' polynomial, within 2 ulp of numpy's expf).
 * x = k ln2 + r with |r| <= ln2/2, then 2^k is applied in two halves. Results below the
 * smallest normal float (x < -87.33) are returned as exactly 0, and the lanes computing them
 * are clamped so that no step ever makes a subnormal: each subnormal result costs a ~100-cycle
 * microcode assist on x86 (the -inf padding of every softmax row made exp 2.5x slower). Above
 * 88.73 the result is inf; f32x4.min/max propagate NaN, so NaN in gives NaN out. */
static inline v128_t sf_expf4(v128_t x) {
    const v128_t max_x = wasm_f32x4_splat(89.0f);
    const v128_t min_x = wasm_f32x4_splat(-87.0f);
    const v128_t underflow_x = wasm_f32x4_splat(-87.33654f); /* log(2^-126) */
    v128_t clamped = wasm_f32x4_max(wasm_f32x4_min(x, max_x), min_x);
    v128_t kf = wasm_f32x4_nearest(wasm_f32x4_mul(clamped, wasm_f32x4_splat(1.44269504088896341f)));
    v128_t r = wasm_f32x4_sub(clamped, wasm_f32x4_mul(kf, wasm_f32x4_splat(0.693359375f)));
    r = wasm_f32x4_sub(r, wasm_f32x4_mul(kf, wasm_f32x4_splat(-2.12194440e-4f)));
    v128_t p = wasm_f32x4_splat(1.9875691500e-4f);
    p = SF_POLY_MADD(p, r, wasm_f32x4_splat(1.3981999507e-3f));
    p = SF_POLY_MADD(p, r, wasm_f32x4_splat(8.3334519073e-3f));
    p = SF_POLY_MADD(p, r, wasm_f32x4_splat(4.1665795894e-2f));
    p = SF_POLY_MADD(p, r, wasm_f32x4_splat(1.6666665459e-1f));
    p = SF_POLY_MADD(p, r, wasm_f32x4_splat(5.0000001201e-1f));
    p = SF_POLY_MADD(wasm_f32x4_mul(p, r), r, r);
    p = wasm_f32x4_add(p, wasm_f32x4_splat(1.0f));
    /* k in [-126, 129]: two factors 2^(k/2) and 2^(k - k/2), each a normal float (2^128 alone
     * would not be). NaN lanes convert to k = 0 (saturating) and stay NaN through p. */
    v128_t k = wasm_i32x4_trunc_sat_f32x4(kf);
    v128_t k_half = wasm_i32x4_shr(k, 1);
    v128_t k_rest = wasm_i32x4_sub(k, k_half);
    const v128_t bias = wasm_i32x4_splat(127);
    v128_t scale_half = wasm_i32x4_shl(wasm_i32x4_add(k_half, bias), 23);
    v128_t scale_rest = wasm_i32x4_shl(wasm_i32x4_add(k_rest, bias), 23);
    v128_t result = wasm_f32x4_mul(wasm_f32x4_mul(p, scale_half), scale_rest);
    return wasm_v128_andnot(result, wasm_f32x4_lt(x, underflow_x));
}

/* logf on four lanes in float arithmetic (Cephes' logf, within 2 ulp), for normal positive x,
 * +inf, 0, negatives and NaN (IEEE results); subnormal x is not handled (the softmax sums it
 * serves are >= 1). */
static inline v128_t sf_logf4(v128_t x) {
    /* x = m * 2^e with m in [sqrt(1/2), sqrt(2)). */
    v128_t e = wasm_i32x4_sub(wasm_u32x4_shr(x, 23), wasm_i32x4_splat(126));
    v128_t m = wasm_v128_or(wasm_v128_and(x, wasm_i32x4_splat(0x007FFFFF)),
                            wasm_i32x4_splat(0x3F000000)); /* [0.5, 1) */
    v128_t small = wasm_f32x4_lt(m, wasm_f32x4_splat(0.707106781186547524f));
    e = wasm_i32x4_add(e, small); /* small lanes are -1: e - 1 */
    m = wasm_f32x4_add(wasm_f32x4_sub(m, wasm_f32x4_splat(1.0f)), wasm_v128_and(m, small));
    v128_t z = wasm_f32x4_mul(m, m);
    v128_t p = wasm_f32x4_splat(7.0376836292e-2f);
    p = SF_POLY_MADD(p, m, wasm_f32x4_splat(-1.1514610310e-1f));
    p = SF_POLY_MADD(p, m, wasm_f32x4_splat(1.1676998740e-1f));
    p = SF_POLY_MADD(p, m, wasm_f32x4_splat(-1.2420140846e-1f));
    p = SF_POLY_MADD(p, m, wasm_f32x4_splat(1.4249322787e-1f));
    p = SF_POLY_MADD(p, m, wasm_f32x4_splat(-1.6668057665e-1f));
    p = SF_POLY_MADD(p, m, wasm_f32x4_splat(2.0000714765e-1f));
    p = SF_POLY_MADD(p, m, wasm_f32x4_splat(-2.4999993993e-1f));
    p = SF_POLY_MADD(p, m, wasm_f32x4_splat(3.3333331174e-1f));
    v128_t fe = wasm_f32x4_convert_i32x4(e);
    v128_t y = wasm_f32x4_mul(wasm_f32x4_mul(p, m), z);
    y = SF_POLY_MADD(fe, wasm_f32x4_splat(-2.12194440e-4f), y);
    y = SF_POLY_MADD(z, wasm_f32x4_splat(-0.5f), y);
    v128_t result = wasm_f32x4_add(m, y);
    result = SF_POLY_MADD(fe, wasm_f32x4_splat(0.693359375f), result);
    /* IEEE special values. */
    const v128_t inf = wasm_f32x4_splat(__builtin_inff());
    result = wasm_v128_bitselect(inf, result, wasm_f32x4_eq(x, inf));
    result = wasm_v128_bitselect(wasm_f32x4_neg(inf), result,
                                 wasm_f32x4_eq(x, wasm_f32x4_splat(0.0f)));
    v128_t invalid = wasm_v128_or(wasm_f32x4_lt(x, wasm_f32x4_splat(0.0f)), wasm_f32x4_ne(x, x));
    return wasm_v128_bitselect(wasm_f32x4_splat(__builtin_nanf("")), result, invalid);
}

#endif

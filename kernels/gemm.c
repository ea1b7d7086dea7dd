/* sf_sgemm: C[m,n] (+)= op(A) @ op(B) with a 4x8 SIMD register tile (8 f32x4 accumulators).
 *
 * B is packed into zero-padded panels of 8 columns, so the tile reads 8 contiguous floats per
 * k step whatever trans_b is. A is read in place: four consecutive values (four k steps of one
 * row, or four rows of one k step when A is transposed) come in with one v128 load and are
 * broadcast with a lane shuffle (one pshufd); a scalar broadcast load costs three instructions
 * under Cranelift and a GPR each. Packing A cost a quarter of the time of the small GEMMs of a
 * training step. Only the last, partial panel of rows is copied into a zero-padded buffer so
 * that the tile never reads past the matrix. Every buffer is a whole multiple of the tile (an
 * overflow there once corrupted results silently).
 *
 * Measured on these machines (wasmtime 50, Cranelift, n = 256): this tile with a multiply and
 * an add runs at ~31 GFLOP/s in both builds. With relaxed-SIMD FMA instead it ran at ~26 (LLVM
 * chains each accumulator's four unrolled k steps, x86 FMA overwrites an operand, Cranelift
 * copies and spills), and ~30% slower again under fuel metering; the 6x8 FMA tile that
 * DESIGN.md names spilled likewise. So both builds use this tile, and relaxed FMA is used where
 * it shortens a latency chain (the exp and log polynomials). The k loop is unrolled by 4: fewer
 * loop back-edges make wasmtime's fuel and epoch checks cheaper (unrolling by 8 spilled).
 */
#include <wasm_simd128.h>

#include "lanes.h"
#include "sandflower.h"

#define SF_NR 8
#define SF_MR 4
/* c + a * b as a multiply and an add, in both builds (see above). */
#define SF_MADD(a, b, c) wasm_f32x4_add((c), wasm_f32x4_mul((a), (b)))
#define SF_KU 4            /* k unroll */
#define SF_KC 256          /* depth of one block */
#define SF_MC (SF_MR * 16) /* rows of A per block */
#define SF_NC (SF_NR * 64) /* columns of B per block: 512 */

static float packed_b[SF_KC * SF_NC] __attribute__((aligned(16)));
static float edge_a[SF_KC * SF_MR] __attribute__((aligned(16)));

static inline int32_t min_i32(int32_t a, int32_t b) { return a < b ? a : b; }

/* 4x4 transpose: out[u] = (in0[u], in1[u], in2[u], in3[u]). */
#define SF_TRANSPOSE4(in0, in1, in2, in3, out)                                     \
    do {                                                                           \
        v128_t lo01 = wasm_i32x4_shuffle(in0, in1, 0, 4, 1, 5);                   \
        v128_t lo23 = wasm_i32x4_shuffle(in2, in3, 0, 4, 1, 5);                   \
        v128_t hi01 = wasm_i32x4_shuffle(in0, in1, 2, 6, 3, 7);                   \
        v128_t hi23 = wasm_i32x4_shuffle(in2, in3, 2, 6, 3, 7);                   \
        out[0] = wasm_i32x4_shuffle(lo01, lo23, 0, 1, 4, 5);                      \
        out[1] = wasm_i32x4_shuffle(lo01, lo23, 2, 3, 6, 7);                      \
        out[2] = wasm_i32x4_shuffle(hi01, hi23, 0, 1, 4, 5);                      \
        out[3] = wasm_i32x4_shuffle(hi01, hi23, 2, 3, 6, 7);                      \
    } while (0)

/* A block [kc, nc] of op(B) -> panels of SF_NR columns: panel[p * SF_NR + j], zero padded.
 * Vector loads and stores only (partial ones at the edges): a scalar loop per element cost a
 * fuel/epoch check per element. */
static void pack_b(int trans_b, const float *b, int32_t ldb, int32_t row0, int32_t col0,
                   int32_t kc, int32_t nc) {
    const v128_t zero = wasm_f32x4_splat(0.0f);
    for (int32_t j0 = 0; j0 < nc; j0 += SF_NR) {
        float *panel = packed_b + (size_t)j0 * kc;
        int32_t cols = min_i32(SF_NR, nc - j0);
        if (!trans_b) {
            const float *src = b + (size_t)row0 * ldb + col0 + j0;
            if (cols == SF_NR) {
                int32_t p = 0;
                for (; p + 2 <= kc; p += 2, src += 2 * (size_t)ldb) {
                    v128_t r0l = wasm_v128_load(src), r0h = wasm_v128_load(src + 4);
                    v128_t r1l = wasm_v128_load(src + ldb), r1h = wasm_v128_load(src + ldb + 4);
                    wasm_v128_store(panel + (size_t)p * SF_NR, r0l);
                    wasm_v128_store(panel + (size_t)p * SF_NR + 4, r0h);
                    wasm_v128_store(panel + (size_t)(p + 1) * SF_NR, r1l);
                    wasm_v128_store(panel + (size_t)(p + 1) * SF_NR + 4, r1h);
                }
                if (p < kc) {
                    wasm_v128_store(panel + (size_t)p * SF_NR, wasm_v128_load(src));
                    wasm_v128_store(panel + (size_t)p * SF_NR + 4, wasm_v128_load(src + 4));
                }
            } else {
                for (int32_t p = 0; p < kc; ++p, src += ldb) {
                    wasm_v128_store(panel + (size_t)p * SF_NR, sf_load_lanes(src, cols));
                    wasm_v128_store(panel + (size_t)p * SF_NR + 4, sf_load_lanes(src + 4, cols - 4));
                }
            }
            continue;
        }
        /* op(B)[p, j] = b[j * ldb + p]: stored rows j are read 4 values at a time and 4x4
         * blocks transposed into the panel. */
        for (int32_t half = 0; half < SF_NR; half += 4) {
            const float *rows[4];
            for (int q = 0; q < 4; ++q) {
                int32_t j = half + q;
                rows[q] = j < cols ? b + (size_t)(col0 + j0 + j) * ldb + row0 : NULL;
            }
            for (int32_t p = 0; p < kc; p += 4) {
                int32_t count = kc - p;
                v128_t in0 = rows[0] ? sf_load_lanes(rows[0] + p, count) : zero;
                v128_t in1 = rows[1] ? sf_load_lanes(rows[1] + p, count) : zero;
                v128_t in2 = rows[2] ? sf_load_lanes(rows[2] + p, count) : zero;
                v128_t in3 = rows[3] ? sf_load_lanes(rows[3] + p, count) : zero;
                v128_t out[4];
                SF_TRANSPOSE4(in0, in1, in2, in3, out);
                float *dst = panel + (size_t)p * SF_NR + half;
                wasm_v128_store(dst, out[0]);
                if (count > 1) wasm_v128_store(dst + SF_NR, out[1]);
                if (count > 2) wasm_v128_store(dst + 2 * SF_NR, out[2]);
                if (count > 3) wasm_v128_store(dst + 3 * SF_NR, out[3]);
            }
        }
    }
}

/* The last `rows` (< SF_MR) rows of a block of op(A) -> edge_a[p * SF_MR + r], zero padded:
 * laid out like a transposed A with lda = SF_MR, so the column tile can read it. */
static void pack_edge_a(int trans_a, const float *a, int32_t lda, int32_t row0, int32_t col0,
                        int32_t rows, int32_t kc) {
    for (int32_t p = 0; p < kc; ++p) {
        float *dst = edge_a + (size_t)p * SF_MR;
        for (int32_t r = 0; r < SF_MR; ++r) {
            if (r >= rows) {
                dst[r] = 0.0f;
            } else if (trans_a) {
                dst[r] = a[(size_t)(col0 + p) * lda + row0 + r];
            } else {
                dst[r] = a[(size_t)(row0 + r) * lda + col0 + p];
            }
        }
    }
}

/* Broadcast lane u of v (a constant) to all four lanes. */
#define SF_LANE(v, u) wasm_i32x4_shuffle((v), (v), (u), (u), (u), (u))

/* One k step of the tile: C[r, 0..8) += A(r, k) * B(k, 0..8) for the four rows, with
 * A(r, k) = the A_VALUE(r) broadcast vector; only columns 0..4 when `narrow` (a compile-time
 * constant in each tile function: the last panel of an n = 10 layer has 2 columns, and a
 * half-width tile wastes 2 lanes instead of 6). */
#define SF_TILE_STEP(A_VALUE, u)                                                   \
    do {                                                                           \
        v128_t b0 = wasm_v128_load(pb + (u) * SF_NR);                              \
        v128_t b1 = narrow ? b0 : wasm_v128_load(pb + (u) * SF_NR + 4);            \
        v128_t av;                                                                 \
        av = A_VALUE(0, u);                                                        \
        acc0[0] = SF_MADD(av, b0, acc0[0]);                                        \
        if (!narrow) acc1[0] = SF_MADD(av, b1, acc1[0]);                           \
        av = A_VALUE(1, u);                                                        \
        acc0[1] = SF_MADD(av, b0, acc0[1]);                                        \
        if (!narrow) acc1[1] = SF_MADD(av, b1, acc1[1]);                           \
        av = A_VALUE(2, u);                                                        \
        acc0[2] = SF_MADD(av, b0, acc0[2]);                                        \
        if (!narrow) acc1[2] = SF_MADD(av, b1, acc1[2]);                           \
        av = A_VALUE(3, u);                                                        \
        acc0[3] = SF_MADD(av, b0, acc0[3]);                                        \
        if (!narrow) acc1[3] = SF_MADD(av, b1, acc1[3]);                           \
        SF_OPAQUE_POINTER(pb);                                                     \
    } while (0)
/* An empty asm that the pointer passes through between k steps. It changes nothing unmetered,
 * but under fuel or epoch metering it made the small GEMMs of a training step 5-10% faster,
 * and 2x faster at k = 10 with epochs (measured; Cranelift allocates the metered loop's
 * registers differently when the next step's addresses are not known early). */
#define SF_OPAQUE_POINTER(ptr) __asm__("" : "+r"(ptr))

/* A values: lane u of row r's vector of four k steps; lane r of one k step's column of four
 * rows; or a broadcast load (the k remainder). */
#define SF_FROM_ROWS(r, u) SF_LANE(rows4[r], u)
#define SF_FROM_COLUMN(r, u) SF_LANE(column, r)
#define SF_FROM_ROW_POINTERS(r, u) wasm_v128_load32_splat(row[r] + p)
#define SF_FROM_COLUMN_POINTER(r, u) wasm_v128_load32_splat(a + (r))

/* What the tile does with its sums before storing them: C = [C +] sums [+ bias] [relu]. */
typedef struct {
    int accumulate;    /* add what C holds */
    const float *bias; /* add bias[j] (pointing at the tile's first column), or NULL */
    int relu;          /* then max(., 0), which keeps NaN */
    ptrdiff_t mask;    /* if not 0: then * (M > 0), M at c + mask with C's layout (ReLU grad) */
} sf_epilogue;

static inline __attribute__((always_inline)) void store_tile(const v128_t *acc0,
                                                             const v128_t *acc1, float *c,
                                                             int32_t ldc, int32_t rows,
                                                             int32_t cols,
                                                             const sf_epilogue *epilogue) {
    if (rows == SF_MR && cols == SF_NR && !epilogue->bias && !epilogue->relu &&
        !epilogue->mask) {
        /* The common whole tile of a plain GEMM, kept short: with 64 tiles of k = 32 in a
         * training step's weight gradient, the store is a sizeable part of each tile. */
        for (int r = 0; r < SF_MR; ++r) {
            float *row = c + (size_t)r * ldc;
            v128_t low = acc0[r], high = acc1[r];
            if (epilogue->accumulate) {
                low = wasm_f32x4_add(wasm_v128_load(row), low);
                high = wasm_f32x4_add(wasm_v128_load(row + 4), high);
            }
            wasm_v128_store(row, low);
            wasm_v128_store(row + 4, high);
        }
        return;
    }
    /* Each step of the epilogue is decided once per tile, not once per row. Rows past `rows`
     * are computed but never loaded from or stored. */
    v128_t low[SF_MR], high[SF_MR];
    for (int r = 0; r < SF_MR; ++r) {
        low[r] = acc0[r];
        high[r] = acc1[r];
    }
    if (epilogue->accumulate) {
        for (int r = 0; r < SF_MR; ++r) {
            if (r >= rows) break;
            const float *row = c + (size_t)r * ldc;
            low[r] = wasm_f32x4_add(sf_load_lanes(row, cols), low[r]);
            high[r] = wasm_f32x4_add(sf_load_lanes(row + 4, cols - 4), high[r]);
        }
    }
    if (epilogue->bias) {
        v128_t bias_low = sf_load_lanes(epilogue->bias, cols);
        v128_t bias_high = sf_load_lanes(epilogue->bias + 4, cols - 4);
        for (int r = 0; r < SF_MR; ++r) {
            low[r] = wasm_f32x4_add(low[r], bias_low);
            high[r] = wasm_f32x4_add(high[r], bias_high);
        }
    }
    if (epilogue->relu) {
        const v128_t zero = wasm_f32x4_splat(0.0f);
        for (int r = 0; r < SF_MR; ++r) {
            low[r] = wasm_f32x4_max(low[r], zero);
            high[r] = wasm_f32x4_max(high[r], zero);
        }
    }
    if (epilogue->mask) {
        /* As sf_relu_backward: a product with 1 or 0, so NaN/Inf in the sums propagate. */
        const v128_t zero = wasm_f32x4_splat(0.0f), one = wasm_f32x4_splat(1.0f);
        for (int r = 0; r < SF_MR; ++r) {
            if (r >= rows) break;
            const float *mask = c + (size_t)r * ldc + epilogue->mask;
            v128_t mask_low = wasm_f32x4_gt(sf_load_lanes(mask, cols), zero);
            v128_t mask_high = wasm_f32x4_gt(sf_load_lanes(mask + 4, cols - 4), zero);
            low[r] = wasm_f32x4_mul(low[r], wasm_v128_and(mask_low, one));
            high[r] = wasm_f32x4_mul(high[r], wasm_v128_and(mask_high, one));
        }
    }
    for (int r = 0; r < SF_MR; ++r) {
        if (r >= rows) break;
        float *row = c + (size_t)r * ldc;
        sf_store_lanes(row, low[r], cols);
        sf_store_lanes(row + 4, high[r], cols - 4);
    }
}

/* A tile of SF_MR rows with A row-major: A(r, p) = a[r * lda + p]. */
static inline __attribute__((always_inline)) void tile_a_rows(int narrow, int32_t kc,
                                                              const float *a, int32_t lda,
                                                              const float *pb, float *c,
                                                              int32_t ldc, int32_t cols,
                                                              const sf_epilogue *epilogue) {
    v128_t acc0[SF_MR], acc1[SF_MR];
    const float *row[SF_MR];
    for (int r = 0; r < SF_MR; ++r) {
        acc0[r] = acc1[r] = wasm_f32x4_splat(0.0f);
        row[r] = a + (size_t)r * lda;
    }
    int32_t p = 0;
    for (; p + SF_KU <= kc; p += SF_KU, pb += SF_KU * SF_NR) {
        v128_t rows4[SF_MR];
        for (int r = 0; r < SF_MR; ++r) rows4[r] = wasm_v128_load(row[r] + p);
        SF_TILE_STEP(SF_FROM_ROWS, 0);
        SF_TILE_STEP(SF_FROM_ROWS, 1);
        SF_TILE_STEP(SF_FROM_ROWS, 2);
        SF_TILE_STEP(SF_FROM_ROWS, 3);
    }
    for (; p < kc; ++p, pb += SF_NR) SF_TILE_STEP(SF_FROM_ROW_POINTERS, 0);
    store_tile(acc0, acc1, c, ldc, SF_MR, cols, epilogue);
}

/* A tile of SF_MR rows with A column-major: A(r, p) = a[p * lda + r]; `rows` <= SF_MR of the
 * results are stored. */
static inline __attribute__((always_inline)) void tile_a_cols(int narrow, int32_t kc,
                                                              const float *a, int32_t lda,
                                                              const float *pb, float *c,
                                                              int32_t ldc, int32_t rows,
                                                              int32_t cols,
                                                              const sf_epilogue *epilogue) {
    v128_t acc0[SF_MR], acc1[SF_MR];
    for (int r = 0; r < SF_MR; ++r) acc0[r] = acc1[r] = wasm_f32x4_splat(0.0f);
    int32_t p = 0;
    for (; p + SF_KU <= kc; p += SF_KU, pb += SF_KU * SF_NR) {
        v128_t column = wasm_v128_load(a);
        SF_TILE_STEP(SF_FROM_COLUMN, 0);
        a += lda;
        SF_OPAQUE_POINTER(a);
        column = wasm_v128_load(a);
        SF_TILE_STEP(SF_FROM_COLUMN, 1);
        a += lda;
        SF_OPAQUE_POINTER(a);
        column = wasm_v128_load(a);
        SF_TILE_STEP(SF_FROM_COLUMN, 2);
        a += lda;
        SF_OPAQUE_POINTER(a);
        column = wasm_v128_load(a);
        SF_TILE_STEP(SF_FROM_COLUMN, 3);
        a += lda;
    }
    for (; p < kc; ++p, pb += SF_NR, a += lda) SF_TILE_STEP(SF_FROM_COLUMN_POINTER, 0);
    store_tile(acc0, acc1, c, ldc, rows, cols, epilogue);
}

/* The four tile functions: (rows or columns of A) x (8 or 4 columns of B). */
static void tile_rows_wide(int32_t kc, const float *a, int32_t lda, const float *pb, float *c,
                           int32_t ldc, int32_t cols, const sf_epilogue *epilogue) {
    tile_a_rows(0, kc, a, lda, pb, c, ldc, cols, epilogue);
}
static void tile_rows_narrow(int32_t kc, const float *a, int32_t lda, const float *pb, float *c,
                             int32_t ldc, int32_t cols, const sf_epilogue *epilogue) {
    tile_a_rows(1, kc, a, lda, pb, c, ldc, cols, epilogue);
}
static void tile_cols_wide(int32_t kc, const float *a, int32_t lda, const float *pb, float *c,
                           int32_t ldc, int32_t rows, int32_t cols, const sf_epilogue *epilogue) {
    tile_a_cols(0, kc, a, lda, pb, c, ldc, rows, cols, epilogue);
}
static void tile_cols_narrow(int32_t kc, const float *a, int32_t lda, const float *pb, float *c,
                             int32_t ldc, int32_t rows, int32_t cols,
                             const sf_epilogue *epilogue) {
    tile_a_cols(1, kc, a, lda, pb, c, ldc, rows, cols, epilogue);
}

void sf__sgemm_fused(int trans_a, int trans_b, int32_t m, int32_t n, int32_t k, const float *a,
                     const float *b, float *c, int accumulate, const float *bias, int relu,
                     const float *relu_output) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        /* An empty sum: C = [C +] 0 [+ bias] [relu] [* (M > 0)]. */
        for (int32_t i = 0; i < m; ++i) {
            float *row = c + (size_t)i * n;
            for (int32_t j = 0; j < n; ++j) {
                float value = (accumulate ? row[j] : 0.0f) + (bias ? bias[j] : 0.0f);
                value = relu && value < 0.0f ? 0.0f : value; /* NaN stays NaN */
                if (relu_output) value *= relu_output[(size_t)i * n + j] > 0.0f ? 1.0f : 0.0f;
                row[j] = value;
            }
        }
        return;
    }
    int32_t lda = trans_a ? m : k;
    int32_t ldb = trans_b ? k : n;
    int32_t full_rows = m - m % SF_MR; /* rows below this are in whole tiles */
    for (int32_t jc = 0; jc < n; jc += SF_NC) {
        int32_t nc = min_i32(SF_NC, n - jc);
        for (int32_t pc = 0; pc < k; pc += SF_KC) {
            int32_t kc = min_i32(SF_KC, k - pc);
            /* Later k blocks add to what the first one wrote; the bias goes in with the first,
             * the ReLU comes after the last. */
            int last = pc + kc == k;
            sf_epilogue epilogue = {accumulate || pc > 0, NULL, relu && last,
                                    relu_output && last ? relu_output - c : 0};
            pack_b(trans_b, b, ldb, pc, jc, kc, nc);
            if (full_rows < m) pack_edge_a(trans_a, a, lda, full_rows, pc, m - full_rows, kc);
            for (int32_t ic = 0; ic < m; ic += SF_MC) {
                int32_t mc = min_i32(SF_MC, m - ic);
                for (int32_t jr = 0; jr < nc; jr += SF_NR) {
                    const float *pb = packed_b + (size_t)jr * kc;
                    int32_t cols = min_i32(SF_NR, nc - jr);
                    epilogue.bias = bias && pc == 0 ? bias + jc + jr : NULL;
                    int narrow = cols <= 4;
                    for (int32_t i = ic; i < ic + mc; i += SF_MR) {
                        float *tile_c = c + (size_t)i * n + jc + jr;
                        const float *a_cols = i >= full_rows ? edge_a : a + (size_t)pc * lda + i;
                        int32_t a_cols_ld = i >= full_rows ? SF_MR : lda;
                        int32_t rows = min_i32(SF_MR, m - i);
                        if (i < full_rows && !trans_a) {
                            const float *a_rows = a + (size_t)i * lda + pc;
                            if (narrow) {
                                tile_rows_narrow(kc, a_rows, lda, pb, tile_c, n, cols, &epilogue);
                            } else {
                                tile_rows_wide(kc, a_rows, lda, pb, tile_c, n, cols, &epilogue);
                            }
                        } else if (narrow) {
                            tile_cols_narrow(kc, a_cols, a_cols_ld, pb, tile_c, n, rows, cols,
                                             &epilogue);
                        } else {
                            tile_cols_wide(kc, a_cols, a_cols_ld, pb, tile_c, n, rows, cols,
                                           &epilogue);
                        }
                    }
                }
            }
        }
    }
}

void sf__sgemm(int trans_a, int trans_b, int32_t m, int32_t n, int32_t k, const float *a,
               const float *b, float *c, int accumulate) {
    sf__sgemm_fused(trans_a, trans_b, m, n, k, a, b, c, accumulate, NULL, 0, NULL);
}

void sf_sgemm(int32_t trans_a, int32_t trans_b, int32_t m, int32_t n, int32_t k, const float *a,
              const float *b, float *c, int32_t accumulate) {
    sf__sgemm(trans_a != 0, trans_b != 0, m, n, k, a, b, c, accumulate != 0);
}

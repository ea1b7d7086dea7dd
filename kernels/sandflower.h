/* Shared declarations of the Sandflower kernels (kernels/ABI.md, version 1).
 *
 * Freestanding C99 for wasm32: no libc, no libm, no imports. Every export is declared, with its
 * export name, in the generated sandflower_abi.h (kernels/registry.py), so the build needs no
 * list of -Wl,--export flags and the sources no export names that could drift from the table.
 */
#ifndef SANDFLOWER_H
#define SANDFLOWER_H

#include <stddef.h>
#include <stdint.h>

/* The ABI version, status codes, spec constants and every export's prototype (with its export
 * name): generated from kernels/registry.py, the one table of the ABI. */
#include "sandflower_abi.h"

/* The module never hands out more than this much heap, whatever the host allows. */
#define SF_HEAP_CAP_BYTES (1u << 30)

/* -- alloc.c: bump allocator over linear memory ------------------------------------------- */
/* Zero-filled, 16-byte aligned; NULL when the cap or the host's memory limit would be passed. */
void *sf__alloc(uint64_t nbytes);
/* Scratch space of an entry is released when it returns: mark on entry, release on exit. */
uintptr_t sf__heap_mark(void);
void sf__heap_release(uintptr_t mark);

/* -- layer kernels (internal names; the exports wrap them) ---------------------------------- */
/* C[m,n] (+)= op(A) @ op(B) (gemm.c). */
void sf__sgemm(int trans_a, int trans_b, int32_t m, int32_t n, int32_t k, const float *a,
               const float *b, float *c, int accumulate);
/* The same, then + bias[n] (unless NULL), ReLU (if relu), and * (relu_output > 0) (unless
 * NULL; relu_output has C's layout: the ReLU gradient) on the way out: no extra passes. */
void sf__sgemm_fused(int trans_a, int trans_b, int32_t m, int32_t n, int32_t k, const float *a,
                     const float *b, float *c, int accumulate, const float *bias, int relu,
                     const float *relu_output);
/* y = x @ w + b, then ReLU when relu != 0 (dense.c). */
void sf__dense_forward(const float *x, const float *w, const float *b, float *y, int32_t batch,
                       int32_t in_dim, int32_t out_dim, int relu);
/* dw (+)= x.T @ dy, db (+)= sum(dy), dx = dy @ w.T unless dx is NULL (dense.c); then
 * dx *= (relu_output > 0) unless relu_output is NULL (the gradient through a ReLU below). */
void sf__dense_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                        float *db, int32_t batch, int32_t in_dim, int32_t out_dim,
                        int accumulate, const float *relu_output);
void sf__relu(const float *x, float *y, int32_t n);
void sf__relu_backward(const float *y, const float *dy, float *dx, int32_t n);
/* Sum of the per-sample losses (not the mean); dlogits = (softmax - onehot) * grad_scale. */
double sf__softmax_xent_sum(const float *logits, const int32_t *labels, int32_t batch,
                            int32_t classes, float *dlogits, float grad_scale);
void sf__sgd_update(float *w, const float *grad, const float *w_global, int32_t n, float lr,
                    float mu);

#endif

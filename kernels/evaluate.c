/* Model entries without training: forward, loss and gradient, evaluation (ABI.md). */
#include "model.h"
#include "sf_math.h"

/* Forward-only entries run in chunks of rows so their scratch does not grow with n. */
#define SF_EVAL_CHUNK 256

static int32_t min_i32(int32_t a, int32_t b) { return a < b ? a : b; }

static int32_t check_rows(const sf_model *model, int32_t n) {
    if (n <= 0) return SF_BAD_ARGUMENT;
    if ((int64_t)n * model->input_dim > SF_MAX_ELEMENTS) return SF_BAD_ARGUMENT;
    if ((int64_t)n * model->classes > SF_MAX_ELEMENTS) return SF_BAD_ARGUMENT;
    return SF_OK;
}

int32_t sf_model_forward(const int32_t *spec, const float *params, const float *x, int32_t n,
                         float *logits) {
    sf_model model;
    int32_t status = sf__model_parse(spec, &model);
    if (status == SF_OK) status = check_rows(&model, n);
    if (status != SF_OK) return status;
    uintptr_t mark = sf__heap_mark();
    for (int32_t row0 = 0; row0 < n && status == SF_OK; row0 += SF_EVAL_CHUNK) {
        int32_t rows = min_i32(SF_EVAL_CHUNK, n - row0);
        sf_workspace ws;
        /* Each chunk writes its logits in place; scratch is reused across chunks. */
        sf__heap_release(mark);
        status = sf__workspace_alloc(&model, rows, 0, logits + (size_t)row0 * model.classes, &ws);
        if (status != SF_OK) break;
        ws.act[0] = x + (size_t)row0 * model.input_dim;
        sf__model_forward(&model, params, &ws, rows);
    }
    sf__heap_release(mark);
    return status;
}

int32_t sf_model_loss_grad(const int32_t *spec, const float *params, const float *x,
                           const int32_t *labels, int32_t n, float *grads, float *out_loss) {
    sf_model model;
    int32_t status = sf__model_parse(spec, &model);
    if (status == SF_OK) status = check_rows(&model, n);
    if (status == SF_OK && !sf__labels_valid(labels, n, model.classes)) status = SF_BAD_ARGUMENT;
    if (status != SF_OK) return status;
    uintptr_t mark = sf__heap_mark();
    sf_workspace ws;
    status = sf__workspace_alloc(&model, n, 1, NULL, &ws);
    if (status == SF_OK) {
        ws.act[0] = x;
        sf__model_forward(&model, params, &ws, n);
        double total = sf__softmax_xent_sum(ws.act[model.num_layers], labels, n, model.classes,
                                            ws.dact[0], 1.0f / (float)n);
        sf__model_backward(&model, params, &ws, n, grads, 0);
        out_loss[0] = (float)(total / (double)n);
    }
    sf__heap_release(mark);
    return status;
}

/* argmax with numpy's rule: the first maximum wins, and a NaN counts as the maximum. */
static int32_t argmax_row(const float *z, int32_t classes) {
    int32_t best = 0;
    for (int32_t j = 1; j < classes; ++j) {
        float v = z[j], top = z[best];
        if (top != top) break;
        if (v > top || v != v) best = j;
    }
    return best;
}

int32_t sf_evaluate(const int32_t *spec, const float *params, const float *x,
                    const int32_t *labels, int32_t n, float *out) {
    sf_model model;
    int32_t status = sf__model_parse(spec, &model);
    if (status == SF_OK) status = check_rows(&model, n);
    if (status == SF_OK && !sf__labels_valid(labels, n, model.classes)) status = SF_BAD_ARGUMENT;
    if (status != SF_OK) return status;
    uintptr_t mark = sf__heap_mark();
    sf_workspace ws;
    status = sf__workspace_alloc(&model, min_i32(SF_EVAL_CHUNK, n), 0, NULL, &ws);
    double total_loss = 0.0;
    int32_t correct = 0;
    for (int32_t row0 = 0; row0 < n && status == SF_OK; row0 += SF_EVAL_CHUNK) {
        int32_t rows = min_i32(SF_EVAL_CHUNK, n - row0);
        ws.act[0] = x + (size_t)row0 * model.input_dim;
        sf__model_forward(&model, params, &ws, rows);
        const float *logits = ws.act[model.num_layers];
        total_loss += sf__softmax_xent_sum(logits, labels + row0, rows, model.classes, NULL, 0.0f);
        for (int32_t i = 0; i < rows; ++i)
            correct += argmax_row(logits + (size_t)i * model.classes, model.classes) ==
                       labels[row0 + i];
    }
    if (status == SF_OK) {
        out[0] = (float)(total_loss / (double)n);
        out[1] = (float)((double)correct / (double)n);
    }
    sf__heap_release(mark);
    return status;
}

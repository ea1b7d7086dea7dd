/* sf_train: the whole local training job in one call (ABI.md, "Model entries", "Shuffling").
 *
 * One host->wasm call runs every epoch of shuffled minibatch SGD with the FedProx proximal
 * term, because each wasmtime call costs tens of microseconds, as much as a small train step.
 */
#include "model.h"
#include "prng.h"

SF_EXPORT("sf_train")
int32_t sf_train(const int32_t *spec, float *params, const float *global_params, const float *x,
                 const int32_t *labels, int32_t n, int32_t epochs, int32_t batch_size, float lr,
                 float mu, uint64_t seed, float *out_loss) {
    sf_model model;
    int32_t status = sf__model_parse(spec, &model);
    if (status != SF_OK) return status;
    if (n <= 0 || epochs < 0 || batch_size <= 0) return SF_BAD_ARGUMENT;
    if ((int64_t)n * model.input_dim > SF_MAX_ELEMENTS) return SF_BAD_ARGUMENT;
    /* The proximal term needs the global parameters. */
    if (mu != 0.0f && !global_params) return SF_BAD_ARGUMENT;
    if (!sf__labels_valid(labels, n, model.classes)) return SF_BAD_ARGUMENT;

    int32_t rows = batch_size < n ? batch_size : n;
    int32_t input_dim = model.input_dim;
    uintptr_t mark = sf__heap_mark();
    sf_workspace ws;
    int32_t *perm = (int32_t *)sf__alloc((uint64_t)n * sizeof(int32_t));
    int32_t *batch_labels = (int32_t *)sf__alloc((uint64_t)rows * sizeof(int32_t));
    float *batch_x = (float *)sf__alloc((uint64_t)rows * input_dim * sizeof(float));
    float *grads = (float *)sf__alloc((uint64_t)model.num_params * sizeof(float));
    status = (perm && batch_labels && batch_x && grads) ? SF_OK : SF_NO_MEMORY;
    if (status == SF_OK) status = sf__workspace_alloc(&model, rows, 1, NULL, &ws);
    if (status != SF_OK) {
        sf__heap_release(mark);
        return status;
    }
    ws.act[0] = batch_x;

    sf_prng rng = {seed};
    for (int32_t i = 0; i < n; ++i) perm[i] = i;
    double loss_sum = 0.0;
    for (int32_t epoch = 0; epoch < epochs; ++epoch) {
        sf__shuffle(perm, n, &rng);
        for (int32_t start = 0; start < n; start += rows) {
            int32_t count = n - start < rows ? n - start : rows;
            for (int32_t i = 0; i < count; ++i) {
                int32_t sample = perm[start + i];
                __builtin_memcpy(batch_x + (size_t)i * input_dim, x + (size_t)sample * input_dim,
                                 (size_t)input_dim * sizeof(float));
                batch_labels[i] = labels[sample];
            }
            sf__model_forward(&model, params, &ws, count);
            loss_sum += sf__softmax_xent_sum(ws.act[model.num_layers], batch_labels, count,
                                             model.classes, ws.dact[0], 1.0f / (float)count);
            sf__model_backward(&model, params, &ws, count, grads, 0);
            sf__sgd_update(params, grads, global_params, model.num_params, lr, mu);
        }
    }
    /* Mean per-sample loss over every minibatch of every epoch; 0 when there were none. */
    out_loss[0] = epochs > 0 ? (float)(loss_sum / ((double)n * (double)epochs)) : 0.0f;
    sf__heap_release(mark);
    return SF_OK;
}

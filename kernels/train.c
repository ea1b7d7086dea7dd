/* sf_train and sf_train_budget: the whole local training job in one call (ABI.md, "Model
 * entries", "Shuffling", "Step budgets").
 *
 * One host->wasm call runs every epoch of shuffled minibatch SGD with the FedProx proximal
 * term, because each wasmtime call costs tens of microseconds, as much as a small train step.
 * sf_train_budget stops after a number of minibatch steps (a device that cannot finish the job
 * before a round's deadline sends the work it did); sf_train is the same loop without a budget.
 */
#include "model.h"
#include "prng.h"

/* The training loop; max_steps < 0 means no budget. *out_steps = minibatch steps done. */
static int32_t train_steps(const int32_t *spec, float *params, const float *global_params,
                           const float *x, const int32_t *labels, int32_t n, int32_t epochs,
                           int32_t batch_size, float lr, float mu, uint64_t seed,
                           int64_t max_steps, float *out_loss, int32_t *out_steps) {
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
    int64_t samples_done = 0;
    int64_t steps_done = 0;
    /* The budget is checked before an epoch's shuffle and before each step, so a stopped job
     * pays for no shuffle it does not use: the fuel of k steps is then at most
     * fuel(0 steps) + k * (fuel(1 step) - fuel(0 steps)) (a step's share of a shuffle is at
     * most one shuffle), which is what the host's fuel-to-steps planning relies on. */
    for (int32_t epoch = 0; epoch < epochs && steps_done != max_steps; ++epoch) {
        sf__shuffle(perm, n, &rng);
        for (int32_t start = 0; start < n && steps_done != max_steps; start += rows) {
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
            samples_done += count;
            ++steps_done;
        }
    }
    /* Mean per-sample loss over every minibatch done; 0 when there were none. */
    out_loss[0] = samples_done > 0 ? (float)(loss_sum / (double)samples_done) : 0.0f;
    if (out_steps) out_steps[0] = (int32_t)steps_done;
    sf__heap_release(mark);
    return SF_OK;
}

int32_t sf_train(const int32_t *spec, float *params, const float *global_params, const float *x,
                 const int32_t *labels, int32_t n, int32_t epochs, int32_t batch_size, float lr,
                 float mu, uint64_t seed, float *out_loss) {
    return train_steps(spec, params, global_params, x, labels, n, epochs, batch_size, lr, mu,
                       seed, -1, out_loss, 0);
}

int32_t sf_train_budget(const int32_t *spec, float *params, const float *global_params,
                        const float *x, const int32_t *labels, int32_t n, int32_t epochs,
                        int32_t batch_size, float lr, float mu, uint64_t seed, int32_t max_steps,
                        float *out_loss, int32_t *out_steps) {
    if (max_steps < 0 || !out_steps) return SF_BAD_ARGUMENT;
    return train_steps(spec, params, global_params, x, labels, n, epochs, batch_size, lr, mu,
                       seed, max_steps, out_loss, out_steps);
}

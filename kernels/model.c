/* Reading a model spec and walking its layers forward and backward. */
#include "model.h"

int32_t sf__model_parse(const int32_t *words, sf_model *model) {
    if ((uint32_t)words[0] != SF_SPEC_MAGIC) return SF_BAD_SPEC;
    int32_t input_dim = words[1];
    int32_t num_layers = words[2];
    if (input_dim <= 0 || input_dim > SF_MAX_ELEMENTS) return SF_BAD_SPEC;
    if (num_layers < 1 || num_layers > SF_MAX_LAYERS) return SF_BAD_SPEC;
    model->input_dim = input_dim;
    model->num_layers = num_layers;
    model->max_dim = input_dim;
    model->first_dense = -1;
    int64_t num_params = 0;
    int32_t dim = input_dim;
    const int32_t *record = words + 3;
    for (int32_t l = 0; l < num_layers; ++l) {
        int32_t kind = record[0], nwords = record[1];
        sf_layer *layer = &model->layers[l];
        layer->kind = kind;
        layer->in_dim = dim;
        layer->weight_offset = layer->bias_offset = -1;
        if (kind == SF_KIND_DENSE) {
            if (nwords != 1) return SF_BAD_SPEC;
            int32_t out_dim = record[2];
            if (out_dim <= 0 || out_dim > SF_MAX_ELEMENTS) return SF_BAD_SPEC;
            int64_t weights = (int64_t)dim * out_dim;
            if (weights > SF_MAX_ELEMENTS) return SF_BAD_SPEC;
            layer->weight_offset = (int32_t)num_params;
            layer->bias_offset = (int32_t)(num_params + weights);
            num_params += weights + out_dim;
            if (num_params > SF_MAX_ELEMENTS) return SF_BAD_SPEC;
            if (model->first_dense < 0) model->first_dense = l;
            dim = out_dim;
        } else if (kind == SF_KIND_RELU) {
            if (nwords != 0) return SF_BAD_SPEC;
        } else {
            return SF_BAD_SPEC;
        }
        layer->out_dim = dim;
        if (dim > model->max_dim) model->max_dim = dim;
        record += 2 + nwords;
    }
    model->classes = dim;
    model->num_params = (int32_t)num_params;
    return SF_OK;
}

static float *alloc_floats(int64_t count) {
    if (count < 0 || count > SF_MAX_ELEMENTS) return NULL;
    return (float *)sf__alloc((uint64_t)count * sizeof(float));
}

/* A Dense layer followed by a ReLU runs as one fused step; its pre-ReLU output is never
 * needed (the ReLU gradient uses the ReLU's output), so it gets no buffer. */
static int fused_with_next(const sf_model *model, int32_t l) {
    return model->layers[l].kind == SF_KIND_DENSE && l + 1 < model->num_layers &&
           model->layers[l + 1].kind == SF_KIND_RELU;
}

int32_t sf__workspace_alloc(const sf_model *model, int32_t rows, int backward, float *logits,
                            sf_workspace *ws) {
    ws->rows = rows;
    ws->act[0] = NULL;
    ws->dact[0] = ws->dact[1] = NULL;
    int32_t last = model->num_layers - 1;
    for (int32_t l = 0; l <= last; ++l) {
        if (l == last && logits) {
            ws->act[l + 1] = logits;
        } else if (fused_with_next(model, l)) {
            ws->act[l + 1] = NULL;
        } else {
            ws->act[l + 1] = alloc_floats((int64_t)rows * model->layers[l].out_dim);
            if (!ws->act[l + 1]) return SF_NO_MEMORY;
        }
    }
    if (backward) {
        for (int i = 0; i < 2; ++i) {
            ws->dact[i] = alloc_floats((int64_t)rows * model->max_dim);
            if (!ws->dact[i]) return SF_NO_MEMORY;
        }
    }
    return SF_OK;
}

void sf__model_forward(const sf_model *model, const float *params, sf_workspace *ws,
                       int32_t rows) {
    for (int32_t l = 0; l < model->num_layers; ++l) {
        const sf_layer *layer = &model->layers[l];
        const float *x = ws->act[l];
        if (layer->kind == SF_KIND_DENSE) {
            int fuse = fused_with_next(model, l);
            float *y = (float *)ws->act[l + 1 + fuse];
            sf__dense_forward(x, params + layer->weight_offset, params + layer->bias_offset, y,
                              rows, layer->in_dim, layer->out_dim, fuse);
            if (fuse) {
                ws->act[l + 1] = y; /* only the ReLU's output exists */
                ++l;
            }
        } else {
            sf__relu(x, (float *)ws->act[l + 1], rows * layer->out_dim);
        }
    }
}

void sf__model_backward(const sf_model *model, const float *params, sf_workspace *ws,
                        int32_t rows, float *grads, int accumulate) {
    /* grad is dloss/d(act[l + 1]); a dense layer writes dloss/d(act[l]) to the other buffer. */
    int current = 0;
    for (int32_t l = model->num_layers - 1; l >= model->first_dense && l >= 0; --l) {
        const sf_layer *layer = &model->layers[l];
        float *grad = ws->dact[current];
        if (layer->kind == SF_KIND_DENSE) {
            float *grad_in = l > model->first_dense ? ws->dact[1 - current] : NULL;
            /* A ReLU just below: its gradient is applied as the GEMM stores dx (no extra
             * pass), and the loop skips it. act[l] is that ReLU's output. */
            int fuse_relu = grad_in && model->layers[l - 1].kind == SF_KIND_RELU;
            sf__dense_backward(ws->act[l], params + layer->weight_offset, grad, grad_in,
                               grads + layer->weight_offset, grads + layer->bias_offset, rows,
                               layer->in_dim, layer->out_dim, accumulate,
                               fuse_relu ? ws->act[l] : NULL);
            current = 1 - current;
            if (fuse_relu) --l;
        } else {
            sf__relu_backward(ws->act[l + 1], grad, grad, rows * layer->out_dim);
        }
    }
}

int sf__labels_valid(const int32_t *labels, int32_t n, int32_t classes) {
    int32_t bad = 0;
    /* No early exit: one branch-free pass is cheaper than a branch per label. */
    for (int32_t i = 0; i < n; ++i) bad |= (uint32_t)labels[i] >= (uint32_t)classes;
    return bad == 0;
}

/* A model spec read from linear memory (ABI.md, "Model spec") and the walk over its layers. */
#ifndef SF_MODEL_H
#define SF_MODEL_H

#include "sandflower.h"

/* SF_SPEC_MAGIC, SF_MAX_LAYERS and the SF_KIND_* codes come from sandflower_abi.h. */
/* Largest element count of any one buffer the kernels index: 2^28 floats = the heap cap. */
#define SF_MAX_ELEMENTS (1 << 28)

typedef struct {
    int32_t kind;
    int32_t in_dim;
    int32_t out_dim;
    int32_t weight_offset; /* dense only: float offsets into the flat parameter buffer */
    int32_t bias_offset;
} sf_layer;

typedef struct {
    int32_t input_dim;
    int32_t num_layers;
    int32_t classes;     /* the last layer's output size */
    int32_t max_dim;     /* the widest layer input or output */
    int32_t first_dense; /* index of the first dense layer, -1 if none: no dx below it */
    int32_t num_params;
    sf_layer layers[SF_MAX_LAYERS];
} sf_model;

/* Buffers for running `rows` samples through the model. act[0] is the input (set by the
 * caller), act[l + 1] the output of layer l; dact[0..1] hold activation gradients. */
typedef struct {
    int32_t rows;
    const float *act[SF_MAX_LAYERS + 1];
    float *dact[2];
} sf_workspace;

/* SF_OK or SF_BAD_SPEC. */
int32_t sf__model_parse(const int32_t *words, sf_model *model);
/* SF_OK or SF_NO_MEMORY. act[num_layers] is allocated unless `logits` is given. */
int32_t sf__workspace_alloc(const sf_model *model, int32_t rows, int backward, float *logits,
                            sf_workspace *ws);
/* ws->act[0] (rows samples) -> ws->act[num_layers] (logits). */
void sf__model_forward(const sf_model *model, const float *params, sf_workspace *ws,
                       int32_t rows);
/* ws->dact[0] holds dloss/dlogits; gradients go to grads (params layout), (+)= if accumulate. */
void sf__model_backward(const sf_model *model, const float *params, sf_workspace *ws,
                        int32_t rows, float *grads, int accumulate);
/* 1 when every label is in [0, classes). */
int sf__labels_valid(const int32_t *labels, int32_t n, int32_t classes);

#endif

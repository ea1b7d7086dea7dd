"""Numpy reference of every kernel entry in kernels/ABI.md, with the same semantics.

The tests compare each wasm export with the function of the same name here, and check the
gradients here against central finite differences. Every function computes in the dtype of its
float inputs: float32 like the kernels, or float64 for finite-difference checks. Parameters are
the flat buffer of the ABI (``ModelSpec.flatten``), so ``train`` sees exactly what ``sf_train``
sees, down to the splitmix64 shuffle.

The model-level functions raise :class:`ReferenceStatusError` where the kernels return a
non-zero status, with the same code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from kernels import registry
from kernels.spec import KIND_DENSE, KIND_RELU, MAX_LAYERS, SPEC_MAGIC, ModelSpec

# The status codes the kernels return, from the ABI's one table (kernels/registry.py).
SF_OK = registry.STATUS_CODES["SF_OK"]
SF_BAD_SPEC = registry.STATUS_CODES["SF_BAD_SPEC"]
SF_NO_MEMORY = registry.STATUS_CODES["SF_NO_MEMORY"]
SF_BAD_ARGUMENT = registry.STATUS_CODES["SF_BAD_ARGUMENT"]

# Largest element count of one buffer the kernels index (model.h): 2^28 floats, the heap cap.
MAX_ELEMENTS = 1 << 28

_MASK64 = (1 << 64) - 1


class ReferenceStatusError(ValueError):
    """The reference's form of a non-zero kernel status (``status`` is the ABI code)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"status {status}: {message}")
        self.status = status


# -- layer kernels ----------------------------------------------------------------------------
def sgemm(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray | None = None,
    *,
    trans_a: bool = False,
    trans_b: bool = False,
    accumulate: bool = False,
) -> np.ndarray:
    """``sf_sgemm``: ``C (+)= op(A) @ op(B)`` with A, B given as stored (``[k, m]`` if trans_a).

    Returns the new C; ``c`` is read only when ``accumulate``.
    """
    op_a = a.T if trans_a else a
    op_b = b.T if trans_b else b
    product = op_a @ op_b
    if accumulate:
        if c is None:
            raise ValueError("sgemm: accumulate needs c")
        return c + product
    return product


def dense_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``sf_dense_forward``: ``y = x @ w + b``."""
    return x @ w + b


def dense_backward(
    x: np.ndarray, w: np.ndarray, dy: np.ndarray, *, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """``sf_dense_backward``: returns ``(dx, dw, db)``; dx is None when not needed."""
    dw = x.T @ dy
    db = dy.sum(axis=0)
    dx = dy @ w.T if need_dx else None
    return dx, dw, db


def relu(x: np.ndarray) -> np.ndarray:
    """``sf_relu``: ``max(x, 0)``; np.maximum keeps NaN, as f32x4.max does."""
    return np.maximum(x, x.dtype.type(0))


def relu_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``sf_relu_backward``: ``dy * (y > 0)`` as a product, so NaN/Inf in dy propagate."""
    return dy * (y > 0).astype(dy.dtype)


def softmax_xent_per_sample(
    logits: np.ndarray, labels: np.ndarray, *, grad_scale: float | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-sample cross-entropy and, if ``grad_scale`` is given, ``(softmax - onehot) * scale``.

    A label outside [0, classes) gives that sample a NaN loss and a NaN gradient row.
    """
    dtype = logits.dtype
    batch, classes = logits.shape
    labels = np.asarray(labels, dtype=np.int64)
    row_max = logits.max(axis=1, keepdims=True)
    exps = np.exp(logits - row_max)
    sums = exps.sum(axis=1)
    valid = (labels >= 0) & (labels < classes)
    safe_labels = np.where(valid, labels, 0)
    rows = np.arange(batch)
    shifted_label = logits[rows, safe_labels] - row_max[:, 0]
    losses = np.log(sums) - shifted_label
    losses = np.where(valid, losses, dtype.type(np.nan)).astype(dtype)
    if grad_scale is None:
        return losses, None
    scale = dtype.type(grad_scale)
    dlogits = exps / sums[:, None] * scale
    dlogits[rows[valid], labels[valid]] -= scale
    dlogits[~valid] = np.nan
    return losses, dlogits.astype(dtype)


def softmax_xent(
    logits: np.ndarray, labels: np.ndarray, *, need_grad: bool = True
) -> tuple[float, np.ndarray | None]:
    """``sf_softmax_xent``: mean cross-entropy and ``dlogits = (softmax - onehot) / batch``."""
    batch = logits.shape[0]
    losses, dlogits = softmax_xent_per_sample(
        logits, labels, grad_scale=1.0 / batch if need_grad else None
    )
    return float(losses.astype(np.float64).sum() / batch), dlogits


def sgd_update(
    w: np.ndarray, grad: np.ndarray, w_global: np.ndarray | None, lr: float, mu: float
) -> np.ndarray:
    """``sf_sgd_update``: ``w - lr * (grad + mu * (w - w_global))``; mu == 0 skips the term."""
    dtype = w.dtype
    lr_t, mu_t = dtype.type(lr), dtype.type(mu)
    if mu == 0.0 or w_global is None:
        return w - lr_t * grad
    return w - lr_t * (grad + mu_t * (w - w_global))


# -- model spec -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layer:
    """One record of a decoded spec; weight/bias are slices of the flat parameter buffer."""

    kind: int
    in_dim: int
    out_dim: int
    weight: slice | None = None
    bias: slice | None = None


@dataclass(frozen=True)
class DecodedModel:
    """A model decoded from the int32 spec words the kernels read."""

    input_dim: int
    layers: tuple[Layer, ...]
    num_params: int

    @property
    def classes(self) -> int:
        """Return the number of classes (the last Dense layer's width)."""
        return self.layers[-1].out_dim


def decode_spec(spec: ModelSpec | np.ndarray) -> DecodedModel:
    """Read spec words exactly as model.c does; ``SF_BAD_SPEC`` for anything it refuses."""
    encoded = spec.encode() if isinstance(spec, ModelSpec) else np.asarray(spec)
    words = [int(word) for word in encoded.astype(np.int64).ravel()]

    def word(index: int) -> int:
        if index >= len(words):
            raise ReferenceStatusError(SF_BAD_SPEC, f"spec ends before word {index}")
        return words[index]

    if word(0) & 0xFFFFFFFF != SPEC_MAGIC:
        raise ReferenceStatusError(SF_BAD_SPEC, f"magic {word(0):#x}, expected {SPEC_MAGIC:#x}")
    input_dim, num_layers = word(1), word(2)
    if not 0 < input_dim <= MAX_ELEMENTS:
        raise ReferenceStatusError(SF_BAD_SPEC, f"input_dim {input_dim}")
    if not 1 <= num_layers <= MAX_LAYERS:
        raise ReferenceStatusError(SF_BAD_SPEC, f"num_layers {num_layers}")
    layers = []
    dim, num_params, cursor = input_dim, 0, 3
    for index in range(num_layers):
        kind, nwords = word(cursor), word(cursor + 1)
        if kind == KIND_DENSE:
            out_dim = word(cursor + 2)
            if nwords != 1 or not 0 < out_dim <= MAX_ELEMENTS or dim * out_dim > MAX_ELEMENTS:
                raise ReferenceStatusError(SF_BAD_SPEC, f"layer {index}: dense {nwords} {out_dim}")
            weight = slice(num_params, num_params + dim * out_dim)
            bias = slice(weight.stop, weight.stop + out_dim)
            num_params = bias.stop
            if num_params > MAX_ELEMENTS:
                raise ReferenceStatusError(SF_BAD_SPEC, f"{num_params} parameters")
            layers.append(Layer(KIND_DENSE, dim, out_dim, weight, bias))
            dim = out_dim
        elif kind == KIND_RELU:
            if nwords != 0:
                raise ReferenceStatusError(SF_BAD_SPEC, f"layer {index}: relu with {nwords} words")
            layers.append(Layer(KIND_RELU, dim, dim))
        else:
            raise ReferenceStatusError(SF_BAD_SPEC, f"layer {index}: unknown kind {kind}")
        cursor += 2 + max(nwords, 0)
    return DecodedModel(input_dim, tuple(layers), num_params)


# -- model entries ----------------------------------------------------------------------------
def _check_inputs(model: DecodedModel, params: np.ndarray, x: np.ndarray) -> int:
    n = x.shape[0]
    if n <= 0 or n * model.input_dim > MAX_ELEMENTS or n * model.classes > MAX_ELEMENTS:
        raise ReferenceStatusError(SF_BAD_ARGUMENT, f"n = {n}")
    if params.shape != (model.num_params,):
        raise ValueError(f"params: expected shape ({model.num_params},), given {params.shape}")
    if x.shape[1:] != (model.input_dim,):
        raise ValueError(f"x: expected shape (n, {model.input_dim}), given {x.shape}")
    return n


def _check_labels(model: DecodedModel, labels: np.ndarray) -> None:
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= model.classes):
        raise ReferenceStatusError(
            SF_BAD_ARGUMENT,
            f"labels must lie in [0, {model.classes}), given {labels.min()}..{labels.max()}",
        )


def _forward(model: DecodedModel, params: np.ndarray, x: np.ndarray) -> list[np.ndarray]:
    """Activations: [input, output of layer 0, ..., logits]."""
    activations = [x]
    for layer in model.layers:
        current = activations[-1]
        if layer.kind == KIND_DENSE:
            weight = params[layer.weight].reshape(layer.in_dim, layer.out_dim)
            activations.append(dense_forward(current, weight, params[layer.bias]))
        else:
            activations.append(relu(current))
    return activations


def _backward(
    model: DecodedModel, params: np.ndarray, activations: list[np.ndarray], dlogits: np.ndarray
) -> np.ndarray:
    grads = np.zeros_like(params)
    dense_indices = [i for i, layer in enumerate(model.layers) if layer.kind == KIND_DENSE]
    first_dense = dense_indices[0] if dense_indices else len(model.layers)
    grad = dlogits
    for index in range(len(model.layers) - 1, first_dense - 1, -1):
        layer = model.layers[index]
        if layer.kind == KIND_DENSE:
            weight = params[layer.weight].reshape(layer.in_dim, layer.out_dim)
            dx, dw, db = dense_backward(
                activations[index], weight, grad, need_dx=index > first_dense
            )
            grads[layer.weight] = dw.ravel()
            grads[layer.bias] = db
            if dx is not None:  # None only at the first Dense layer: the loop's last step
                grad = dx
        else:
            grad = relu_backward(activations[index + 1], grad)
    return grads


def model_forward(spec: ModelSpec | np.ndarray, params: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``sf_model_forward``: logits ``[n, classes]``."""
    model = decode_spec(spec)
    _check_inputs(model, params, x)
    return _forward(model, params, x.astype(params.dtype, copy=False))[-1]


def model_loss_grad(
    spec: ModelSpec | np.ndarray, params: np.ndarray, x: np.ndarray, labels: np.ndarray
) -> tuple[float, np.ndarray]:
    """``sf_model_loss_grad``: mean loss over the n samples and its gradient (params layout)."""
    model = decode_spec(spec)
    n = _check_inputs(model, params, x)
    _check_labels(model, labels)
    activations = _forward(model, params, x.astype(params.dtype, copy=False))
    losses, dlogits = softmax_xent_per_sample(activations[-1], labels, grad_scale=1.0 / n)
    assert dlogits is not None  # grad_scale was given
    grads = _backward(model, params, activations, dlogits)
    return float(losses.astype(np.float64).sum() / n), grads


def evaluate(
    spec: ModelSpec | np.ndarray, params: np.ndarray, x: np.ndarray, labels: np.ndarray
) -> tuple[float, float]:
    """``sf_evaluate``: ``(mean loss, accuracy)``; argmax: first maximum wins, NaN counts as max."""
    model = decode_spec(spec)
    n = _check_inputs(model, params, x)
    _check_labels(model, labels)
    logits = _forward(model, params, x.astype(params.dtype, copy=False))[-1]
    losses, _ = softmax_xent_per_sample(logits, labels)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels)))
    return float(losses.astype(np.float64).sum() / n), accuracy


class SplitMix64:
    """The PRNG of sf_train's shuffle (ABI.md, "Shuffling")."""

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK64

    def next(self) -> int:
        """Advance the state and return the next 64-bit output."""
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)


def epoch_permutations(n: int, epochs: int, seed: int) -> Iterator[np.ndarray]:
    """Return the sample order of every epoch of sf_train: a Fisher-Yates pass per epoch."""
    rng = SplitMix64(seed)
    perm = list(range(n))
    for _ in range(epochs):
        for i in range(n - 1, 0, -1):
            j = ((rng.next() >> 32) * (i + 1)) >> 32
            perm[i], perm[j] = perm[j], perm[i]
        yield np.asarray(perm, dtype=np.int64)


def train(
    spec: ModelSpec | np.ndarray,
    params: np.ndarray,
    global_params: np.ndarray | None,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    mu: float,
    seed: int,
) -> tuple[np.ndarray, float]:
    """``sf_train``: returns ``(new params, mean per-sample training loss)``; 0 loss if no epochs.

    ``params`` is not modified.
    """
    params, loss, _ = train_budget(
        spec, params, global_params, x, labels,
        epochs=epochs, batch_size=batch_size, lr=lr, mu=mu, seed=seed, max_steps=None,
    )  # fmt: skip
    return params, loss


def train_budget(
    spec: ModelSpec | np.ndarray,
    params: np.ndarray,
    global_params: np.ndarray | None,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    mu: float,
    seed: int,
    max_steps: int | None,
) -> tuple[np.ndarray, float, int]:
    """``sf_train_budget``: ``sf_train`` stopped after ``max_steps`` minibatch steps.

    Returns ``(new params, mean per-sample loss over the steps done, steps done)``; the loss is
    0 when no step ran. ``max_steps=None`` is ``sf_train`` (no budget). ``params`` is not
    modified.
    """
    if max_steps is not None and max_steps < 0:
        raise ReferenceStatusError(SF_BAD_ARGUMENT, f"max_steps = {max_steps}")
    model = decode_spec(spec)
    if x.shape[0] <= 0 or epochs < 0 or batch_size <= 0:
        raise ReferenceStatusError(
            SF_BAD_ARGUMENT, f"n = {x.shape[0]}, epochs = {epochs}, batch_size = {batch_size}"
        )
    n = _check_inputs(model, params, x)
    if mu != 0.0 and global_params is None:
        raise ReferenceStatusError(SF_BAD_ARGUMENT, "mu != 0 needs global_params")
    _check_labels(model, labels)
    x = x.astype(params.dtype, copy=False)
    labels = np.asarray(labels)
    params = params.copy()
    loss_sum = 0.0
    samples_done = 0
    steps_done = 0
    # The shuffle of an epoch is drawn only when a step of it runs, as in the kernel (the
    # permutations are lazy, so stopping early draws no further epoch).
    for perm in epoch_permutations(n, epochs if max_steps != 0 else 0, seed):
        for start in range(0, n, batch_size):
            if steps_done == max_steps:
                break
            batch = perm[start : start + batch_size]
            activations = _forward(model, params, x[batch])
            losses, dlogits = softmax_xent_per_sample(
                activations[-1], labels[batch], grad_scale=1.0 / len(batch)
            )
            loss_sum += float(losses.astype(np.float64).sum())
            assert dlogits is not None  # grad_scale was given
            grads = _backward(model, params, activations, dlogits)
            params = sgd_update(params, grads, global_params, lr, mu)
            samples_done += len(batch)
            steps_done += 1
        if steps_done == max_steps:
            break
    loss = loss_sum / samples_done if samples_done > 0 else 0.0
    return params, loss, steps_done

"""Model spec: which layers a model has, how the kernels see it, how its arrays are named.

The kernels read a model as int32 words in linear memory (kernels/ABI.md, "Model spec"), so
one .wasm serves every model. This module is the only place that knows that encoding on the
host side. It knows no runtime: it only builds numpy arrays.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from kernels import registry

# The encoding's constants come from the ABI's one table (kernels/registry.py).
SPEC_MAGIC = registry.SPEC_MAGIC  # "SFM1"
MAX_LAYERS = registry.MAX_LAYERS
# float32 weights and their gradient in one wasm32 linear memory (4 GiB): 2 * 4 * 2**29 bytes.
# Also what keeps a model's dims within the int32 words the kernels read (encode()).
MAX_PARAMS = 2**29

KIND_DENSE = registry.LAYER_KINDS["SF_KIND_DENSE"]
KIND_RELU = registry.LAYER_KINDS["SF_KIND_RELU"]


class ModelSpecError(ValueError):
    """A model description that the kernels cannot run."""


@dataclass(frozen=True)
class Dense:
    """A fully connected layer with ``out_dim`` outputs (weights and bias)."""

    out_dim: int


@dataclass(frozen=True)
class ReLU:
    """A ReLU activation (no parameters)."""

    pass


Layer = Dense | ReLU


@dataclass(frozen=True)
class ModelSpec:
    """A feed-forward classifier: ``input_dim`` features in, the last Dense layer's classes out.

    Build one with :meth:`logreg`, :meth:`mlp` or :meth:`parse` (``"logreg:60-10"``,
    ``"mlp:64-32-10"``).
    """

    input_dim: int
    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        """Check the input width and the layer list; raise ModelSpecError on a bad model."""
        if self.input_dim <= 0:
            raise ModelSpecError(f"input_dim must be > 0, given {self.input_dim}")
        if not 1 <= len(self.layers) <= MAX_LAYERS:
            raise ModelSpecError(f"a model has 1..{MAX_LAYERS} layers, given {len(self.layers)}")
        if not isinstance(self.layers[-1], Dense):
            raise ModelSpecError("the last layer must be Dense (it gives the class logits)")
        for index, layer in enumerate(self.layers):
            if isinstance(layer, Dense) and layer.out_dim <= 0:
                raise ModelSpecError(f"layer {index}: out_dim must be > 0, given {layer.out_dim}")
            if not isinstance(layer, Dense | ReLU):
                raise ModelSpecError(f"layer {index}: unknown layer {layer!r}")
        if self.num_classes < 2:
            raise ModelSpecError(f"a classifier needs >= 2 classes, given {self.num_classes}")
        # Exact (Python ints): a width of 10**12 must not wrap an int64 product into range.
        width, params = self.input_dim, 0
        for layer in self.layers:
            if isinstance(layer, Dense):
                params += (width + 1) * layer.out_dim
                width = layer.out_dim
        if params > MAX_PARAMS:
            raise ModelSpecError(
                f"{params} parameters, at most {MAX_PARAMS}: the weights and their gradient "
                "must fit a wasm32 sandbox's 4 GiB"
            )

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def logreg(cls, input_dim: int, num_classes: int) -> ModelSpec:
        """Multinomial logistic regression."""
        return cls(input_dim, (Dense(num_classes),))

    @classmethod
    def mlp(
        cls, input_dim: int, hidden: tuple[int, ...] | list[int], num_classes: int
    ) -> ModelSpec:
        """Return an MLP with a ReLU after every hidden Dense layer."""
        layers: list[Layer] = []
        for width in hidden:
            layers += [Dense(int(width)), ReLU()]
        layers.append(Dense(num_classes))
        return cls(input_dim, tuple(layers))

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """Parse ``"logreg:IN-CLASSES"`` or ``"mlp:IN-H1-...-CLASSES"``."""
        if cls is ModelSpec and isinstance(text, str):
            return _parse_cached(text)  # every client job parses the same few texts
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> ModelSpec:
        match = re.fullmatch(r"\s*(logreg|mlp)\s*:\s*(\d+(?:-\d+)+)\s*", text)
        if not match:
            raise ModelSpecError(
                f"model {text!r}: expected 'logreg:IN-CLASSES' or 'mlp:IN-H1-...-CLASSES'"
            )
        kind, dims_text = match.groups()
        dims = [int(part) for part in dims_text.split("-")]
        if kind == "logreg":
            if len(dims) != 2:
                raise ModelSpecError(f"model {text!r}: logreg takes exactly IN-CLASSES")
            return cls.logreg(dims[0], dims[1])
        if len(dims) < 3:
            raise ModelSpecError(f"model {text!r}: mlp needs at least one hidden layer")
        return cls.mlp(dims[0], dims[1:-1], dims[-1])

    # -- derived facts ----------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Return the number of classes (the last layer's width)."""
        return self.dims()[-1]

    def dims(self) -> list[int]:
        """Feature size after each layer, starting with the input."""
        return list(self._dims)

    # A spec is frozen: what derives from it is computed once (a client job asks ~10 times).
    @functools.cached_property
    def _dims(self) -> tuple[int, ...]:
        sizes = [self.input_dim]
        for layer in self.layers:
            sizes.append(layer.out_dim if isinstance(layer, Dense) else sizes[-1])
        return tuple(sizes)

    @functools.cached_property
    def _shapes(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        shapes: list[tuple[str, tuple[int, ...]]] = []
        sizes = self._dims
        for index, layer in enumerate(self.layers):
            if isinstance(layer, Dense):
                shapes.append((f"layer{index}.weight", (sizes[index], layer.out_dim)))
                shapes.append((f"layer{index}.bias", (layer.out_dim,)))
        return tuple(shapes)

    def __str__(self) -> str:
        """Return the model in the run config's notation, e.g. ``mlp:64-32-10``."""
        dense = [layer.out_dim for layer in self.layers if isinstance(layer, Dense)]
        kind = "logreg" if len(self.layers) == 1 else "mlp"
        return f"{kind}:" + "-".join(str(d) for d in [self.input_dim, *dense])

    def array_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the parameters, in the order of the flat parameter buffer."""
        return dict(self._shapes)

    def num_params(self) -> int:
        """Return the number of float32 parameters (weights and biases)."""
        return sum(math.prod(shape) for _, shape in self._shapes)

    def encode(self) -> np.ndarray:
        """Return the int32 words the kernels read (kernels/ABI.md)."""
        words = [SPEC_MAGIC, self.input_dim, len(self.layers)]
        for layer in self.layers:
            if isinstance(layer, Dense):
                words += [KIND_DENSE, 1, layer.out_dim]
            else:
                words += [KIND_RELU, 0]
        return np.asarray(words, dtype=np.uint32).view(np.int32)

    # -- parameters -------------------------------------------------------------------------
    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        """He-uniform weights (Glorot for the output layer) and zero biases, from ``seed``."""
        rng = np.random.default_rng([seed, 0x5EED])
        params: dict[str, np.ndarray] = {}
        last = max(i for i, layer in enumerate(self.layers) if isinstance(layer, Dense))
        for name, shape in self.array_shapes().items():
            if name.endswith(".bias"):
                params[name] = np.zeros(shape, dtype=np.float32)
                continue
            fan_in, fan_out = shape
            is_output = name == f"layer{last}.weight"
            limit = np.sqrt(6.0 / (fan_in + fan_out)) if is_output else np.sqrt(6.0 / fan_in)
            params[name] = rng.uniform(-limit, limit, size=shape).astype(np.float32)
        return params

    def flatten(self, params: Mapping[str, np.ndarray]) -> np.ndarray:
        """Named arrays -> the flat float32 buffer the kernels use. Checks names and shapes."""
        shapes = self.array_shapes()
        if set(params) != set(shapes):
            missing = sorted(set(shapes) - set(params))
            extra = sorted(set(params) - set(shapes))
            raise ModelSpecError(f"parameters for {self}: missing {missing}, unexpected {extra}")
        parts = []
        for name, shape in shapes.items():
            array = np.asarray(params[name])
            if array.shape != shape:
                raise ModelSpecError(f"{name}: expected shape {shape}, given {array.shape}")
            parts.append(array.astype(np.float32, copy=False).ravel())
        return np.concatenate(parts)

    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Split the flat float32 buffer into named arrays (copies)."""
        flat = np.asarray(flat, dtype=np.float32)
        if flat.size != self.num_params():
            raise ModelSpecError(
                f"flat parameters for {self}: expected {self.num_params()} values, "
                f"given {flat.size}"
            )
        params: dict[str, np.ndarray] = {}
        offset = 0
        for name, shape in self.array_shapes().items():
            size = math.prod(shape)
            params[name] = flat[offset : offset + size].reshape(shape).copy()
            offset += size
        return params


@functools.lru_cache(maxsize=64)
def _parse_cached(text: str) -> ModelSpec:
    # Specs are frozen, so one parsed object can be shared; errors are not cached (raised).
    return ModelSpec._parse(text)

"""The data sets a scenario can train on, all available offline.

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 64 features,
  10 classes); pixel values 0..16 are scaled to 0..1.
- ``synthetic``: FedProx's Synthetic(alpha, beta) (Li et al., 2020), one device per client,
  generated as in the paper's generator (litian96/FedProx,
  data/synthetic_1_1/generate_synthetic.py), each device from its own seed (so a device
  can be generated alone, when its client is sampled).
- ``folder``: a user's folder of per-client ``.npz`` / ``.csv`` files (one file per client,
  in name order), read with the device's own reader, ``client.data.load_data_file``.

This module only produces arrays; which client gets what is ``simulations.federated_data``.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from client.data import SUFFIXES, DataFileError, load_data_file

# Spelled once, as the Literal type of the schema's [data] dataset (scenario_sections.py).
Dataset = Literal["digits", "synthetic", "folder"]
DATASETS: tuple[str, ...] = get_args(Dataset)

DIGITS_FEATURES = 64
DIGITS_CLASSES = 10
DIGITS_MAX_PIXEL = 16.0
DIGITS_FILE = "digits.csv.gz"  # in scikit-learn's sklearn/datasets/data/

SYNTHETIC_FEATURES = 60
SYNTHETIC_CLASSES = 10


class DatasetError(ValueError):
    """A data set that cannot be loaded or generated as asked."""


# -- digits -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits: x float32 [1797, 64] scaled to 0..1, y int32 [1797] in 0..9.

    The arrays are read-only (they are cached and shared).
    """
    table = _read_digits_table()
    # As scikit-learn's load_digits: 64 pixel columns, then the label.
    features = (np.asarray(table[:, :-1], dtype=np.float32) / DIGITS_MAX_PIXEL).astype(np.float32)
    labels = np.asarray(table[:, -1].astype(int), dtype=np.int32)
    return _read_only(features), _read_only(labels)


def _read_digits_table() -> np.ndarray:
    # scikit-learn's own file, read as its load_digits reads it (np.loadtxt of the gzipped
    # csv), without importing scikit-learn: that import took ~1.5 s and ~100 MB of the
    # coordinator's start-up, and forked workers inherited it. A scikit-learn that keeps
    # the file elsewhere is asked through its API.
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    origin = None if spec is None else spec.origin
    path = None if origin is None else Path(origin).parent / "datasets" / "data" / DIGITS_FILE
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits as sklearn_load_digits

        bunch = sklearn_load_digits()
        return np.column_stack([bunch.data, bunch.target])
    with gzip.open(path, mode="rt", encoding="utf-8") as text:
        return np.loadtxt(text, delimiter=",")


# -- FedProx Synthetic(alpha, beta) ---------------------------------------------------------
def generate_synthetic(
    alpha: float,
    beta: float,
    num_devices: int,
    seed: int,
    *,
    num_features: int = SYNTHETIC_FEATURES,
    num_classes: int = SYNTHETIC_CLASSES,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """FedProx's Synthetic(alpha, beta): one (x, y) per device (:func:`synthetic_device`).

    Parameters
    ----------
    alpha, beta : >= 0.
    num_devices : the paper uses 30.
    seed : the generator's seed.

    Returns
    -------
    list of (x float32 [n_k, d], y int32 [n_k]), unshuffled (the split shuffles).
    """
    if num_devices < 1:
        raise DatasetError(f"synthetic devices: expected an int >= 1, given {num_devices}")
    return [
        synthetic_device(
            alpha, beta, device, seed, num_features=num_features, num_classes=num_classes
        )
        for device in range(num_devices)
    ]


def synthetic_device(
    alpha: float,
    beta: float,
    device: int,
    seed: int,
    *,
    num_features: int = SYNTHETIC_FEATURES,
    num_classes: int = SYNTHETIC_CLASSES,
) -> tuple[np.ndarray, np.ndarray]:
    """Device ``device`` of FedProx's Synthetic(alpha, beta), from its own seed.

    Each device draws from ``np.random.default_rng([seed, 0x5E7, device])``, so any device
    can be generated alone, in any order, in any process: a population of 100,000 devices
    costs nothing until a device is used. Per device, as the paper's generator
    (litian96/FedProx, data/synthetic_1_1/generate_synthetic.py):

    - n_k = int(lognormal(4, 2)) + 50 samples;
    - u_k ~ N(0, alpha) (the mean of both W_k and b_k), B_k ~ N(0, beta),
      v_k ~ N(B_k, 1) in R^d (the mean of x on device k);
    - Sigma = diag(j^-1.2), x ~ N(v_k, Sigma);
    - W_k ~ N(u_k, 1) [d, c], b_k ~ N(u_k, 1) [c], y = argmax(softmax(x W_k + b_k)).

    As in the generator's code, alpha and beta are passed to ``normal`` as the standard
    deviation. alpha controls how much the local models differ, beta how much the local
    feature distributions differ; Synthetic(0, 0) is still non-IID in sample counts.

    Returns
    -------
    (x float32 [n_k, d], y int32 [n_k]), read-only, unshuffled (the split shuffles).
    """
    if not alpha >= 0:
        raise DatasetError(f"synthetic alpha: expected a float >= 0, given {alpha}")
    if not beta >= 0:
        raise DatasetError(f"synthetic beta: expected a float >= 0, given {beta}")
    if device < 0:
        raise DatasetError(f"synthetic device: expected an int >= 0, given {device}")
    rng = _device_rng(seed, device)
    num_samples = _draw_num_samples(rng)
    mean_w = rng.normal(0, alpha)
    mean_b = mean_w
    feature_offset = rng.normal(0, beta)
    mean_x = rng.normal(feature_offset, 1, num_features)
    variances = np.power(np.arange(1, num_features + 1, dtype=np.float64), -1.2)
    weights = rng.normal(mean_w, 1, (num_features, num_classes))
    bias = rng.normal(mean_b, 1, num_classes)
    # x ~ N(v_k, diag(variances)) drawn as v_k + z * sqrt(variances): the same law as the
    # generator's multivariate_normal, without an SVD of a diagonal matrix.
    noise = rng.standard_normal((num_samples, num_features))
    features = mean_x + noise * np.sqrt(variances)
    # argmax(softmax(z)) == argmax(z); skipping the exp avoids its overflow.
    labels = np.argmax(features @ weights + bias, axis=1)
    return _read_only(features.astype(np.float32)), _read_only(labels.astype(np.int32))


def synthetic_device_size(device: int, seed: int) -> int:
    """Return how many samples :func:`synthetic_device` ``device`` has, without generating it.

    It is the first draw from the device's own generator (microseconds, no arrays): the
    coordinator needs every sampled client's size, not its data.
    """
    if device < 0:
        raise DatasetError(f"synthetic device: expected an int >= 0, given {device}")
    return _draw_num_samples(_device_rng(seed, device))


def _device_rng(seed: int, device: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0x5E7, device])


def _draw_num_samples(rng: np.random.Generator) -> int:
    # FedProx's n_k = int(lognormal(4, 2)) + 50: the first draw of a device's generator.
    return int(rng.lognormal(4, 2)) + 50


# -- a folder of per-client files -----------------------------------------------------------
def folder_files(path: str | os.PathLike) -> list[Path]:
    """Return the .npz/.csv files directly in ``path``, sorted by name: client i reads file i."""
    folder = Path(path).expanduser()
    if not str(path):
        raise DatasetError("the folder data set needs a path (data.path / dataset-path)")
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    files = sorted(
        entry for entry in folder.iterdir() if entry.is_file() and entry.suffix.lower() in SUFFIXES
    )
    if not files:
        raise DatasetError(f"{folder}: no .npz or .csv files")
    return files


@dataclass(frozen=True)
class ClientFile:
    """One client's file of a folder data set: its arrays, or why they cannot be read."""

    path: Path
    x: np.ndarray | None
    y: np.ndarray | None
    error: str = ""  # the DataFileError message when x and y are None

    @property
    def readable(self) -> bool:
        """Return True when the file was read (``x`` and ``y`` are set)."""
        return self.x is not None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y), or the file's DataFileError."""
        if self.x is None or self.y is None:
            raise DataFileError(self.path, self.error)
        return self.x, self.y


def read_folder(path: str | os.PathLike) -> list[ClientFile]:
    """Every client file of ``path`` (see :func:`folder_files`), in client order.

    A file that cannot be read does not stop the others: it comes back with its error, so a
    simulation can run the other clients and count that one as failed, as a real device with
    a broken file would be (cached per process, keyed by names, mtimes and sizes).

    Raises
    ------
    DatasetError
        No client file, no readable file, or readable files that disagree on the number of
        features.
    """
    files = folder_files(path)
    stamp = tuple((str(file), file.stat().st_mtime_ns, file.stat().st_size) for file in files)
    return list(_read_folder_cached(stamp))


def load_folder(path: str | os.PathLike) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x, y) of every client file of ``path``; the first unreadable file raises its error.

    Raises
    ------
    client.data.DataFileError
        A file that cannot be read (names the file).
    DatasetError
        As :func:`read_folder`.
    """
    return [client_file.arrays() for client_file in read_folder(path)]


@functools.lru_cache(maxsize=2)
def _read_folder_cached(stamp: tuple[tuple[str, int, int], ...]) -> tuple[ClientFile, ...]:
    client_files = []
    for name, _, _ in stamp:
        try:
            x, y = load_data_file(name)
        except DataFileError as error:
            client_files.append(ClientFile(Path(name), None, None, error.problem))
            continue
        client_files.append(ClientFile(Path(name), _read_only(x), _read_only(y)))
    readable = [client_file for client_file in client_files if client_file.readable]
    if not readable:
        first = client_files[0]
        raise DatasetError(f"no readable client file; {first.path}: {first.error}")
    reference = readable[0]
    reference_x, _ = reference.arrays()
    for client_file in readable[1:]:
        x, _ = client_file.arrays()
        if x.shape[1] != reference_x.shape[1]:
            raise DatasetError(
                f"{client_file.path}: {x.shape[1]} features, but "
                f"{reference.path} has {reference_x.shape[1]}; every client file needs the "
                "same features"
            )
    return tuple(client_files)


def folder_shape(path: str | os.PathLike) -> tuple[int, int]:
    """(num_features, num_classes) of a folder's readable files.

    Classes = the largest label + 1 (at least 2).
    """
    readable = [client_file.arrays() for client_file in read_folder(path) if client_file.readable]
    num_features = int(readable[0][0].shape[1])
    num_classes = max(2, max(int(y.max()) for _, y in readable) + 1)
    return num_features, num_classes


def dataset_shape(dataset: str, path: str | os.PathLike = "") -> tuple[int, int]:
    """(num_features, num_classes) the model of a scenario on ``dataset`` needs."""
    if dataset == "digits":
        return DIGITS_FEATURES, DIGITS_CLASSES
    if dataset == "synthetic":
        return SYNTHETIC_FEATURES, SYNTHETIC_CLASSES
    if dataset == "folder":
        return folder_shape(path)
    raise DatasetError(f"dataset: expected one of {', '.join(DATASETS)}, given {dataset!r}")


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array


__all__ = [
    "DATASETS",
    "DatasetError",
    "ClientFile",
    "dataset_shape",
    "folder_files",
    "folder_shape",
    "generate_synthetic",
    "synthetic_device",
    "load_digits",
    "load_folder",
    "read_folder",
]

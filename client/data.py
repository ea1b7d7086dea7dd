"""A device's local data: reading its data file and splitting off a local held-out set.

A device owner gives one file: a ``.npz`` with arrays ``x`` [n, d] and ``y`` [n], or a ``.csv``
with a header row, a label column named ``label`` or ``y``, and numeric features in every
other column. The file is read and checked whole before anything is returned, so a bad file
never gives half a data set. This module imports nothing of coordinator/ or simulations/: a
device needs client/, kernels/ and protos/ only.
"""

from __future__ import annotations

import csv
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABEL_COLUMNS = ("label", "y")
SUFFIXES = (".npz", ".csv")


class DataFileError(ValueError):
    """A data file (or in-memory data set) that cannot be used; names the source and why."""

    def __init__(self, source: str | os.PathLike, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


@dataclass(frozen=True)
class LocalData:
    """One client's data: the part it trains on and its local held-out part.

    ``x_*`` are float32 [n, d] and C-contiguous, ``y_*`` int32 [n].
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __post_init__(self) -> None:
        for name in ("x_train", "x_test"):
            array = getattr(self, name)
            if array.dtype != np.float32 or array.ndim != 2:
                raise ValueError(
                    f"LocalData.{name}: expected float32 [n, d], given {array.dtype} {array.shape}"
                )
        for name in ("y_train", "y_test"):
            array = getattr(self, name)
            if array.dtype != np.int32 or array.ndim != 1:
                raise ValueError(
                    f"LocalData.{name}: expected int32 [n], given {array.dtype} {array.shape}"
                )
        if self.x_train.shape[0] != self.y_train.shape[0]:
            raise ValueError(
                f"LocalData: {self.x_train.shape[0]} training samples but "
                f"{self.y_train.shape[0]} labels"
            )
        if self.x_test.shape[0] != self.y_test.shape[0]:
            raise ValueError(
                f"LocalData: {self.x_test.shape[0]} test samples but {self.y_test.shape[0]} labels"
            )
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise ValueError(
                f"LocalData: train has {self.x_train.shape[1]} features, "
                f"test has {self.x_test.shape[1]}"
            )

    @property
    def num_train(self) -> int:
        """Number of training samples."""
        return int(self.y_train.shape[0])

    @property
    def num_test(self) -> int:
        """Number of local held-out samples."""
        return int(self.y_test.shape[0])

    @property
    def num_features(self) -> int:
        """Features per sample."""
        return int(self.x_train.shape[1])


def load_data_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a client's data file.

    Parameters
    ----------
    path : a ``.npz`` file with arrays ``x`` [n, d] and ``y`` [n], or a ``.csv`` file with a
        header and a label column ``label`` or ``y`` (every other column a numeric feature).

    Returns
    -------
    (x, y) : float32 [n, d] and int32 [n], checked by :func:`check_arrays`.

    Raises
    ------
    DataFileError
        The file is missing, unreadable, of another type, lacks x/y, has wrong dimensions,
        mismatched lengths, non-finite features, non-integer labels, or no samples.
    """
    file_path = Path(path)
    suffix = file_path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataFileError(
            file_path, f"expected a .npz or .csv file, given a {suffix or 'suffix-less'} file"
        )
    if not file_path.exists():
        raise DataFileError(file_path, "no such file")
    if not file_path.is_file():
        raise DataFileError(file_path, "not a regular file")
    if suffix == ".npz":
        x, y = _read_npz(file_path)
    else:
        x, y = _read_csv(file_path)
    return check_arrays(x, y, file_path)


def check_arrays(
    x: np.ndarray, y: np.ndarray, source: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Check a data set's arrays and convert them to float32 [n, d] / int32 [n].

    Raises
    ------
    DataFileError
        Naming ``source``: wrong dimensions, length mismatch, no samples, no features,
        non-numeric or non-finite features, non-integer or negative labels.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2:
        raise DataFileError(source, f"x: expected 2 dimensions [n, d], given shape {x.shape}")
    if y.ndim != 1:
        raise DataFileError(source, f"y: expected 1 dimension [n], given shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataFileError(source, f"x has {x.shape[0]} samples but y has {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise DataFileError(source, "no samples")
    if x.shape[1] == 0:
        raise DataFileError(source, "x has no features")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.issubdtype(
        x.dtype, np.complexfloating
    ):
        raise DataFileError(source, f"x: expected real numbers, given dtype {x.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        # Values beyond float32 become inf here and are reported just below.
        features = x.astype(np.float32)
    if not np.isfinite(features).all():
        bad = np.argwhere(~np.isfinite(features))[0]
        raise DataFileError(
            source,
            f"x: non-finite value at sample {int(bad[0])}, feature {int(bad[1])} "
            "(NaN, inf, or beyond float32 range)",
        )
    labels = _integer_labels(y, source)
    return np.ascontiguousarray(features), labels


def _integer_labels(y: np.ndarray, source: str | os.PathLike) -> np.ndarray:
    if np.issubdtype(y.dtype, np.integer):
        labels = y
    elif np.issubdtype(y.dtype, np.floating):
        # Labels stored as floats (1.0, 2.0) are common in CSV exports; 1.5 is not a class.
        if not np.isfinite(y).all() or not np.equal(np.round(y), y).all():
            bad = int(np.argmax(~np.isfinite(y) | (np.round(y) != y)))
            raise DataFileError(
                source, f"y: labels must be integers, given {y[bad].item()!r} at sample {bad}"
            )
        labels = y
    else:
        raise DataFileError(source, f"y: labels must be integers, given dtype {y.dtype}")
    if labels.min() < 0:
        raise DataFileError(source, f"y: labels must be >= 0, given {labels.min()}")
    if labels.max() > np.iinfo(np.int32).max:
        raise DataFileError(source, f"y: label {labels.max()} is beyond int32")
    return np.ascontiguousarray(labels.astype(np.int32))


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        # allow_pickle=False: a data file must never run code on the device.
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            # A single array saved with np.save, given a .npz name.
            raise DataFileError(
                path, "a single .npy array, not an .npz archive with arrays 'x' and 'y'"
            )
        with loaded as archive:
            names = set(archive.files)
            missing = [name for name in ("x", "y") if name not in names]
            if missing:
                raise DataFileError(
                    path,
                    f"the .npz lacks array(s) {missing}; it has {sorted(names)} "
                    "(expected 'x' [n, d] and 'y' [n])",
                )
            x = archive["x"]
            y = archive["y"]
    except DataFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataFileError(path, f"cannot read as .npz: {error}") from error
    return x, y


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            # (line number, cells) of every non-blank row, so errors point at the real line.
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataFileError(path, f"cannot read as .csv: {error}") from error
    if not rows:
        raise DataFileError(path, "empty file (expected a header row and samples)")
    header = [cell.strip() for cell in rows[0][1]]
    label_columns = [index for index, name in enumerate(header) if name.lower() in LABEL_COLUMNS]
    if len(label_columns) != 1:
        raise DataFileError(
            path,
            f"expected exactly one label column named 'label' or 'y' in the header, "
            f"given header {header}",
        )
    label_index = label_columns[0]
    body = rows[1:]
    if not body:
        raise DataFileError(path, "no samples (only a header)")
    values = []
    for line, row in body:
        if len(row) != len(header):
            raise DataFileError(
                path, f"line {line}: expected {len(header)} columns, given {len(row)}"
            )
        try:
            values.append([float(cell) for cell in row])
        except ValueError:
            column = next(index for index, cell in enumerate(row) if not _is_number(cell))
            raise DataFileError(
                path, f"line {line}, column {header[column]!r}: not a number: {row[column]!r}"
            ) from None
    table = np.asarray(values, dtype=np.float64)
    return np.delete(table, label_index, axis=1), table[:, label_index]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def split_local(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> LocalData:
    """Split a client's data into train and local held-out parts, seeded.

    Parameters
    ----------
    x, y : float32 [n, d] / int32 [n] (see :func:`check_arrays`).
    test_fraction : share held out, in [0, 1): ``int((1 - test_fraction) * n)`` samples are
        kept for training, as FedProx's generator does. With n >= 2 and a fraction > 0 at
        least one sample is held out and at least one is kept for training.
    seed : the shuffle's seed.

    Returns
    -------
    LocalData
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a float in [0, 1), given {test_fraction}")
    x, y = check_arrays(x, y, "<split_local input>")
    num_samples = y.shape[0]
    # FedProx's rule: keep int((1 - f) * n) for training, hold out the rest.
    num_test = num_samples - int((1.0 - test_fraction) * num_samples)
    if test_fraction > 0 and num_samples >= 2:
        num_test = min(max(num_test, 1), num_samples - 1)
    else:
        num_test = 0
    order = np.random.default_rng([seed, 0x5B17]).permutation(num_samples)
    test_index = np.sort(order[:num_test])
    train_index = np.sort(order[num_test:])
    return LocalData(
        x_train=np.ascontiguousarray(x[train_index]),
        y_train=np.ascontiguousarray(y[train_index]),
        x_test=np.ascontiguousarray(x[test_index]),
        y_test=np.ascontiguousarray(y[test_index]),
    )


def check_labels(y: np.ndarray, num_classes: int, source: str | os.PathLike) -> None:
    """Raise :class:`DataFileError` (naming ``source``) if a label is outside [0, num_classes)."""
    y = np.asarray(y)
    if y.size == 0:
        return
    if not np.issubdtype(y.dtype, np.integer):
        raise DataFileError(source, f"labels must be integers, given dtype {y.dtype}")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise DataFileError(
            source,
            f"label {bad} is outside 0..{num_classes - 1} (the model has {num_classes} classes)",
        )


__all__ = [
    "DataFileError",
    "LocalData",
    "check_arrays",
    "check_labels",
    "load_data_file",
    "split_local",
]

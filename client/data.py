"""A device's local data: reading its data file and splitting off a local held-out set.

A device owner gives one file: a ``.npz`` with arrays ``x`` [n, d] and ``y`` [n], or a ``.csv``
with a header row, a label column named ``label`` or ``y``, and numeric features in every
other column. The file is read and checked whole before anything is returned, so a bad file
never gives half a data set. This module imports nothing of coordinator/ or simulations/: a
device needs client/, kernels/ and protos/ only.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from protos.npy import NPY_VERSIONS, NpyVersionError, read_npy_header
from protos.untrusted_file import UntrustedFileError, open_regular_file

LABEL_COLUMNS = ("label", "y")
SUFFIXES = (".npz", ".csv")
# The default cap on a data file and on the arrays it declares: the sandbox's default memory
# cap (the data must fit in the kernel's linear memory anyway). Node config ``max-data-mb``.
DEFAULT_MAX_DATA_BYTES = 512 * 2**20
_CAP_HINT = " (node config max-data-mb)"
_REAL_KINDS = "biuf"  # bool, signed, unsigned, float: what a feature or label may be
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_MAX_NPY_HEADER = 10_000  # numpy's own default bound on a .npy header
_CHUNK_BYTES = 1 << 20


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
        """Check the arrays' dtypes and shapes; raise on a mismatch."""
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


def load_data_file(
    path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_DATA_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Read a client's data file.

    Parameters
    ----------
    path : a ``.npz`` file with arrays ``x`` [n, d] and ``y`` [n], or a ``.csv`` file with a
        header and a label column ``label`` or ``y`` (every other column a numeric feature).
        A symlink is followed; what it names must be a regular file.
    max_bytes : cap on the file's size AND on what it declares: the arrays' bytes inside a
        ``.npz`` (checked from the zip and .npy headers before anything is inflated) or the
        float64 table a ``.csv`` parses to (estimated from its cells before parsing).

    Returns
    -------
    (x, y) : float32 [n, d] and int32 [n], checked by :func:`check_arrays`.

    Raises
    ------
    DataFileError
        The file is missing, not a regular file, unreadable, over ``max_bytes``, of another
        type, corrupt, lacks x/y, has wrong dtypes or dimensions, mismatched lengths,
        non-finite features, non-integer or negative labels, or no samples.
    """
    file_path = Path(path)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes: expected an int > 0, given {max_bytes!r}")
    suffix = file_path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataFileError(
            file_path, f"expected a .npz or .csv file, given a {suffix or 'suffix-less'} file"
        )
    with _open_regular_file(file_path, max_bytes) as handle:
        if suffix == ".npz":
            x, y = _read_npz(handle, file_path, max_bytes)
        else:
            x, y = _read_csv(handle, file_path, max_bytes)
    return check_arrays(x, y, file_path)


def _open_regular_file(path: Path, max_bytes: int) -> BinaryIO:
    # protos.untrusted_file opens first and checks the OPEN file (a regular file; a fifo does
    # not make the open wait); the data file's own refusals (empty, over its cap) follow.
    try:
        handle = open_regular_file(path)
    except FileNotFoundError:
        raise DataFileError(path, "no such file") from None
    except UntrustedFileError as error:
        raise DataFileError(path, str(error.strerror)) from None
    except OSError as error:
        raise DataFileError(path, f"cannot open the data file: {error.strerror}") from None
    try:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise DataFileError(path, "empty file")
        if size > max_bytes:
            raise DataFileError(
                path, f"the file has {size} bytes, at most {max_bytes} allowed{_CAP_HINT}"
            )
    except BaseException:
        handle.close()
        raise
    return handle


def check_arrays(
    x: np.ndarray, y: np.ndarray, source: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Check a data set's arrays and convert them to float32 [n, d] / int32 [n].

    Arrays that already are C-contiguous float32 / int32 are returned without a copy.

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
    if x.dtype.kind not in _REAL_KINDS:
        raise DataFileError(source, f"x: expected real numbers, given dtype {x.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        # Values beyond float32 become inf here and are reported just below.
        features = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(features)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise DataFileError(
            source,
            f"x: non-finite value at sample {int(bad[0])}, feature {int(bad[1])} "
            "(NaN, inf, or beyond float32 range)",
        )
    del finite
    labels = _integer_labels(y, source)
    return features, labels


def _integer_labels(y: np.ndarray, source: str | os.PathLike) -> np.ndarray:
    if y.dtype.kind in "iub":
        labels = y
    elif y.dtype.kind == "f":
        # Labels stored as floats (1.0, 2.0) are common in CSV exports; 1.5 is not a class.
        with np.errstate(invalid="ignore"):
            bad_mask = ~np.isfinite(y) | (np.round(y) != y)
        if bad_mask.any():
            bad = int(np.argmax(bad_mask))
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
    return np.ascontiguousarray(labels, dtype=np.int32)


# -- .npz -------------------------------------------------------------------------------------
def _read_npz(handle: BinaryIO, path: Path, max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    # Read with zipfile and numpy's .npy header readers rather than np.load: np.load trusts the
    # declared shape (a tiny file can ask for any allocation), reads a member into a bytes
    # object before copying it into the array, and lets any compression method through.
    if handle.read(6) == b"\x93NUMPY":
        raise DataFileError(
            path, "a single .npy array, not an .npz archive with arrays 'x' and 'y'"
        )
    handle.seek(0)
    try:
        with zipfile.ZipFile(handle) as archive:
            members = {_array_name(info.filename): info for info in archive.infolist()}
            missing = [name for name in ("x", "y") if name not in members]
            if missing:
                raise DataFileError(
                    path,
                    f"the .npz lacks array(s) {missing}; it has {sorted(members)} "
                    "(expected 'x' [n, d] and 'y' [n])",
                )
            budget = max_bytes
            arrays = []
            for name in ("x", "y"):
                array = _read_member(archive, members[name], name, path, budget)
                budget -= array.nbytes
                arrays.append(array)
    except DataFileError:
        raise
    except (
        OSError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        NotImplementedError,
        RuntimeError,  # zipfile: an encrypted member
        SyntaxError,  # numpy's header parser
        TypeError,  # a header dict with values of the wrong types
    ) as error:
        raise DataFileError(path, f"cannot read as .npz: {_one_line(error)}") from error
    return arrays[0], arrays[1]


def _array_name(member: str) -> str:
    return member[: -len(".npy")] if member.endswith(".npy") else member


def _read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, path: Path, budget: int
) -> np.ndarray:
    where = f"array {name!r} ({info.filename})"
    if info.flag_bits & 0x1:
        raise DataFileError(path, f"{where} is encrypted")
    if info.compress_type not in _ZIP_METHODS:
        raise DataFileError(
            path,
            f"{where} uses zip compression method {info.compress_type}; expected stored or "
            "deflate (what np.savez and np.savez_compressed write)",
        )
    if info.file_size > budget:
        raise DataFileError(
            path,
            f"{where} declares {info.file_size} bytes uncompressed, more than the "
            f"{budget} bytes left of the cap{_CAP_HINT}",
        )
    with archive.open(info) as stream:
        try:
            shape, fortran_order, dtype = read_npy_header(
                stream, (*NPY_VERSIONS, (3, 0)), max_header_size=_MAX_NPY_HEADER
            )
        except NpyVersionError as error:
            raise DataFileError(
                path, f"{where}: .npy format version {error.version} is not supported"
            ) from None
        if dtype.hasobject:
            raise DataFileError(
                path,
                f"{where} holds Python objects (dtype {dtype}); data files must hold numbers "
                "(object arrays would need pickle, which is never loaded)",
            )
        if dtype.kind not in _REAL_KINDS or dtype.names is not None or dtype.subdtype:
            expected = "labels must be integers" if name == "y" else "expected real numbers"
            raise DataFileError(path, f"{where}: {expected}, given dtype {dtype}")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        data_bytes = info.file_size - stream.tell()
        if nbytes != data_bytes:
            raise DataFileError(
                path,
                f"{where} declares shape {shape} of {dtype} ({nbytes} bytes) but the member "
                f"holds {data_bytes} bytes of data",
            )
        # Allocated once at its checked size and filled in place: no bytes copy of the member.
        array = np.empty(count, dtype=dtype)
        view = memoryview(array).cast("B")  # type: ignore[arg-type]  # ndarray is a Buffer
        position = 0
        while position < nbytes:
            chunk = stream.read(min(_CHUNK_BYTES, nbytes - position))
            if not chunk:
                raise DataFileError(path, f"{where} ends after {position} of {nbytes} bytes")
            view[position : position + len(chunk)] = chunk
            position += len(chunk)
        # Reading past the end makes zipfile check the CRC of what was inflated.
        if stream.read(1):
            raise DataFileError(path, f"{where} holds more bytes than its header declares")
    return array.reshape(shape, order="F" if fortran_order else "C")


# -- .csv -------------------------------------------------------------------------------------
def _read_csv(handle: BinaryIO, path: Path, max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    # The float64 table a CSV parses to can be 4x its text ("0," per cell): bound it before
    # parsing, from its cells, counted in one pass over the bytes.
    cells = 0
    for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
        cells += chunk.count(b",") + chunk.count(b"\n") + 1
    if cells * 8 > max_bytes:
        raise DataFileError(
            path,
            f"about {cells} cells parse to {cells * 8} bytes of float64, at most {max_bytes} "
            f"allowed{_CAP_HINT}",
        )
    handle.seek(0)
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
    try:
        header_line, header = _csv_header(text, path)
        label_index = _label_column(header, path)
        try:
            # Fast path: numpy's C parser. Anything it rejects (ragged rows, blank-looking
            # lines, non-numbers) is read again by the precise path for a line-exact message.
            with warnings.catch_warnings():
                # "input contained no data": a header-only file, reported below in our words.
                warnings.simplefilter("ignore", UserWarning)
                table = np.loadtxt(
                    text, delimiter=",", quotechar='"', ndmin=2, dtype=np.float64, encoding=None
                )
        except ValueError:
            text.seek(0)
            table = _csv_table_precise(text, path, header, header_line)
    except UnicodeDecodeError as error:
        raise DataFileError(path, f"not UTF-8 text: {error.reason} at byte {error.start}") from None
    except (OSError, csv.Error) as error:
        raise DataFileError(path, f"cannot read as .csv: {_one_line(error)}") from error
    finally:
        text.detach()
    if table.shape[0] == 0:
        raise DataFileError(path, "no samples (only a header)")
    if table.shape[1] != len(header):
        raise DataFileError(
            path, f"line {header_line + 1}: expected {len(header)} columns, given {table.shape[1]}"
        )
    labels = table[:, label_index]
    # Features straight into float32, without an intermediate float64 copy of the table.
    features = np.empty((table.shape[0], table.shape[1] - 1), dtype=np.float32)
    with np.errstate(over="ignore"):
        features[:, :label_index] = table[:, :label_index]
        features[:, label_index:] = table[:, label_index + 1 :]
    return features, labels


def _csv_header(text: io.TextIOWrapper, path: Path) -> tuple[int, list[str]]:
    line_number = 0
    for line in iter(text.readline, ""):
        line_number += 1
        if line.strip():
            row = next(csv.reader([line]), [])
            return line_number, [cell.strip() for cell in row]
    raise DataFileError(path, "empty file (expected a header row and samples)")


def _label_column(header: list[str], path: Path) -> int:
    label_columns = [index for index, name in enumerate(header) if name.lower() in LABEL_COLUMNS]
    if len(label_columns) != 1:
        raise DataFileError(
            path,
            f"expected exactly one label column named 'label' or 'y' in the header, "
            f"given header {header}",
        )
    return label_columns[0]


def _csv_table_precise(
    text: io.TextIOWrapper, path: Path, header: list[str], header_line: int
) -> np.ndarray:
    reader = csv.reader(text)
    values = []
    for row in reader:
        if reader.line_num <= header_line or not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
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
    return np.asarray(values, dtype=np.float64).reshape(len(values), len(header))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


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
    num_test = held_out_count(num_samples, test_fraction)
    order = np.random.default_rng([seed, 0x5B17]).permutation(num_samples)
    test_index = np.sort(order[:num_test])
    train_index = np.sort(order[num_test:])
    return LocalData(
        x_train=np.ascontiguousarray(x[train_index]),
        y_train=np.ascontiguousarray(y[train_index]),
        x_test=np.ascontiguousarray(x[test_index]),
        y_test=np.ascontiguousarray(y[test_index]),
    )


def held_out_count(num_samples: int, test_fraction: float) -> int:
    """How many of ``num_samples`` :func:`split_local` holds out at ``test_fraction``.

    FedProx's rule: keep ``int((1 - test_fraction) * num_samples)`` for training, hold out
    the rest; with 2+ samples and a fraction > 0, at least one on each side. (A caller that
    needs only the sizes, e.g. the coordinator's expected num-examples, calls this instead
    of splitting the data.)
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a float in [0, 1), given {test_fraction}")
    if test_fraction > 0 and num_samples >= 2:
        num_test = num_samples - int((1.0 - test_fraction) * num_samples)
        return min(max(num_test, 1), num_samples - 1)
    return 0


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
    "DEFAULT_MAX_DATA_BYTES",
    "DataFileError",
    "LocalData",
    "check_arrays",
    "check_labels",
    "held_out_count",
    "load_data_file",
    "split_local",
]

"""client/data.py: reading a device's data file, the local split, label checks."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

from client.data import (
    DataFileError,
    LocalData,
    check_arrays,
    check_labels,
    held_out_count,
    load_data_file,
    split_local,
)


def _arrays(num_samples: int = 12, num_features: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, num_features)).astype(np.float32)
    y = rng.integers(0, 4, size=num_samples).astype(np.int32)
    return x, y


# -- reading files ----------------------------------------------------------------------------
def test_npz_round_trip_gives_float32_and_int32(tmp_path):
    x, y = _arrays()
    path = tmp_path / "client.npz"
    np.savez(path, x=x.astype(np.float64), y=y.astype(np.int64))
    loaded_x, loaded_y = load_data_file(path)
    assert loaded_x.dtype == np.float32 and loaded_y.dtype == np.int32
    assert loaded_x.flags.c_contiguous
    np.testing.assert_array_equal(loaded_x, x)
    np.testing.assert_array_equal(loaded_y, y)


@pytest.mark.parametrize("label_name", ["label", "y", "Label"])
def test_csv_label_column_anywhere_and_the_rest_are_features(tmp_path, label_name):
    path = tmp_path / "client.csv"
    path.write_text(f"a,{label_name},b\n0.5,1,2\n-1,0,3.25\n\n")
    x, y = load_data_file(path)
    np.testing.assert_array_equal(x, np.array([[0.5, 2.0], [-1.0, 3.25]], dtype=np.float32))
    np.testing.assert_array_equal(y, np.array([1, 0], dtype=np.int32))


def test_integral_float_labels_are_accepted(tmp_path):
    path = tmp_path / "client.npz"
    np.savez(path, x=np.ones((2, 2)), y=np.array([1.0, 3.0]))
    _, y = load_data_file(path)
    np.testing.assert_array_equal(y, [1, 3])


def _write_npz(path, **arrays):
    np.savez(path, **arrays)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


BAD_FILES = {
    "missing": (lambda p: None, "client.npz", "no such file"),
    "wrong suffix": (lambda p: p.write_text("x"), "client.txt", "expected a .npz or .csv"),
    "not an npz": (lambda p: p.write_bytes(b"not a zip"), "client.npz", "cannot read as .npz"),
    "npz without y": (
        lambda p: _write_npz(p, x=np.ones((2, 2))),
        "client.npz",
        "lacks array(s) ['y']",
    ),
    "x is 1-d": (
        lambda p: _write_npz(p, x=np.ones(3), y=np.zeros(3, int)),
        "client.npz",
        "x: expected 2 dimensions",
    ),
    "y is 2-d": (
        lambda p: _write_npz(p, x=np.ones((3, 2)), y=np.zeros((3, 1), int)),
        "client.npz",
        "y: expected 1 dimension",
    ),
    "length mismatch": (
        lambda p: _write_npz(p, x=np.ones((3, 2)), y=np.zeros(2, int)),
        "client.npz",
        "x has 3 samples but y has 2 labels",
    ),
    "NaN feature": (
        lambda p: _write_npz(p, x=np.array([[1.0, np.nan]]), y=np.zeros(1, int)),
        "client.npz",
        "non-finite value at sample 0, feature 1",
    ),
    "inf feature": (
        lambda p: _write_npz(p, x=np.array([[np.inf, 1.0]]), y=np.zeros(1, int)),
        "client.npz",
        "non-finite",
    ),
    "beyond float32": (
        lambda p: _write_npz(p, x=np.array([[1e300, 1.0]]), y=np.zeros(1, int)),
        "client.npz",
        "non-finite",
    ),
    "fractional label": (
        lambda p: _write_npz(p, x=np.ones((2, 2)), y=np.array([1.0, 1.5])),
        "client.npz",
        "labels must be integers, given 1.5 at sample 1",
    ),
    "string labels": (
        lambda p: _write_npz(p, x=np.ones((2, 2)), y=np.array(["a", "b"])),
        "client.npz",
        "labels must be integers",
    ),
    "negative label": (
        lambda p: _write_npz(p, x=np.ones((2, 2)), y=np.array([0, -1])),
        "client.npz",
        "labels must be >= 0",
    ),
    "no samples": (
        lambda p: _write_npz(p, x=np.ones((0, 2)), y=np.zeros(0, int)),
        "client.npz",
        "no samples",
    ),
    "pickled objects": (
        lambda p: _write_npz(p, x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, int)),
        "client.npz",
        "holds Python objects",
    ),
    "an npy named npz": (
        lambda p: p.write_bytes(_npy_bytes(np.ones((2, 2)))),
        "client.npz",
        "a single .npy array, not an .npz archive",
    ),
    "empty csv": (lambda p: p.write_text(""), "client.csv", "empty file"),
    "csv header only": (lambda p: p.write_text("a,label\n"), "client.csv", "only a header"),
    "csv without label column": (
        lambda p: p.write_text("a,b\n1,2\n"),
        "client.csv",
        "exactly one label column",
    ),
    "csv with two label columns": (
        lambda p: p.write_text("label,y\n1,2\n"),
        "client.csv",
        "exactly one label column",
    ),
    "csv with text in the last row": (
        lambda p: p.write_text("a,label\n1,2\n3,4\nfive,1\n"),
        "client.csv",
        "line 4, column 'a': not a number: 'five'",
    ),
    "csv text after a blank line": (
        lambda p: p.write_text("a,label\n1,2\n\n\n3,x\n"),
        "client.csv",
        "line 5, column 'label': not a number: 'x'",
    ),
    "csv ragged row": (
        lambda p: p.write_text("a,label\n1,2\n3\n"),
        "client.csv",
        "line 3: expected 2 columns, given 1",
    ),
    "csv not utf-8": (
        lambda p: p.write_bytes(b"a,label\n\xff\xfe,1\n"),
        "client.csv",
        "not UTF-8 text",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_a_data_file_error_naming_the_file_and_the_problem(tmp_path, case):
    write, name, problem = BAD_FILES[case]
    path = tmp_path / name
    write(path)
    with pytest.raises(DataFileError) as raised:
        load_data_file(path)
    assert str(path) in str(raised.value)
    assert problem in str(raised.value)
    assert raised.value.source == str(path)


def test_a_folder_is_not_a_data_file(tmp_path):
    folder = tmp_path / "data.npz"
    folder.mkdir()
    with pytest.raises(DataFileError, match="not a regular file"):
        load_data_file(folder)


def test_data_file_error_is_a_value_error():
    assert issubclass(DataFileError, ValueError)


# -- the local split --------------------------------------------------------------------------
def test_split_local_is_a_seeded_partition_of_the_samples():
    x, y = _arrays(num_samples=55)
    x[:, 0] = np.arange(55)  # a sample id, to follow samples through the split
    data = split_local(x, y, 0.1, seed=3)
    # FedProx's rule: train = int(0.9 * n), the rest is held out.
    assert (data.num_train, data.num_test) == (49, 6)
    ids = np.concatenate([data.x_train[:, 0], data.x_test[:, 0]])
    assert sorted(ids.tolist()) == list(range(55))
    for part_x, part_y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        np.testing.assert_array_equal(part_y, y[part_x[:, 0].astype(int)])
    again = split_local(x, y, 0.1, seed=3)
    np.testing.assert_array_equal(again.x_test, data.x_test)
    other = split_local(x, y, 0.1, seed=4)
    assert not np.array_equal(other.x_test[:, 0], data.x_test[:, 0])


def test_split_local_keeps_one_sample_on_each_side_when_it_can():
    x, y = _arrays(num_samples=2)
    data = split_local(x, y, 0.01, seed=0)
    assert (data.num_train, data.num_test) == (1, 1)
    data = split_local(x, y, 0.99, seed=0)
    assert (data.num_train, data.num_test) == (1, 1)
    single = split_local(*_arrays(num_samples=1), 0.5, seed=0)
    assert (single.num_train, single.num_test) == (1, 0)
    none_held_out = split_local(*_arrays(num_samples=5), 0.0, seed=0)
    assert (none_held_out.num_train, none_held_out.num_test) == (5, 0)
    assert none_held_out.x_test.shape == (0, 3)


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.15, 0.2, 0.5, 0.9, 0.99])
def test_held_out_count_is_what_split_local_holds_out(fraction):
    for num_samples in range(1, 80):
        data = split_local(*_arrays(num_samples=num_samples), fraction, seed=num_samples)
        assert held_out_count(num_samples, fraction) == data.num_test, num_samples


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_held_out_count_refuses_a_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match=r"test_fraction: expected a float in \[0, 1\)"):
        held_out_count(10, fraction)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_split_local_refuses_a_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match=r"test_fraction: expected a float in \[0, 1\)"):
        split_local(*_arrays(), fraction, seed=0)


def test_local_data_is_frozen_and_checks_its_arrays():
    x, y = _arrays()
    data = split_local(x, y, 0.25, seed=0)
    assert data.num_features == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.x_train = x  # type: ignore[misc]
    with pytest.raises(ValueError, match="x_train: expected float32"):
        LocalData(x.astype(np.float64), y, x, y)
    with pytest.raises(ValueError, match="y_test: expected int32"):
        LocalData(x, y, x, y.astype(np.int64))
    with pytest.raises(ValueError, match="12 training samples but 11 labels"):
        LocalData(x, y[:-1], x, y)


def test_check_arrays_names_the_source():
    with pytest.raises(DataFileError, match=r"^partition 3: x has 2 samples but y has 1"):
        check_arrays(np.ones((2, 2)), np.zeros(1, int), "partition 3")


# -- labels against the model -----------------------------------------------------------------
def test_check_labels_accepts_labels_in_range_and_names_the_source_otherwise():
    check_labels(np.array([0, 9], np.int32), 10, "client.npz")
    check_labels(np.zeros(0, np.int32), 10, "client.npz")
    with pytest.raises(DataFileError, match=r"client\.npz: label 10 is outside 0\.\.9"):
        check_labels(np.array([0, 10], np.int32), 10, "client.npz")
    with pytest.raises(DataFileError, match="label -1 is outside"):
        check_labels(np.array([-1, 0], np.int32), 10, "client.npz")
    with pytest.raises(DataFileError, match="labels must be integers"):
        check_labels(np.array([0.5]), 10, "client.npz")

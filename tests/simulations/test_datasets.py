"""simulations/datasets.py: digits, FedProx's Synthetic(alpha, beta), a folder of client files."""

from __future__ import annotations

import numpy as np
import pytest

from client.data import DataFileError
from simulations import datasets
from simulations.datasets import DatasetError


def test_digits_are_scaled_to_0_1_and_read_only():
    x, y = datasets.load_digits()
    assert x.shape == (1797, datasets.DIGITS_FEATURES) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int32
    assert x.min() == 0.0 and x.max() == 1.0
    assert sorted(np.unique(y).tolist()) == list(range(datasets.DIGITS_CLASSES))
    with pytest.raises(ValueError, match="read-only"):
        x[0, 0] = 2.0


# -- Synthetic(alpha, beta) -------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 2, 12345])
def test_a_synthetic_device_size_is_known_without_generating_it(seed):
    for device in (*range(40), 99_999):
        _, y = datasets.synthetic_device(0.5, 1.0, device, seed)
        assert datasets.synthetic_device_size(device, seed) == len(y), device
    with pytest.raises(DatasetError, match="synthetic device: expected an int >= 0, given -1"):
        datasets.synthetic_device_size(-1, seed)


def test_synthetic_follows_the_fedprox_protocol():
    devices = datasets.generate_synthetic(1.0, 1.0, 30, seed=0)
    assert len(devices) == 30
    for x, y in devices:
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape[1] == 60 and x.shape[0] == y.shape[0] >= 50
        assert y.min() >= 0 and y.max() < 10
    # n_k = int(lognormal(4, 2)) + 50: the first draw of device k's own generator.
    expected_sizes = [
        int(np.random.default_rng([0, 0x5E7, device]).lognormal(4, 2)) + 50 for device in range(30)
    ]
    assert [len(y) for _, y in devices] == expected_sizes


def test_synthetic_features_have_the_papers_covariance():
    # Sigma_jj = j^-1.2 around a device mean: the within-device variance of feature j.
    x, _ = max(datasets.generate_synthetic(0.0, 0.0, 30, seed=1), key=lambda d: len(d[1]))
    assert len(x) > 1000
    variances = x.astype(np.float64).var(axis=0)
    expected = np.arange(1, 61, dtype=np.float64) ** -1.2
    np.testing.assert_allclose(variances, expected, rtol=0.25)


def test_synthetic_labels_come_from_a_device_linear_model():
    # y = argmax(x W_k + b_k): one device's data is linearly separable, so a multinomial
    # logistic regression fits it almost perfectly.
    from sklearn.linear_model import LogisticRegression

    devices = datasets.generate_synthetic(1.0, 1.0, 30, seed=2)
    # A device whose bias makes one class win everywhere is valid Synthetic data but says
    # nothing about a fit: take the first one with a few hundred samples and two classes.
    x, y = next((x, y) for x, y in devices if 150 <= len(y) <= 600 and len(np.unique(y)) >= 2)
    assert len(np.unique(y)) >= 2
    model = LogisticRegression(C=100.0, max_iter=3000).fit(x, y)
    assert model.score(x, y) > 0.97


def test_synthetic_beta_spreads_the_device_feature_means():
    def spread(beta: float) -> float:
        devices = datasets.generate_synthetic(1.0, beta, 30, seed=3)
        return float(np.std([x.mean() for x, _ in devices]))

    assert spread(5.0) > 2 * spread(0.0)


def test_each_synthetic_device_comes_from_its_own_seed_alone():
    devices = datasets.generate_synthetic(1.0, 1.0, 6, seed=4)
    for device in (5, 0, 3):  # any order, one at a time
        x, y = datasets.synthetic_device(1.0, 1.0, device, seed=4)
        np.testing.assert_array_equal(x, devices[device][0])
        np.testing.assert_array_equal(y, devices[device][1])
    # A device of a population of 100,000 is as cheap as one of 30.
    x, y = datasets.synthetic_device(1.0, 1.0, 99_999, seed=4)
    assert x.shape[1] == 60 and len(y) >= 50 and not x.flags.writeable


def test_synthetic_is_deterministic_from_the_seed():
    first = datasets.generate_synthetic(1.0, 1.0, 5, seed=9)
    second = datasets.generate_synthetic(1.0, 1.0, 5, seed=9)
    other = datasets.generate_synthetic(1.0, 1.0, 5, seed=10)
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(first[0][0][:50], other[0][0][:50])


@pytest.mark.parametrize(
    ("alpha", "beta", "devices", "message"),
    [(-1.0, 1.0, 3, "synthetic alpha"), (1.0, -0.5, 3, "synthetic beta"), (1, 1, 0, "devices")],
)
def test_synthetic_refuses_bad_parameters(alpha, beta, devices, message):
    with pytest.raises(DatasetError, match=message):
        datasets.generate_synthetic(alpha, beta, devices, seed=0)


# -- a folder of client files -----------------------------------------------------------------
def _folder(tmp_path, sizes=(5, 7, 4), num_features=3):
    folder = tmp_path / "clients"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index, size in enumerate(sizes):
        x = rng.normal(size=(size, num_features))
        y = rng.integers(0, 4, size)
        np.savez(folder / f"client-{index}.npz", x=x, y=y)
    return folder


def test_a_folder_is_read_in_name_order(tmp_path):
    folder = _folder(tmp_path)
    (folder / "notes.txt").write_text("ignored: not a data file")
    (folder / "client-3.csv").write_text("f1,f2,f3,label\n1,2,3,5\n")
    files = datasets.folder_files(folder)
    assert [path.name for path in files] == [
        "client-0.npz",
        "client-1.npz",
        "client-2.npz",
        "client-3.csv",
    ]
    devices = datasets.load_folder(folder)
    assert [len(y) for _, y in devices] == [5, 7, 4, 1]
    assert datasets.folder_shape(folder) == (3, 6)
    assert datasets.dataset_shape("folder", folder) == (3, 6)


def test_an_unreadable_file_is_kept_with_its_error(tmp_path):
    folder = _folder(tmp_path)
    (folder / "client-1.npz").write_bytes(b"broken")
    client_files = datasets.read_folder(folder)
    assert [client_file.readable for client_file in client_files] == [True, False, True]
    assert "cannot read as .npz" in client_files[1].error
    with pytest.raises(DataFileError, match=r"client-1\.npz: cannot read as \.npz"):
        client_files[1].arrays()
    with pytest.raises(DataFileError, match=r"client-1\.npz"):
        datasets.load_folder(folder)
    assert datasets.folder_shape(folder)[0] == 3


def test_an_edited_folder_is_read_again(tmp_path):
    folder = _folder(tmp_path, sizes=(5,))
    assert len(datasets.load_folder(folder)[0][1]) == 5
    np.savez(folder / "client-0.npz", x=np.ones((9, 3)), y=np.zeros(9, int))
    assert len(datasets.load_folder(folder)[0][1]) == 9


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing", "not a folder"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "no .npz or .csv files"),
        (lambda tmp: "", "needs a path"),
    ],
)
def test_a_bad_folder_is_a_dataset_error(tmp_path, make, message):
    with pytest.raises(DatasetError, match=message):
        datasets.load_folder(make(tmp_path))


def test_files_that_disagree_on_features_are_refused(tmp_path):
    folder = _folder(tmp_path, sizes=(5,))
    np.savez(folder / "client-9.npz", x=np.ones((2, 4)), y=np.zeros(2, int))
    with pytest.raises(DatasetError, match=r"client-9\.npz: 4 features, but .*client-0\.npz has 3"):
        datasets.load_folder(folder)


def test_a_folder_with_no_readable_file_is_refused(tmp_path):
    folder = tmp_path / "clients"
    folder.mkdir()
    (folder / "a.npz").write_bytes(b"broken")
    with pytest.raises(DatasetError, match=r"no readable client file; .*a\.npz"):
        datasets.read_folder(folder)


def test_dataset_shape_of_the_built_in_sets():
    assert datasets.dataset_shape("digits") == (64, 10)
    assert datasets.dataset_shape("synthetic") == (60, 10)
    with pytest.raises(DatasetError, match="expected one of digits, synthetic, folder"):
        datasets.dataset_shape("mnist")


def test_digits_are_scikit_learns_digits_read_without_importing_it():
    import subprocess
    import sys

    from sklearn.datasets import load_digits as sklearn_load_digits

    x, y = datasets.load_digits()
    bunch = sklearn_load_digits()
    np.testing.assert_array_equal(x, (bunch.data.astype(np.float32) / 16.0).astype(np.float32))
    np.testing.assert_array_equal(y, bunch.target.astype(np.int32))
    probe = (
        "import sys; from simulations.datasets import load_digits; load_digits(); "
        "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

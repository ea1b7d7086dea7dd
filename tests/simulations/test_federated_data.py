"""simulations/federated_data.py: the flat data config -> client data and the central test set."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from client.data import DataFileError, LocalData
from simulations import datasets
from simulations.federated_data import (
    DATA_KEYS,
    DataConfig,
    DataConfigError,
    clear_caches,
    data_shape,
    example_counts,
    load_central_test,
    load_client_data,
)


def _config(**changes) -> dict:
    config = DataConfig(dataset="digits", partitioning="dirichlet", num_partitions=10, seed=5)
    return config.to_mapping() | changes


def _rows(x: np.ndarray, y: np.ndarray) -> Counter:
    return Counter((row.tobytes(), int(label)) for row, label in zip(x, y, strict=True))


# -- the config -------------------------------------------------------------------------------
def test_data_config_round_trips_through_the_flat_keys():
    config = DataConfig(
        dataset="synthetic",
        partitioning="natural",
        num_partitions=30,
        seed=1,
        synthetic_alpha=0.5,
        test_fraction=0.1,
    )
    flat = config.to_mapping()
    assert set(flat) == set(DATA_KEYS)
    # A message config carries other keys too; they are ignored.
    assert DataConfig.from_mapping(flat | {"lr": 0.1, "server-round": 3}) == config


def test_optional_keys_take_their_defaults_and_ints_stand_for_floats():
    config = DataConfig.from_mapping(
        {"dataset": "digits", "partitioning": "iid", "num-partitions": 4, "seed": 0,
         "dirichlet-alpha": 1}
    )  # fmt: skip
    assert config.dirichlet_alpha == 1.0 and isinstance(config.dirichlet_alpha, float)
    assert config.test_fraction == 0.2 and config.dataset_path == ""


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset": "mnist"}, "dataset: expected one of digits, synthetic, folder, given 'mnist'"),
        ({"partitioning": "random"}, "partitioning: expected one of iid, dirichlet"),
        ({"num-partitions": 0}, "num-partitions: expected an integer >= 1, given 0"),
        ({"num-partitions": 2.0}, "num-partitions: expected an integer >= 1, given 2.0"),
        ({"num-partitions": True}, "num-partitions: expected an integer >= 1, given True"),
        ({"seed": -1}, "seed: expected an integer >= 0, given -1"),
        ({"dirichlet-alpha": -1}, "dirichlet-alpha: expected a float > 0, given -1"),
        ({"dirichlet-alpha": "0.5"}, "dirichlet-alpha: expected a float > 0, given '0.5'"),
        ({"synthetic-beta": -0.1}, "synthetic-beta: expected a float >= 0"),
        ({"shards-per-client": 0}, "shards-per-client: expected an integer >= 1"),
        ({"test-fraction": 0.0}, r"test-fraction: expected a float in \(0, 1\), given 0.0"),
        ({"test-fraction": 1.0}, r"test-fraction: expected a float in \(0, 1\), given 1.0"),
        ({"dataset": "folder"}, "dataset-path: the folder data set needs a folder path"),
        ({"dataset-path": 3}, "dataset-path: expected a folder path, given 3"),
        ({"partitioning": "natural"}, "partitioning: digits has no natural per-device split"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_key(changes, message):
    with pytest.raises(DataConfigError, match=f"^{message}"):
        load_client_data(_config(**changes), 0)


def test_a_missing_required_key_is_named():
    config = _config()
    del config["num-partitions"]
    with pytest.raises(DataConfigError, match="^num-partitions: missing from the config"):
        load_central_test(config)


# -- digits -----------------------------------------------------------------------------------
@pytest.mark.parametrize("partitioning", ["iid", "dirichlet", "shards"])
def test_digits_clients_and_central_test_split_the_data_set_without_overlap(partitioning):
    config = _config(partitioning=partitioning, **{"num-partitions": 12, "test-fraction": 0.15})
    central_x, central_y = load_central_test(config)
    assert len(central_y) == round(0.15 * 1797)
    # Stratified: every class is in the central test set in its share.
    assert np.bincount(central_y, minlength=10).min() >= 26
    parts = [load_client_data(config, partition) for partition in range(12)]
    assert all(isinstance(part, LocalData) and part.num_train > 0 for part in parts)
    assert all(part.num_test >= 1 for part in parts)
    union = _rows(central_x, central_y)
    for part in parts:
        union += _rows(part.x_train, part.y_train) + _rows(part.x_test, part.y_test)
    all_digits = _rows(*datasets.load_digits())
    if partitioning == "shards":
        # Shards leave out the remainder that does not fill a shard: a sub-multiset.
        assert not union - all_digits
        assert sum(all_digits.values()) - sum(union.values()) < 12 * 2
    else:
        assert union == all_digits  # every image exactly once: disjoint and covering


def test_each_client_holds_out_its_test_fraction():
    config = _config(**{"test-fraction": 0.25})
    for partition in range(10):
        data = load_client_data(config, partition)
        size = data.num_train + data.num_test
        assert data.num_train == int(0.75 * size)


def test_client_data_is_cached_read_only_and_deterministic():
    config = _config()
    first = load_client_data(config, 3)
    assert load_client_data(dict(config), 3) is first  # cached per process
    with pytest.raises(ValueError, match="read-only"):
        first.x_train[0, 0] = 1.0
    central_x, _ = load_central_test(config)
    assert not central_x.flags.writeable
    clear_caches()
    rebuilt = load_client_data(config, 3)
    assert rebuilt is not first
    np.testing.assert_array_equal(rebuilt.x_train, first.x_train)
    np.testing.assert_array_equal(rebuilt.y_test, first.y_test)
    other_seed = load_client_data(_config(seed=6), 3)
    assert other_seed.num_train != first.num_train or not np.array_equal(
        other_seed.y_train, first.y_train
    )


def test_a_partition_id_out_of_range_is_refused():
    with pytest.raises(DataConfigError, match="partition id 10 is out of range: there are 10"):
        load_client_data(_config(), 10)
    with pytest.raises(DataConfigError, match="partition id -1 is out of range"):
        load_client_data(_config(), -1)


def test_too_many_clients_for_the_data_is_an_error_naming_the_key():
    with pytest.raises(DataConfigError, match="^num-partitions: iid split of .* each client"):
        load_client_data(_config(partitioning="iid", **{"num-partitions": 1000}), 0)
    with pytest.raises(DataConfigError, match="^dirichlet-alpha: .*clients need >= 5000"):
        load_client_data(_config(**{"num-partitions": 500}), 0)


# -- synthetic --------------------------------------------------------------------------------
def _synthetic(**changes) -> dict:
    config = DataConfig(
        dataset="synthetic", partitioning="natural", num_partitions=30, seed=2, test_fraction=0.1
    )
    return config.to_mapping() | changes


def test_synthetic_natural_gives_each_device_to_one_client_with_a_90_10_split():
    config = _synthetic()
    devices = datasets.generate_synthetic(1.0, 1.0, 30, seed=2)
    central_x, central_y = load_central_test(config)
    held_out = 0
    for partition, (x, y) in enumerate(devices):
        data = load_client_data(config, partition)
        assert data.num_train == int(0.9 * len(y))
        assert _rows(data.x_train, data.y_train) + _rows(data.x_test, data.y_test) == _rows(x, y)
        held_out += data.num_test
    # The central test set is the union of the devices' held-out splits.
    assert len(central_y) == held_out
    assert central_x.shape == (held_out, 60)


def test_synthetic_can_be_repartitioned_from_the_pooled_training_splits():
    config = _synthetic(partitioning="iid", **{"num-partitions": 10})
    central_before = load_central_test(_synthetic(**{"num-partitions": 10}))
    sizes = [load_client_data(config, p).num_train + load_client_data(config, p).num_test
             for p in range(10)]  # fmt: skip
    assert max(sizes) - min(sizes) <= 1
    # Same devices (10 of them), so the same central test set as the natural split.
    np.testing.assert_array_equal(load_central_test(config)[1], central_before[1])


def test_data_shape_comes_from_the_data_set():
    assert data_shape(_config()) == (64, 10)
    assert data_shape(_synthetic()) == (60, 10)


# -- a folder of client files -----------------------------------------------------------------
def _folder(tmp_path, num_clients=3, broken=None):
    folder = tmp_path / "clients"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(num_clients):
        path = folder / f"client-{index}.npz"
        if index == broken:
            path.write_bytes(b"not an npz file")
            continue
        np.savez(path, x=rng.normal(size=(20 + index, 4)), y=rng.integers(0, 3, 20 + index))
    return folder


def _folder_config(folder, **changes) -> dict:
    config = DataConfig(
        dataset="folder",
        partitioning="natural",
        num_partitions=3,
        seed=0,
        dataset_path=str(folder),
        test_fraction=0.2,
    )
    return config.to_mapping() | changes


def test_an_edited_folder_is_partitioned_again(tmp_path):
    folder = _folder(tmp_path)
    config = _folder_config(folder)
    before = load_client_data(config, 0)
    np.savez(folder / "client-0.npz", x=np.ones((30, 4)), y=np.zeros(30, int))
    after = load_client_data(config, 0)
    assert before.num_train + before.num_test == 20
    assert after.num_train + after.num_test == 30


def test_folder_natural_gives_file_i_to_client_i(tmp_path):
    config = _folder_config(_folder(tmp_path))
    sizes = [load_client_data(config, p).num_train + load_client_data(config, p).num_test
             for p in range(3)]  # fmt: skip
    assert sizes == [20, 21, 22]
    assert data_shape(config) == (4, 3)
    assert len(load_central_test(config)[1]) == sum(
        load_client_data(config, p).num_test for p in range(3)
    )


def test_an_unreadable_client_file_fails_only_that_client(tmp_path):
    config = _folder_config(_folder(tmp_path, broken=1))
    assert load_client_data(config, 0).num_train == 16
    with pytest.raises(DataFileError, match=r"client-1\.npz: cannot read as \.npz"):
        load_client_data(config, 1)
    central_x, _ = load_central_test(config)
    assert (
        len(central_x)
        == load_client_data(config, 0).num_test + load_client_data(config, 2).num_test
    )


def test_pooling_a_folder_with_an_unreadable_file_is_refused(tmp_path):
    config = _folder_config(_folder(tmp_path, broken=1), partitioning="iid")
    with pytest.raises(DataConfigError, match=r"^dataset-path: .*client-1\.npz"):
        load_central_test(config)


def test_natural_needs_one_client_per_file(tmp_path):
    config = _folder_config(_folder(tmp_path), **{"num-partitions": 4})
    with pytest.raises(
        DataConfigError, match="^num-partitions: .*3 files, but num-partitions is 4"
    ):
        load_client_data(config, 0)


def test_a_missing_folder_is_an_error_naming_dataset_path(tmp_path):
    config = _folder_config(tmp_path / "nowhere")
    with pytest.raises(DataConfigError, match="^dataset-path: .*not a folder"):
        load_client_data(config, 0)
    with pytest.raises(DataConfigError, match="^dataset-path: .*not a folder"):
        data_shape(config)


def test_synthetic_natural_clients_are_made_only_when_asked_and_the_central_set_is_bounded(
    monkeypatch,
):
    from simulations import federated_data

    made = []
    real = datasets.synthetic_device

    def counting(alpha, beta, device, seed, **kwargs):
        made.append(device)
        return real(alpha, beta, device, seed, **kwargs)

    monkeypatch.setattr(datasets, "synthetic_device", counting)
    monkeypatch.setattr(federated_data, "CENTRAL_TEST_DEVICES", 5)
    federated_data.clear_caches()
    config = _synthetic(**{"num-partitions": 100_000})
    data = load_client_data(config, 73_421)
    assert made == [73_421]  # nothing else was generated
    x, y = real(1.0, 1.0, 73_421, 2)
    assert _rows(data.x_train, data.y_train) + _rows(data.x_test, data.y_test) == _rows(x, y)
    central_x, central_y = load_central_test(config)
    assert made[1:] == [0, 1, 2, 3, 4]  # the first CENTRAL_TEST_DEVICES devices only
    held_out = sum(load_client_data(config, device).num_test for device in range(5))
    assert len(central_y) == held_out and central_x.shape == (held_out, 60)
    with pytest.raises(DataConfigError, match="partition id 100000 is out of range"):
        load_client_data(config, 100_000)
    federated_data.clear_caches()


def test_lazy_example_counts_come_from_the_seeds_without_generating_a_device(monkeypatch):
    from simulations import federated_data

    clear_caches()
    config = _synthetic(**{"num-partitions": 100_000})
    expected = {p: load_client_data(config, p) for p in (0, 1, 29, 73_421, 99_999)}
    made = []
    real = datasets.synthetic_device
    monkeypatch.setattr(
        datasets, "synthetic_device", lambda *args, **kwargs: made.append(args) or real(*args)
    )
    monkeypatch.setattr(federated_data, "build_federated_data", None)  # must not be reached
    clear_caches()
    for partition, data in expected.items():
        assert example_counts(config, partition) == (data.num_train, data.num_test)
    assert made == []
    assert example_counts(config, 100_000) is None
    assert example_counts(config, -1) is None
    clear_caches()


def test_eager_example_counts_are_the_built_clients(tmp_path):
    config = _config()
    for partition in range(10):
        data = load_client_data(config, partition)
        assert example_counts(config, partition) == (data.num_train, data.num_test)
    assert example_counts(config, 10) is None
    broken = _folder_config(_folder(tmp_path, broken=1))
    assert example_counts(broken, 0) == (16, load_client_data(broken, 0).num_test)
    assert example_counts(broken, 1) is None  # its file cannot be read


def test_the_shared_validated_config_never_stands_for_a_value_of_another_type():
    # from_mapping shares one validated DataConfig per distinct set of data keys; True == 1
    # and 1 == 1.0 in Python, but the schema refuses a bool where a count is expected.
    config = _config(**{"num-partitions": 1})
    assert DataConfig.from_mapping(config).num_partitions == 1
    assert DataConfig.from_mapping(config) is DataConfig.from_mapping(dict(config))
    with pytest.raises(DataConfigError, match="num-partitions: expected an integer >= 1"):
        DataConfig.from_mapping(config | {"num-partitions": True})
    as_int = DataConfig.from_mapping(config | {"dirichlet-alpha": 1})
    assert as_int.dirichlet_alpha == 1.0 and isinstance(as_int.dirichlet_alpha, float)


# -- the lazy cache's size ----------------------------------------------------------------------
def test_the_lazy_cache_keeps_every_owned_client_that_fits_and_the_data_is_the_same():
    from simulations import federated_data

    config = DataConfig(
        dataset="synthetic", partitioning="natural", num_partitions=1000, seed=3
    ).to_mapping()
    default = federated_data.LAZY_CLIENTS_CACHED
    try:
        clear_caches()
        before = [load_client_data(config, partition) for partition in (0, 7, 999)]
        assert federated_data.size_lazy_cache(260) == 260
        assert federated_data._synthetic_client_cached.cache_parameters()["maxsize"] == 260
        after = [load_client_data(config, partition) for partition in (0, 7, 999)]
        for old, new in zip(before, after, strict=True):
            for name in ("x_train", "y_train", "x_test", "y_test"):
                assert getattr(old, name).tobytes() == getattr(new, name).tobytes()
        for partition in range(300):
            load_client_data(config, partition)
        assert federated_data._synthetic_client_cached.cache_info().currsize == 260
        # Too many to keep, or fewer than the default: the default.
        assert federated_data.size_lazy_cache(federated_data.LAZY_CLIENTS_MAX + 1) == default
        assert federated_data.size_lazy_cache(10) == default
    finally:
        federated_data.size_lazy_cache(default)
        clear_caches()

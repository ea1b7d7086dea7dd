"""client/client_app.py: default job limits, node config, and the errors a device replies with.

The ClientApp's functions are called with real Flower Messages and Contexts, real data files
and the real kernel (or a hostile one given by ``kernel-path``).
"""

from __future__ import annotations

import base64
import json
import os
import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.metadata import Metadata

from client import client_app
from client.client_app import default_limits, estimated_fuel
from client.runner import KernelRunner
from client.sandbox import KERNEL_SIGNATURES, Limits
from kernels.spec import ModelSpec
from protos import contract
from protos.contract import ClientErrorCode

MODEL = "logreg:3-3"


def _message(message_type: str, **overrides) -> Message:
    spec = ModelSpec.parse(overrides.pop("model", MODEL))
    config = {
        "server-round": 1,
        "lr": 0.1,
        "local-epochs": 1,
        "batch-size": 8,
        "proximal-mu": 0.0,
        "seed": 3,
        "model": str(spec),
        "kernel-sha256": "",
    }
    config.update(overrides)
    arrays = ArrayRecord({name: Array(a) for name, a in spec.init_params(seed=0).items()})
    content = RecordDict(
        {contract.RECORD_ARRAYS: arrays, contract.RECORD_CONFIG: ConfigRecord(config)}
    )
    # As a SuperNode hands it over: with the metadata of a received message.
    metadata = Metadata(
        run_id=1,
        message_id=f"{message_type}-1",
        src_node_id=0,
        dst_node_id=7,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=60.0,
        message_type=message_type,
    )
    return Message(content=content, metadata=metadata)


# The run config every ClientApp gets (context.run_config): the data keys live there.
RUN_CONFIG = {"test-fraction": 0.25}


def _context(**node_config) -> Context:
    return Context(
        run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=RUN_CONFIG
    )


def _data_file(tmp_path, num_samples=40, name="data.npz"):
    rng = np.random.default_rng(0)
    path = tmp_path / name
    np.savez(path, x=rng.normal(size=(num_samples, 3)), y=rng.integers(0, 3, num_samples))
    return path


def _error(reply: Message) -> tuple[int, str]:
    assert reply.has_error(), reply.content
    return reply.error.code, reply.error.reason


def test_a_device_trains_with_bounded_default_limits(tmp_path, monkeypatch):
    seen: list[Limits] = []
    real_runner = client_app._runner

    def spy(node_config, config, limits):
        seen.append(limits)
        return real_runner(node_config, config, limits)

    monkeypatch.setattr(client_app, "_runner", spy)
    reply = client_app.train(
        _message("train"), _context(**{"data-path": str(_data_file(tmp_path))})
    )
    assert not reply.has_error(), reply.error
    assert reply.content[contract.RECORD_METRICS][contract.METRIC_NUM_EXAMPLES] == 30
    (limits,) = seen
    assert limits.fuel is not None and limits.deadline_seconds is not None
    assert 0 < reply.content[contract.RECORD_METRICS][contract.METRIC_FUEL_USED] < limits.fuel
    spec = ModelSpec.parse(MODEL)
    assert limits == default_limits(spec, 30, 1, 8, 512)


def test_the_default_deadline_is_at_most_an_hour_whatever_the_coordinator_asks():
    # The estimate grows with the epochs a coordinator asks for: 10**9 epochs must not make a
    # job that never ends (the node config's deadline-seconds can still allow longer).
    spec = ModelSpec.parse(MODEL)
    small = default_limits(spec, 30, 1, 8, 512)
    huge = default_limits(spec, 30, 10**9, 8, 512)
    assert small.deadline_seconds is not None and small.deadline_seconds < 60
    assert huge.deadline_seconds == client_app.DEADLINE_DEFAULT_MAX_SECONDS == 3600.0
    assert huge.fuel is not None and huge.fuel > small.fuel


def test_node_config_overrides_the_defaults_and_zero_turns_a_limit_off(tmp_path, monkeypatch):
    seen: list[Limits] = []
    real_runner = client_app._runner
    monkeypatch.setattr(
        client_app, "_runner", lambda n, c, limits: seen.append(limits) or real_runner(n, c, limits)
    )
    path = str(_data_file(tmp_path))
    node = {"data-path": path, "fuel": 10**9, "deadline-seconds": 2.5, "memory-mb": 64}
    assert not client_app.train(_message("train"), _context(**node)).has_error()
    node = {"data-path": path, "fuel": 0, "deadline-seconds": "0"}
    assert not client_app.train(_message("train"), _context(**node)).has_error()
    assert seen[0] == Limits(memory_bytes=64 * 2**20, fuel=10**9, deadline_seconds=2.5)
    assert seen[1] == Limits(memory_bytes=512 * 2**20, fuel=None, deadline_seconds=None)


@pytest.mark.parametrize(
    "node, problem",
    [
        ({"fuel": -1}, "node config 'fuel': expected a number >= 0, given -1"),
        ({"deadline-seconds": "soon"}, "'deadline-seconds': expected a number >= 0, given 'soon'"),
        ({"memory-mb": 0}, "memory_bytes"),
        ({"memory-mb": float("nan")}, "'memory-mb'"),
        ({"max-data-mb": 0}, "'max-data-mb': expected a number > 0"),
    ],
)
def test_a_bad_node_config_is_a_bad_config_error_reply(tmp_path, node, problem):
    node = {"data-path": str(_data_file(tmp_path)), **node}
    code, reason = _error(client_app.train(_message("train"), _context(**node)))
    assert code == ClientErrorCode.BAD_CONFIG and problem in reason


def test_a_bad_train_config_value_is_an_error_reply_not_a_crash(tmp_path):
    node = {"data-path": str(_data_file(tmp_path))}
    code, reason = _error(client_app.train(_message("train", lr=float("nan")), _context(**node)))
    assert code == ClientErrorCode.BAD_CONFIG and "lr" in reason
    code, _ = _error(client_app.train(_message("train", **{"local-epochs": "x"}), _context(**node)))
    assert code == ClientErrorCode.BAD_CONFIG


def test_max_data_mb_caps_the_data_file(tmp_path):
    path = _data_file(tmp_path, num_samples=20_000)  # ~640 KB of float64
    node = {"data-path": str(path), "max-data-mb": 0.25}
    code, reason = _error(client_app.train(_message("train"), _context(**node)))
    assert code == ClientErrorCode.DATA and str(path) in reason and "max-data-mb" in reason


def test_a_corrupt_data_file_is_a_data_error_reply_naming_the_file(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    code, reason = _error(client_app.train(_message("train"), _context(**{"data-path": str(path)})))
    assert code == ClientErrorCode.DATA and str(path) in reason


def test_a_one_sample_client_trains_and_its_evaluation_is_a_defined_error(tmp_path):
    node = {"data-path": str(_data_file(tmp_path, num_samples=1, name="one.npz"))}
    reply = client_app.train(_message("train"), _context(**node))
    assert (
        not reply.has_error()
        and reply.content[contract.RECORD_METRICS][contract.METRIC_NUM_EXAMPLES] == 1
    )
    code, reason = _error(client_app.evaluate(_message("evaluate"), _context(**node)))
    assert code == ClientErrorCode.NOTHING_TO_EVALUATE
    assert "no local held-out samples" in reason and "1 training sample" in reason
    # a client with held-out samples evaluates as before
    node = {"data-path": str(_data_file(tmp_path))}
    reply = client_app.evaluate(_message("evaluate"), _context(**node))
    assert (
        not reply.has_error()
        and reply.content[contract.RECORD_METRICS][contract.METRIC_NUM_EXAMPLES] == 10
    )


def _looping_kernel_wat() -> str:
    # Every ABI export with its signature; sf_train never returns.
    functions = []
    for name, (params, results) in KERNEL_SIGNATURES.items():
        param_text = " ".join(f"(param {t})" for t in params)
        result_text = " ".join(f"(result {t})" for t in results)
        if name == "sf_abi_version":
            body = "(i32.const 1)"
        elif name == "sf_alloc":
            body = "(i32.const 1024)"
        elif name == "sf_train":
            body = "(loop $forever (br $forever)) (i32.const 0)"
        else:
            body = " ".join(f"({t}.const 0)" for t in results)
        functions.append(f'(func (export "{name}") {param_text} {result_text} {body})')
    return f'(module (memory (export "memory") 2) {" ".join(functions)})'


def test_a_looping_kernel_ends_under_the_default_limits(tmp_path):
    import wasmtime

    kernel = tmp_path / "looping.wasm"
    kernel.write_bytes(bytes(wasmtime.wat2wasm(_looping_kernel_wat())))
    node = {"data-path": str(_data_file(tmp_path)), "kernel-path": str(kernel)}
    started = time.perf_counter()
    code, reason = _error(client_app.train(_message("train"), _context(**node)))
    assert time.perf_counter() - started < 10
    assert code == ClientErrorCode.KERNEL_FAILED
    assert "fuel budget" in reason or "deadline" in reason
    # the next job with the real kernel is fine
    node = {"data-path": str(_data_file(tmp_path))}
    assert not client_app.train(_message("train"), _context(**node)).has_error()


@pytest.mark.parametrize(
    "model, num_samples, batch_size, epochs",
    [
        ("logreg:2-2", 100, 1, 1),
        ("logreg:60-10", 300, 10, 2),
        ("mlp:64-32-10", 600, 1, 1),
        ("mlp:64-32-10", 600, 32, 2),
        ("mlp:64-16-16-10", 200, 7, 1),
    ],
)
def test_the_bundled_kernel_stays_below_the_fuel_estimate(model, num_samples, batch_size, epochs):
    # The default budget is 16x the estimate: an honest job must stay below 1x.
    spec = ModelSpec.parse(model)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_samples, spec.input_dim)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, num_samples).astype(np.int32)
    runner = KernelRunner(limits=Limits(fuel=10**14))
    result = runner.train(
        spec, spec.init_params(seed=0), x, y, epochs=epochs, batch_size=batch_size, lr=0.1, seed=1
    )
    estimate = estimated_fuel(spec, num_samples, epochs, batch_size)
    assert result.fuel_used < estimate, (result.fuel_used, estimate)


def test_a_kernel_file_replaced_between_jobs_is_verified_again(tmp_path):
    # The verified kernel is kept between jobs (per pin and file stat), but a device's own
    # kernel file that changes must be checked against the pin again, never served stale.
    shipped = client_app.kernel_source.read_shipped(
        client_app.kernel_source.shipped_path(client_app.kernel_source.DEFAULT_FLAVOUR)
    )
    kernel = tmp_path / "own.wasm"
    kernel.write_bytes(shipped.wasm)
    node = {"data-path": str(_data_file(tmp_path)), "kernel-path": str(kernel)}
    pinned = _message("train", **{"kernel-sha256": shipped.sha256})
    assert not client_app.train(pinned, _context(**node)).has_error()
    assert not client_app.train(pinned, _context(**node)).has_error()  # from the cache
    replacement = tmp_path / "other.wasm"
    replacement.write_bytes(shipped.wasm + b"\x00")  # other bytes: not the pinned kernel
    os.replace(replacement, kernel)
    code, reason = _error(client_app.train(pinned, _context(**node)))
    assert code == ClientErrorCode.KERNEL_MISMATCH
    assert shipped.sha256 in reason


def test_a_shipped_kernel_file_changed_between_jobs_is_verified_again(tmp_path, monkeypatch):
    # Shipped kernels are verified once per stat of their directory and of its *.wasm.json
    # files: an edit in place, a rename or a new file in the directory is verified again.
    source = client_app.kernel_source
    shipped_dir = tmp_path / "wasm"
    shipped_dir.mkdir()
    for path in sorted(source.shipped_dir().glob("*.wasm.json")):
        (shipped_dir / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(source, "shipped_dir", lambda: shipped_dir)
    reads = []
    pinned_kernel = source.pinned_kernel
    monkeypatch.setattr(source, "pinned_kernel", lambda *a: reads.append(a) or pinned_kernel(*a))
    pinned_path = source.shipped_path(source.DEFAULT_FLAVOUR)
    good = pinned_path.read_bytes()
    shipped = source.read_shipped(pinned_path)
    node = {"data-path": str(_data_file(tmp_path))}
    pinned = _message("train", **{"kernel-sha256": shipped.sha256})

    assert not client_app.train(pinned, _context(**node)).has_error()
    assert not client_app.train(pinned, _context(**node)).has_error()
    assert len(reads) == 1  # the second job used the verified module
    # Edited in place (same inode, directory unchanged): other bytes under the same sha256.
    document = json.loads(good)
    document["wasm_base64"] = base64.b64encode(shipped.wasm + b"\x00").decode()
    pinned_path.write_text(json.dumps(document))
    code, reason = _error(client_app.train(pinned, _context(**node)))
    assert code == ClientErrorCode.KERNEL_MISMATCH, reason
    assert len(reads) == 2
    # Renamed (the directory changes): the pin is found under its new name, verified again.
    pinned_path.write_bytes(good)
    os.rename(pinned_path, shipped_dir / "renamed.wasm.json")
    assert not client_app.train(pinned, _context(**node)).has_error()
    assert len(reads) == 3
    assert not client_app.train(pinned, _context(**node)).has_error()
    assert len(reads) == 3
    # A new file that declares the pin, sorted first: read again, and the bad one is refused.
    (shipped_dir / "a-first.wasm.json").write_text(json.dumps(document))
    code, reason = _error(client_app.train(pinned, _context(**node)))
    assert code == ClientErrorCode.KERNEL_MISMATCH, reason
    assert "a-first.wasm.json" in reason
    assert len(reads) == 4

"""Devices with only the device runtime: the app bundle brings the ClientApp and the kernel.

A SuperLink with TLS and node authentication (this environment: the coordinator) and four
SuperNodes started, with COMMANDS.txt's device command, from a SEPARATE virtualenv that holds
only the device runtime (flwr without Ray, wasmtime, numpy: simulations/deploy/device.py),
built once with pip and cached under the repository's ignored .cache/. Node 3 plays a device
whose runtime has no relaxed SIMD. One federation, three runs through ``flwr run``:

1. the default (relaxed) kernel: nodes 0-2 train both rounds; node 3 refuses with 1006;
2. the coordinator ships the simd128 build (``kernel-flavour``), nothing changes on the
   devices: all four train on it, as the report and every reply say;
3. an app bundle whose kernel bytes were altered under the pinned hash: every device refuses
   it with 1003 before compiling it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from coordinator.reports.report_json import load_report
from kernels import build
from protos.contract import ClientErrorCode
from protos.report_pb2 import FAILED, OK
from simulations.deploy import layout as deploy_layout
from simulations.deploy import local
from simulations.deploy.device import build_device_venv
from simulations.deploy.processes import ProcessSupervisor, flower_environment, pid_running

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DEVICE_VENV = REPO / ".cache" / "device-venv"
RELAXED_SHA = build.sha256_file(build.WASM_DIR / "sandflower-relaxed.wasm")
SIMD128_SHA = build.sha256_file(build.WASM_DIR / "sandflower-simd128.wasm")
NUM_NODES = 4
NO_RELAXED_NODE = 3

SCENARIO = """
[scenario]
name = "device-venv-e2e"
seed = 11

[data]
dataset = "digits"
partitioning = "iid"

[federation]
clients = 4
rounds = 2
fraction_train = 1.0

[model]
kind = "mlp"
hidden = [16]
"""


@pytest.fixture(scope="session")
def device_bin() -> Path:
    """The device runtime's venv (pip from PyPI by name, once; reused while its pins hold)."""
    return build_device_venv(DEVICE_VENV)


def _run_config(tmp_path: Path) -> dict:
    from simulations.scenario import load_scenario

    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO)
    return load_scenario(path).to_run_config()


def _tampered_app(tmp_path: Path) -> Path:
    """A copy of the Flower App whose relaxed kernel has other bytes under the same sha256."""
    app = tmp_path / "tampered-app"
    ignore = shutil.ignore_patterns(
        ".git", ".venv", ".cache", "runs", "build", "tests", "__pycache__", "*.egg-info",
        ".pytest_cache", ".ruff_cache", "*.wasm",
    )  # fmt: skip
    shutil.copytree(REPO, app, ignore=ignore)
    shipped = app / "kernels" / "wasm" / "sandflower-relaxed.wasm.json"
    document = json.loads(shipped.read_text())
    wasm = bytearray(base64.b64decode(document["wasm_base64"]))
    wasm[-1] ^= 0xFF  # one flipped byte; the declared sha256 and size stay the honest ones
    document["wasm_base64"] = base64.b64encode(bytes(wasm)).decode()
    shipped.write_text(json.dumps(document))
    return app


def _run(federation: local.Federation, run_config: dict, out_dir: Path):
    run_id = local.submit_run(
        federation, {**run_config, "out-dir": str(out_dir)}, out_dir.parent / f"{out_dir.name}.toml"
    )
    local.wait_run_finished(federation, run_id, timeout_s=600)
    return load_report(out_dir)


def test_the_device_venv_has_the_runtime_and_nothing_of_sandflower(device_bin, tmp_path):
    probe = (
        "import importlib.util as u, importlib.metadata as m, json\n"
        "names = ['client', 'kernels', 'coordinator', 'simulations', 'ray', 'sklearn',"
        " 'matplotlib', 'flwr_datasets', 'flwr', 'wasmtime', 'numpy']\n"
        "found = {n: u.find_spec(n) is not None for n in names}\n"
        "try:\n    m.distribution('sandflower'); found['sandflower'] = True\n"
        "except m.PackageNotFoundError:\n    found['sandflower'] = False\n"
        "print(json.dumps(found))\n"
    )
    result = subprocess.run(
        [str(device_bin / "python"), "-c", probe],
        cwd=tmp_path,
        env={"PATH": str(device_bin), "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(result.stdout)
    assert found == {
        "client": False, "kernels": False, "coordinator": False, "simulations": False,
        "ray": False, "sklearn": False, "matplotlib": False, "flwr_datasets": False,
        "flwr": True, "wasmtime": True, "numpy": True, "sandflower": False,
    }  # fmt: skip
    assert (device_bin / "flower-supernode").is_file()
    assert (device_bin / "flwr-clientapp").is_file()
    # With the app's code on the path (as a SuperNode has the bundle's), the ClientApp and
    # the ServerApp modules import with the device runtime alone: simulation-only packages
    # (Ray, flwr-datasets, scikit-learn, matplotlib) are imported only where they are used.
    result = subprocess.run(
        [
            str(device_bin / "python"),
            "-c",
            "import client.client_app, simulations.client_app, simulations.flower_app, sys; "
            "print(sorted({'ray', 'sklearn', 'matplotlib', 'flwr_datasets'} & set(sys.modules)))",
        ],
        cwd=tmp_path,
        env={"PATH": str(device_bin), "PYTHONPATH": str(REPO), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_devices_train_from_the_bundle_and_take_a_new_kernel_in_the_next_run(device_bin, tmp_path):
    run_config = _run_config(tmp_path)
    plan = local.loopback_plan(NUM_NODES, REPO)
    layout = deploy_layout.write_deployment(tmp_path / "deployment", plan)
    local.write_node_data_files(run_config, layout, NUM_NODES)
    env = flower_environment(layout.flwr_home)
    node_configs = {NO_RELAXED_NODE: {"disabled-wasm-features": "relaxed-simd"}}
    with ProcessSupervisor(env) as supervisor:
        federation = local.start_federation(
            layout, plan, supervisor, tmp_path / "logs", node_configs, device_bin=device_bin
        )
        for supernode in federation.supernodes:  # COMMANDS.txt's command, from the device venv
            assert supernode.popen.args[0] == str(device_bin / "flower-supernode")
        no_relaxed_id = str(federation.node_ids[NO_RELAXED_NODE])

        # 1. the default kernel (relaxed SIMD)
        report = _run(federation, run_config, tmp_path / "run-relaxed")
        assert report.status == "completed", report.error
        assert report.kernel_sha256 == RELAXED_SHA
        assert [r.round for r in report.rounds] == [1, 2]
        for round_report in report.rounds:
            assert (round_report.clients_succeeded, round_report.clients_failed) == (3, 1)
            for client in round_report.clients:
                if client.node_id == no_relaxed_id:
                    assert client.status == FAILED
                    assert (
                        f"client error {ClientErrorCode.KERNEL_UNSUPPORTED.value}" in client.reason
                    )
                    assert "relaxed-simd" in client.reason and "simd128" in client.reason
                else:
                    assert client.status == OK and client.kernel_sha256 == RELAXED_SHA

        # 2. the coordinator ships the simd128 build; nothing is installed on the devices
        report = _run(federation, {**run_config, "kernel-flavour": "simd128"}, tmp_path / "simd")
        assert report.status == "completed", report.error
        assert report.kernel_sha256 == SIMD128_SHA
        for round_report in report.rounds:
            assert round_report.clients_succeeded == NUM_NODES
            assert [c.kernel_sha256 for c in round_report.clients] == [SIMD128_SHA] * NUM_NODES
        # it trains: the central loss falls round over round, accuracy is above chance (1/10)
        assert report.rounds[1].central_loss < report.rounds[0].central_loss
        assert report.final_central_accuracy > 0.1

        # 3. a bundle whose kernel bytes were altered under the pinned hash
        tampered = dataclasses.replace(
            federation, plan=dataclasses.replace(plan, app_dir=_tampered_app(tmp_path))
        )
        report = _run(tampered, {**run_config, "kernel-sha256": RELAXED_SHA}, tmp_path / "bad")
        assert report.status == "failed"
        first_round = report.rounds[0]
        assert first_round.clients_failed == NUM_NODES
        for client in first_round.clients:
            assert client.status == FAILED
            assert client.reason.startswith(
                f"client error {ClientErrorCode.KERNEL_MISMATCH.value}"
            ), client.reason
            assert RELAXED_SHA in client.reason and "altered" in client.reason
        started = supervisor.all_pids()
    assert not [pid for pid in started | supervisor.signalled_pids if pid_running(pid)]


def test_the_flipped_byte_changes_the_hash():
    # The tampering above must really change the bytes' sha256 (else case 3 proves nothing).
    wasm = bytearray((build.WASM_DIR / "sandflower-relaxed.wasm").read_bytes())
    wasm[-1] ^= 0xFF
    assert hashlib.sha256(bytes(wasm)).hexdigest() != RELAXED_SHA

"""simulations/deploy/device.py and the device commands COMMANDS.txt gives."""

from __future__ import annotations

import os
import shlex
import tomllib
from pathlib import Path

import pytest

from simulations.deploy import device
from simulations.deploy import layout as deploy_layout
from simulations.deploy.layout import DeploymentPlan

REPO = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_device_runtime_is_pyprojects_pins_of_flwr_wasmtime_numpy_grpcio_protobuf():
    requirements = device.device_requirements()
    dependencies = [dep.replace(" ", "") for dep in _pyproject()["project"]["dependencies"]]
    assert [device._requirement_name(req) for req in requirements] == list(
        device.DEVICE_DISTRIBUTIONS
    )
    assert set(requirements) <= set(dependencies)
    assert "flwr==1.42.0" in requirements
    assert not any("[" in req for req in requirements)  # no flwr[simulation]: no Ray


def test_the_roles_are_extras_and_only_simulation_brings_ray():
    project = _pyproject()["project"]
    base = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    for heavy in ("ray", "[simulation]", "scikit-learn", "matplotlib", "flwr-datasets"):
        assert heavy not in base, heavy
    assert "flwr[simulation]==1.42.0" in extras["simulation"]
    assert "sandflower[coordinator]" in extras["simulation"]
    assert "sandflower[simulation]" in extras["dev"]
    assert not any("ray" in dep or "[simulation]" in dep for dep in extras["coordinator"])


def test_a_device_requirement_with_an_extra_is_refused(monkeypatch, tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\ndependencies = ["flwr[simulation]==1.42.0", "wasmtime==50.0.1", '
        '"numpy>=2.0", "grpcio>=1.85", "protobuf>=6.33"]\n'
    )
    monkeypatch.setattr(device, "PYPROJECT", pyproject)
    with pytest.raises(device.DeviceRuntimeError, match=r"must not pull extras.*flwr\[simulation"):
        device.device_requirements()
    pyproject.write_text('[project]\ndependencies = ["flwr==1.42.0"]\n')
    with pytest.raises(device.DeviceRuntimeError, match="lack.*wasmtime"):
        device.device_requirements()


def test_commands_txt_installs_only_the_device_runtime_and_starts_supernodes_from_it(tmp_path):
    plan = DeploymentPlan(num_nodes=2, hosts=("coordinator.example.org",), app_dir=tmp_path)
    layout = deploy_layout.write_deployment(tmp_path / "fleet", plan)
    text = layout.commands.read_text()
    assert "pip install sandflower" not in text and "sandflower-0" not in text
    lines = text.splitlines()
    (install,) = [line for line in lines if "pip install" in line]
    assert install == device.install_command(deploy_layout.DEVICE_VENV)
    venv_argv, pip_argv = (shlex.split(part) for part in install.split(" && "))
    assert venv_argv == ["python3", "-m", "venv", ".venv"]
    assert pip_argv[:3] == [".venv/bin/pip", "install", "-q"]
    assert pip_argv[3:] == device.device_requirements()
    (activate,) = [line for line in lines if line.startswith(". .venv/bin/activate")]
    assert "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1" in activate
    supernodes = [line for line in lines if line.startswith("flower-supernode ")]
    assert len(supernodes) == 2
    # the lines come after the activation, so flower-supernode and flower-superexec resolve
    # to the device venv
    assert all(lines.index(line) > lines.index(activate) for line in supernodes)


def test_a_device_venv_with_its_pins_is_reused_and_a_stale_one_rebuilt(tmp_path, monkeypatch):
    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        if argv[1:3] == ["-m", "venv"]:
            device.venv_bin(Path(argv[3])).mkdir(parents=True)
        if argv[1:3] == ["-m", "pip"]:
            (Path(argv[0]).parent / "flower-supernode").write_text("")
        return device.subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(device.subprocess, "run", fake_run)
    venv = tmp_path / "venv"
    assert device.build_device_venv(venv) == device.venv_bin(venv)
    assert calls[0][1:] == ["-m", "venv", str(venv)]
    assert calls[1][-len(device.device_requirements()) :] == device.device_requirements()
    calls.clear()
    device.build_device_venv(venv)
    assert calls == []  # the marker names the same pins: nothing to do
    (venv / "sandflower-device-runtime.txt").write_text("flwr==1.0\n")
    device.build_device_venv(venv)
    assert len(calls) == 2


def test_a_failing_pip_is_reported_with_its_output(tmp_path, monkeypatch):
    def failing(argv, **kwargs):
        if argv[1:3] == ["-m", "venv"]:
            Path(argv[3]).mkdir(parents=True)
        code = 1 if "pip" in argv else 0
        return device.subprocess.CompletedProcess(argv, code, "", "No matching distribution")

    monkeypatch.setattr(device.subprocess, "run", failing)
    with pytest.raises(device.DeviceRuntimeError, match="No matching distribution"):
        device.build_device_venv(tmp_path / "venv")


def test_a_pip_that_installs_nothing_is_an_error_and_the_venv_is_not_reused(tmp_path, monkeypatch):
    def empty_pip(argv, **kwargs):
        if argv[1:3] == ["-m", "venv"]:
            device.venv_bin(Path(argv[3])).mkdir(parents=True)
        return device.subprocess.CompletedProcess(argv, 0, "", "nothing to do")

    monkeypatch.setattr(device.subprocess, "run", empty_pip)
    venv = tmp_path / "venv"
    with pytest.raises(device.DeviceRuntimeError, match="flower-supernode is not in"):
        device.build_device_venv(venv)
    assert not (venv / "sandflower-device-runtime.txt").exists()


def test_pip_runs_without_the_pythonpath_a_ray_simulation_leaves_behind(tmp_path, monkeypatch):
    # Flower's Ray backend exports the driver's sys.path as PYTHONPATH; through it pip would
    # see this environment's flwr/numpy as installed and put nothing in the device venv.
    monkeypatch.setenv("PYTHONPATH", "/somewhere/site-packages")
    seen = []

    def fake_run(argv, **kwargs):
        seen.append(kwargs["env"])
        if argv[1:3] == ["-m", "venv"]:
            device.venv_bin(Path(argv[3])).mkdir(parents=True)
        if argv[1:3] == ["-m", "pip"]:
            (Path(argv[0]).parent / "flower-supernode").write_text("")
        return device.subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(device.subprocess, "run", fake_run)
    device.build_device_venv(tmp_path / "venv")
    assert len(seen) == 2 and all("PYTHONPATH" not in env for env in seen)
    assert all(env["PATH"] == os.environ["PATH"] for env in seen)

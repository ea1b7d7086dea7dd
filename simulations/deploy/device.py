"""The device runtime: what a SuperNode's machine installs, and nothing of Sandflower.

A device joins through the Flower App: ``flwr run`` sends it the app bundle, which carries the
ClientApp's code and the kernel (kernels/wasm/<build>.wasm.json), so the device needs only
what that code imports from outside the bundle: flwr (without Ray), wasmtime and numpy, with
the grpcio/protobuf versions Sandflower's generated code accepts. The pins are pyproject.toml's
(the installed distribution's metadata), so there is one place to change them.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

# The distributions a device installs, by name; their version specifiers come from
# pyproject.toml's [project] dependencies.
DEVICE_DISTRIBUTIONS = ("flwr", "wasmtime", "numpy", "grpcio", "protobuf")
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PIP_TIMEOUT_S = 900.0


class DeviceRuntimeError(RuntimeError):
    """The device runtime's requirements cannot be read, or its virtualenv cannot be built."""


def device_requirements() -> list[str]:
    """Return the pip requirements of the device runtime, e.g. ``["flwr==1.42.0", ...]``.

    Read from the source tree's pyproject.toml when this code runs from one (a checkout or
    an editable install, whose installed metadata may be older than the file), else from the
    installed sandflower's metadata. Only requirements without an extra marker count.
    """
    if PYPROJECT.is_file():
        try:
            project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
        except (OSError, KeyError, tomllib.TOMLDecodeError) as error:
            raise DeviceRuntimeError(
                f"{PYPROJECT}: cannot read the [project] dependencies: {error}"
            ) from None
        declared = list(project.get("dependencies", []))
    else:
        try:
            requires = importlib.metadata.requires("sandflower") or []
        except importlib.metadata.PackageNotFoundError:
            raise DeviceRuntimeError(
                "sandflower is neither a source tree here nor installed: cannot read the "
                "device runtime's requirements"
            ) from None
        declared = [req for req in requires if "extra" not in req]
    by_name = {_requirement_name(req): req.replace(" ", "") for req in declared}
    missing = [name for name in DEVICE_DISTRIBUTIONS if name not in by_name]
    if missing:
        raise DeviceRuntimeError(
            f"sandflower's dependencies lack {missing}: expected {list(DEVICE_DISTRIBUTIONS)}"
        )
    extras = [by_name[name] for name in DEVICE_DISTRIBUTIONS if "[" in by_name[name]]
    if extras:
        raise DeviceRuntimeError(
            f"the device runtime must not pull extras (Ray comes with flwr[simulation]): {extras}"
        )
    return [by_name[name] for name in DEVICE_DISTRIBUTIONS]


def install_command(venv: str = ".venv") -> str:
    """Return the shell line that makes a device's virtualenv ``venv`` (python3 >= 3.11 on PATH)."""
    packages = " ".join(shlex.quote(req) for req in device_requirements())
    return f"python3 -m venv {venv} && {venv}/bin/pip install -q {packages}"


def default_device_venv() -> Path:
    """Where ``deploy local`` keeps its device runtime venv: next to the module cache."""
    configured = os.environ.get("SANDFLOWER_CACHE_DIR")
    cache = Path(configured).expanduser() if configured else Path.home() / ".cache" / "sandflower"
    return cache / "device-venv"


def venv_bin(venv: Path) -> Path:
    """Return the folder of a virtualenv's executables (flower-supernode lives there)."""
    return Path(venv) / ("Scripts" if os.name == "nt" else "bin")


def build_device_venv(venv: Path, python: str = sys.executable) -> Path:
    """Create ``venv`` with only the device runtime (pip from PyPI by name); return its bin.

    A venv that already has the pinned flower-supernode is reused; a half-built one is
    rebuilt. Nothing of Sandflower is installed in it.

    Raises
    ------
    DeviceRuntimeError
        venv or pip failed (their output is included).
    """
    venv = Path(venv)
    marker = venv / "sandflower-device-runtime.txt"
    requirements = device_requirements()
    wanted = "\n".join(requirements) + "\n"
    supernode = venv_bin(venv) / "flower-supernode"
    if marker.is_file() and marker.read_text() == wanted and supernode.is_file():
        return venv_bin(venv)
    if venv.exists():
        shutil.rmtree(venv)
    for argv in (
        [python, "-m", "venv", str(venv)],
        [str(venv_bin(venv) / "python"), "-m", "pip", "install", "-q", *requirements],
    ):
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, env=_clean_environment()
        )
        if result.returncode != 0:
            raise DeviceRuntimeError(
                f"`{shlex.join(argv)}` failed (exit {result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-4000:]}"
            )
    if not supernode.is_file():  # pip said yes but installed nothing: never reuse such a venv
        raise DeviceRuntimeError(
            f"{venv}: pip exited 0 but {supernode.name} is not in {venv_bin(venv)}:\n"
            f"{result.stdout[-2000:]}{result.stderr[-4000:]}"
        )
    marker.write_text(wanted)
    return venv_bin(venv)


def _clean_environment() -> dict[str, str]:
    """Return this process's environment without what would show pip another Python's packages.

    Flower's Ray backend sets PYTHONPATH to the whole ``sys.path`` of the process that ran a
    Ray simulation (flwr/server/superlink/fleet/vce/backend/raybackend.py), and every later
    child inherits it: pip in the new venv then finds flwr, wasmtime and numpy "already
    installed" in the coordinator's site-packages and installs nothing.
    """
    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONUSERBASE")
    }


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else requirement

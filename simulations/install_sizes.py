"""Installed size of each role: a fresh virtualenv per role, ``du`` of its site-packages.

``python -m simulations.install_sizes [--roles device,base,...] [--json FILE]`` prints one line
per role. Roles (pyproject.toml):

- ``device``: the device runtime alone (simulations/deploy/device.py), what a SuperNode that
  joins through ``flwr run`` installs: no Sandflower;
- ``base``: ``pip install .`` (device + coordinator runtime, the CLI);
- ``coordinator``: ``.[coordinator]`` (+ report plots, bundled data sets);
- ``simulation``: ``.[simulation]`` (+ Ray, flwr-datasets);
- ``dev``: ``.[dev]`` (+ toolchain and test tools).

Each venv is made in a temporary folder and deleted; pip's cache makes the downloads once.
Also checks that the device venv can import what a ClientApp imports from outside the app
bundle, and that ``flwr-clientapp`` is there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from simulations.deploy.device import PIP_TIMEOUT_S, device_requirements, venv_bin

REPO = Path(__file__).resolve().parents[1]
ROLES = {
    "device": None,  # device_requirements(), not sandflower
    "base": ".",
    "coordinator": ".[coordinator]",
    "simulation": ".[simulation]",
    "dev": ".[dev]",
}
# What the ClientApp and the client/kernels/protos modules in the app bundle import.
DEVICE_IMPORTS = "import flwr.clientapp, flwr.app, wasmtime, numpy, google.protobuf"


def site_packages_bytes(venv: Path, *, bytecode: bool = True) -> int:
    """Bytes of the venv's site-packages (``du -sb``; without ``__pycache__`` if not bytecode).

    pip compiles every module to bytecode at install time; without it, Python writes the
    bytecode of the modules a process imports when it first imports them.
    """
    site = next((venv / "lib").glob("python*/site-packages"))
    argv = ["du", "-sb", str(site)] + ([] if bytecode else ["--exclude=__pycache__"])
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    return int(result.stdout.split()[0])


def _clean_source(scratch: Path) -> Path:
    """Return a copy of the source tree without virtualenvs, caches and VCS data, made once.

    pip builds the wheel from the folder it is given; a checkout with a 1.6 GB .venv in it
    makes that slow for nothing.
    """
    source = scratch / "source"
    if not source.is_dir():
        ignore = shutil.ignore_patterns(
            ".git", ".venv", "venv", ".cache", "runs", "build", "__pycache__", "*.egg-info",
            ".pytest_cache", ".ruff_cache",
        )  # fmt: skip
        shutil.copytree(REPO, source, ignore=ignore)
    return source


def measure_role(role: str, scratch: Path) -> dict[str, object]:
    """Make a fresh venv for ``role``, install it, measure it; return the figures."""
    venv = scratch / role
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv_bin(venv) / "python")
    target = ROLES[role]
    if target is None:
        packages = device_requirements()
    else:  # "." or ".[extra]" of a clean copy of this source tree
        packages = [f"{_clean_source(scratch)}{target[1:]}"]
    subprocess.run(
        [python, "-m", "pip", "install", "-q", *packages],
        check=True,
        timeout=PIP_TIMEOUT_S,
        cwd=scratch,
    )
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True
    )
    distributions = sorted(item["name"].lower() for item in json.loads(listed.stdout))
    figures: dict[str, object] = {
        "role": role,
        "install": "pip install " + " ".join(packages if target is None else [target]),
        "site_packages_mb": round(site_packages_bytes(venv) / 1e6, 1),
        "without_bytecode_mb": round(site_packages_bytes(venv, bytecode=False) / 1e6, 1),
        "distributions": len(distributions),
        "has_ray": "ray" in distributions,
        "has_sandflower": "sandflower" in distributions,
    }
    if role == "device":
        probe = subprocess.run([python, "-c", DEVICE_IMPORTS], capture_output=True, text=True)
        figures["client_imports_ok"] = probe.returncode == 0
        figures["has_flwr_clientapp"] = (venv_bin(venv) / "flwr-clientapp").is_file()
    return figures


def main(argv: list[str] | None = None) -> int:
    """Measure the install size of each role (arguments as in ``--help``); return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m simulations.install_sizes", description=__doc__
    )
    parser.add_argument("--roles", default=",".join(ROLES), help="comma-separated roles")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    roles = [role.strip() for role in args.roles.split(",") if role.strip()]
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        parser.error(f"--roles: unknown {unknown}, expected some of {list(ROLES)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="sandflower-sizes-") as scratch:
        for role in roles:
            figures = measure_role(role, Path(scratch))
            results.append(figures)
            print(
                f"{role:12s} {figures['site_packages_mb']:8.1f} MB "
                f"({figures['without_bytecode_mb']:.1f} MB without bytecode)  "
                f"{figures['distributions']:3d} distributions  ray={figures['has_ray']}  "
                f"sandflower={figures['has_sandflower']}  ({figures['install']})",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

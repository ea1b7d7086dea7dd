"""Hostile files given to Sandflower's loaders: each is refused with a typed error naming it.

One table, one row per (loader, attack): the loader must raise its own typed error (never a
bare RecursionError, ValueError or MemoryError, never block on a fifo, never read a device of
size 0 forever), and the message must name the file and what was wrong. Run folders and
checkpoints have their own table in tests/coordinator/test_checkpoint.py.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest

from client.kernel_source import KernelSourceError, read_shipped, read_wasm_file
from client.sandbox import KernelModule
from coordinator.clock import DeviceConfigError, DeviceSimulation
from coordinator.config import RunConfigError, _json_object
from coordinator.reports.report_json import ReportError, load_report
from protos.untrusted_file import UntrustedFileError, read_regular_file
from simulations.devices import DevicesError, read_profiles
from simulations.scenario import ScenarioError, load_scenario


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _device(path: Path) -> None:
    path.symlink_to("/dev/null")  # st_size 0 like /dev/zero, which would be read forever


def _text(content: str):
    def write(path: Path) -> None:
        path.write_text(content)

    return write


def _bytes(content: bytes):
    def write(path: Path) -> None:
        path.write_bytes(content)

    return write


def _sized(size: int):
    def write(path: Path) -> None:
        with open(path, "wb") as handle:
            handle.truncate(size)  # sparse: no disk used

    return write


DEEP_JSON = "[" * 100_000 + "]" * 100_000
HUGE_INT_JSON = '{"format": ' + "9" * 5000 + "}"
DEEP_TOML = "x = " + "[" * 100_000 + "]" * 100_000


def _kernel_module(path: Path) -> object:
    return KernelModule.from_file(path, required_exports=(), abi_version=None)


LOADERS = {
    "scenario": ("scenario.toml", load_scenario, ScenarioError),
    "report": ("report.json", load_report, ReportError),
    "shipped kernel": ("kernel.wasm.json", read_shipped, KernelSourceError),
    "kernel file": ("kernel.wasm", read_wasm_file, KernelSourceError),
    "wasm module": ("module.wasm", _kernel_module, OSError),
    "device profiles": ("devices.csv", lambda path: read_profiles(path, 2), DevicesError),
}
ATTACKS = {
    # attack: (how the file is made, what the refusal says, loaders it applies to)
    "a fifo": (_fifo, r"not a regular file \(a fifo\)", set(LOADERS)),
    "a link to a device": (_device, "a character device", set(LOADERS)),
    # (load_report reads a directory as a run folder: its report.json is the file checked.)
    "a directory": (lambda path: path.mkdir(), "a directory", set(LOADERS) - {"report"}),
    "nested 100,000 deep": (
        _text(DEEP_JSON),
        "RecursionError|recursion|nested",
        {"report", "shipped kernel"},
    ),
    "a 5000-digit integer": (
        _text(HUGE_INT_JSON),
        "digits|integer string conversion",
        {"report", "shipped kernel"},
    ),
    "TOML nested 100,000 deep": (_text(DEEP_TOML), "not valid TOML: RecursionError", {"scenario"}),
    "not UTF-8": (
        _bytes(b"\xff\xfe\x00rounds = 3"),
        "utf-8|UTF-8",
        {"scenario", "report", "device profiles"},
    ),
    "larger than its bound": (
        _sized(64 << 20),
        r"\d+ bytes, expected at most \d+",
        {"scenario", "shipped kernel", "kernel file", "device profiles"},
    ),
}
CASES = [
    (loader, attack) for attack, (_, _, loaders) in ATTACKS.items() for loader in sorted(loaders)
]


def _in_thread(call):
    """Run ``call`` in a thread; a fifo that blocks it fails the test instead of hanging it."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as error:  # examined by the caller
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=20)
    return worker.is_alive(), outcome


@pytest.mark.parametrize(
    ("loader", "attack"), CASES, ids=[f"{name}-{attack}" for name, attack in CASES]
)
def test_a_hostile_file_is_refused_with_a_typed_error_naming_it(loader, attack, tmp_path):
    file_name, load, error_type = LOADERS[loader]
    make, refusal, _ = ATTACKS[attack]
    path = tmp_path / file_name
    make(path)
    blocked, outcome = _in_thread(lambda: load(path))
    if blocked:
        with open(path, "wb"):  # a writer at the fifo ends the blocked read
            pass
        pytest.fail(f"{loader}: a {attack} blocked the loader")
    error = outcome.get("error")
    assert isinstance(error, error_type), f"{loader}, {attack}: {error!r} ({outcome})"
    assert re.search(refusal, str(error)), str(error)
    assert str(path) in str(error) or file_name in str(error)


@pytest.mark.parametrize(
    "text", [DEEP_JSON, HUGE_INT_JSON, "{", "[1]"], ids=["deep", "huge int", "cut", "a list"]
)
def test_strategy_params_json_is_refused_as_a_run_config_error(text):
    with pytest.raises(RunConfigError, match="strategy-params"):
        _json_object("strategy-params", text)


@pytest.mark.parametrize("text", [DEEP_JSON, HUGE_INT_JSON, "{"], ids=["deep", "huge int", "cut"])
def test_the_devices_json_of_a_run_config_is_refused_as_a_device_config_error(text):
    with pytest.raises(DeviceConfigError, match="devices: not valid JSON"):
        DeviceSimulation.from_json(text)


def test_a_file_that_grows_past_its_bound_while_read_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "growing"
    path.write_bytes(b"x" * 10)
    real_fstat = os.fstat

    def stale_fstat(fd):  # the size seen before the file grew
        result = real_fstat(fd)
        return os.stat_result((*result[:6], 5, *result[7:]))

    monkeypatch.setattr(os, "fstat", stale_fstat)
    with pytest.raises(UntrustedFileError, match="grew while read"):
        read_regular_file(path, 8)
    assert read_regular_file(path, 10) == b"x" * 10

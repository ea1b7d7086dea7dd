"""simulations/roles.py: a command without its role says which extra to install."""

from __future__ import annotations

import importlib.util

import pytest
from typer.testing import CliRunner

from simulations import roles
from simulations.cli import app


def test_this_environment_has_every_role():
    assert roles.missing_modules("simulation") == []
    roles.require_role("coordinator", "x")


def test_a_missing_module_names_the_extra_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "ray" else real_find_spec(name, *args),
    )
    assert roles.missing_modules("simulation") == ["ray"]
    with pytest.raises(roles.RoleNotInstalled, match=r'missing: ray.*"sandflower\[simulation\]"'):
        roles.require_role("simulation", "sandflower simulate")
    result = CliRunner().invoke(app, ["simulate"])
    assert result.exit_code == 2
    assert "sandflower[simulation]" in result.output and "ray" in result.output


def test_an_unknown_role_is_refused():
    with pytest.raises(ValueError, match="role 'gpu'"):
        roles.missing_modules("gpu")

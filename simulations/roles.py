"""The install roles (pyproject.toml extras) and a clear error when a command lacks its role.

``pip install sandflower`` brings the runtime of a device and a coordinator; commands that need
more say which extra to install instead of failing deep inside with an ImportError.
"""

from __future__ import annotations

import importlib.util

# role -> the top-level modules its extra brings (checked without importing them)
ROLE_MODULES: dict[str, tuple[str, ...]] = {
    "coordinator": ("matplotlib", "sklearn"),
    "simulation": ("matplotlib", "sklearn", "ray", "flwr_datasets"),
}


class RoleNotInstalled(RuntimeError):
    """A command needs an extra that is not installed; the message says which to install."""


def missing_modules(role: str) -> list[str]:
    """Return the modules of ``role`` that this environment cannot import."""
    if role not in ROLE_MODULES:
        raise ValueError(f"role {role!r}: expected one of {sorted(ROLE_MODULES)}")
    return [name for name in ROLE_MODULES[role] if importlib.util.find_spec(name) is None]


def require_role(role: str, command: str) -> None:
    """Raise RoleNotInstalled naming the extra to install when ``role`` is incomplete here."""
    missing = missing_modules(role)
    if missing:
        raise RoleNotInstalled(
            f"`{command}` needs the {role} role, which is not installed here (missing: "
            f'{", ".join(missing)}): pip install "sandflower[{role}]" (from a source folder: '
            f'pip install -e ".[{role}]")'
        )

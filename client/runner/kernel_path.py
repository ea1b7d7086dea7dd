"""Where the bundled kernel is: next to the code, or in the installed distribution."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import urllib.parse
from pathlib import Path

import kernels
from client.sandbox import KernelModule

RELAXED_KERNEL = "sandflower-relaxed.wasm"
SIMD128_KERNEL = "sandflower-simd128.wasm"


def default_kernel_path(relaxed_simd: bool = True) -> Path:
    """Find the bundled kernel: the relaxed-SIMD build, or the plain SIMD128 one.

    Looked for next to the running code first (a source tree, a regular install), then in the
    installed ``sandflower`` distribution. The second place matters on a SuperNode: Flower 1.42
    runs the ClientApp from the app bundle (FAB), and a FAB carries only .py/.toml/.md/.json
    files (its built-in include patterns win over ``fab-include``), so the .wasm comes from the
    sandflower that is installed on the device, and the coordinator's sha256 pin checks it.
    """
    name = RELAXED_KERNEL if relaxed_simd else SIMD128_KERNEL
    beside_code = Path(kernels.__file__).resolve().parent / "wasm" / name
    if beside_code.is_file():
        return beside_code
    installed = _installed_kernel_dir()
    if installed is not None and (installed / name).is_file():
        return installed / name
    return beside_code  # missing: loading it raises an error that names this path


def _installed_kernel_dir() -> Path | None:
    """kernels/wasm of the installed sandflower distribution (regular or editable install)."""
    try:
        distribution = importlib.metadata.distribution("sandflower")
    except importlib.metadata.PackageNotFoundError:
        return None
    candidates = [Path(str(distribution.locate_file("kernels/wasm")))]
    direct_url = distribution.read_text("direct_url.json")
    if direct_url:  # an editable install points at its source tree
        url = json.loads(direct_url).get("url", "")
        if url.startswith("file://"):
            source_tree = Path(urllib.parse.unquote(url.removeprefix("file://")))
            candidates.append(source_tree / "kernels" / "wasm")
    return next((path for path in candidates if path.is_dir()), None)


@functools.lru_cache(maxsize=2)
def _bundled_module(path: str) -> KernelModule:
    return KernelModule.from_file(path)

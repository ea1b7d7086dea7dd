"""Build the kernels: kernels/*.c -> kernels/wasm/*.wasm with the ziglang package from PyPI.

``python -m kernels.build`` rebuilds both .wasm files, kernels/wasm/manifest.json and the
shipped copy of each build (``<build>.json``: the bytes in base64 with their sha256, because a
Flower 1.42 app bundle carries .json files but never .wasm ones, client/kernel_source.py);
``python -m kernels.build --check`` rebuilds into a temporary directory and exits 1 when a hash
differs from the committed .wasm. The bytes depend on the compiler, so the ziglang version is
pinned (pyproject.toml) and recorded in the manifest; the build is byte-reproducible.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent
WASM_DIR = KERNEL_DIR / "wasm"
MANIFEST_NAME = "manifest.json"
ABI_VERSION = 1
ZIGLANG_VERSION = "0.17.1"

# Fixed order: the object order is part of the bytes.
SOURCES = (
    "alloc.c",
    "prng.c",
    "gemm.c",
    "dense.c",
    "relu.c",
    "softmax_xent.c",
    "sgd.c",
    "model.c",
    "evaluate.c",
    "train.c",
)
# Freestanding wasm32 with SIMD128 and bulk memory (no memset import), no libc, no entry point
# (kernels/ABI.md); exports come from SF_EXPORT in the sources, so no --export list to drift.
COMMON_FLAGS = (
    "--target=wasm32-freestanding",
    "-O3",
    "-msimd128",
    "-mbulk-memory",
    "-nostdlib",
    "-std=c99",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wl,--no-entry",
    "-Wl,--strip-all",
)
BUILDS: dict[str, tuple[str, ...]] = {
    "sandflower-relaxed.wasm": ("-mrelaxed-simd",),
    "sandflower-simd128.wasm": (),
}
# The flavour a coordinator names (run config ``kernel-flavour``) -> its build.
FLAVOURS: dict[str, str] = {
    "relaxed": "sandflower-relaxed.wasm",
    "simd128": "sandflower-simd128.wasm",
}
# The WebAssembly features each build needs from the runtime that runs it (wasmtime's names
# without the ``wasm_`` prefix); a device that lacks one says which (client/kernel_source.py).
FEATURES: dict[str, tuple[str, ...]] = {
    "sandflower-relaxed.wasm": ("simd", "bulk-memory", "relaxed-simd"),
    "sandflower-simd128.wasm": ("simd", "bulk-memory"),
}
SHIPPED_SUFFIX = ".json"
SHIPPED_FORMAT = "sandflower-kernel/1"


class KernelBuildError(RuntimeError):
    """The compiler failed, or is not the pinned version."""


@dataclass(frozen=True)
class BuiltKernel:
    """One built .wasm: its build name, path, size and sha256."""

    name: str
    path: Path
    sha256: str
    size: int


def compiler_version() -> str:
    """Return the installed ziglang package version (the compiler that makes the bytes)."""
    try:
        return metadata.version("ziglang")
    except metadata.PackageNotFoundError as error:
        raise KernelBuildError(
            f"the ziglang package is not installed; `pip install ziglang=={ZIGLANG_VERSION}`"
        ) from error


def compile_command(name: str, output: Path | str) -> list[str]:
    """Return the command line that builds ``name`` (a key of BUILDS); run it from KERNEL_DIR."""
    if name not in BUILDS:
        raise KernelBuildError(f"unknown build {name!r}, expected one of {sorted(BUILDS)}")
    return [
        sys.executable, "-m", "ziglang", "cc",
        *COMMON_FLAGS, *BUILDS[name], "-o", str(output), *SOURCES,
    ]  # fmt: skip


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of the file at ``path``."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build(out_dir: Path = WASM_DIR, *, write_manifest: bool = True) -> dict[str, BuiltKernel]:
    """Compile every build into ``out_dir``; returns them by file name.

    Raises
    ------
    KernelBuildError
        The compiler is missing, not the pinned version, or fails (its output is included).
    """
    version = compiler_version()
    if version != ZIGLANG_VERSION:
        raise KernelBuildError(
            f"ziglang {version} is installed, expected {ZIGLANG_VERSION}: "
            "the .wasm bytes depend on the compiler version"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    built: dict[str, BuiltKernel] = {}
    for name in BUILDS:
        output = (out_dir / name).resolve()
        # Sources are given relative to KERNEL_DIR so no checkout path can reach the bytes.
        result = subprocess.run(
            compile_command(name, output), cwd=KERNEL_DIR, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise KernelBuildError(
                f"building {name} failed (exit {result.returncode}):\n{result.stderr}"
            )
        built[name] = BuiltKernel(name, output, sha256_file(output), output.stat().st_size)
    if write_manifest:
        (out_dir / MANIFEST_NAME).write_text(manifest_text(built, version))
        for name, kernel in built.items():
            shipped_path(name, out_dir).write_text(shipped_text(name, kernel.path.read_bytes()))
    return built


def shipped_path(name: str, out_dir: Path = WASM_DIR) -> Path:
    """Where the shipped (JSON) copy of build ``name`` lives: ``<name>.json``."""
    return Path(out_dir) / f"{name}{SHIPPED_SUFFIX}"


def flavour_of(name: str) -> str:
    """Return the flavour name of build ``name`` (a key of BUILDS)."""
    return next(flavour for flavour, build_name in FLAVOURS.items() if build_name == name)


def shipped_text(name: str, wasm: bytes) -> str:
    """Return the shipped copy of a build: its bytes in base64 with their sha256 and size.

    Generated next to the .wasm so that ``flwr build`` puts the kernel into the app bundle
    (Flower 1.42 bundles .json files, never .wasm ones); the device decodes it, checks the
    size and the sha256 against the coordinator's pin, and only then compiles it.
    """
    shipped = {
        "format": SHIPPED_FORMAT,
        "generated_by": "python -m kernels.build (or `sandflower kernels build`): do not edit",
        "name": name,
        "flavour": flavour_of(name),
        "abi_version": ABI_VERSION,
        "features": list(FEATURES[name]),
        "bytes": len(wasm),
        "sha256": hashlib.sha256(wasm).hexdigest(),
        "wasm_base64": base64.b64encode(wasm).decode("ascii"),
    }
    return json.dumps(shipped, indent=1) + "\n"


def manifest_text(built: dict[str, BuiltKernel], version: str) -> str:
    """Return the text of kernels/wasm/manifest.json for ``built`` (made by ziglang ``version``)."""
    manifest = {
        "generated_by": "python -m kernels.build (or `sandflower kernels build`): do not edit",
        "abi_version": ABI_VERSION,
        "compiler": f"ziglang {version}",
        "command": " ".join(
            ["python", "-m", "ziglang", "cc", *COMMON_FLAGS, "{flags}", "-o", "{output}", *SOURCES]
        ),
        "builds": {
            name: {"flags": list(BUILDS[name]), "sha256": kernel.sha256, "bytes": kernel.size}
            for name, kernel in built.items()
        },
    }
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def check(committed_dir: Path = WASM_DIR) -> list[str]:
    """Rebuild into a temporary directory; one message per file that differs (none: all match)."""
    committed_dir = Path(committed_dir)
    with tempfile.TemporaryDirectory(prefix="sandflower-build-") as scratch:
        built = build(Path(scratch), write_manifest=True)
        problems = []
        for name, kernel in built.items():
            committed = committed_dir / name
            if not committed.exists():
                problems.append(f"{committed}: missing (rebuilt sha256 {kernel.sha256})")
                continue
            committed_sha = sha256_file(committed)
            if committed_sha != kernel.sha256:
                problems.append(
                    f"{committed}: sha256 {committed_sha}, rebuilt from sources {kernel.sha256}"
                )
            shipped = shipped_path(name, committed_dir)
            rebuilt_shipped = shipped_path(name, Path(scratch)).read_text()
            if not shipped.exists() or shipped.read_text() != rebuilt_shipped:
                problems.append(
                    f"{shipped}: differs from the rebuilt shipped kernel "
                    "(run `sandflower kernels build`)"
                )
        manifest = committed_dir / MANIFEST_NAME
        rebuilt_manifest = (Path(scratch) / MANIFEST_NAME).read_text()
        if not manifest.exists() or manifest.read_text() != rebuilt_manifest:
            problems.append(f"{manifest}: differs from the rebuilt manifest")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Build the kernels (or with ``--check``, verify them); return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m kernels.build", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="rebuild into a temp dir and compare hashes"
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check()
            for problem in problems:
                print(problem, file=sys.stderr)
            if not problems:
                print("kernels/wasm matches its sources")
            return 1 if problems else 0
        for name, kernel in build().items():
            print(f"{name}  {kernel.size} bytes  sha256 {kernel.sha256}")
        return 0
    except KernelBuildError as error:
        print(error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

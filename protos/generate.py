"""Generate the Python modules for protos/*.proto with grpcio-tools.

    python -m protos.generate            # rewrite protos/*_pb2.py(i)
    python -m protos.generate --check    # exit 1 when the committed modules are stale

The generated modules are committed so that a device needs no protoc.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

PROTOS_DIR = Path(__file__).resolve().parent
ROOT = PROTOS_DIR.parent


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) on every .proto into ``out_dir``/protos/; return the files."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    sources = sorted(p.relative_to(ROOT).as_posix() for p in PROTOS_DIR.glob("*.proto"))
    (out_dir / "protos").mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {sources}")
    return sorted((out_dir / "protos").glob("*_pb2.py*"))


def stale_files() -> list[str]:
    """Names of generated modules that differ from a fresh generation (or are missing)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        return [
            f.name
            for f in fresh
            if not (PROTOS_DIR / f.name).exists()
            or not filecmp.cmp(f, PROTOS_DIR / f.name, shallow=False)
        ]


def main() -> int:
    """Regenerate the *_pb2 modules (or with ``--check``, fail if stale); return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when generated code is stale")
    if parser.parse_args().check:
        stale = stale_files()
        if stale:
            print(f"stale generated protobuf modules: {stale}; run python -m protos.generate")
            return 1
        print("generated protobuf modules are up to date")
        return 0
    for path in generate(ROOT):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

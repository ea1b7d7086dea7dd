"""Checkpoints of a run: written after every round, read back (as untrusted input) to resume.

A checkpoint holds everything the coordinator needs to go on as if it had never stopped: the
global model, the strategy's between-rounds state (:mod:`coordinator.strategy_state`), the
adapter's node -> partition map, the finished round, the partial RunReport and the resolved
run config with its hash. Layout, in the run folder::

    checkpoints/round-000007/manifest.json   round, config, file sizes and sha256s, arrays
    checkpoints/round-000007/state.npz       model/NAME and strategy/SLOT/NAME arrays (no pickle)
    checkpoints/round-000007/report.pb       the RunReport after round 7 (binary protobuf)

Atomicity: the three files are written into a hidden temporary folder that is then renamed
to ``round-NNNNNN`` (``os.rename`` of a folder is atomic on one file system), so a folder with
that name is complete or absent, never half written. The previous round's folder is deleted
only after the new one exists (the last :data:`KEEP_CHECKPOINTS` are kept), so a run killed
at any moment leaves at least one complete checkpoint once round 1 has finished. The manifest
carries the size and sha256 of the other two files and a hash of itself: a truncated or
altered checkpoint is refused with the reason, and :func:`load_latest` falls back to the
previous one. No fsync, as for the report: the failure guarded against is the process dying,
not the machine losing power.

Reading back checks everything against the run config before a value is used: the manifest's
fields and types, file sizes before reading, hashes, array names, shapes, dtypes and
finiteness, the report's rounds. ``.npz`` is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import time
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from protos.npy import NpyVersionError, read_npy_header
from protos.report_pb2 import RunReport
from protos.untrusted_file import open_regular_file, read_regular_file

from .file_writes import BackgroundWrites

CHECKPOINT_DIR = "checkpoints"
MANIFEST_FILE = "manifest.json"
STATE_FILE = "state.npz"
REPORT_FILE = "report.pb"
FORMAT_NAME = "sandflower-checkpoint"
FORMAT_VERSION = 1
KEEP_CHECKPOINTS = 2
MODEL_PREFIX = "model/"
STRATEGY_PREFIX = "strategy/"
# Run config keys a resumed run may change: the rounds may be extended, the run folder is
# where the run now writes, and resume-from is how it was asked to resume.
RESUMABLE_CHANGES: frozenset[str] = frozenset({"num-rounds", "out-dir", "resume-from"})
# Test hook (documented in README "Resuming a run"): seconds to sleep after a checkpoint's
# files are written and before its folder is renamed into place, so that a test can kill the
# process while a checkpoint is being written. Never set in normal use.
PAUSE_ENV = "SANDFLOWER_TEST_CHECKPOINT_PAUSE"

_ROUND_DIR = re.compile(r"^round-(\d{6,})$")
_MAX_MANIFEST_BYTES = 64 << 20
_MAX_REPORT_BYTES = 1 << 30
_NPZ_OVERHEAD_PER_ARRAY = 64 << 10  # zip entry + .npy header, with a wide margin


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt, or does not fit the run config."""


class ResumeConfigError(CheckpointError):
    """The run config differs from the checkpoint's in keys a resumed run may not change."""

    def __init__(self, differences: Sequence[str], source: str) -> None:
        keys = [difference.split(":", 1)[0] for difference in differences]
        super().__init__(
            f"{source}: the run config differs from the checkpoint's in {keys} "
            f"({'; '.join(differences)}); only {sorted(RESUMABLE_CHANGES)} may change on resume"
        )
        self.keys = keys


@dataclass
class Checkpoint:
    """The state of a run after ``round`` finished rounds."""

    round: int
    model: dict[str, np.ndarray]
    strategy_state: dict[str, np.ndarray]
    node_partitions: dict[int, int]
    report: RunReport
    config: dict[str, Any]  # the resolved run config (non-finite floats as text)
    path: Path | None = None


@dataclass
class LoadResult:
    """What :func:`load_latest` found: the newest usable checkpoint and the refused newer ones."""

    checkpoint: Checkpoint | None
    refused: list[str] = field(default_factory=list)


# -- the run config ---------------------------------------------------------------------------
def encode_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the run config as JSON can hold it: non-finite floats as text (JSON has no inf)."""
    return {
        key: (str(value) if isinstance(value, float) and not math.isfinite(value) else value)
        for key, value in run_config.items()
    }


def config_sha256(run_config: Mapping[str, Any]) -> str:
    """sha256 of the run config without the keys a resume may change (:data:`RESUMABLE_CHANGES`).

    Numbers are hashed by value (1 and 1.0 are the same setting), strings and booleans as such.
    """
    canonical = {
        key: _canonical(value)
        for key, value in sorted(run_config.items())
        if key not in RESUMABLE_CHANGES
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``KEY: saved -> current`` for every key (but :data:`RESUMABLE_CHANGES`) that differs."""
    differences = []
    for key in sorted((set(saved) | set(current)) - RESUMABLE_CHANGES):
        before, after = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if _canonical(before) != _canonical(after):
            differences.append(f"{key}: {before!r} -> {after!r}")
    return differences


def check_config(checkpoint: Checkpoint, run_config: Mapping[str, Any]) -> None:
    """Raise :class:`ResumeConfigError` naming every key in which ``run_config`` differs."""
    differences = config_differences(checkpoint.config, encode_config(run_config))
    if differences:
        raise ResumeConfigError(differences, str(checkpoint.path or "checkpoint"))


def _canonical(value: Any) -> str:
    if isinstance(value, bool):
        return f"bool:{value}"
    if isinstance(value, int | float):
        return f"number:{float(value)!r}"
    if isinstance(value, str):
        try:  # a non-finite float recorded as text ("inf") is that number
            number = float(value)
        except ValueError:
            return f"str:{value}"
        if not math.isfinite(number):
            return f"number:{number!r}"
        return f"str:{value}"
    return f"other:{value!r}"


# -- writing ----------------------------------------------------------------------------------
def checkpoint_root(run_dir: Path | str) -> Path:
    """Return the folder holding a run folder's checkpoints."""
    return Path(run_dir) / CHECKPOINT_DIR


def round_dir_name(server_round: int) -> str:
    """``round-000007`` for round 7: names sort in round order."""
    return f"round-{server_round:06d}"


def write_checkpoint(
    run_dir: Path | str, checkpoint: Checkpoint, *, background: BackgroundWrites | None = None
) -> Path:
    """Write ``checkpoint`` into ``run_dir/checkpoints/round-NNNNNN`` atomically; prune old ones.

    Parameters
    ----------
    run_dir : the run folder.
    checkpoint : what to write; serialized before this returns (it may change afterwards).
    background : where the files are written from (in order, after this returns); None:
        written before this returns.

    Returns
    -------
    Path
        The checkpoint folder.
    """
    root = checkpoint_root(run_dir)
    final = root / round_dir_name(checkpoint.round)
    files = _checkpoint_files(checkpoint)
    if background is None:
        _commit(root, final, files)
    else:
        background.submit(functools.partial(_commit, root, final, files))
    return final


def _checkpoint_files(checkpoint: Checkpoint) -> dict[str, bytes]:
    """Return the checkpoint's files (name -> bytes): the state, the report, the manifest."""
    # Any: numpy's savez stub types **kwds so that a dict of arrays clashes with allow_pickle.
    arrays: dict[str, Any] = {
        MODEL_PREFIX + name: array for name, array in checkpoint.model.items()
    }
    arrays |= {STRATEGY_PREFIX + key: a for key, a in checkpoint.strategy_state.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    state_bytes = buffer.getvalue()
    report_bytes = checkpoint.report.SerializeToString(deterministic=True)
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "round": int(checkpoint.round),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": encode_config(checkpoint.config),
        "config_sha256": config_sha256(checkpoint.config),
        "node_partitions": sorted(
            [int(node), int(part)] for node, part in checkpoint.node_partitions.items()
        ),
        "arrays": {
            name: {"shape": list(array.shape), "dtype": array.dtype.str}
            for name, array in arrays.items()
        },
        "files": {
            STATE_FILE: _file_facts(state_bytes),
            REPORT_FILE: _file_facts(report_bytes),
        },
    }
    manifest["manifest_sha256"] = _manifest_hash(manifest)
    return {
        STATE_FILE: state_bytes,
        REPORT_FILE: report_bytes,
        # One line: an indented dump goes through json's pure-Python encoder, 0.49 s against
        # 0.06 s for the node map of a 100,000-client population, every round.
        MANIFEST_FILE: json.dumps(manifest).encode("utf-8"),
    }


def _commit(root: Path, final: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` into a hidden folder, then rename it to ``final``; prune old ones."""
    root.mkdir(parents=True, exist_ok=True)
    temp = root / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    temp.mkdir()
    try:
        for name, data in files.items():  # the manifest last, as before
            (temp / name).write_bytes(data)
        pause = os.environ.get(PAUSE_ENV)
        if pause:
            time.sleep(float(pause))
        replaced = None
        if final.exists():  # this round again (a resumed run that had nothing left to do)
            replaced = final.with_name(f".{final.name}.{secrets.token_hex(4)}.old.tmp")
            os.rename(final, replaced)
        os.rename(temp, final)
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _prune(root, keep=KEEP_CHECKPOINTS)


def clear_checkpoints(run_dir: Path | str) -> None:
    """Remove a run folder's checkpoints (a fresh run in a folder that held another run).

    A ``checkpoints`` that is a symlink or a file is removed itself, never what a link points
    to: ``rmtree`` refuses a symlink, and the run then wrote its checkpoints through it. An
    error other than "not there" is raised: another run's checkpoints left behind would be
    taken for this run's.
    """
    root = checkpoint_root(run_dir)
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        root.unlink()
        return
    try:
        shutil.rmtree(root)
    except FileNotFoundError:
        pass


def _prune(root: Path, *, keep: int) -> None:
    rounds = sorted(_round_dirs(root), reverse=True)
    for _, path in rounds[keep:]:
        shutil.rmtree(path, ignore_errors=True)


def remove_partial_writes(run_dir: Path | str) -> None:
    """Delete temporary folders left by a process killed while writing a checkpoint."""
    root = checkpoint_root(run_dir)
    if root.is_dir():
        for path in root.glob(".round-*tmp"):
            shutil.rmtree(path, ignore_errors=True)


def _round_dirs(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _ROUND_DIR.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return found


def _file_facts(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _manifest_hash(manifest: Mapping[str, Any]) -> str:
    body = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# -- reading ----------------------------------------------------------------------------------
def load_latest(
    run_dir: Path | str,
    *,
    array_shapes: Mapping[str, tuple[int, ...]],
    state_slots: Sequence[str],
) -> LoadResult:
    """Return the newest checkpoint of ``run_dir`` that passes :func:`read_checkpoint`.

    Newer checkpoints that fail (truncated, corrupt, of another model) are skipped, each
    with its reason in ``LoadResult.refused``; ``checkpoint`` is None when the run folder has
    no checkpoint at all.

    Raises
    ------
    CheckpointError
        When ``run_dir`` is not a folder, or it has checkpoints and none of them is usable
        (the message gives every reason).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    refused: list[str] = []
    for _, path in sorted(_round_dirs(checkpoint_root(run_dir)), reverse=True):
        try:
            checkpoint = read_checkpoint(path, array_shapes=array_shapes, state_slots=state_slots)
        except CheckpointError as error:
            refused.append(str(error))
            continue
        return LoadResult(checkpoint, refused)
    if refused:
        raise CheckpointError(f"{run_dir}: no usable checkpoint; refused: " + " | ".join(refused))
    return LoadResult(None, refused)


def latest_config(run_dir: Path | str) -> tuple[dict[str, Any], Path] | None:
    """Return the run config of the newest checkpoint whose manifest is intact, and that folder.

    Only the manifest is checked here (it is what knows the model); :func:`load_latest`
    verifies the whole checkpoint against that config when the run resumes.
    """
    for _, path in sorted(_round_dirs(checkpoint_root(run_dir)), reverse=True):
        try:
            manifest = _read_manifest(path, str(path))
            config = _field(manifest, "config", dict, str(path))
        except CheckpointError:
            continue
        if config_sha256(config) == manifest.get("config_sha256"):
            return config, path
    return None


def read_checkpoint(
    path: Path | str,
    *,
    array_shapes: Mapping[str, tuple[int, ...]],
    state_slots: Sequence[str],
) -> Checkpoint:
    """Read and verify one checkpoint folder.

    Parameters
    ----------
    path : a ``round-NNNNNN`` folder.
    array_shapes : the model's array names and shapes (from the run config's model).
    state_slots : the strategy's state slots (:func:`coordinator.strategy_state.state_slots`).

    Raises
    ------
    CheckpointError
        Naming the folder and what is wrong: a missing or oversized file, a size or sha256
        that differs from the manifest, a manifest field of the wrong type, an array name,
        shape or dtype the model does not have, a non-finite value, a report whose rounds do
        not match.
    """
    path = Path(path)
    where = str(path)
    manifest = _read_manifest(path, where)
    server_round = _field(manifest, "round", int, where)
    match = _ROUND_DIR.match(path.name)
    if server_round < 1 or (match is not None and int(match.group(1)) != server_round):
        raise CheckpointError(f"{where}: manifest round {server_round} does not fit the folder")
    config = _field(manifest, "config", dict, where)
    if config_sha256(config) != _field(manifest, "config_sha256", str, where):
        raise CheckpointError(f"{where}: the run config does not match its sha256")
    files = _field(manifest, "files", dict, where)
    expected_arrays = _expected_arrays(array_shapes, state_slots)
    max_state = sum(
        8 * math.prod(shape) + _NPZ_OVERHEAD_PER_ARRAY for shape in expected_arrays.values()
    )
    state_bytes = _read_verified(path, STATE_FILE, files, max_state, where)
    report_bytes = _read_verified(path, REPORT_FILE, files, _MAX_REPORT_BYTES, where)
    declared = _field(manifest, "arrays", dict, where)
    arrays = _read_arrays(state_bytes, declared, expected_arrays, where)
    model = {
        name[len(MODEL_PREFIX) :]: array
        for name, array in arrays.items()
        if name.startswith(MODEL_PREFIX)
    }
    missing = sorted(set(array_shapes) - set(model))
    if missing:
        raise CheckpointError(f"{where}: the model arrays {missing} are missing")
    for name, array in model.items():
        if array.dtype != np.float32:
            raise CheckpointError(f"{where}: model array {name!r} is {array.dtype}, not float32")
    strategy_state = {
        name[len(STRATEGY_PREFIX) :]: array
        for name, array in arrays.items()
        if name.startswith(STRATEGY_PREFIX)
    }
    report = RunReport()
    try:
        report.ParseFromString(report_bytes)
    except DecodeError as error:
        raise CheckpointError(f"{where}: {REPORT_FILE} is not a RunReport: {error}") from error
    if [r.round for r in report.rounds] != list(range(1, server_round + 1)):
        raise CheckpointError(
            f"{where}: the report holds rounds {[r.round for r in report.rounds][:10]}..., "
            f"expected 1..{server_round}"
        )
    return Checkpoint(
        round=server_round,
        model={name: model[name] for name in array_shapes},
        strategy_state=strategy_state,
        node_partitions=_node_partitions(manifest, where),
        report=report,
        config=config,
        path=path,
    )


def _read_manifest(path: Path, where: str) -> dict[str, Any]:
    try:
        text = read_regular_file(path / MANIFEST_FILE, _MAX_MANIFEST_BYTES)
    except OSError as error:
        raise CheckpointError(f"{where}: cannot read {MANIFEST_FILE}: {error}") from error
    try:
        manifest = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        # ValueError: not UTF-8, not JSON, or an integer of more than 4300 digits;
        # RecursionError: arrays nested deeper than the parser's recursion.
        raise CheckpointError(
            f"{where}: {MANIFEST_FILE} is not valid JSON: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{where}: {MANIFEST_FILE} is not a JSON object")
    if manifest.get("format") != FORMAT_NAME or manifest.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: not a {FORMAT_NAME} version {FORMAT_VERSION} manifest "
            f"(format {manifest.get('format')!r}, version {manifest.get('version')!r})"
        )
    if manifest.get("manifest_sha256") != _manifest_hash(manifest):
        raise CheckpointError(f"{where}: {MANIFEST_FILE} does not match its own sha256")
    return manifest


def _field(manifest: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = manifest.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CheckpointError(
            f"{where}: manifest field {key!r}: expected {kind.__name__}, given {value!r:.80}"
        )
    return value


def _read_verified(
    path: Path, name: str, files: Mapping[str, Any], max_bytes: int, where: str
) -> bytes:
    facts = files.get(name)
    if not isinstance(facts, dict) or not isinstance(facts.get("bytes"), int):
        raise CheckpointError(f"{where}: the manifest does not describe {name}")
    file_path = path / name
    try:
        with open_regular_file(file_path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size != facts["bytes"]:
                raise CheckpointError(
                    f"{where}: {name} has {size} bytes, the manifest says {facts['bytes']} "
                    "(truncated?)"
                )
            if size > max_bytes:
                raise CheckpointError(
                    f"{where}: {name} has {size} bytes, at most {max_bytes} expected"
                )
            # Never more than the size checked: a file that grows meanwhile fails its sha256.
            data = handle.read(size + 1)
    except FileNotFoundError as error:
        raise CheckpointError(f"{where}: {name} is missing: {error}") from error
    except OSError as error:
        raise CheckpointError(f"{where}: {name} cannot be read: {error}") from error
    if hashlib.sha256(data).hexdigest() != facts.get("sha256"):
        raise CheckpointError(f"{where}: {name} does not match its sha256 (corrupt)")
    return data


def _expected_arrays(
    array_shapes: Mapping[str, tuple[int, ...]], state_slots: Sequence[str]
) -> dict[str, tuple[int, ...]]:
    expected = {MODEL_PREFIX + name: tuple(shape) for name, shape in array_shapes.items()}
    for slot in state_slots:
        for name, shape in array_shapes.items():
            expected[f"{STRATEGY_PREFIX}{slot}/{name}"] = tuple(shape)
    return expected


def _read_arrays(
    data: bytes,
    declared: Mapping[str, Any],
    expected: Mapping[str, tuple[int, ...]],
    where: str,
) -> dict[str, np.ndarray]:
    unexpected = sorted(set(declared) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"{where}: arrays {unexpected[:5]} do not belong to this model and strategy "
            f"(expected among {sorted(expected)[:8]}...)"
        )
    arrays: dict[str, np.ndarray] = {}
    try:
        # zipfile + np.lib.format rather than np.load: the declared size of each member is
        # checked before it is decompressed (a small .npz can hold a deflated bomb).
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            if sorted(members) != sorted(declared):
                raise CheckpointError(
                    f"{where}: {STATE_FILE} holds {sorted(members)[:8]}, "
                    f"the manifest lists {sorted(declared)[:8]}"
                )
            for name, info in members.items():
                limit = 8 * math.prod(expected[name]) + _NPZ_OVERHEAD_PER_ARRAY
                if info.file_size > limit:
                    raise CheckpointError(
                        f"{where}: array {name!r} takes {info.file_size} bytes, at most {limit}"
                    )
                member = io.BytesIO(archive.read(info))
                _check_npy_header(member, name, expected[name], where)
                array = np.lib.format.read_array(member, allow_pickle=False)
                if tuple(array.shape) != expected[name]:
                    raise CheckpointError(
                        f"{where}: array {name!r} has shape {tuple(array.shape)}, "
                        f"expected {expected[name]}"
                    )
                if array.dtype not in (np.float32, np.float64):
                    raise CheckpointError(
                        f"{where}: array {name!r} has dtype {array.dtype}, expected float"
                    )
                if not np.all(np.isfinite(array)):
                    raise CheckpointError(f"{where}: array {name!r} has non-finite values")
                arrays[name] = array
    except CheckpointError:
        raise
    except (
        ValueError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,  # a deflated member that does not inflate
        NotImplementedError,  # zipfile: a compression method it has no codec for
        RuntimeError,  # zipfile: an encrypted member
    ) as error:
        raise CheckpointError(
            f"{where}: {STATE_FILE} cannot be read: {type(error).__name__}: {error}"
        ) from error
    return arrays


def _check_npy_header(member: io.BytesIO, name: str, shape: tuple[int, ...], where: str) -> None:
    """Refuse a member whose npy header is not of ``shape`` and float, before its data is read.

    ``read_array`` allocates what the header claims before it reads a byte, so a 1 kB member
    claiming 2**40 values raised MemoryError (no CheckpointError: the resume crashed instead
    of falling back to an older checkpoint). Leaves ``member`` at its start.
    """
    try:
        header_shape, _, dtype = read_npy_header(member)
    except NpyVersionError as error:
        raise CheckpointError(f"{where}: array {name!r}: {error}") from error
    if dtype not in (np.float32, np.float64):
        raise CheckpointError(f"{where}: array {name!r} has dtype {dtype}, expected float")
    if tuple(header_shape) != shape:
        raise CheckpointError(
            f"{where}: array {name!r} has shape {tuple(header_shape)}, expected {shape}"
        )
    member.seek(0)


def _node_partitions(manifest: Mapping[str, Any], where: str) -> dict[int, int]:
    pairs = _field(manifest, "node_partitions", list, where)
    partitions: dict[int, int] = {}
    for pair in pairs:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
            or not 0 <= pair[0] < 2**64
            or not -1 <= pair[1] < 2**31
        ):
            raise CheckpointError(f"{where}: node_partitions entry {pair!r:.80} is not [node, id]")
        partitions[pair[0]] = pair[1]
    return partitions

"""coordinator/checkpoint.py and resume inside run_rounds_on_grid, on the in-process grid.

A run stopped after round k and resumed (on a grid whose node ids are all new, as in a new
simulation) must give the bit-identical final model and the same per-round central figures
as the uninterrupted run, for every strategy. Checkpoints are untrusted input when read back.
"""

import io
import json
import os
import re
import shutil

import numpy as np
import pytest

from coordinator import checkpoint as ckpt
from coordinator import strategy_state
from coordinator.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    ResumeConfigError,
    load_latest,
    read_checkpoint,
)
from coordinator.config import FederationConfig
from coordinator.reports.report_json import REPORT_FILE_NAME, load_report
from coordinator.server_app import run_rounds_on_grid
from kernels.spec import ModelSpec
from tests.coordinator.test_server_app import (
    MODEL,
    InProcessGrid,
    central_evaluate,
    run_config,
    write_json_only,
)

SHAPES = ModelSpec.parse(MODEL).array_shapes()
STRATEGIES = {
    "fedavg": "{}",
    "fedprox": "{}",
    "fedavgm": '{"server_momentum": 0.9}',
    "fedadam": '{"beta_1": 0.9, "beta_2": 0.99}',
    "fedyogi": '{"beta_1": 0.9, "beta_2": 0.99}',
    "fedadagrad": "{}",
    "fedmedian": "{}",
    "fedtrimmedavg": '{"beta": 0.2}',
    "krum": '{"num_malicious_nodes": 1}',
    "multikrum": '{"num_malicious_nodes": 1, "num_nodes_to_select": 2}',
    "bulyan": "{}",
}


def _config(folder, **changes):
    return FederationConfig.from_run_config(run_config(folder, **changes))


def _run(folder, grid_seed=1, **changes):
    return run_rounds_on_grid(
        InProcessGrid(grid_seed),
        _config(folder, **changes),
        central_evaluate=central_evaluate,
        write_report=write_json_only,
    )


def _run_dir(folder):
    return folder / "run"


def _per_round(report, field="central_accuracy"):
    return [getattr(r, field) for r in report.rounds]


@pytest.mark.parametrize("fraction_train", [1.0, 0.6])
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_resumed_run_gives_the_same_bits_as_an_uninterrupted_one(
    tmp_path, strategy, fraction_train
):
    common = {
        "strategy": strategy,
        "strategy_params": STRATEGIES[strategy],
        "fraction_train": fraction_train,
        "fraction_evaluate": 0.6,
        "proximal_mu": 0.1 if strategy == "fedprox" else 0.0,
    }
    whole = _run(tmp_path / "whole", num_rounds=4, **common)
    _run(tmp_path / "part", num_rounds=2, **common)
    run_dir = _run_dir(tmp_path / "part")
    # A new grid: every node id differs, as in a new simulation.
    resumed = _run(tmp_path / "part", grid_seed=7, num_rounds=4, resume_from=str(run_dir), **common)
    assert resumed.final_model_sha256 == whole.final_model_sha256
    assert _per_round(resumed) == _per_round(whole)
    assert _per_round(resumed, "central_loss") == _per_round(whole, "central_loss")
    assert [r.round for r in resumed.rounds] == [1, 2, 3, 4]
    assert [e.from_round for e in resumed.resumes] == [2]
    assert resumed.resumes[0].previous_status == "completed"
    assert resumed.resumes[0].previous_num_rounds == 2
    assert resumed.total_bytes_uploaded == sum(r.bytes_uploaded for r in resumed.rounds)
    assert resumed.total_bytes_downloaded == sum(r.bytes_downloaded for r in resumed.rounds)
    assert resumed.total_bytes_uploaded == whole.total_bytes_uploaded
    assert load_report(run_dir) == resumed


def test_without_the_strategy_state_the_resumed_model_differs(tmp_path, monkeypatch):
    # The control for the test above: FedAdam's moments do matter, and are what is restored.
    common = {"strategy": "fedadam", "strategy_params": STRATEGIES["fedadam"]}
    whole = _run(tmp_path / "whole", num_rounds=3, **common)
    _run(tmp_path / "part", num_rounds=1, **common)
    checkpoint = read_checkpoint(
        _run_dir(tmp_path / "part") / CHECKPOINT_DIR / "round-000001",
        array_shapes=SHAPES,
        state_slots=("m_t", "v_t"),
    )
    assert set(checkpoint.strategy_state) == {f"{s}/{n}" for s in ("m_t", "v_t") for n in SHAPES}
    monkeypatch.setattr(strategy_state, "restore", lambda *args, **kwargs: None)
    resumed = _run(
        tmp_path / "part", num_rounds=3, resume_from=str(_run_dir(tmp_path / "part")), **common
    )
    assert resumed.final_model_sha256 != whole.final_model_sha256


def test_the_checkpoint_of_round_k_exists_before_the_report_claims_round_k(tmp_path):
    seen = []

    def checking_writer(out_dir, report):
        done = len(report.rounds)
        if done:
            folder = out_dir / CHECKPOINT_DIR / ckpt.round_dir_name(done)
            loaded = read_checkpoint(folder, array_shapes=SHAPES, state_slots=())
            assert loaded.round == done
            seen.append(done)
        write_json_only(out_dir, report)

    run_rounds_on_grid(
        InProcessGrid(1),
        _config(tmp_path, num_rounds=4),
        central_evaluate=central_evaluate,
        write_report=checking_writer,
    )
    assert seen[:4] == [1, 2, 3, 4]
    # The previous round's checkpoint is kept until the next is complete; older ones go.
    remaining = sorted(p.name for p in (_run_dir(tmp_path) / CHECKPOINT_DIR).iterdir())
    assert remaining == ["round-000003", "round-000004"]


def _two_checkpoints(tmp_path):
    _run(tmp_path, num_rounds=3)
    root = _run_dir(tmp_path) / CHECKPOINT_DIR
    return root / "round-000003", root / "round-000002"


def _load(run_dir):
    return load_latest(run_dir, array_shapes=SHAPES, state_slots=())


def test_a_truncated_checkpoint_is_refused_and_the_previous_one_is_used(tmp_path):
    latest, previous = _two_checkpoints(tmp_path)
    state = latest / ckpt.STATE_FILE
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"state.npz has 100 bytes.*truncated"):
        read_checkpoint(latest, array_shapes=SHAPES, state_slots=())
    result = _load(_run_dir(tmp_path))
    assert result.checkpoint.round == 2 and result.checkpoint.path == previous
    assert len(result.refused) == 1 and "truncated" in result.refused[0]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: _flip_byte(folder / ckpt.REPORT_FILE), "report.pb does not match"),
        (lambda folder: _flip_byte(folder / ckpt.STATE_FILE), "state.npz does not match"),
        (lambda folder: (folder / ckpt.MANIFEST_FILE).write_text("{"), "not valid JSON"),
        (lambda folder: _edit_manifest(folder, round=2), "does not match its own sha256"),
        (lambda folder: (folder / ckpt.REPORT_FILE).unlink(), "report.pb is missing"),
    ],
)
def test_a_corrupt_checkpoint_is_refused_with_the_reason(tmp_path, damage, message):
    latest, _ = _two_checkpoints(tmp_path)
    damage(latest)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(latest, array_shapes=SHAPES, state_slots=())
    assert _load(_run_dir(tmp_path)).checkpoint.round == 2


def test_a_checkpoint_rewritten_whole_is_still_checked_against_the_model(tmp_path):
    # Whoever can write the files can also fix the hashes: names, shapes, dtypes and values
    # are checked against the run config, and nothing is unpickled.
    latest, _ = _two_checkpoints(tmp_path)
    cases = {
        # An object array is refused by its npy header, before anything could unpickle it.
        "object": ({"model/layer0.weight": np.array([{"x": 1}], dtype=object)}, "dtype object"),
        "shape": ({"model/layer0.weight": np.zeros((4, 4), np.float32)}, "has shape"),
        "dtype": ({"model/layer0.weight": np.zeros((4, 3), np.int32)}, "dtype int32"),
        "nan": ({"model/layer0.weight": np.full((4, 3), np.nan, np.float32)}, "non-finite"),
        "extra": ({"model/evil": np.zeros(3, np.float32)}, "do not belong"),
    }
    pristine = {
        name: (latest / name).read_bytes() for name in (ckpt.STATE_FILE, ckpt.MANIFEST_FILE)
    }
    for replacement, message in cases.values():
        for name, data in pristine.items():
            (latest / name).write_bytes(data)
        _rewrite_state(latest, replacement)
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(latest, array_shapes=SHAPES, state_slots=())
    with pytest.raises(CheckpointError, match="do not belong"):
        read_checkpoint(previous_of(latest), array_shapes={"w": (2,)}, state_slots=())


def test_a_deflated_bomb_is_refused_before_it_is_decompressed(tmp_path):
    import hashlib
    import zipfile

    latest, _ = _two_checkpoints(tmp_path)
    with np.load(latest / ckpt.STATE_FILE, allow_pickle=False) as archive:
        names = list(archive.files)
    buffer = io.BytesIO()
    # 64 MiB of zeros deflate to ~64 KiB: a member far larger than any array of the model.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.writestr(name + ".npy", b"\0" * (64 << 20))
    data = buffer.getvalue()
    assert len(data) < 1 << 20
    (latest / ckpt.STATE_FILE).write_bytes(data)
    manifest = json.loads((latest / ckpt.MANIFEST_FILE).read_text())
    manifest["files"][ckpt.STATE_FILE] = {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    manifest["manifest_sha256"] = ckpt._manifest_hash(manifest)
    (latest / ckpt.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"takes 67108864 bytes, at most"):
        read_checkpoint(latest, array_shapes=SHAPES, state_slots=())


def previous_of(latest):
    return latest.parent / "round-000002"


def test_no_usable_checkpoint_is_an_error_naming_each_reason(tmp_path):
    latest, previous = _two_checkpoints(tmp_path)
    _flip_byte(latest / ckpt.STATE_FILE)
    (previous / ckpt.STATE_FILE).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint.*round-000003.*round-000002"):
        _load(_run_dir(tmp_path))
    config = _config(tmp_path, num_rounds=4, resume_from=str(_run_dir(tmp_path)))
    before = (_run_dir(tmp_path) / REPORT_FILE_NAME).read_bytes()
    with pytest.raises(CheckpointError):
        run_rounds_on_grid(InProcessGrid(1), config, write_report=write_json_only)
    assert (_run_dir(tmp_path) / REPORT_FILE_NAME).read_bytes() == before


def test_a_corrupt_latest_checkpoint_still_resumes_to_the_same_bits(tmp_path):
    whole = _run(
        tmp_path / "whole",
        num_rounds=4,
        strategy="fedavgm",
        strategy_params='{"server_momentum": 0.9}',
    )
    part = tmp_path / "part"
    latest, _ = _two_checkpoints_of(
        part, strategy="fedavgm", strategy_params='{"server_momentum": 0.9}'
    )
    _flip_byte(latest / ckpt.STATE_FILE)
    resumed = _run(
        part,
        grid_seed=3,
        num_rounds=4,
        strategy="fedavgm",
        strategy_params='{"server_momentum": 0.9}',
        resume_from=str(_run_dir(part)),
    )
    assert resumed.final_model_sha256 == whole.final_model_sha256
    assert resumed.resumes[0].from_round == 2
    assert "state.npz does not match its sha256" in resumed.resumes[0].refused_checkpoints[0]


def _two_checkpoints_of(folder, **changes):
    _run(folder, num_rounds=3, **changes)
    root = _run_dir(folder) / CHECKPOINT_DIR
    return root / "round-000003", root / "round-000002"


def test_resume_with_a_changed_config_is_refused_naming_the_keys(tmp_path):
    _run(tmp_path, num_rounds=2)
    run_dir = _run_dir(tmp_path)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    config = _config(tmp_path, num_rounds=3, lr=0.25, seed=12, resume_from=str(run_dir))
    with pytest.raises(ResumeConfigError, match=r"\['lr', 'seed'\]") as raised:
        run_rounds_on_grid(InProcessGrid(1), config, write_report=write_json_only)
    assert raised.value.keys == ["lr", "seed"]
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_a_completed_run_extends_and_cannot_shrink(tmp_path):
    whole = _run(tmp_path / "whole", num_rounds=4)
    _run(tmp_path / "part", num_rounds=3)
    run_dir = _run_dir(tmp_path / "part")
    with pytest.raises(CheckpointError, match="3 rounds are done, more than num-rounds 2"):
        _run(tmp_path / "part", num_rounds=2, resume_from=str(run_dir))
    same = _run(tmp_path / "part", num_rounds=3, resume_from=str(run_dir))
    assert same.status == "completed" and len(same.rounds) == 3
    extended = _run(tmp_path / "part", num_rounds=4, resume_from=str(run_dir))
    assert extended.final_model_sha256 == whole.final_model_sha256
    assert [e.from_round for e in extended.resumes] == [3, 3]
    assert extended.num_rounds == 4 and extended.config["num-rounds"] == 4


def test_a_run_stopped_in_round_one_restarts_from_round_zero(tmp_path):
    whole = _run(tmp_path / "whole", num_rounds=2)
    _run(tmp_path / "part", num_rounds=2)
    run_dir = _run_dir(tmp_path / "part")
    shutil.rmtree(run_dir / CHECKPOINT_DIR)  # as if killed before round 1's checkpoint
    report = json.loads((run_dir / REPORT_FILE_NAME).read_text())
    resumed = _run(tmp_path / "part", num_rounds=2, resume_from=str(run_dir))
    assert resumed.final_model_sha256 == whole.final_model_sha256
    assert resumed.resumes[0].from_round == 0 and resumed.resumes[0].checkpoint == ""
    assert resumed.started_at.ToJsonString() == report["started_at"]
    with pytest.raises(ResumeConfigError, match="'lr'"):
        shutil.rmtree(run_dir / CHECKPOINT_DIR)
        _run(tmp_path / "part", num_rounds=2, lr=0.3, resume_from=str(run_dir))


def test_a_fresh_run_in_an_old_run_folder_drops_its_checkpoints(tmp_path):
    _run(tmp_path, num_rounds=4)
    _run(tmp_path, num_rounds=1)
    names = sorted(p.name for p in (_run_dir(tmp_path) / CHECKPOINT_DIR).iterdir())
    assert names == ["round-000001"]


def test_a_partial_write_is_never_taken_for_a_checkpoint(tmp_path, monkeypatch):
    _run(tmp_path, num_rounds=2)
    run_dir = _run_dir(tmp_path)
    # A process killed inside write_checkpoint leaves only a hidden temporary folder.
    leftover = run_dir / CHECKPOINT_DIR / ".round-000003.123.abcd.tmp"
    leftover.mkdir()
    (leftover / ckpt.STATE_FILE).write_bytes(b"partial")
    assert _load(run_dir).checkpoint.round == 2
    _run(tmp_path, num_rounds=3, resume_from=str(run_dir))
    assert not leftover.exists()


def test_config_hash_ignores_only_the_resumable_keys():
    base = run_config_dict()
    assert ckpt.config_sha256(base) == ckpt.config_sha256(
        base | {"num-rounds": 99, "out-dir": "/elsewhere", "resume-from": "/x"}
    )
    assert ckpt.config_sha256(base) != ckpt.config_sha256(base | {"lr": 0.51})
    # A number is its value: 1 and 1.0 are one setting; inf survives the JSON round trip.
    assert ckpt.config_sha256(base | {"server-lr": 1}) == ckpt.config_sha256(
        base | {"server-lr": 1.0}
    )
    encoded = ckpt.encode_config(base | {"max-delta-norm": float("inf")})
    assert encoded["max-delta-norm"] == "inf"
    assert ckpt.config_sha256(encoded) == ckpt.config_sha256(
        base | {"max-delta-norm": float("inf")}
    )


def run_config_dict():
    return FederationConfig.from_run_config(run_config(_FakePath())).to_run_config()


class _FakePath:
    def __truediv__(self, other):
        return f"/tmp/{other}"


# -- helpers that damage checkpoints ------------------------------------------------------------
def _flip_byte(path, offset=-20):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_manifest(folder, **changes):
    path = folder / ckpt.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def _rewrite_state(folder, replacement):
    """Replace arrays in state.npz and fix every hash, as an attacker with write access could."""
    import hashlib
    import io

    with np.load(folder / ckpt.STATE_FILE, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    if "model/evil" not in replacement:
        arrays = {name: a for name, a in arrays.items() if name not in replacement}
    arrays |= replacement
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    (folder / ckpt.STATE_FILE).write_bytes(data)
    path = folder / ckpt.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["files"][ckpt.STATE_FILE] = {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    manifest["arrays"] = {
        name: {"shape": list(a.shape), "dtype": a.dtype.str} for name, a in arrays.items()
    }
    manifest["manifest_sha256"] = ckpt._manifest_hash(manifest)
    path.write_text(json.dumps(manifest))


def test_the_html_report_and_the_summary_show_the_resume(tmp_path):
    from rich.console import Console

    from coordinator.reports.run_page import render_report_html
    from simulations.summary import print_summary

    _run(tmp_path, num_rounds=1)
    resumed = _run(tmp_path, num_rounds=2, resume_from=str(_run_dir(tmp_path)))
    page = render_report_html(resumed)
    assert "<dt>resumed</dt>" in page and "after round 1 (was completed, 1 rounds planned" in page
    console = Console(record=True, width=200)
    print_summary(resumed, console, _run_dir(tmp_path))
    text = console.export_text()
    assert "resumed: " in text and "after round 1" in text


def _with_hashes(folder, state_bytes):
    """Write ``state_bytes`` as state.npz and fix the manifest's facts and hash to match."""
    import hashlib

    (folder / ckpt.STATE_FILE).write_bytes(state_bytes)
    path = folder / ckpt.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["files"][ckpt.STATE_FILE] = {
        "bytes": len(state_bytes),
        "sha256": hashlib.sha256(state_bytes).hexdigest(),
    }
    manifest["manifest_sha256"] = ckpt._manifest_hash(manifest)
    path.write_text(json.dumps(manifest))


def _lying_header_state(folder):
    # The model's member keeps 48 bytes of data but its npy header claims 2**40 values:
    # read_array allocated what the header claimed (MemoryError, not a CheckpointError).
    import zipfile

    source = zipfile.ZipFile(io.BytesIO((folder / ckpt.STATE_FILE).read_bytes()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "model/layer0.weight.npy":
                lying = io.BytesIO()
                header = {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}
                np.lib.format.write_array_header_1_0(lying, header)
                data = lying.getvalue() + np.zeros(12, np.float32).tobytes()
            target.writestr(info, data)
    _with_hashes(folder, buffer.getvalue())


def _state_with_method(method: int, flags: int = 0):
    # np.savez stores members (method 0); the method (and flag bits) are set in every header,
    # the hashes fixed: zipfile raised NotImplementedError / RuntimeError, no CheckpointError.
    def attack(folder, _):
        data = bytearray((folder / ckpt.STATE_FILE).read_bytes())
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            start = data.find(signature)
            while start >= 0:
                data[start + offset : start + offset + 2] = flags.to_bytes(2, "little")
                data[start + offset + 2 : start + offset + 4] = method.to_bytes(2, "little")
                start = data.find(signature, start + 4)
        _with_hashes(folder, bytes(data))

    return attack


def _swap_for(kind):
    def swap(folder, name):
        path = folder / name
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "device":
            path.symlink_to("/dev/null")  # st_size 0; /dev/zero would then be read forever
        else:
            path.mkdir()

    return swap


def _deep_json(folder, name):
    (folder / name).write_text("[" * 100_000 + "]" * 100_000)


def _huge_int_json(folder, name):
    (folder / name).write_text('{"format": ' + "9" * 5000 + "}")


HOSTILE_CHECKPOINT_FILES = {
    # case: (what is done to the newest checkpoint, which file, what the refusal says)
    "manifest is a fifo (a read waits for a writer forever)": (
        _swap_for("fifo"),
        ckpt.MANIFEST_FILE,
        "not a regular file \\(a fifo\\)",
    ),
    "manifest links to a device of size 0": (
        _swap_for("device"),
        ckpt.MANIFEST_FILE,
        "a character device",
    ),
    "manifest is a directory": (_swap_for("dir"), ckpt.MANIFEST_FILE, "a directory"),
    "state.npz is a fifo": (_swap_for("fifo"), ckpt.STATE_FILE, "state.npz cannot be read.*fifo"),
    "state.npz links to a device": (_swap_for("device"), ckpt.STATE_FILE, "character device"),
    "report.pb is a fifo": (_swap_for("fifo"), ckpt.REPORT_FILE, "report.pb cannot be read"),
    "manifest nested 100,000 deep (RecursionError)": (
        _deep_json,
        ckpt.MANIFEST_FILE,
        "not valid JSON: RecursionError",
    ),
    "manifest with a 5000-digit integer (ValueError)": (
        _huge_int_json,
        ckpt.MANIFEST_FILE,
        "not valid JSON: ValueError",
    ),
    "a member in compression method 99 (NotImplementedError)": (
        _state_with_method(99),
        ckpt.STATE_FILE,
        "state.npz cannot be read: NotImplementedError",
    ),
    "an encrypted member (RuntimeError)": (
        _state_with_method(0, flags=1),
        ckpt.STATE_FILE,
        "state.npz cannot be read: RuntimeError",
    ),
    "npy header claims 2**40 values (MemoryError)": (
        lambda folder, _: _lying_header_state(folder),
        ckpt.STATE_FILE,
        "has shape \\(1099511627776,\\)",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CHECKPOINT_FILES))
def test_a_hostile_checkpoint_file_is_refused_and_the_previous_checkpoint_is_used(case, tmp_path):
    import threading

    attack, name, refusal = HOSTILE_CHECKPOINT_FILES[case]
    latest, previous = _two_checkpoints(tmp_path)
    attack(latest, name)
    outcome: dict = {}

    def load():  # a thread: a fifo that blocks the read must fail this test, not hang it
        try:
            outcome["result"] = _load(_run_dir(tmp_path))
        except BaseException as error:  # reported below
            outcome["error"] = error

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():
        with open(latest / name, "wb"):  # a writer at the fifo ends the blocked read
            pass
        pytest.fail(f"{case}: loading the run folder blocked")
    assert "error" not in outcome, f"{case}: {outcome.get('error')!r}"
    loaded = outcome["result"]
    assert loaded.checkpoint.path == previous
    assert len(loaded.refused) == 1 and re.search(refusal, loaded.refused[0]), loaded.refused
    assert str(latest) in loaded.refused[0]


def test_clearing_removes_a_checkpoints_symlink_or_file_itself_never_its_target(tmp_path):
    # A fresh run (--force) in a folder whose checkpoints/ is a link must not write through it.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not the run's")
    run = tmp_path / "run"
    run.mkdir()
    ckpt.checkpoint_root(run).symlink_to(elsewhere, target_is_directory=True)
    ckpt.clear_checkpoints(run)
    assert not ckpt.checkpoint_root(run).exists() and not ckpt.checkpoint_root(run).is_symlink()
    assert (elsewhere / "keep.txt").read_text() == "not the run's"
    ckpt.checkpoint_root(run).write_text("a file")
    ckpt.clear_checkpoints(run)
    assert not ckpt.checkpoint_root(run).exists()
    ckpt.clear_checkpoints(run)  # nothing there: nothing to do
    (ckpt.checkpoint_root(run) / "round-0001").mkdir(parents=True)
    ckpt.clear_checkpoints(run)
    assert not ckpt.checkpoint_root(run).exists()

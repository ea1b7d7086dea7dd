"""protos/generate.py: the committed *_pb2 modules are what protoc makes of the .proto files."""

import shutil

import protos.generate as generate
from protos.report_pb2 import RunReport


def test_committed_modules_are_not_stale():
    stale = generate.stale_files()
    assert stale == [], f"stale generated modules {stale}: run python -m protos.generate"


def test_the_check_notices_an_edited_module(tmp_path, monkeypatch):
    copy = tmp_path / "protos"
    copy.mkdir()
    for path in generate.PROTOS_DIR.iterdir():
        if path.suffix in (".proto", ".py", ".pyi") and (
            path.suffix == ".proto" or path.stem.endswith("_pb2")
        ):
            shutil.copy(path, copy / path.name)
    monkeypatch.setattr(generate, "PROTOS_DIR", copy)
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    assert generate.stale_files() == []
    with open(copy / "report_pb2.py", "a") as module:
        module.write("# edited by hand\n")
    assert generate.stale_files() == ["report_pb2.py"]
    (copy / "report_pb2.pyi").unlink()
    assert generate.stale_files() == ["report_pb2.py", "report_pb2.pyi"]


def test_generated_module_matches_the_proto_fields():
    # A field added to report.proto but not regenerated would be missing here.
    proto_text = (generate.PROTOS_DIR / "report.proto").read_text()
    for field in RunReport.DESCRIPTOR.fields:
        assert f" {field.name} = {field.number};" in proto_text, field.name

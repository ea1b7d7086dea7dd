import pytest
from flwr.supercore.task_identity import TaskIdentity


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    # Instruction Messages read Flower's process-wide TaskIdentity (the grid sets it; a test
    # that builds messages before a grid exists needs it too). Restored after each test.
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)

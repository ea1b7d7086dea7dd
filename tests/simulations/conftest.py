# The coordinator tests' autouse fixture: instruction Messages need Flower's TaskIdentity.
from tests.coordinator.conftest import task_identity  # noqa: F401

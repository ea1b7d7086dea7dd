"""The coordinator: the delta strategy adapter, validation, checkpoints, reports, the ServerApp."""

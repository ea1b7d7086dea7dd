"""The local simulation engine: a Flower Grid over a pool of worker processes.

One module per concept: :mod:`.transfer` (messages as raw buffers across the process
boundary), :mod:`.worker` (the loop a worker process runs), :mod:`.pool` (starting,
feeding, supervising and stopping the workers), :mod:`.grid` (the Flower ``Grid`` the
unchanged ServerApp logic drives).
"""

from .grid import LocalGrid, node_id_of
from .pool import WorkerPool

__all__ = ["LocalGrid", "WorkerPool", "node_id_of"]

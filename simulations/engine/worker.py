"""The loop a worker process runs: take a batch of client jobs, run the ClientApp, reply.

A worker lives for the whole run. It builds its ClientApp once, and keeps what the
ClientApp caches per process (the compiled kernel, the clients' data) from round to round;
its clients are always the same ones (``partition_id % num_workers``), so each client's data
is loaded by one process only. Each job's instruction is rebuilt from the round's content
buffer, so a ClientApp that changes its message cannot change another client's.

Commands (over a ``multiprocessing`` Connection): ``("jobs", contents, jobs)`` with
``contents`` = {key: encoded content} and ``jobs`` = [(content key, Metadata, partition
id)]; ``("stop",)``. Replies go back as :func:`.transfer.pack_replies` buffers (checked
with the coordinator's own gate first; a batch it would refuse goes reply by reply, so one
reply that cannot cross fails its own job only), flushed every ``FLUSH_SECONDS`` so that the
coordinator can show progress within a round.
"""

from __future__ import annotations

import importlib
import signal
import time
import traceback
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.supercore.task_identity import TaskIdentity

from simulations.environment import limit_blas_threads

from . import transfer
from .collector import freeze_survivors
from .memory import release_free_memory

# A reply batch is sent at least this often while jobs run (progress), and at a batch's end.
FLUSH_SECONDS = 0.05
# After a batch of this many jobs a worker gives its freed heap back (see .memory).
TRIM_MIN_JOBS = 100

ClientAppSource = ClientApp | str | Callable[[], ClientApp]


class ClientAppLoadError(ValueError):
    """A ClientApp reference that does not name a ClientApp."""


def load_client_app(source: ClientAppSource) -> ClientApp:
    """Return the ClientApp that ``source`` names.

    Parameters
    ----------
    source : a ClientApp; a ``"module:attribute"`` reference to one (e.g.
        ``"simulations.client_app:app"``); or a zero-argument callable that returns one (a
        factory; ``functools.partial`` of a module-level function pickles).

    Raises
    ------
    ClientAppLoadError
        When ``source`` is none of these or does not lead to a ClientApp.
    """
    if isinstance(source, ClientApp):
        return source
    if isinstance(source, str):
        module_name, sep, attribute = source.partition(":")
        if not sep or not module_name or not attribute:
            raise ClientAppLoadError(
                f"client app {source!r}: expected 'module:attribute', "
                "e.g. simulations.client_app:app"
            )
        try:
            found = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ClientAppLoadError(f"client app {source!r}: {error}") from error
        return load_client_app(found)
    if callable(source):
        built = source()
        if not isinstance(built, ClientApp):
            raise ClientAppLoadError(
                f"client app factory {source!r}: expected it to return a ClientApp, "
                f"given {type(built).__name__}"
            )
        return built
    raise ClientAppLoadError(
        f"client app: expected a ClientApp, 'module:attribute' or a factory, "
        f"given {type(source).__name__}"
    )


def run_worker(
    connection: Connection,
    client_app: ClientAppSource,
    run_config: Mapping[str, Any],
    num_partitions: int,
    run_id: int,
    clients_owned: int | None = None,
) -> None:
    """Run the worker process's loop (returns when told to stop or the pipe closes).

    ``clients_owned``: how many clients this worker serves (its share of the population);
    the simulated data cache is sized to keep them all when they fit.
    """
    # Ctrl-C in a terminal reaches the whole process group: the coordinator decides when a
    # worker stops (and stops it by pid), so a worker never dies half-way through a reply.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One worker per core: BLAS threads would only fight each other (and see
    # simulations.environment.limit_blas_threads for the fork hazard).
    limit_blas_threads()
    if clients_owned is not None:
        # A simulated device regenerated per job costs ~3 ms of CPU; a worker that keeps all
        # its clients generates each once per run (simulations.federated_data.size_lazy_cache).
        from simulations.federated_data import size_lazy_cache

        # Room for the few train jobs a balanced batch moves in (engine/balance.py): with a
        # cache exactly the size of the clients owned, those evict owned clients and a
        # round's cyclic order then misses on many more.
        size_lazy_cache(clients_owned, headroom=max(8, clients_owned // 16))
    app = load_client_app(client_app)
    freeze_survivors()  # the imports and the ClientApp live for the run (.collector)
    contexts: dict[int, Context] = {}

    def context_of(node_id: int, partition_id: int) -> Context:
        context = contexts.get(node_id)
        if context is None:
            context = Context(
                run_id=run_id,
                node_id=node_id,
                node_config={"partition-id": partition_id, "num-partitions": num_partitions},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            contexts[node_id] = context
        return context

    batches_run = 0
    while True:
        try:
            command = connection.recv()
        except (EOFError, OSError):
            return  # the coordinator is gone
        if command[0] == "stop":
            return
        _, contents, jobs = command
        # Zig-zag: every other batch runs backwards, so the clients that ran last (a round's
        # train batch) run first in the next one (its evaluate batch) while the ClientApp's
        # per-process caches (a lazy data set keeps its last 256 clients) still hold them.
        # Replies are put back in instruction order by the pool, and each job's result
        # depends on its own seed alone: the order changes no bit.
        batches_run += 1
        if batches_run % 2 == 0:
            jobs = jobs[::-1]
        pending: list[tuple[Message, object]] = []  # (instruction, what its job returned)
        last_flush = time.monotonic()
        copies: dict[Any, Callable[[], RecordDict]] = {}  # content key -> fresh copies of it
        for content_key, metadata, partition_id in jobs:
            copy = copies.get(content_key)
            if copy is None:
                copy = copies[content_key] = transfer.content_copies(contents[content_key])
            message = transfer.instruction(metadata, copy())
            context = context_of(message.metadata.dst_node_id, partition_id)
            # As Flower's run_clientapp: this process now runs a task of this node.
            TaskIdentity.task_id = 1
            TaskIdentity.run_id = run_id
            TaskIdentity.node_id = message.metadata.dst_node_id
            pending.append((message, run_job(app, message, context)))
            if time.monotonic() - last_flush >= FLUSH_SECONDS:
                connection.send_bytes(transfer.pack_replies(pending))
                pending = []
                last_flush = time.monotonic()
        if pending:
            connection.send_bytes(transfer.pack_replies(pending))
        if len(jobs) >= TRIM_MIN_JOBS:
            release_free_memory()
        if batches_run <= 2:
            # After round 1's train and evaluate batches, the clients' cached data and the
            # Contexts are what lives from round to round.
            freeze_survivors()


def run_job(app: ClientApp, message: Message, context: Context) -> object:
    """Run one client job and return what the ClientApp returned, or an error reply.

    Whatever the ClientApp raises becomes an error reply that says so (as Flower's engine
    does: the run goes on); what it returns is checked where it is packed
    (:func:`.transfer.pack_replies`: a Message Flower builds, answering this job).
    """
    try:
        return app(message, context)
    # The ClientApp's own failure: reported, never fatal. SystemExit too (sys.exit() in a
    # ClientApp would otherwise end the worker and fail every job it still holds).
    except (Exception, SystemExit) as error:
        reason = f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=5)}"
        return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=message)

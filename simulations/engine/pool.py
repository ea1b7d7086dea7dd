"""A pool of worker processes that run client jobs: start, dispatch, supervise, stop.

Client ``partition_id``'s home is worker ``partition_id % num_workers`` (deterministic, and
each client's data is loaded by its home worker); given each client's ``job_cost``, a train
batch moves the few jobs that even the workers' loads out (:mod:`.balance`).

The pool watches every busy worker's pipe AND its process sentinel: a worker that dies
mid-round (SIGKILL, out of memory, a crash inside the native runtime) or does not finish
before the round's timeout fails only the jobs it still held (error replies that say why),
is replaced by a fresh process, and the round goes on with the other workers' replies.

How a worker starts (``start_method``):

- ``"fork"`` (Linux): starts in milliseconds, shares the coordinator's imported modules, data
  set and compiled kernel copy-on-write, and lets the caller pass any ClientApp object,
  closures included; but each forked worker's resident set starts as the coordinator's,
  which summed RSS counts once per worker;
- ``"lean"``: a fresh interpreter that imports only the worker (:mod:`.lean`; ~75 MB, ~1 s
  of imports); the ClientApp must be given by reference (``"module:attribute"`` or a
  picklable factory) and the worker builds its clients' data itself.

Every worker is stopped by its pid in :meth:`WorkerPool.stop`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from flwr.app import Message, MessageType
from flwr.app.error import Error
from flwr.common.constant import ErrorCode

from . import transfer
from .balance import balance
from .lean import LeanProcess
from .worker import ClientAppSource, run_worker

logger = logging.getLogger(__name__)

# How long a worker may take to leave after "stop" before it is killed.
STOP_GRACE_SECONDS = 1.0
START_METHODS = ("fork", "lean")
# How long a lean worker may take to import and load its ClientApp.
READY_TIMEOUT_SECONDS = 120.0
# What one reply may take on the pipe: REPLY_SIZE_FACTOR times its instruction's content (a
# delta is the model's size; a ClientApp may return a few more arrays) plus metrics and
# metadata. A batch larger than its pending replies' allowance is refused unread (a ClientApp
# returning gigabytes must not make the coordinator allocate them).
REPLY_SIZE_FACTOR = 4
REPLY_OVERHEAD_BYTES = 8 << 20
REPLY_BATCH_SLACK_BYTES = 16 << 20

OnReply = Callable[[Message], None]


class PoolError(RuntimeError):
    """The pool cannot do what it was asked (not started, already stopped, bad worker count)."""


@dataclass
class _Worker:
    index: int
    process: Any  # multiprocessing.Process (its context's flavour)
    connection: Connection
    pending: dict[str, Message] = field(default_factory=dict)  # message id -> instruction
    ready: bool = True  # a lean worker: False until it said it finished importing

    @property
    def pid(self) -> int:
        return int(self.process.pid)


@dataclass
class TransferStats:
    """Where the coordinator's time in the pool goes (seconds, bytes; summed over the run)."""

    encode_seconds: float = 0.0  # contents and metadata to buffers
    decode_seconds: float = 0.0  # reply buffers back to Messages
    bytes_sent: int = 0
    bytes_received: int = 0
    batches_received: int = 0
    jobs: int = 0
    workers_replaced: int = 0


class WorkerPool:
    """``num_workers`` worker processes that run a ClientApp on the jobs they are given.

    Parameters
    ----------
    num_workers : >= 1.
    client_app : the ClientApp, a ``"module:attribute"`` reference, or a factory
        (:func:`.worker.load_client_app`).
    run_config : the run config every client's Context carries.
    num_partitions : the number of clients (node config ``num-partitions``).
    run_id : the run id of every Context and message.
    start_method : "fork" (default) or "lean" (see the module docstring).
    job_cost : client partition id -> the estimated cost of its job (e.g. its sample count
        plus a per-job overhead); None: every job runs on its home worker.
    """

    def __init__(
        self,
        num_workers: int,
        client_app: ClientAppSource,
        run_config: Mapping[str, Any],
        num_partitions: int,
        *,
        run_id: int = 1,
        start_method: str = "fork",
        job_cost: Callable[[int], float] | None = None,
    ) -> None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise PoolError(f"workers: expected an int >= 1, given {num_workers!r}")
        if start_method not in START_METHODS:
            raise PoolError(
                f"start_method: expected one of {', '.join(START_METHODS)}, given {start_method!r}"
            )
        self.start_method = start_method
        self.num_workers = num_workers
        self.client_app = client_app
        self.run_config = dict(run_config)
        self.num_partitions = int(num_partitions)
        self.run_id = int(run_id)
        self.stats = TransferStats()
        self._context = multiprocessing.get_context("fork")
        self._workers: list[_Worker | None] = [None] * num_workers
        self._stopped = False
        self.started_pids: list[int] = []
        self._job_cost = job_cost
        self._costs: dict[int, float] = {}  # partition id -> job_cost, asked once per client
        self._reply_allowance = REPLY_OVERHEAD_BYTES  # bytes one reply may take (run() sets it)

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> WorkerPool:
        """Start every worker and wait until each is ready (idempotent)."""
        self.spawn()
        self._wait_ready()
        return self

    def spawn(self) -> WorkerPool:
        """Start every worker without waiting for lean ones to import (idempotent).

        The caller can do its own set-up meanwhile; :meth:`start` (or the first :meth:`run`)
        waits for them.
        """
        if self._stopped:
            raise PoolError("the pool was stopped; build a new one")
        for index in range(self.num_workers):
            if self._workers[index] is None:
                self._workers[index] = self._spawn(index)
        return self

    def __enter__(self) -> WorkerPool:
        """Start the workers; return the pool."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop every worker by pid, whatever happened inside the block."""
        self.stop()

    @property
    def pids(self) -> list[int]:
        """The pids of the live workers, in worker order."""
        return [worker.pid for worker in self._workers if worker is not None]

    def worker_of(self, partition_id: int) -> int:
        """Return the index of client ``partition_id``'s home worker."""
        return int(partition_id) % self.num_workers

    def workers_for(self, partition_ids: list[int]) -> list[int]:
        """Return the worker that runs each job of a batch (:func:`.balance.balance`)."""
        homes = [self.worker_of(partition_id) for partition_id in partition_ids]
        if self._job_cost is None:
            return homes
        costs = []
        for partition_id in partition_ids:
            cost = self._costs.get(partition_id)
            if cost is None:
                cost = self._costs[partition_id] = float(self._job_cost(partition_id))
            costs.append(cost)
        return balance(homes, costs, self.num_workers)

    def stop(self) -> None:
        """Stop every worker by pid.

        An idle one is asked and given ``STOP_GRACE_SECONDS``; a busy one (interrupted
        mid-round) and a late one are SIGKILLed.
        """
        self._stopped = True
        workers = [worker for worker in self._workers if worker is not None]
        self._workers = [None] * self.num_workers
        for worker in workers:
            if worker.pending:
                # Interrupted mid-round: its jobs are abandoned and it would only read "stop"
                # after finishing them.
                _kill(worker.pid)
                continue
            try:
                worker.connection.send(("stop",))
            except (OSError, ValueError):
                pass  # already gone
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
        for worker in workers:
            if worker.process.is_alive():
                _kill(worker.pid)
                worker.process.join(STOP_GRACE_SECONDS)
            worker.connection.close()

    def kill_now(self) -> None:
        """SIGKILL every worker by pid without waiting (a second Ctrl-C)."""
        for worker in self._workers:
            if worker is not None:
                _kill(worker.pid)

    # -- running jobs ------------------------------------------------------------------------
    def run(
        self,
        messages: Iterable[tuple[Message, int]],
        *,
        timeout: float | None,
        on_reply: OnReply | None = None,
    ) -> list[Message]:
        """Run each ``(instruction, partition_id)`` on its client's worker; return the replies.

        Every instruction gets exactly one reply: the ClientApp's, or an error reply when
        its worker died or did not finish within ``timeout`` seconds (that worker is then
        killed and replaced). ``on_reply`` is called with each reply as it arrives.
        """
        if self._stopped:
            raise PoolError("the pool was stopped")
        self.start()
        started = time.perf_counter()
        batches: dict[int, tuple[dict[int, bytes], list[tuple[int, Any, int]]]] = {}
        encoded: dict[int, tuple[int, bytes]] = {}  # id(content) -> (key, buffer)
        contents_by_id: dict[int, Any] = {}
        sent_ids: list[str] = []
        batch = list(messages)
        partition_ids = [int(partition_id) for _, partition_id in batch]
        # Only train jobs are worth moving: an evaluate job is mostly per-job overhead (its
        # held-out data is small), and a moved job's client is generated again on the worker
        # it moved to; moving evaluate batches (a new random sample every round) made worker
        # 0 of 1000 synthetic clients regenerate ~340 devices a round.
        if all(message.metadata.message_type == MessageType.TRAIN for message, _ in batch):
            indices = self.workers_for(partition_ids)
        else:
            indices = [self.worker_of(partition_id) for partition_id in partition_ids]
        for (message, partition_id), index in zip(batch, indices, strict=True):
            sent_ids.append(message.metadata.message_id)
            content = message.content
            key_and_buffer = encoded.get(id(content))
            if key_and_buffer is None:
                # The strategy sends one content object to every client of a round: it is
                # encoded once and crosses to each worker once.
                key_and_buffer = (len(encoded), transfer.encode_content(content))
                encoded[id(content)] = key_and_buffer
                contents_by_id[id(content)] = content  # keep id() unique while encoding
            key, buffer = key_and_buffer
            contents, jobs = batches.setdefault(index, ({}, []))
            contents[key] = buffer
            jobs.append((key, message.metadata, int(partition_id)))
            worker = self._workers[index]
            assert worker is not None
            worker.pending[message.metadata.message_id] = message
        self.stats.encode_seconds += time.perf_counter() - started
        largest = max((len(buffer) for _, buffer in encoded.values()), default=0)
        self._reply_allowance = REPLY_SIZE_FACTOR * largest + REPLY_OVERHEAD_BYTES

        replies: list[Message] = []
        for index, (contents, jobs) in batches.items():
            worker = self._workers[index]
            assert worker is not None
            self.stats.jobs += len(jobs)
            self.stats.bytes_sent += sum(map(len, contents.values()))
            try:
                worker.connection.send(("jobs", contents, jobs))
            except (OSError, ValueError):
                pass  # a dead worker: its sentinel is ready, the loop below replaces it

        def deliver(reply: Message) -> None:
            replies.append(reply)
            if on_reply is not None:
                on_reply(reply)

        deadline = None if timeout is None else time.monotonic() + float(timeout)
        while busy := [worker for worker in self._workers if worker and worker.pending]:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            waitables: list[Any] = [worker.connection for worker in busy]
            waitables += [worker.process.sentinel for worker in busy]
            ready = wait(waitables, timeout=remaining)
            if not ready:
                for worker in busy:
                    self._fail_worker(
                        worker,
                        f"no reply within the round's timeout of {timeout:g} s: worker "
                        f"pid {worker.pid} was killed and replaced",
                        deliver,
                        kill=True,
                    )
                break
            for worker in busy:
                if worker.connection in ready:
                    failure = self._receive(worker, deliver)
                    if failure is not None:
                        # A refused batch: the worker is alive and is killed; a broken pipe:
                        # it is dying, and _fail_worker learns how.
                        self._fail_worker(worker, failure or None, deliver, kill=bool(failure))
                elif worker.process.sentinel in ready:
                    self._drain(worker, deliver)
                    if worker.pending:
                        self._fail_worker(worker, None, deliver, kill=False)
                    else:
                        self._replace(worker)
        # In instruction order, whatever order the workers finished in: a reproducible run
        # must not depend on which process was faster.
        order = {message_id: index for index, message_id in enumerate(sent_ids)}
        replies.sort(key=lambda reply: order.get(reply.metadata.reply_to_message_id, len(order)))
        return replies

    # -- internals ---------------------------------------------------------------------------
    def _spawn(self, index: int) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        # Worker ``index`` serves clients index, index + num_workers, ... (worker_of).
        clients_owned = len(range(index, self.num_partitions, self.num_workers))
        args = (self.client_app, self.run_config, self.num_partitions, self.run_id, clients_owned)
        name = f"sandflower-worker-{index}"
        process: Any
        if self.start_method == "lean":
            process = LeanProcess(child_end, parent_end, args, name)
        else:
            process = self._context.Process(
                target=run_worker, args=(child_end, *args), name=name, daemon=True
            )
        process.start()
        child_end.close()
        assert process.pid is not None  # start() returned: the process exists
        self.started_pids.append(process.pid)
        logger.debug("worker %d started (pid %d)", index, process.pid)
        return _Worker(index, process, parent_end, ready=self.start_method != "lean")

    def _receive(self, worker: _Worker, deliver: OnReply) -> str | None:
        """Read one reply batch; None when read, else why not ("" when the pipe broke)."""
        # A batch holds at most the worker's pending replies; one far larger than they can be
        # is refused by its length prefix, before any of it is read into this process.
        limit = len(worker.pending) * self._reply_allowance + REPLY_BATCH_SLACK_BYTES
        try:
            buffer = worker.connection.recv_bytes(limit)
        except OSError as error:
            if "bad message length" in str(error):
                return (
                    f"worker pid {worker.pid} sent a reply batch over {limit} bytes, more than "
                    f"its {len(worker.pending)} pending jobs' replies may hold: killed and "
                    "replaced"
                )
            return ""
        except EOFError:
            return ""
        started = time.perf_counter()
        try:
            batch = transfer.unpack_replies(buffer)
        except transfer.TransferError as error:
            logger.error("worker pid %d sent a bad reply batch: %s", worker.pid, error)
            return f"worker pid {worker.pid} sent a reply batch that cannot be read ({error})"
        self.stats.decode_seconds += time.perf_counter() - started
        self.stats.bytes_received += len(buffer)
        self.stats.batches_received += 1
        for message_id, reply in batch:
            instruction = worker.pending.pop(message_id, None)
            if instruction is None:
                continue  # not a job of this worker (or answered already): ignored
            if isinstance(reply, transfer.TransferError):
                # This reply alone could not cross (transfer.unpack_replies): its job fails.
                reason = f"the ClientApp's reply could not be read: {reply}"
                reply = Message(Error(transfer.REPLY_UNREADABLE, reason), reply_to=instruction)
            elif reply.metadata.src_node_id != instruction.metadata.dst_node_id:
                # A reply speaks for the node its instruction went to, whatever it says.
                reason = (
                    f"the ClientApp's reply says it comes from node {reply.metadata.src_node_id}"
                    f", but its job ran for node {instruction.metadata.dst_node_id}"
                )
                reply = Message(Error(transfer.REPLY_UNREADABLE, reason), reply_to=instruction)
            deliver(reply)
        return None

    def _drain(self, worker: _Worker, deliver: OnReply) -> None:
        # A worker that died may have written replies before it went: keep them.
        while worker.pending and worker.connection.poll(0):
            if self._receive(worker, deliver) is not None:
                return

    def _fail_worker(
        self, worker: _Worker, reason: str | None, deliver: OnReply, *, kill: bool
    ) -> None:
        """Fail every job ``worker`` still holds and replace it.

        ``reason`` None: the worker died on its own; the reason says how (after reaping it).
        """
        if kill:
            _kill(worker.pid)
        elif reason is None:
            # Its pipe closed: the process is dying or dead; reap it to learn how.
            worker.process.join(STOP_GRACE_SECONDS)
            if worker.process.is_alive():
                _kill(worker.pid)
        worker.process.join(STOP_GRACE_SECONDS)
        if reason is None:
            reason = _death_reason(worker)
        logger.warning("%s; %d client job(s) failed", reason, len(worker.pending))
        for message in worker.pending.values():
            deliver(Message(Error(ErrorCode.CLIENT_APP_CRASHED, reason), reply_to=message))
        worker.pending.clear()
        self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        worker.connection.close()
        worker.process.join(STOP_GRACE_SECONDS)
        self.stats.workers_replaced += 1
        # Not waited for here (a lean one imports for a second or more): the next run()
        # waits before its timeout starts.
        self._workers[worker.index] = self._spawn(worker.index)

    def _wait_ready(self) -> None:
        """Wait until every lean worker has imported (a round's timeout must not count it)."""
        for worker in self._workers:
            if worker is None or worker.ready:
                continue
            try:
                worker.process.wait_ready(worker.connection, READY_TIMEOUT_SECONDS)
            except RuntimeError as error:
                raise PoolError(str(error)) from error
            worker.ready = True


def _death_reason(worker: _Worker) -> str:
    code = worker.process.exitcode
    if code is None:
        how = "stopped answering"
    elif code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
    else:
        how = f"exited with code {code}"
    return f"worker process pid {worker.pid} {how} while running this client's job"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

"""Awaitable forms of keel's blocking calls, for asyncio hosts.

Nothing here blocks the event loop: a blocking call runs on keel's one
bounded executor (:func:`executor`; the GIL is released while it waits inside
keel) and its result is handed back to the loop. Every function and method is
a real coroutine: nothing happens until it is awaited (or given to
``asyncio.create_task``), and one never awaited gets Python's usual warning.

Cancelling the awaiting task withdraws the request in keel: a lock wait and a
pool batch are cancelled by their tokens, and what a call obtained after the
task went away (a job, a guard, a mutation) is given back.

    async with keel.aio.lock(locks, "source-1", timeout=2.0):
        ...
    guard = await keel.aio.acquire(locks, "source-1")
    results = await keel.aio.run(pool, fetch, scopes, key=lambda s: s.source)

    queue = keel.aio.AsyncQueue(keel.Queue(path))
    job = await queue.dequeue(["mail"], worker="w1")     # released if the task is cancelled
    await queue.complete(job["id"], job["token"], {"sent": True})
    async with keel.aio.worker(keel_queue, {"mail": send_mail}):  # async def handlers
        ...                                                       # stopped without blocking the loop
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Generator,
    Iterable,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
    overload,
)

from keel._keel import (
    CancellationToken,
    Drive,
    Journal,
    KeyedLocks,
    LockGuard,
    Mutation,
    Operations,
    Queue,
    SyncPool,
    TaskContext,
    Worker,
)
from keel.types import Enqueued, JobRecord, JobState, Json, JournalStatus, Key, OpClaim, OpRecord, OpState
from keel.types import RecoveryReport, ResetReport, StopReport, WorkerStats

T = TypeVar("T")
_Item = TypeVar("_Item")
_Prepared = TypeVar("_Prepared")
_Result = TypeVar("_Result")

__all__ = [
    "AsyncDrive",
    "AsyncJournal",
    "AsyncOperations",
    "AsyncQueue",
    "AsyncWorker",
    "acquire",
    "executor",
    "lock",
    "pipeline",
    "run",
    "run_blocking",
    "set_executor",
    "worker",
]

_executor_lock = threading.Lock()
_executor: Optional[concurrent.futures.ThreadPoolExecutor] = None


def executor() -> concurrent.futures.ThreadPoolExecutor:
    """keel.aio's one executor: at most ``min(32, CPUs + 4)`` threads, made on
    first use and shared by every loop (a lock wait holds one thread while it
    waits). Replace it with :func:`set_executor`."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="keel-aio")
        return _executor


def set_executor(replacement: concurrent.futures.ThreadPoolExecutor) -> None:
    """Runs keel.aio's blocking calls on ``replacement`` from now on."""
    global _executor
    with _executor_lock:
        _executor = replacement


async def run_blocking(call: Callable[[], T], *, give_back: Optional[Callable[[T], None]] = None) -> T:
    """Runs the blocking ``call`` on :func:`executor` and returns its result.

    If the awaiting task is cancelled first, a call not yet started never
    starts, and one already running gets ``give_back(result)`` instead when it
    returns, so nothing it obtained is stranded.
    """
    done = executor().submit(call)
    try:
        return await asyncio.wrap_future(done)
    except asyncio.CancelledError:
        if give_back is not None:
            def hand_back(finished: "concurrent.futures.Future[T]") -> None:
                if not finished.cancelled() and finished.exception() is None:
                    give_back(finished.result())

            done.add_done_callback(hand_back)
        raise


def _release(guard: Optional[LockGuard]) -> None:
    if guard is not None:
        guard.release()


async def acquire(locks: KeyedLocks, key: Key, *, timeout: Optional[float] = None,
                  shared: bool = False) -> LockGuard:
    """Takes ``key`` in ``locks`` without blocking the event loop; raises
    :class:`keel.Timeout` after ``timeout`` seconds. Cancelling the task
    withdraws the request in keel at once (its cancellation token): no
    thread stays queued for the key, and a key granted meanwhile is given
    back."""
    token = CancellationToken()
    try:
        return await run_blocking(lambda: locks.lock(key, timeout=timeout, shared=shared, cancel=token),
                                  give_back=_release)
    except asyncio.CancelledError:
        token.cancel()
        raise


class _LockRequest:
    """``await`` it for a :class:`LockGuard`, or use it with ``async with``."""

    def __init__(self, locks: KeyedLocks, key: Key, timeout: Optional[float], shared: bool):
        self._locks, self._key, self._timeout, self._shared = locks, key, timeout, shared
        self._guard: Optional[LockGuard] = None

    def __await__(self) -> Generator[Any, None, LockGuard]:
        return acquire(self._locks, self._key, timeout=self._timeout, shared=self._shared).__await__()

    async def __aenter__(self) -> LockGuard:
        self._guard = await acquire(self._locks, self._key, timeout=self._timeout, shared=self._shared)
        return self._guard

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._guard is not None:
            self._guard.release()
            self._guard = None

    def __repr__(self) -> str:
        return f"<keel.aio.lock {self._key!r} shared={self._shared} held={self._guard is not None}>"


def lock(locks: KeyedLocks, key: Key, *, timeout: Optional[float] = None, shared: bool = False) -> _LockRequest:
    """``async with keel.aio.lock(locks, key):``, or ``await`` it for a guard
    (lazy: nothing is asked for until then). For ``create_task`` use
    :func:`acquire`, a coroutine."""
    return _LockRequest(locks, key, timeout, shared)


class AsyncOperations:
    """:class:`keel.Operations` with coroutine methods (the loop never blocks)."""

    def __init__(self, operations: Operations) -> None:
        self.sync = operations

    def __repr__(self) -> str:
        return f"<keel.aio.AsyncOperations of {self.sync!r}>"

    async def close(self) -> None:
        """Closes the Operations off the loop (see ``keel.Operations.close``)."""
        await run_blocking(self.sync.close)

    @property
    def closed(self) -> bool:
        return self.sync.closed

    async def __aenter__(self) -> "AsyncOperations":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        """``async with keel.aio.AsyncOperations(...) as x:`` closes it when the block ends."""
        await self.close()

    async def ready(self, item: str, ops: Sequence[str]) -> List[OpRecord]:
        return await run_blocking(lambda: self.sync.ready(item, ops))

    async def next(self, op: str, limit: int = 100) -> List[OpRecord]:
        return await run_blocking(lambda: self.sync.next(op, limit))

    async def claim(self, op: str, limit: int = 1, *, worker: str, lease: float = 30.0) -> List[OpClaim]:
        return await run_blocking(lambda: self.sync.claim(op, limit, worker=worker, lease=lease))

    async def update(self, item: str, op: str, state: OpState, message: str = "", *,
                     enable: Sequence[str] = (), token: Optional[int] = None) -> OpRecord:
        return await run_blocking(lambda: self.sync.update(item, op, state, message, enable=list(enable), token=token))

    async def error(self, item: str, op: str, message: str, *, token: Optional[int] = None) -> OpRecord:
        return await run_blocking(lambda: self.sync.error(item, op, message, token=token))

    async def states(self, item: str) -> List[OpRecord]:
        return await run_blocking(lambda: self.sync.states(item))

    async def list(self, op: str, *, state: Optional[OpState] = None, limit: int = 100) -> List[OpRecord]:
        return await run_blocking(lambda: self.sync.list(op, state=state, limit=limit))


class AsyncQueue:
    """:class:`keel.Queue` with coroutine methods (the loop never blocks).

    A ``dequeue`` whose awaiting task was cancelled releases the job it
    obtained, so it is not stranded until its lease ends.
    """

    def __init__(self, queue: Queue) -> None:
        self.sync = queue

    def __repr__(self) -> str:
        return f"<keel.aio.AsyncQueue of {self.sync!r}>"

    async def close(self) -> None:
        """Closes the Queue off the loop (see ``keel.Queue.close``)."""
        await run_blocking(self.sync.close)

    @property
    def closed(self) -> bool:
        return self.sync.closed

    async def __aenter__(self) -> "AsyncQueue":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        """``async with keel.aio.AsyncQueue(...) as x:`` closes it when the block ends."""
        await self.close()

    async def enqueue(self, kind: str, payload: Json = None, *, priority: int = 5, run_at: Optional[float] = None,
                      delay: Optional[float] = None, max_attempts: int = 20,
                      unique_key: Optional[str] = None) -> Enqueued:
        return await run_blocking(lambda: self.sync.enqueue(
            kind, payload, priority=priority, run_at=run_at, delay=delay, max_attempts=max_attempts,
            unique_key=unique_key))

    async def dequeue(self, kinds: Sequence[str], *, worker: str, lease: float = 30.0) -> Optional[JobRecord]:
        def give_back(job: Optional[JobRecord]) -> None:
            if job is not None:
                self.sync.release(job["id"], job["token"])

        return await run_blocking(lambda: self.sync.dequeue(kinds, worker=worker, lease=lease), give_back=give_back)

    async def heartbeat(self, id: int, token: int, *, lease: float = 30.0) -> float:
        return await run_blocking(lambda: self.sync.heartbeat(id, token, lease=lease))

    async def complete(self, id: int, token: int, result: Json = None) -> JobRecord:
        return await run_blocking(lambda: self.sync.complete(id, token, result))

    async def fail(self, id: int, token: int, error: str, *, retryable: bool = True) -> JobRecord:
        return await run_blocking(lambda: self.sync.fail(id, token, error, retryable=retryable))

    async def release(self, id: int, token: int) -> JobRecord:
        return await run_blocking(lambda: self.sync.release(id, token))

    async def cancel(self, id: int, reason: str = "") -> JobRecord:
        return await run_blocking(lambda: self.sync.cancel(id, reason))

    async def retry(self, id: int) -> JobRecord:
        return await run_blocking(lambda: self.sync.retry(id))

    async def get(self, id: int) -> JobRecord:
        return await run_blocking(lambda: self.sync.get(id))

    async def list(self, kind: str, *, state: Optional[JobState] = None, limit: int = 100) -> List[JobRecord]:
        return await run_blocking(lambda: self.sync.list(kind, state=state, limit=limit))

    async def counts(self) -> Dict[str, Dict[JobState, int]]:
        return await run_blocking(self.sync.counts)

    async def reset_expired(self) -> ResetReport:
        return await run_blocking(self.sync.reset_expired)

    async def cleanup(self, retention: float) -> int:
        return await run_blocking(lambda: self.sync.cleanup(retention))


class AsyncJournal:
    """:class:`keel.Journal` with coroutine forms of its waiting calls.

    ``m = await journal.begin("add")`` waits for the root's lock off the loop;
    the mutation's own calls are file operations on the caller's thread, or
    ``await journal.commit(m)`` / ``rollback(m)`` to run its final fsyncs off it.
    """

    def __init__(self, journal: Journal) -> None:
        self.sync = journal

    def __repr__(self) -> str:
        return f"<keel.aio.AsyncJournal of {self.sync!r}>"

    async def close(self) -> None:
        """Closes the Journal off the loop (see ``keel.Journal.close``)."""
        await run_blocking(self.sync.close)

    @property
    def closed(self) -> bool:
        return self.sync.closed

    async def __aenter__(self) -> "AsyncJournal":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        """``async with keel.aio.AsyncJournal(...) as x:`` closes it when the block ends."""
        await self.close()

    async def begin(self, operation: str, details: str = "") -> Mutation:
        return await run_blocking(lambda: self.sync.begin(operation, details),
                                  give_back=lambda mutation: mutation.rollback())

    async def try_begin(self, operation: str, details: str = "") -> Optional[Mutation]:
        def give_back(mutation: Optional[Mutation]) -> None:
            if mutation is not None:
                mutation.rollback()

        return await run_blocking(lambda: self.sync.try_begin(operation, details), give_back=give_back)

    async def commit(self, mutation: Mutation) -> None:
        await run_blocking(mutation.commit)

    async def rollback(self, mutation: Mutation) -> None:
        await run_blocking(mutation.rollback)

    async def recover(self) -> RecoveryReport:
        return await run_blocking(self.sync.recover)

    async def status(self) -> JournalStatus:
        return await run_blocking(self.sync.status)

    async def resolve(self, seq: int) -> str:
        return await run_blocking(lambda: self.sync.resolve(seq))


class AsyncDrive:
    """:class:`keel.Drive` with every method a coroutine: ``await
    adrive.get(id)``, ``await adrive.set_data(id, data)`` (same arguments and
    results as the Drive's; each runs off the loop). Item iterators come back
    as lists."""

    _LISTS = frozenset({"children", "by_type", "walk"})

    def __init__(self, drive: Drive) -> None:
        self.sync = drive

    def __repr__(self) -> str:
        return f"<keel.aio.AsyncDrive of {self.sync!r}>"

    async def close(self) -> None:
        """Closes the Drive off the loop (see ``keel.Drive.close``)."""
        await run_blocking(self.sync.close)

    @property
    def closed(self) -> bool:
        return self.sync.closed

    async def __aenter__(self) -> "AsyncDrive":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        """``async with keel.aio.AsyncDrive(...) as x:`` closes it when the block ends."""
        await self.close()

    def as_user(self, user: str, roles: Sequence[str] = ()) -> "AsyncDrive":
        return AsyncDrive(self.sync.as_user(user, list(roles)))

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.sync, name)
        if not callable(method) or name.startswith("_"):
            raise AttributeError(name)
        as_list = name in self._LISTS

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await run_blocking(lambda: list(method(*args, **kwargs)) if as_list else method(*args, **kwargs))

        call.__name__ = call.__qualname__ = name
        call.__doc__ = method.__doc__
        return call


class AsyncWorker:
    """A :class:`keel.Worker` for asyncio hosts. ``async with`` it: leaving the
    block stops the worker off the loop, so coroutine handlers still running
    can finish on it (a plain ``with`` would block the very loop they need).

    ``.sync`` is the :class:`keel.Worker`; ``stop`` is its blocking stop.
    """

    def __init__(self, worker: Worker, stop_deadline: float) -> None:
        self.sync = worker
        self.stop_deadline = stop_deadline

    def __repr__(self) -> str:
        return f"<keel.aio.AsyncWorker kinds={self.kinds!r}>"

    @property
    def kinds(self) -> List[str]:
        return self.sync.kinds

    def stats(self) -> WorkerStats:
        return self.sync.stats()

    def stop(self, deadline: float = 30.0) -> StopReport:
        """The worker's blocking stop: never call it on the loop its handlers use."""
        return self.sync.stop(deadline)

    async def aclose(self, deadline: Optional[float] = None) -> StopReport:
        """Stops gracefully without blocking the loop (see :meth:`keel.Worker.stop`)."""
        wait = self.stop_deadline if deadline is None else deadline
        return await run_blocking(lambda: self.sync.stop(wait))

    async def __aenter__(self) -> "AsyncWorker":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()


HandlerSpec = Union[Callable[..., Any], Tuple[Callable[..., Any], int]]


def worker(queue: Queue, handlers: Mapping[str, HandlerSpec], *, loop: Optional[asyncio.AbstractEventLoop] = None,
           stop_deadline: float = 30.0, **options: Any) -> AsyncWorker:
    """Starts a :class:`keel.Worker` whose handlers may be ``async def``
    functions; ``async with keel.aio.worker(...):`` stops it on leaving
    (waiting up to ``stop_deadline`` seconds, off the loop).

    Coroutine handlers run on ``loop`` (default: the running loop), so they may
    await the host's own async clients; keel's handler thread waits for each
    without blocking the loop. Plain callables run on keel's threads as usual.
    ``options`` are :class:`keel.Worker`'s.
    """
    target = loop if loop is not None else asyncio.get_running_loop()

    def adapt(handler: Callable[..., Any]) -> Callable[[Any], Any]:
        if not asyncio.iscoroutinefunction(handler):
            return handler

        def run_on_loop(job: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(handler(job), target).result()

        return run_on_loop

    adapted: Dict[str, Any] = {}
    for kind, spec in handlers.items():
        if isinstance(spec, tuple):
            adapted[kind] = (adapt(spec[0]), spec[1])
        else:
            adapted[kind] = adapt(spec)
    return AsyncWorker(Worker(queue, adapted, **options), stop_deadline)


async def _cancellable(start: Callable[[CancellationToken], T]) -> T:
    """Runs ``start(token)`` off the loop; cancelling the awaiting task cancels the token."""
    token = CancellationToken()
    try:
        return await run_blocking(lambda: start(token))
    except asyncio.CancelledError:
        token.cancel()  # the batch returns at once; its running items are abandoned
        raise


@overload
async def run(pool: SyncPool, func: Callable[[_Item], _Result], items: Iterable[_Item], *,
              key: Optional[Callable[[_Item], Key]] = None, timeout: Optional[float] = None,
              singleflight: bool = False, progress: Optional[Callable[[int, int, int, Any], None]] = None,
              context: Literal[False] = False) -> List[Union[_Result, BaseException]]: ...


@overload
async def run(pool: SyncPool, func: Callable[[_Item, TaskContext], _Result], items: Iterable[_Item], *,
              key: Optional[Callable[[_Item], Key]] = None, timeout: Optional[float] = None,
              singleflight: bool = False, progress: Optional[Callable[[int, int, int, Any], None]] = None,
              context: Literal[True]) -> List[Union[_Result, BaseException]]: ...


async def run(pool: SyncPool, func: Callable[..., Any], items: Iterable[Any], *,
              key: Optional[Callable[[Any], Key]] = None, timeout: Optional[float] = None,
              singleflight: bool = False, progress: Optional[Callable[[int, int, int, Any], None]] = None,
              context: bool = False) -> List[Any]:
    """``pool.run(func, items, ...)`` without blocking the event loop.

    The callables run on the pool's threads as with ``pool.run``; results come
    back in input order with exceptions as values (so each result is the
    callable's return type or an exception). With ``context=True`` the
    callable takes ``(item, keel.TaskContext)``. Cancelling the awaiting task
    cancels the batch: items not started are cancelled, running ones abandoned.
    """
    listed = list(items)
    return await _cancellable(lambda token: pool.run(
        func, listed, key=key, timeout=timeout, singleflight=singleflight, progress=progress, cancel=token,
        context=context))


async def pipeline(pool: SyncPool, prepare: Callable[[_Item], _Prepared], items: Iterable[_Item],
                   commit: Callable[[_Prepared], _Result], *, window: Optional[int] = None,
                   stop_at_first_commit_failure: bool = False,
                   timeout: Optional[float] = None) -> List[Union[_Result, BaseException]]:
    """``pool.pipeline(prepare, items, commit, ...)`` without blocking the loop.

    Each result is ``commit``'s return value or the exception (of prepare or
    commit) in its item's place. ``commit`` runs on one executor thread (not the loop's), one item at a
    time, in input order. Cancelling the awaiting task stops the run; nothing
    more is committed.
    """
    listed = list(items)
    return await _cancellable(lambda token: pool.pipeline(
        prepare, listed, commit, window=window, stop_at_first_commit_failure=stop_at_first_commit_failure,
        timeout=timeout, cancel=token))

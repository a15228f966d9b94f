"""Awaitable forms of keel's blocking calls, for asyncio hosts.

Nothing here blocks the event loop: each blocking call runs on a thread of its own
(with the GIL released while it waits inside keel) and hands its result back to the
loop. If the awaiting task is cancelled, what the call obtained is given back — a
lock taken after the task went away is released at once, never leaked.

    async with keel.aio.lock(locks, "source-1", timeout=2.0):
        ...
    guard = await keel.aio.lock(locks, "source-1")
    results = await keel.aio.run(pool, fetch, scopes, key=lambda s: s.source)

    queue = keel.aio.AsyncQueue(keel.Queue(path))
    job = await queue.dequeue(["mail"], worker="w1")     # released if the task is cancelled
    await queue.complete(job["id"], job["token"], {"sent": True})
    worker = keel.aio.worker(keel_queue, {"mail": send_mail})  # async def handlers
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Generator, List, Optional, TypeVar, Union

from keel._keel import CancellationToken, KeyedLocks, LockGuard, Operations, Queue, SyncPool, Worker

T = TypeVar("T")

__all__ = ["AsyncOperations", "AsyncQueue", "lock", "pipeline", "run", "run_blocking", "worker"]


def _settle(future: "asyncio.Future[T]", result: Any, error: Optional[BaseException],
            give_back: Optional[Callable[[Any], None]]) -> None:
    if future.cancelled():
        if error is None and give_back is not None:
            give_back(result)
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def run_blocking(call: Callable[[], T], *, give_back: Optional[Callable[[T], None]] = None,
                 name: str = "keel-aio") -> "asyncio.Future[T]":
    """Runs the blocking ``call`` on a new thread; the future gets its result.

    ``give_back(result)`` is called instead if the future was cancelled (or its loop
    closed) before the result arrived, so resources are never stranded.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def work() -> None:
        result: Any = None
        error: Optional[BaseException] = None
        try:
            result = call()
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        try:
            loop.call_soon_threadsafe(_settle, future, result, error, give_back)
        except RuntimeError:  # the loop is closed: nobody will take the result
            if error is None and give_back is not None:
                give_back(result)

    threading.Thread(target=work, name=name, daemon=True).start()
    return future


class _LockRequest:
    """``await`` it for a :class:`LockGuard`, or use it with ``async with``."""

    def __init__(self, locks: KeyedLocks, key: Union[str, bytes], timeout: Optional[float], shared: bool):
        self._locks, self._key, self._timeout, self._shared = locks, key, timeout, shared
        self._guard: Optional[LockGuard] = None

    async def _acquire(self) -> LockGuard:
        token = CancellationToken()
        future = run_blocking(
            lambda: self._locks.lock(self._key, timeout=self._timeout, shared=self._shared, cancel=token),
            give_back=lambda guard: guard.release(),
            name="keel-aio-lock",
        )
        try:
            return await future
        except asyncio.CancelledError:
            # Withdraws the waiter in keel at once: no thread stays queued,
            # nobody queues behind it. A key granted meanwhile is given back.
            token.cancel()
            raise

    def __await__(self) -> Generator[Any, None, LockGuard]:
        return self._acquire().__await__()

    async def __aenter__(self) -> LockGuard:
        self._guard = await self._acquire()
        return self._guard

    async def __aexit__(self, *exc_info: Any) -> bool:
        if self._guard is not None:
            self._guard.release()
            self._guard = None
        return False


def lock(locks: KeyedLocks, key: Union[str, bytes], *, timeout: Optional[float] = None,
         shared: bool = False) -> _LockRequest:
    """Takes ``key`` in ``locks`` without blocking the event loop.

    Raises :class:`keel.Timeout` after ``timeout`` seconds and
    :class:`keel.WouldDeadlock` never (the waiting thread is always a fresh one).
    """
    return _LockRequest(locks, key, timeout, shared)


class _Awaitable:
    """Wraps a keel object so each of its blocking methods returns an awaitable."""

    _target: Any

    def __init__(self, target: Any) -> None:
        self._target = target

    def _call(self, name: str, *args: Any, give_back: Optional[Callable[[Any], None]] = None,
              **kwargs: Any) -> "asyncio.Future[Any]":
        method = getattr(self._target, name)
        return run_blocking(lambda: method(*args, **kwargs), give_back=give_back, name=f"keel-aio-{name}")


class AsyncOperations(_Awaitable):
    """:class:`keel.Operations` with awaitable methods (the event loop never blocks)."""

    def __init__(self, operations: Operations) -> None:
        super().__init__(operations)

    def ready(self, item: str, ops: Any) -> "asyncio.Future[Any]":
        return self._call("ready", item, ops)

    def next(self, op: str, limit: int = 100) -> "asyncio.Future[Any]":
        return self._call("next", op, limit)

    def claim(self, op: str, limit: int = 1, *, worker: str, lease: float = 30.0) -> "asyncio.Future[Any]":
        return self._call("claim", op, limit, worker=worker, lease=lease)

    def update(self, item: str, op: str, state: str, message: str = "", **kwargs: Any) -> "asyncio.Future[Any]":
        return self._call("update", item, op, state, message, **kwargs)

    def error(self, item: str, op: str, message: str, **kwargs: Any) -> "asyncio.Future[Any]":
        return self._call("error", item, op, message, **kwargs)

    def states(self, item: str) -> "asyncio.Future[Any]":
        return self._call("states", item)


class AsyncQueue(_Awaitable):
    """:class:`keel.Queue` with awaitable methods (the event loop never blocks).

    A ``dequeue`` whose awaiting task was cancelled releases the job it obtained, so
    it is not stranded until its lease ends.
    """

    def __init__(self, queue: Queue) -> None:
        super().__init__(queue)

    def enqueue(self, kind: str, payload: Any = None, **kwargs: Any) -> "asyncio.Future[Any]":
        return self._call("enqueue", kind, payload, **kwargs)

    def dequeue(self, kinds: Any, *, worker: str, lease: float = 30.0) -> "asyncio.Future[Any]":
        def give_back(job: Any) -> None:
            if job is not None:
                self._target.release(job["id"], job["token"])

        return self._call("dequeue", kinds, worker=worker, lease=lease, give_back=give_back)

    def heartbeat(self, id: int, token: int, *, lease: float = 30.0) -> "asyncio.Future[Any]":
        return self._call("heartbeat", id, token, lease=lease)

    def complete(self, id: int, token: int, result: Any = None) -> "asyncio.Future[Any]":
        return self._call("complete", id, token, result)

    def fail(self, id: int, token: int, error: str, *, retryable: bool = True) -> "asyncio.Future[Any]":
        return self._call("fail", id, token, error, retryable=retryable)

    def release(self, id: int, token: int) -> "asyncio.Future[Any]":
        return self._call("release", id, token)

    def cancel(self, id: int, reason: str = "") -> "asyncio.Future[Any]":
        return self._call("cancel", id, reason)

    def get(self, id: int) -> "asyncio.Future[Any]":
        return self._call("get", id)

    def counts(self) -> "asyncio.Future[Any]":
        return self._call("counts")

    def reset_expired(self) -> "asyncio.Future[Any]":
        return self._call("reset_expired")

    def cleanup(self, retention: float) -> "asyncio.Future[Any]":
        return self._call("cleanup", retention)


def worker(queue: Queue, handlers: Any, *, loop: Optional[asyncio.AbstractEventLoop] = None,
           **options: Any) -> Worker:
    """A :class:`keel.Worker` whose handlers may be ``async def`` functions.

    Coroutine handlers run on ``loop`` (default: the running loop), so they may
    await the host's own async clients; keel's handler thread waits for each
    without blocking the loop. Plain callables run on keel's threads as usual.
    Stop the worker with ``await keel.aio.run_blocking(lambda: w.stop(30))``:
    calling ``stop`` on the loop itself would block the loop the handlers need.
    """
    target = loop if loop is not None else asyncio.get_running_loop()

    def adapt(handler: Callable[..., Any]) -> Callable[[Any], Any]:
        if not asyncio.iscoroutinefunction(handler):
            return handler

        def run_on_loop(job: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(handler(job), target).result()

        return run_on_loop

    adapted = {}
    for kind, spec in handlers.items():
        if isinstance(spec, tuple):
            adapted[kind] = (adapt(spec[0]), spec[1])
        else:
            adapted[kind] = adapt(spec)
    return Worker(queue, adapted, **options)


async def _cancellable(start: Callable[[CancellationToken], T], name: str) -> T:
    """Runs ``start(token)`` off the loop; cancelling the awaiting task cancels the token."""
    token = CancellationToken()
    future = run_blocking(lambda: start(token), name=name)
    try:
        return await future
    except asyncio.CancelledError:
        token.cancel()  # the batch returns at once; its running items are abandoned
        raise


async def run(pool: SyncPool, func: Callable[[Any], Any], items: Any, **options: Any) -> List[Any]:
    """``pool.run(func, items, **options)`` without blocking the event loop.

    The callables run on the pool's threads as with ``pool.run``; results come back in
    input order with exceptions as values. Cancelling the awaiting task cancels the
    batch: items not started are cancelled, running ones are abandoned.
    """
    items = list(items)
    return await _cancellable(lambda token: pool.run(func, items, cancel=token, **options), "keel-aio-pool")


async def pipeline(pool: SyncPool, prepare: Callable[[Any], Any], items: Any, commit: Callable[[Any], Any],
                   **options: Any) -> List[Any]:
    """``pool.pipeline(prepare, items, commit, **options)`` without blocking the event loop.

    ``commit`` runs on one helper thread (not the loop's), one item at a time, in input
    order. Cancelling the awaiting task stops the run; nothing more is committed.
    """
    items = list(items)
    return await _cancellable(
        lambda token: pool.pipeline(prepare, items, commit, cancel=token, **options), "keel-aio-pipeline")

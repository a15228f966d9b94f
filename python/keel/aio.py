"""Awaitable forms of keel's blocking calls, for asyncio hosts.

Nothing here blocks the event loop: each blocking call runs on a thread of its own
(with the GIL released while it waits inside keel) and hands its result back to the
loop. If the awaiting task is cancelled, what the call obtained is given back — a
lock taken after the task went away is released at once, never leaked.

    async with keel.aio.lock(locks, "source-1", timeout=2.0):
        ...
    guard = await keel.aio.lock(locks, "source-1")
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Generator, Optional, TypeVar, Union

from keel._keel import KeyedLocks, LockGuard

T = TypeVar("T")

__all__ = ["lock", "run_blocking"]


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

    def _acquire(self) -> "asyncio.Future[LockGuard]":
        return run_blocking(
            lambda: self._locks.lock(self._key, timeout=self._timeout, shared=self._shared),
            give_back=lambda guard: guard.release(),
            name="keel-aio-lock",
        )

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

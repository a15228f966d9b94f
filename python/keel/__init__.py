"""keel: the reliability parts background sync and ingest services keep hand-rolling.

One Rust core, used here from Python. Every call that can block releases the GIL.

- :class:`KeyedLocks`: one lock per key while anyone holds or waits for it, and no
  entry left behind when nobody does.
- :class:`SyncPool`: blocking callables N at a time on keel's threads, one key at a
  time per key, results in order with exceptions as values, timeouts that never
  starve the pool, and an ordered prepare/commit ``pipeline``.
- :class:`Drive`: a tree of named items in its own LMDB file; typed items carry
  versioned JSON data checked by JSON Schema; per-item permissions enforced by
  ``drive.as_user(...)``; every write durable when it returns.
- :class:`Journal`: crash-safe changes to a directory tree. ``with
  journal.mutation("add", details) as m:`` commits when the block succeeds and
  rolls back when it raises; after any crash the tree is exactly as before or
  exactly as after the mutation.
- :class:`Operations`: durable per-item operation states (READY, WORKING, OK,
  FAILED), claimed once each with a lease and a token.
- :class:`Queue` and :class:`Worker`: a durable job queue (priorities, schedules,
  unique keys, retries with backoff, fencing tokens) and a worker running Python
  callables as handlers, each kind at its own concurrency.

Errors are :class:`KeelError` subclasses, one per kind, that also derive from the
matching builtin: ``NotFound`` is a ``LookupError``, ``InvalidArgument`` a
``ValueError``, ``Timeout`` a ``TimeoutError``, ``PermissionDenied`` a
``PermissionError``, ``IoError`` and ``StorageFull`` are ``OSError``.

keel's events (one per meaningful step, with its duration) go to the standard
``logging`` module under ``keel.locks``, ``keel.pool``, ``keel.journal``,
``keel.drive``, ``keel.lmdb`` and ``keel.ops``: configure ``logging`` and they
appear. Levels are re-read whenever ``logging`` changes one (``setLevel``,
``basicConfig``, ``dictConfig``, ``logging.disable``); queued events are handed
to ``logging`` at interpreter exit; :func:`flush_logs` waits until every event
so far has been handed over. A record carries the event's own time, Rust file,
line and module, and its fields as ``record.keel_fields`` (a dict; the event's
name is ``record.keel_event``), for structured formatters.
"""

import atexit as _atexit
import logging as _logging

from keel._keel import (
    AlreadyExists,
    Busy,
    CancellationToken,
    Cancelled,
    Closed,
    Conflict,
    Corrupt,
    DRIVE_ROOT,
    Drive,
    DriveBatch,
    FileNotFound,
    InvalidArgument,
    IoError,
    ItemIterator,
    JobContext,
    Journal,
    KeelError,
    KeyedLocks,
    LockGuard,
    Mutation,
    NotFound,
    Operations,
    Panic,
    PermissionDenied,
    Queue,
    ReadGuard,
    StorageFull,
    SyncPool,
    TaskContext,
    Timeout,
    Unsupported,
    Worker,
    WouldDeadlock,
    __version__,
    flush_logs,
    stats,
    verify_file,
)
from keel import _keel, types
from keel.types import Item, ItemId, JobRecord, JobState, Json, Key, OpRecord, OpState, PathArg, Permissions

__all__ = [
    "AlreadyExists",
    "Busy",
    "CancellationToken",
    "Cancelled",
    "Closed",
    "Conflict",
    "Corrupt",
    "DRIVE_ROOT",
    "Drive",
    "DriveBatch",
    "FileNotFound",
    "InvalidArgument",
    "IoError",
    "Item",
    "ItemId",
    "ItemIterator",
    "JobRecord",
    "JobState",
    "Json",
    "JobContext",
    "JobError",
    "Journal",
    "KeelError",
    "Key",
    "KeyedLocks",
    "LockGuard",
    "Mutation",
    "NotFound",
    "OpRecord",
    "OpState",
    "Operations",
    "Panic",
    "PathArg",
    "PermissionDenied",
    "Permissions",
    "Queue",
    "ReadGuard",
    "StorageFull",
    "SyncPool",
    "TaskContext",
    "Timeout",
    "Unsupported",
    "Worker",
    "WouldDeadlock",
    "__version__",
    "flush_logs",
    "stats",
    "types",
    "verify_file",
]


class JobError(Exception):
    """Raise from a job handler to fail the attempt with ``message``.

    With ``retryable=False`` the job is dead at once instead of retried (any
    exception with a false ``retryable`` attribute does the same).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable

def _follow_logging_levels() -> None:
    """Re-read keel's levels whenever ``logging`` changes one: every level
    change resets the logger manager's cache, so keel hooks that reset."""
    manager = _logging.Logger.manager
    original = getattr(manager, "_clear_cache", None)
    if original is None or getattr(original, "_keel_hook", False):
        return

    def _clear_cache() -> None:
        original()
        _keel._refresh_log_levels()

    _clear_cache._keel_hook = True  # type: ignore[attr-defined]
    setattr(manager, "_clear_cache", _clear_cache)


_follow_logging_levels()
# Registered after the native module's exit hook, so it runs before it
# (atexit is last in, first out): queued events reach logging first.
_atexit.register(flush_logs)

# A library's loggers stay silent until the host configures logging (no
# "lastResort" output on stderr); keel's events then flow to its handlers.
_logging.getLogger("keel").addHandler(_logging.NullHandler())

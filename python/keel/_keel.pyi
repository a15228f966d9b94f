"""Type stubs for the native module keel._keel (re-exported by ``keel``).

The shapes of returned dicts live in :mod:`keel.types` (a real module, so
host code can import them); every class here is final (the native classes
cannot be subclassed).

Times are seconds, as floats, both ways: a point in time is a Unix time like
``time.time()`` (``run_at``, ``lease_until``, ``created_at``, an item's
``created``), a duration a number of seconds (``lease``, ``timeout``,
``oldest_ready_age``). Keys keep the core's names; a time that is "none"
(``lease_until`` of a record nobody holds, ``finished_at`` of a job not
finished) is None.

``close()``: ``Drive``, ``Queue``, ``Operations``, ``Journal`` and
``SyncPool`` are context managers that close on leaving the block. After
``close()`` every call raises :class:`Closed` (closing twice is harmless),
and the file, database connections or journal are released once calls in
flight return. Work already begun keeps its own hold and ends as it would
have: an open ``DriveBatch`` commits or undoes at the end of its block, a
``Mutation`` commits or rolls back, a ``ReadGuard`` releases, a running
``Worker`` stops. A drive's ``as_user`` views, iterators and batches raise
:class:`Closed` once the drive is closed.
"""

from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Dict, Iterable, List, Literal, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union, final, overload

from typing_extensions import disjoint_base

from keel.types import (
    Data,
    DriveStats,
    Enqueued,
    Handler,
    Item,
    ItemId,
    JobRecord,
    JobState,
    Json,
    JournalStats,
    JournalStatus,
    Key,
    LockStats,
    OpClaim,
    OpRecord,
    OpState,
    PathArg,
    Permissions,
    PoolStats,
    RecoveryReport,
    ResetReport,
    StopReport,
    Version,
    WorkerStats,
)

_T = TypeVar("_T")
_R = TypeVar("_R")

__version__: str

class KeelError(Exception):
    """The base of every keel error. ``code`` is the stable number of its kind."""

    code: int

class InvalidArgument(KeelError, ValueError): ...
class NotFound(KeelError, LookupError): ...
class AlreadyExists(KeelError): ...
class Conflict(KeelError): ...
class Busy(KeelError): ...
class Timeout(KeelError, TimeoutError): ...
class Cancelled(KeelError): ...
class PermissionDenied(KeelError, PermissionError): ...
class Corrupt(KeelError): ...
class StorageFull(KeelError, OSError): ...
class IoError(KeelError, OSError): ...
class WouldDeadlock(KeelError, RuntimeError): ...
class Closed(KeelError): ...
class Panic(KeelError): ...
class Unsupported(KeelError): ...

@final
class LockGuard:
    """A held key (or set of keys); release with ``release()`` or ``with``."""

    @property
    def locked(self) -> bool: ...
    @property
    def token(self) -> Optional[int]:
        """PostgreSQL locks' fencing token (larger for every later holder); None in-process."""
    def check(self) -> None:
        """Raises keel.Closed once released or once the PostgreSQL session holding the keys was lost."""
    def release(self) -> None: ...
    def __enter__(self) -> "LockGuard": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
        /,
    ) -> None: ...

@final
class KeyedLocks:
    """One lock per key while anyone holds or waits for it; no entry left behind.

    ``KeyedLocks("postgresql://...")``: the same locks across processes and hosts.
    """

    def __new__(cls, name: Optional[str] = None) -> "KeyedLocks": ...
    def lock(
        self,
        key: Key,
        *,
        timeout: Optional[float] = None,
        shared: bool = False,
        cancel: Optional["CancellationToken"] = None,
    ) -> LockGuard: ...
    def try_lock(self, key: Key, *, shared: bool = False) -> Optional[LockGuard]: ...
    def lock_many(
        self,
        keys: Sequence[Key],
        *,
        timeout: Optional[float] = None,
        shared: bool = False,
        cancel: Optional["CancellationToken"] = None,
    ) -> LockGuard: ...
    def stats(self) -> LockStats: ...
    def __len__(self) -> int: ...

@final
class CancellationToken:
    """Tells a running ``SyncPool.run`` or ``pipeline`` to stop; ``cancel()`` from any thread."""

    def __new__(cls) -> "CancellationToken": ...
    def cancel(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...

@final
class TaskContext:
    """Passed as the second argument with ``pool.run(..., context=True)``."""

    @property
    def index(self) -> int: ...
    @property
    def first_of_key(self) -> bool:
        """True for the first item of its key in the batch (the one fetch per source)."""
    @property
    def cancelled(self) -> bool:
        """True once the callable should stop (timed out, cancelled, shut down)."""
    @property
    def remaining(self) -> Optional[float]:
        """Seconds left before the deadline, or None."""
    def wait_cancelled(self, seconds: float) -> bool:
        """Waits up to ``seconds`` (GIL released); True if the callable should stop."""

@final
class SyncPool:
    """Blocking callables N at a time on keel's threads; items of one key never at once.

    Results come back in input order with exceptions as values. A callable past its
    timeout is reported ``keel.Timeout`` at once and its thread abandoned (never
    killed); its key stays busy until it returns. ``shutdown()`` never waits.
    """

    def __new__(
        cls,
        max_concurrency: int = 10,
        *,
        timeout: Optional[float] = None,
        max_abandoned: int = 64,
        name: Optional[str] = None,
        failure_backoff: Optional[Tuple[float, float]] = None,
    ) -> "SyncPool": ...
    @property
    def max_concurrency(self) -> int: ...
    def run(
        self,
        func: Callable[..., Any],
        items: Iterable[Any],
        *,
        key: Optional[Callable[[Any], Key]] = None,
        timeout: Optional[float] = None,
        singleflight: bool = False,
        progress: Optional[Callable[[int, int, int, Any], None]] = None,
        cancel: Optional[CancellationToken] = None,
        context: bool = False,
        bypass_backoff: bool = False,
    ) -> List[Any]: ...
    def pipeline(
        self,
        prepare: Callable[[Any], Any],
        items: Iterable[Any],
        commit: Callable[[Any], Any],
        *,
        window: Optional[int] = None,
        stop_at_first_commit_failure: bool = False,
        timeout: Optional[float] = None,
        cancel: Optional[CancellationToken] = None,
    ) -> List[Any]: ...
    def shutdown(self) -> None: ...
    def close(self) -> None:
        """The same as ``shutdown()`` (``with keel.SyncPool(...) as pool:`` calls it)."""
    @property
    def closed(self) -> bool:
        """Whether ``shutdown()`` or ``close()`` was called."""
    def __enter__(self) -> "SyncPool": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
        /,
    ) -> None: ...
    def stats(self) -> PoolStats: ...

DRIVE_ROOT: str
"""The id of the drive's virtual root (32 zeros)."""


@final
class ItemIterator:
    """Item dicts, fetched a page at a time with the GIL released."""

    def __iter__(self) -> "ItemIterator": ...
    def __next__(self) -> Item: ...


@final
class Mutation:
    """Changes to a journal's tree that end exactly as before or as after.

    A context manager: commits when the block succeeds, rolls back when it raises.
    """

    @property
    def seq(self) -> int: ...
    @property
    def touched(self) -> List[str]: ...
    @property
    def active(self) -> bool: ...
    def write(self, path: str, data: Data) -> int: ...
    def write_many(
        self, files: Union[Mapping[str, Union[bytes, bytearray]], Iterable[Tuple[str, Union[bytes, bytearray]]]]
    ) -> None:
        """Writes several files at once: one record write for their snapshots, each changed folder fsynced once."""
    def symlink(self, path: str, target: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def rename(self, source: str, target: str) -> None: ...
    def create_dir(self, path: str) -> None: ...
    def declare(self, paths: Sequence[str], *, copy: bool = False) -> None: ...
    def staging_dir(self) -> Path: ...
    def publish(self, into: str = "") -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def __enter__(self) -> "Mutation": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
        /,
    ) -> None: ...

@disjoint_base
class Drive:
    """A tree of named items in its own LMDB file, durable on return."""

    def __new__(
        cls,
        path: PathArg,
        *,
        durable: bool = True,
        initial_map_size: Optional[int] = None,
        allow_types_without_schema: bool = True,
    ) -> "Drive": ...
    def as_user(self, user: str, roles: Sequence[str] = ...) -> "Drive": ...
    @property
    def user(self) -> str: ...
    @property
    def checked(self) -> bool: ...
    @property
    def path(self) -> str: ...
    def get(self, id: ItemId, type: Optional[str] = None) -> Item: ...
    def resolve(self, path: str) -> List[Item]: ...
    def at_path(self, path: str) -> Item: ...
    def path_of(self, id: ItemId) -> str: ...
    def children(
        self, parent: Optional[ItemId] = None, *, after: Optional[str] = None, limit: Optional[int] = None
    ) -> ItemIterator: ...
    def by_type(self, type: str, *, after: Optional[ItemId] = None, limit: Optional[int] = None) -> ItemIterator: ...
    def walk(self, top: Optional[ItemId] = None, *, order: str = "children_first") -> ItemIterator: ...
    def create(
        self, parent: Optional[ItemId], name: str, *, type: Optional[str] = None,
        permissions: Optional[Permissions] = None,
    ) -> Item: ...
    def create_at(
        self, parent_path: str, name: str, *, type: Optional[str] = None,
        permissions: Optional[Permissions] = None,
    ) -> Item: ...
    def make_path(self, path: str) -> List[Item]: ...
    def move_item(self, id: ItemId, new_parent: Optional[ItemId], new_name: Optional[str] = None) -> Item: ...
    def rename(self, id: ItemId, new_name: str) -> Item: ...
    def delete(self, id: ItemId) -> int: ...
    def set_permissions(self, id: Optional[ItemId], permissions: Permissions) -> Item: ...
    def set_data(self, id: ItemId, data: Any, version: Optional[str] = None, *, replace: bool = False) -> str: ...
    def get_data(self, id: ItemId, version: Optional[str] = None) -> Tuple[str, Any]: ...
    def versions(self, id: ItemId) -> List[Version]: ...
    def delete_data(self, id: ItemId, version: str) -> Optional[str]: ...
    def set_schema(
        self, type: str, schema: Dict[str, Any], version: int,
        migrate: Optional[Callable[[Item, str, Any, Optional[int], int], Any]] = None,
    ) -> bool: ...
    def schema(self, type: str) -> Optional[Tuple[int, Dict[str, Any]]]: ...
    def apply(self, writes: Sequence[Dict[str, Any]]) -> List[Any]: ...
    def batch(self) -> "DriveBatch": ...
    def verify(self) -> Dict[str, Any]:
        """Checks the whole file in a child process: {"file", "ok", "tables", "problems", "more_problems"}."""
        ...
    def backup(self, dest: PathArg) -> None: ...
    def stats(self) -> DriveStats: ...
    def close(self) -> None:
        """Releases the drive file; on an ``as_user`` view, closes that view only (a batch raises keel.InvalidArgument)."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    def __enter__(self) -> "Drive":
        """``with keel.Drive(...) as x:`` closes it when the block ends."""
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
        /,
    ) -> None: ...

@final
class DriveBatch(Drive):
    """Calls in one transaction: ``with drive.batch() as b: ...``. Every
    ``Drive`` call runs on ``b`` inside the batch (``as_user``, ``batch`` and
    ``backup`` raise keel.InvalidArgument); only the thread that entered the
    block may use it (others get keel.WouldDeadlock)."""

    def __enter__(self) -> "DriveBatch": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException] = None,
        tb: Optional[TracebackType] = None,
        /,
    ) -> None: ...

@final
class ReadGuard:
    """The shared lock of a journal's root; no mutation runs while it is held."""

    def release(self) -> None: ...
    def __enter__(self) -> "ReadGuard": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
        /,
    ) -> None: ...

@final
class Journal:
    """A managed directory tree changed only through crash-safe mutations."""

    def __new__(cls, root: PathArg) -> "Journal": ...
    @property
    def root(self) -> Path: ...
    def begin(self, operation: str, details: str = "", *, timeout: Optional[float] = None) -> Mutation: ...
    def try_begin(self, operation: str, details: str = "") -> Optional[Mutation]: ...
    def mutation(self, operation: str, details: str = "", *, timeout: Optional[float] = None) -> Mutation: ...
    def read(self, *, timeout: Optional[float] = None) -> ReadGuard: ...
    def recover(self) -> RecoveryReport: ...
    def last_recovery(self) -> Optional[Dict[str, Any]]: ...
    def status(self) -> JournalStatus: ...
    @staticmethod
    def inspect(root: PathArg) -> Dict[str, Any]: ...
    def resolve(self, seq: int) -> str: ...
    def stats(self) -> JournalStats: ...
    def close(self) -> None:
        """Releases the journal; a mutation or read guard already begun ends as it would have."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    def __enter__(self) -> "Journal":
        """``with keel.Journal(...) as x:`` closes it when the block ends."""
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
        /,
    ) -> None: ...


@final
class Operations:
    """Per-item operation states in an LMDB file (READY, WORKING, OK, FAILED).

    ``claim`` hands each item to exactly one claimer across threads and processes,
    with a token; an update with a stale token raises :class:`Conflict`. Every call
    is durable when it returns. A WORKING record whose lease ended reads with
    ``"expired": True`` and no longer guards its item; after ``max_lapses`` lapsed
    claims in a row it is FAILED.
    """

    def __new__(cls, path: PathArg, *, max_lapses: int = 5) -> "Operations": ...
    def ready(self, item: str, ops: Sequence[str]) -> List[OpRecord]: ...
    def next(self, op: str, limit: int = 100, *, order: Literal["oldest", "item"] = "oldest") -> List[OpRecord]:
        """Claimable records of ``op``: ``order`` is "oldest" (the default) or "item"."""
    def reset_expired(self) -> Dict[str, int]:
        """Lapsed claims back to READY (FAILED past max_lapses): ``{"ready", "failed"}``."""
    def claim(self, op: str, limit: int = 1, *, worker: str, lease: float = 30.0) -> List[OpClaim]: ...
    def update(
        self,
        item: str,
        op: str,
        state: OpState,
        message: str = "",
        *,
        enable: Sequence[str] = ...,
        token: Optional[int] = None,
    ) -> OpRecord: ...
    def error(self, item: str, op: str, message: str, *, token: Optional[int] = None) -> OpRecord: ...
    def states(self, item: str) -> List[OpRecord]: ...
    def list(self, op: str, *, state: Optional[OpState] = None, limit: int = 100) -> List[OpRecord]:
        """Records of ``op`` (in ``state``, if given) by item key: how operators find the FAILED ones.
        Changes nothing; reads every record (an operator's call, not a worker's)."""
    def close(self) -> None:
        """Releases the store (its file or database connections)."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    def __enter__(self) -> "Operations":
        """``with keel.Operations(...) as x:`` closes it when the block ends."""
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
        /,
    ) -> None: ...

@final
class Queue:
    """A durable job queue in an LMDB file: priorities (0 first), run-at times,
    unique keys, leases with attempt tokens, retries with backoff and jitter."""

    def __new__(cls, path: PathArg, *, max_resets: int = 5) -> "Queue": ...
    def enqueue(
        self,
        kind: str,
        payload: Json = None,
        *,
        priority: int = 5,
        run_at: Optional[float] = None,
        delay: Optional[float] = None,
        max_attempts: int = 20,
        unique_key: Optional[str] = None,
    ) -> Enqueued: ...
    def enqueue_many(self, jobs: Iterable[Union[Tuple[str, Json], Mapping[str, Any]]]) -> List[Enqueued]:
        """Many jobs in one transaction: ``(kind, payload)`` pairs or dicts of enqueue's arguments."""
    def dequeue(self, kinds: Sequence[str], *, worker: str, lease: float = 30.0) -> Optional[JobRecord]: ...
    def heartbeat(self, id: int, token: int, *, lease: float = 30.0) -> float:
        """Extends the lease to ``lease`` seconds from now; returns its new end (a Unix time)."""
    def complete(self, id: int, token: int, result: Json = None) -> JobRecord: ...
    def fail(self, id: int, token: int, error: str, *, retryable: bool = True) -> JobRecord: ...
    def release(self, id: int, token: int) -> JobRecord: ...
    def cancel(self, id: int, reason: str = "") -> JobRecord: ...
    def retry(self, id: int) -> JobRecord:
        """Queues a dead or cancelled job again with fresh attempts (keel.Conflict otherwise)."""
    def list(self, kind: str, *, state: Optional[JobState] = None, limit: int = 100) -> List[JobRecord]:
        """Jobs of ``kind`` (in ``state``, if given), oldest first."""
    def get(self, id: int) -> JobRecord: ...
    def counts(self) -> Dict[str, Dict[JobState, int]]: ...
    def reset_expired(self) -> ResetReport: ...
    def cleanup(self, retention: float) -> int: ...
    def close(self) -> None:
        """Releases the queue (its file or database connections); a running Worker keeps its own hold until it stops."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    def __enter__(self) -> "Queue":
        """``with keel.Queue(...) as x:`` closes it when the block ends."""
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
        /,
    ) -> None: ...

@final
class JobContext:
    """The running attempt, handed to a handler that takes two arguments."""

    @property
    def id(self) -> int: ...
    @property
    def token(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    def lease_lost(self) -> bool:
        """True once the job was cancelled, reset or deleted (its result is dropped)."""
    def should_stop(self) -> bool:
        """True once the worker is stopping or the lease was lost."""

@final
class Worker:
    """Runs Python callables as job handlers on keel's threads, each kind at its own
    concurrency. A handler's exception fails only its job."""

    def __new__(
        cls,
        queue: Queue,
        handlers: Mapping[str, Union[Handler, Tuple[Handler, int]]],
        *,
        allow: Optional[Sequence[str]] = None,
        block: Sequence[str] = ...,
        name: Optional[str] = None,
        lease: float = 30.0,
        heartbeat: Optional[float] = None,
        poll: float = 1.0,
        retention: Optional[float] = None,
        job_timeout: Optional[float] = None,
    ) -> "Worker": ...
    @property
    def kinds(self) -> List[str]: ...
    @property
    def running(self) -> int: ...
    def stop(self, deadline: float = 30.0) -> StopReport: ...
    def stats(self) -> WorkerStats: ...
    def __enter__(self) -> "Worker": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
        /,
    ) -> None: ...

def stats() -> Dict[str, List[Dict[str, Any]]]:
    """Every live keel object's counters, grouped by part.

    Parts: "locks", "pool", "journal", "drive", "queue" (job counts per kind and
    state, ``oldest_ready_age`` per kind in seconds), "operations" and
    "workers" (job workers).
    """

def verify_file(path: str) -> Dict[str, Any]:
    """Verifies a keel LMDB file (drive, operations, jobs) in a child process; never changes it."""
    ...

def flush_logs() -> None:
    """Re-reads keel's logger levels and waits until queued events reached logging."""

def _debug_panic() -> None:
    """For tests of the panic boundary only: raises keel.Panic."""

def _wait_for_keel_threads() -> None:
    """Runs at interpreter exit (atexit): lets keel's threads leave Python."""

def inspect_file(path: PathArg) -> Dict[str, Any]:
    """What the LMDB file at ``path`` holds (``parts``, ``databases``,
    ``description``), read only: the file is left exactly as it was."""
    ...

def _refresh_log_levels() -> None:
    """Re-reads keel's logger levels (the package calls it when logging changes one)."""

class FileNotFound(NotFound, FileNotFoundError):
    """A missing file or folder: a keel.NotFound that is also a FileNotFoundError
    (with ``errno`` and ``filename``), as ``open()`` raises."""

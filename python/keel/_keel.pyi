"""Type stubs for the native module keel._keel (re-exported by ``keel``)."""

from types import TracebackType
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Type, Union

__version__: str

Key = Union[str, bytes]

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

class LockGuard:
    """A held key (or set of keys); release with ``release()`` or ``with``."""

    @property
    def locked(self) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> "LockGuard": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class KeyedLocks:
    """One lock per key while anyone holds or waits for it; no entry left behind."""

    def __init__(self, name: Optional[str] = None) -> None: ...
    def lock(self, key: Key, *, timeout: Optional[float] = None, shared: bool = False) -> LockGuard: ...
    def try_lock(self, key: Key, *, shared: bool = False) -> Optional[LockGuard]: ...
    def lock_many(
        self, keys: Sequence[Key], *, timeout: Optional[float] = None, shared: bool = False
    ) -> LockGuard: ...
    def stats(self) -> Dict[str, int]: ...
    def __len__(self) -> int: ...

class CancellationToken:
    """Tells a running ``SyncPool.run`` or ``pipeline`` to stop; ``cancel()`` from any thread."""

    def __init__(self) -> None: ...
    def cancel(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...

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

class SyncPool:
    """Blocking callables N at a time on keel's threads; items of one key never at once.

    Results come back in input order with exceptions as values. A callable past its
    timeout is reported ``keel.Timeout`` at once and its thread abandoned (never
    killed); its key stays busy until it returns. ``shutdown()`` never waits.
    """

    def __init__(
        self,
        max_concurrency: int = 10,
        *,
        timeout: Optional[float] = None,
        max_abandoned: int = 64,
        name: Optional[str] = None,
    ) -> None: ...
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
    def stats(self) -> Dict[str, int]: ...

def stats() -> Dict[str, List[Dict[str, Any]]]:
    """Every live keel object's counters, grouped by part ("locks", "pool", ...)."""

def flush_logs() -> None:
    """Re-reads keel's logger levels and waits until queued events reached logging."""

def _debug_panic() -> None:
    """For tests of the panic boundary only: raises keel.Panic."""

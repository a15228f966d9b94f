"""The shapes of the values keel takes and returns, for type checkers.

Every dict keel returns is a plain ``dict`` at run time; these ``TypedDict``s
say which keys it has. Times are seconds as floats: points in time are Unix
times (``time.time()``), a time that is "none" is None. Import them from here
(or from ``keel``):

    from keel.types import JobRecord, Item
"""

import os
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, List, Literal, Optional, TypedDict, Union

if TYPE_CHECKING:
    from keel._keel import JobContext

__all__ = [
    "Data",
    "DriveStats",
    "Enqueued",
    "Handler",
    "Item",
    "ItemId",
    "JobClaim",
    "JobRecord",
    "JobState",
    "Json",
    "JournalStats",
    "JournalStatus",
    "Key",
    "LockStats",
    "OpClaim",
    "OpRecord",
    "OpState",
    "PathArg",
    "PendingMutation",
    "PermissionLevel",
    "Permissions",
    "PoolStats",
    "QuarantinedRecord",
    "RecoveryReport",
    "ResetReport",
    "StopReport",
    "Version",
    "WorkerStats",
]

#: A lock or pool key.
Key = Union[str, bytes]
#: A path argument: a str or any ``os.PathLike`` (``pathlib.Path``).
PathArg = Union[str, "os.PathLike[str]"]
#: Any value JSON can hold (dicts keep their key order).
Json = Any
#: An item id: 32 hex characters, or their 16 bytes.
ItemId = Union[str, bytes]
#: What a journal's ``Mutation.write`` takes.
Data = Union[bytes, bytearray, str, IO[bytes], IO[str]]

#: An operation's state. Operations use upper case, like the Pbench states
#: they replace; jobs use lower case (see ``JobState``).
OpState = Literal["READY", "WORKING", "OK", "FAILED"]
#: A job's state.
JobState = Literal["queued", "running", "retrying", "completed", "dead", "cancelled"]
#: A permission level of a drive item.
PermissionLevel = Literal["deny", "read", "edit", "admin"]


class LockStats(TypedDict):
    entries: int
    holders: int
    waiters: int


class PoolStats(TypedDict):
    in_flight: int
    peak_concurrency: int
    completed: int
    failed: int
    timed_out: int
    cancelled: int
    refused: int
    abandoned: int
    abandoned_total: int
    locked_keys: int


class Permissions(TypedDict, total=False):
    default: Optional[PermissionLevel]
    users: Dict[str, PermissionLevel]
    roles: Dict[str, PermissionLevel]


class Item(TypedDict):
    id: str
    parent: str
    name: str
    type: Optional[str]
    created: float
    creator: str
    children: int
    data_size: int
    version: Optional[str]
    updated: float
    updater: str
    permissions: Permissions


class Version(TypedDict):
    version: str
    updated: float
    updater: str
    size: int


class DriveStats(TypedDict):
    map_size: int
    used: int
    readers: int
    batches: int
    writes: int
    largest_batch: int
    map_growths: int


class PendingMutation(TypedDict):
    seq: int
    operation: str
    details: str
    status: str
    paths: List[str]


class JournalStatus(TypedDict):
    pending: List[PendingMutation]
    unreadable: List[str]
    quarantined: List[str]
    last_recovery_error: Optional[str]


class QuarantinedRecord(TypedDict):
    name: str
    folder: str
    reason: str


class RecoveryReport(TypedDict):
    rolled_back: List[int]
    discarded: List[int]
    quarantined: List[QuarantinedRecord]
    reaped: int


class JournalStats(TypedDict):
    fsyncs: int
    committed: int
    rolled_back: int
    recovered: int
    quarantined: int
    recovery_failures: int


class OpRecord(TypedDict):
    item: str
    op: str
    state: OpState
    message: str
    attempts: int
    token: int
    worker: Optional[str]
    lease_until: Optional[float]
    ready_at: float
    created_at: float
    updated_at: float
    expired: bool


class OpClaim(TypedDict):
    item: str
    op: str
    token: int
    lease_until: float
    attempt: int


class JobRecord(TypedDict):
    id: int
    kind: str
    payload: Json
    state: JobState
    priority: int
    run_at: float
    attempts: int
    failures: int
    max_attempts: int
    resets: int
    token: int
    worker: Optional[str]
    lease_until: Optional[float]
    unique_key: Optional[str]
    last_error: Optional[str]
    result: Json
    created_at: float
    updated_at: float
    finished_at: Optional[float]


#: What ``Queue.dequeue`` returns: the job, claimed (its ``token`` fences it).
JobClaim = JobRecord


class ResetReport(TypedDict):
    requeued: int
    dead: int


class StopReport(TypedDict):
    released: int
    detached: int


class WorkerStats(TypedDict):
    completed: int
    failed: int
    panicked: int
    refused: int
    released: int
    timed_out: int


#: A job handler: called with the job (and, if it takes two arguments, the
#: running attempt's JobContext), returns its result (JSON).
Handler = Union[Callable[[JobRecord], Json], Callable[[JobRecord, "JobContext"], Json]]


class Enqueued(JobRecord):
    """What ``Queue.enqueue`` returns: the job, and whether this call made it
    (False when a job with its ``unique_key`` was already waiting)."""

    created: bool

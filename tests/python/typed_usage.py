"""Host code as a type checker sees it: scripts/test runs mypy --strict and
pyright on this file (it also runs, as a test of nothing but its asserts)."""

import os
import tempfile
from pathlib import Path
from typing import List, Optional

import keel
from keel.types import Item, JobRecord, JobState, OpRecord, OpState


def first_locked(locks: keel.KeyedLocks, keys: List[str]) -> Optional[str]:
    for key in keys:
        with locks.lock(key, timeout=1.0):
            return key  # a return inside `with`: __exit__ returns None
    return None


def job_state(queue: keel.Queue, job_id: int) -> JobState:
    job: JobRecord = queue.get(job_id)
    return job["state"]


def failed(ops: keel.Operations, item: str) -> List[str]:
    wanted: OpState = "FAILED"
    records: List[OpRecord] = ops.states(item)
    return [r["op"] for r in records if r["state"] == wanted]


def names(drive: keel.Drive) -> List[str]:
    items: List[Item] = list(drive.children(None))
    return [item["name"] for item in items]


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="keel-typed-"))
    assert first_locked(keel.KeyedLocks(), ["a"]) == "a"
    queue = keel.Queue(folder / "jobs.lmdb")
    enqueued = queue.enqueue("mail", {"to": "x"})
    assert enqueued["created"] and job_state(queue, enqueued["id"]) == "queued"
    ops = keel.Operations(os.fspath(folder / "ops.lmdb"))
    ops.ready("d", ["unpack"])
    ops.update("d", "unpack", "FAILED", "bad tarball")
    assert failed(ops, "d") == ["unpack"]
    drive = keel.Drive(folder / "x.drive")
    drive.create(None, "docs")
    assert names(drive) == ["docs"]


if __name__ == "__main__":
    main()

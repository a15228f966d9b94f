"""Host code as a type checker sees it: scripts/test runs mypy --strict and
pyright on this file (it also runs, as a test of nothing but its asserts)."""

import asyncio
import os
import tempfile
from pathlib import Path
from typing import List, Optional, Union

import keel
import keel.aio
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


def fetch(source: str) -> int:
    return len(source)


def fetch_until_cancelled(source: str, ctx: keel.TaskContext) -> int:
    return -1 if ctx.cancelled else len(source)


def parse(text: str) -> bytes:
    return text.encode()


def store(data: bytes) -> int:
    return len(data)


async def sync_all(pool: keel.SyncPool, sources: List[str]) -> List[int]:
    plain = await keel.aio.run(pool, fetch, sources, key=lambda source: source[:1])
    with_context = await keel.aio.run(pool, fetch_until_cancelled, sources, context=True, timeout=5.0)
    stored = await keel.aio.pipeline(pool, parse, sources, store, window=4)
    both: List[Union[int, BaseException]] = plain + with_context + stored
    return [r for r in both if isinstance(r, int)]


async def count_jobs(path: Path) -> int:
    async with keel.aio.AsyncQueue(keel.Queue(path)) as queue:
        counts = await queue.counts()
    return sum(n for states in counts.values() for n in states.values())


def failed_items(ops: keel.Operations, op: str) -> List[str]:
    return [r["item"] for r in ops.list(op, state="FAILED", limit=10)]


def lease_left(queue: keel.Queue, job: JobRecord) -> float:
    until: Optional[float] = job["lease_until"]
    return (until or 0.0) - queue.heartbeat(job["id"], job["token"], lease=60.0)


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
    assert failed_items(ops, "unpack") == ["d"]
    ops.close()
    with keel.Drive(folder / "x.drive") as drive:
        drive.create(None, "docs")
        assert names(drive) == ["docs"]
    with keel.SyncPool(2) as pool:
        assert asyncio.run(sync_all(pool, ["ab", "c"])) == [2, 1, 2, 1, 2, 1]
    with keel.Journal(folder) as journal:
        assert not journal.closed
    job = queue.dequeue(["mail"], worker="w", lease=30.0)
    assert job is not None and lease_left(queue, job) < 0
    queue.close()
    assert asyncio.run(count_jobs(folder / "jobs.lmdb")) == 1


if __name__ == "__main__":
    main()

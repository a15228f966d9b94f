"""keel.aio as an asyncio host uses it: a running loop, real coroutines, one
bounded executor, cancellation that withdraws the request."""

import asyncio
import gc
import threading
import warnings

import pytest

import keel
import keel.aio

PATIENCE = 30


async def eventually(condition, what):
    """Awaits until ``condition()`` holds, letting the loop run meanwhile."""
    deadline = asyncio.get_running_loop().time() + PATIENCE
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


def test_async_with_worker_stops_without_freezing_the_loop(tmp_path):
    queue = keel.Queue(tmp_path / "jobs.lmdb")
    job = queue.enqueue("mail", {"to": "ann"})["id"]

    async def main():
        started, finish = asyncio.Event(), asyncio.Event()
        ticks = 0

        async def send(job):
            started.set()
            await finish.wait()  # needs the loop while the worker is stopping
            return {"sent": True}

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1
                if ticks == 5:
                    finish.set()

        async with keel.aio.worker(queue, {"mail": send}, poll=0.05) as worker:
            assert worker.kinds == ["mail"]
            await asyncio.wait_for(started.wait(), PATIENCE)
            tick = asyncio.create_task(ticker())
        tick.cancel()
        return ticks

    ticks = asyncio.run(main())
    assert ticks >= 5  # the loop ran while the block's exit stopped the worker
    assert queue.get(job)["state"] == "completed" and queue.get(job)["result"] == {"sent": True}


def test_calls_are_lazy_coroutines_that_create_task_accepts(tmp_path):
    queue = keel.Queue(tmp_path / "jobs.lmdb")
    queue.enqueue("mail", {})
    aq = keel.aio.AsyncQueue(queue)

    async def main():
        pending = aq.dequeue(["mail"], worker="w")
        assert asyncio.iscoroutine(pending)
        await asyncio.sleep(0.05)
        assert queue.counts() == {"mail": {"queued": 1}}  # nothing claimed before it is awaited
        claimed = await asyncio.create_task(pending)
        assert claimed is not None and queue.counts() == {"mail": {"running": 1}}

    asyncio.run(main())


def test_a_call_never_awaited_warns_and_claims_nothing(tmp_path):
    queue = keel.Queue(tmp_path / "jobs.lmdb")
    queue.enqueue("mail", {})
    aq = keel.aio.AsyncQueue(queue)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aq.dequeue(["mail"], worker="w")
        gc.collect()
    assert any("was never awaited" in str(w.message) for w in caught)
    assert queue.counts() == {"mail": {"queued": 1}}


def test_one_bounded_executor_serves_every_call(tmp_path):
    ops = keel.aio.AsyncOperations(keel.Operations(tmp_path / "ops.lmdb"))
    limit = keel.aio.executor()._max_workers
    seen = set()
    original = ops.sync.states

    async def main():
        await asyncio.gather(*(ops.ready(f"d{n}", ["x"]) for n in range(100)))
        return await asyncio.gather(*(ops.states(f"d{n}") for n in range(100)))

    def watched(item):
        seen.add(threading.current_thread().name)
        return original(item)

    before = threading.active_count()
    ops.sync = type("Watched", (), {"ready": ops.sync.ready, "states": staticmethod(watched)})()
    results = asyncio.run(main())
    assert all(r[0]["state"] == "READY" for r in results)
    assert seen and all(name.startswith("keel-aio") for name in seen) and len(seen) <= limit
    assert threading.active_count() - before <= limit


def test_cancelling_a_lock_request_withdraws_it_while_the_key_is_still_held():
    locks = keel.KeyedLocks()

    async def main():
        holder = threading.Thread(target=lambda: held.append(locks.lock("k")))
        holder.start()
        holder.join()
        request = asyncio.create_task(keel.aio.acquire(locks, "k"))
        await eventually(lambda: locks.stats()["waiters"] == 1, "the request never waited")
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        # Withdrawn in keel: nobody waits for the key any more, though it is still held.
        await eventually(lambda: locks.stats()["waiters"] == 0, "the cancelled request kept waiting")
        assert locks.stats()["holders"] == 1
        held[0].release()
        assert len(locks) == 0

    held = []
    asyncio.run(main())


def test_async_journal_and_drive(tmp_path):
    root = tmp_path / "kb"
    root.mkdir()
    journal = keel.aio.AsyncJournal(keel.Journal(root))
    drive = keel.aio.AsyncDrive(keel.Drive(tmp_path / "x.drive"))

    async def main():
        mutation = await journal.begin("add", "a.txt")
        mutation.write("a.txt", b"a")
        await journal.commit(mutation)
        assert (await journal.status())["pending"] == []
        await drive.set_schema("note", {"type": "object"}, 1)
        docs = await drive.create(None, "docs")
        item = await drive.create(docs["id"], "readme", type="note")
        await drive.set_data(item["id"], {"b": 1, "a": 2})
        assert [i["name"] for i in await drive.children(None)] == ["docs"]
        return await drive.get_data(item["id"])

    version, data = asyncio.run(main())
    assert (root / "a.txt").read_bytes() == b"a" and data == {"b": 1, "a": 2}

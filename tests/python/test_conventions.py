"""Python's conventions: close() and context managers, seconds out where
seconds go in, JSON key order kept, informative reprs."""

import inspect
import json
import os
import threading
import time

import pytest

import keel
from keel import _keel


def listed(part, field, value):
    return [e for e in keel.stats().get(part, []) if e.get(field) == value]


# -- close() and with ----------------------------------------------------------


def closes_like_a_file(obj, call):
    """After close(): `call` raises keel.Closed, closing again is harmless,
    `closed` says so and the repr too."""
    assert not obj.closed
    assert obj.__exit__(None, None, None) is None
    assert obj.closed
    obj.close()
    with pytest.raises(keel.Closed) as raised:
        call()
    assert "closed" in str(raised.value)
    assert "closed" in repr(obj)


def test_a_queue_closes_and_releases_its_file(tmp_path):
    path = str(tmp_path / "jobs.lmdb")
    queue = keel.Queue(path)
    queue.enqueue("mail", {"to": "a"})
    assert listed("queue", "store", path)
    closes_like_a_file(queue, lambda: queue.counts())
    assert listed("queue", "store", path) == [], "the store is released"
    with keel.Queue(path) as queue:
        assert queue.counts() == {"mail": {"queued": 1}}, "reopened in the same process"
    assert queue.closed
    for call in (lambda: queue.enqueue("mail"), lambda: queue.get(1), lambda: keel.Worker(queue, {"mail": print})):
        with pytest.raises(keel.Closed):
            call()


def test_a_running_worker_keeps_its_hold_after_its_queue_closes(tmp_path):
    queue = keel.Queue(tmp_path / "jobs.lmdb")
    done = threading.Event()
    worker = keel.Worker(queue, {"mail": lambda job: done.set()}, poll=0.05)
    queue.close()
    keel.Queue(tmp_path / "jobs.lmdb").enqueue("mail")
    assert done.wait(30), "the worker still runs jobs"
    worker.stop()


def test_operations_close_and_release_their_file(tmp_path):
    path = str(tmp_path / "ops.lmdb")
    ops = keel.Operations(path)
    ops.ready("ds", ["unpack"])
    assert listed("operations", "store", path)
    closes_like_a_file(ops, lambda: ops.states("ds"))
    assert listed("operations", "store", path) == []
    with keel.Operations(path) as again:
        assert [r["state"] for r in again.states("ds")] == ["READY"]


def test_a_journal_closes_and_a_mutation_begun_before_still_commits(tmp_path):
    journal = keel.Journal(tmp_path)
    root = str(journal.root)
    mutation = journal.begin("add")
    guard_journal = keel.Journal(tmp_path)
    journal.close()
    assert journal.root == tmp_path.resolve(), "root still reads"
    with pytest.raises(keel.Closed):
        journal.begin("again")
    for call in (journal.status, journal.recover, journal.stats, journal.read, journal.last_recovery):
        with pytest.raises(keel.Closed):
            call()
    mutation.write("a.txt", b"kept")
    mutation.commit()
    assert (tmp_path / "a.txt").read_bytes() == b"kept"
    guard = guard_journal.read()
    guard_journal.close()
    guard.release()
    del mutation, guard, guard_journal
    with keel.Journal(tmp_path) as reopened:
        assert reopened.status()["pending"] == []
    assert reopened.closed
    assert listed("journal", "root", root) == [], "every journal of the root is released"


def test_a_drive_closes_with_its_views_iterators_and_batches(tmp_path):
    path = tmp_path / "x.drive"
    drive = keel.Drive(path)
    for name in "abc":
        drive.create(None, name)
    ann = drive.as_user("ann")
    pages = drive.children(None)
    assert next(pages)["name"] == "a"
    unopened = drive.batch()
    closes_like_a_file(drive, lambda: drive.get(keel.DRIVE_ROOT))
    assert drive.path.endswith("x.drive"), "the path still reads"
    for call in (
        lambda: next(pages),
        lambda: ann.get(keel.DRIVE_ROOT),
        lambda: unopened.__enter__(),
        drive.batch,
        drive.stats,
        drive.verify,
        lambda: drive.backup(tmp_path / "copy.drive"),
        lambda: drive.as_user("bob"),
        lambda: drive.walk(),
    ):
        with pytest.raises(keel.Closed):
            call()
    assert ann.closed and "closed" in repr(ann) and "closed" in repr(pages)


def test_closing_a_view_leaves_the_drive_open(tmp_path):
    drive = keel.Drive(tmp_path / "x.drive")
    with drive.as_user("ann") as ann:
        pass
    with pytest.raises(keel.Closed):
        ann.children(None).__next__()
    assert drive.create(None, "still")["name"] == "still"
    with drive.batch() as batch:
        with pytest.raises(keel.InvalidArgument):
            batch.close()  # a batch ends with its block


def test_a_batch_open_when_the_drive_closes_ends_with_its_block(tmp_path):
    drive = keel.Drive(tmp_path / "x.drive")
    with drive.batch() as batch:
        batch.create(None, "before")
        drive.close()
        with pytest.raises(keel.Closed):
            batch.create(None, "after")
    with keel.Drive(tmp_path / "x.drive") as again:
        assert [i["name"] for i in again.children(None)] == ["before"]


def test_a_closed_drive_releases_its_file(tmp_path):
    path = tmp_path / "x.drive"
    with keel.Drive(path) as drive:
        drive.create(None, "old")
        view = drive.as_user("ann")
        pages = drive.children(None)
    # Were the file still open in this process, the registry would hand the
    # deleted file's environment to the next open, "old" and all.
    for leftover in tmp_path.iterdir():
        os.remove(leftover)
    with keel.Drive(path) as fresh:
        assert list(fresh.children(None)) == []
    del view, pages


def test_a_pool_closes_too():
    with keel.SyncPool(2) as pool:
        assert pool.run(lambda x: x * 2, [1, 2]) == [2, 4]
    # A pool reports per item, exceptions as values: each is keel.Closed.
    assert [type(r) for r in pool.run(lambda x: x, [1, 2])] == [keel.Closed, keel.Closed]
    pool.close()
    assert pool.closed and "shut down" in repr(pool)


# -- seconds -------------------------------------------------------------------


def test_job_times_are_unix_seconds_as_floats(tmp_path):
    queue = keel.Queue(tmp_path / "jobs.lmdb")
    before = time.time()
    job = queue.enqueue("mail", run_at=before - 5)
    assert job["run_at"] == pytest.approx(before - 5, abs=0.002), "what went in comes out"
    assert isinstance(job["created_at"], float) and before - 1 < job["created_at"] < time.time() + 1
    assert job["lease_until"] is None and job["finished_at"] is None
    claimed = queue.dequeue(["mail"], worker="w", lease=60)
    assert claimed["lease_until"] == pytest.approx(time.time() + 60, abs=5)
    until = queue.heartbeat(claimed["id"], claimed["token"], lease=120)
    assert isinstance(until, float) and until == pytest.approx(time.time() + 120, abs=5)
    done = queue.complete(claimed["id"], claimed["token"])
    assert done["finished_at"] == pytest.approx(time.time(), abs=5)
    delayed = queue.enqueue("later", delay=3600)
    assert delayed["run_at"] - delayed["created_at"] == pytest.approx(3600, abs=1)


def test_operation_times_are_unix_seconds_as_floats(tmp_path):
    ops = keel.Operations(tmp_path / "ops.lmdb")
    [ready] = ops.ready("ds", ["unpack"])
    assert ready["ready_at"] == pytest.approx(time.time(), abs=5) and ready["lease_until"] is None
    [claim] = ops.claim("unpack", worker="w", lease=30)
    assert claim["lease_until"] == pytest.approx(time.time() + 30, abs=5)
    [state] = ops.states("ds")
    assert state["lease_until"] == claim["lease_until"]
    assert isinstance(state["updated_at"], float)


def test_item_times_are_unix_seconds_as_floats(tmp_path):
    drive = keel.Drive(tmp_path / "x.drive")
    item = drive.create(None, "note", type="note")
    assert item["created"] == pytest.approx(time.time(), abs=5) and isinstance(item["updated"], float)
    drive.set_data(item["id"], {"x": 1})
    [version] = drive.versions(item["id"])
    assert version["updated"] == pytest.approx(time.time(), abs=5)


def test_a_queues_oldest_ready_age_is_in_seconds(tmp_path):
    path = str(tmp_path / "jobs.lmdb")
    queue = keel.Queue(path)
    queue.enqueue("mail", run_at=time.time() - 90)
    [entry] = listed("queue", "store", path)
    assert "oldest_ready_age_ms" not in entry
    assert entry["oldest_ready_age"]["mail"] == pytest.approx(90, abs=5)


# -- JSON key order ------------------------------------------------------------

ORDERED = {"b": 1, "a": 2, "nested": {"z": [{"y": 1, "x": 2}], "c": None}}


def test_job_payloads_and_results_keep_their_key_order(tmp_path):
    queue = keel.Queue(tmp_path / "jobs.lmdb")
    job = queue.enqueue("mail", ORDERED)
    assert json.dumps(job["payload"]) == json.dumps(ORDERED)
    [many] = queue.enqueue_many([{"kind": "mail", "payload": ORDERED, "unique_key": "u"}])
    assert json.dumps(queue.get(many["id"])["payload"]) == json.dumps(ORDERED)
    claimed = queue.dequeue(["mail"], worker="w")
    assert json.dumps(claimed["payload"]) == json.dumps(ORDERED)
    done = queue.complete(claimed["id"], claimed["token"], {"y": 1, "x": 2})
    assert list(queue.get(done["id"])["result"]) == ["y", "x"]


def test_a_handler_sees_the_payload_in_its_order(tmp_path):
    queue = keel.Queue(tmp_path / "jobs.lmdb")
    seen = []
    queue.enqueue("mail", ORDERED)
    with keel.Worker(queue, {"mail": lambda job: seen.append(json.dumps(job["payload"]))}, poll=0.05):
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
    assert seen == [json.dumps(ORDERED)]


def test_drive_data_keeps_its_key_order(tmp_path):
    drive = keel.Drive(tmp_path / "x.drive")
    item = drive.create(None, "note", type="note")
    drive.set_data(item["id"], ORDERED)
    assert json.dumps(drive.get_data(item["id"])[1]) == json.dumps(ORDERED)
    schema = {"type": "object", "required": ["b"], "properties": {"b": {}, "a": {}}}
    drive.set_schema("note", schema, 1)
    drive.close()
    with keel.Drive(tmp_path / "x.drive") as again:
        assert json.dumps(again.get_data(item["id"])[1]) == json.dumps(ORDERED), "as stored"
        assert json.dumps(again.schema("note")) == json.dumps([1, schema])


# -- reprs ---------------------------------------------------------------------


def instances(tmp_path):
    """One live instance of every class of the native module."""
    locks = keel.KeyedLocks("repr")
    drive = keel.Drive(tmp_path / "x.drive")
    journal = keel.Journal(tmp_path)
    queue = keel.Queue(tmp_path / "jobs.lmdb")
    pool = keel.SyncPool(1)
    contexts = pool.run(lambda item, ctx: ctx, [1], context=True)
    queue.enqueue("job")
    seen = []
    with keel.Worker(queue, {"job": lambda job, ctx: seen.append(ctx)}, poll=0.05) as worker:
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        made = [
            locks, locks.lock("k"), keel.CancellationToken(), contexts[0], pool, drive.children(None),
            drive.batch(), drive, journal.begin("m"), journal, keel.Operations(tmp_path / "ops.lmdb"), queue,
            seen[0], worker,
        ]
    made[8].rollback()
    made.insert(8, journal.read())
    return made


def test_every_class_has_an_informative_repr(tmp_path):
    made = instances(tmp_path)
    classes = {cls for _, cls in inspect.getmembers(_keel, inspect.isclass) if not issubclass(cls, BaseException)}
    assert classes == {type(obj) for obj in made}, "an instance of every class"
    for obj in made:
        shown = repr(obj)
        assert shown.startswith(f"<keel.{type(obj).__name__} "), shown
        assert " object at 0x" not in shown, shown
    assert repr(made[9]) == f'<keel.Mutation "m" seq={made[9].seq} ended>'


# -- listing operations by state -----------------------------------------------


def test_list_finds_failed_items_of_an_operation(tmp_path):
    ops = keel.Operations(tmp_path / "ops.lmdb")
    for item in ["ds-c", "ds-a", "ds-b"]:
        ops.ready(item, ["unpack", "index"])
    ops.error("ds-c", "unpack", "bad tarball")
    ops.error("ds-a", "unpack", "bad checksum")
    ops.error("ds-b", "index", "another operation")
    failed = ops.list("unpack", state="FAILED")
    assert [(r["item"], r["message"]) for r in failed] == [("ds-a", "bad checksum"), ("ds-c", "bad tarball")]
    assert [r["item"] for r in ops.list("unpack", state="FAILED", limit=1)] == ["ds-a"]
    assert [r["item"] for r in ops.list("unpack")] == ["ds-a", "ds-b", "ds-c"]
    assert ops.list("unpack", state="READY")[0]["expired"] is False
    with pytest.raises(keel.InvalidArgument):
        ops.list("unpack", state="DONE")
    with pytest.raises(keel.InvalidArgument):
        ops.list("unpack", limit=0)


def test_the_async_forms_close_in_async_with(tmp_path):
    import asyncio

    import keel.aio

    async def main():
        async with keel.aio.AsyncQueue(keel.Queue(tmp_path / "jobs.lmdb")) as queue:
            await queue.enqueue("mail", {"b": 1, "a": 2})
        async with keel.aio.AsyncOperations(keel.Operations(tmp_path / "ops.lmdb")) as ops:
            await ops.ready("ds", ["unpack"])
            assert [r["item"] for r in await ops.list("unpack", state="READY")] == ["ds"]
        async with keel.aio.AsyncJournal(keel.Journal(tmp_path)) as journal:
            await journal.status()
        async with keel.aio.AsyncDrive(keel.Drive(tmp_path / "x.drive")) as drive:
            await drive.create(None, "a")
        for closed in (queue, ops, journal, drive):
            assert closed.closed and "closed" in repr(closed)
        with pytest.raises(keel.Closed):
            await queue.counts()
        with pytest.raises(keel.Closed):
            await drive.get(keel.DRIVE_ROOT)

    asyncio.run(main())

"""Operations, Queue and Worker from Python: the same scenarios as the Rust and C tests."""

import asyncio
import threading
import time

import pytest

import keel
import keel.aio

PATIENCE = 60.0


def test_eight_threads_claim_each_of_100_items_exactly_once(tmp_path):
    ops = keel.Operations(tmp_path / "ops.lmdb")
    for n in range(100):
        ops.ready(f"ds-{n:03}", ["unpack"])
    claimed = []
    lock = threading.Lock()

    def claimer(name):
        while True:
            claims = ops.claim("unpack", 2, worker=name)
            if not claims:
                return
            with lock:
                claimed.extend(c["item"] for c in claims)

    threads = [threading.Thread(target=claimer, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == [f"ds-{n:03}" for n in range(100)]
    assert ops.next("unpack") == []


def test_a_stale_token_is_refused_and_enables_nothing(tmp_path):
    ops = keel.Operations(tmp_path / "ops.lmdb")
    ops.ready("ds", ["unpack"])
    [claim] = ops.claim("unpack", worker="w1", lease=60)
    with pytest.raises(keel.Conflict):
        ops.update("ds", "unpack", "OK", "late", enable=["index"], token=claim["token"] + 1)
    assert [r["op"] for r in ops.states("ds")] == ["unpack"]
    done = ops.update("ds", "unpack", "OK", "unpacked", enable=["index"], token=claim["token"])
    assert done["state"] == "OK"
    states = {r["op"]: r["state"] for r in ops.states("ds")}
    assert states == {"unpack": "OK", "index": "READY"}
    with pytest.raises(keel.InvalidArgument):
        ops.update("ds", "index", "DONE")
    failed = ops.error("ds", "index", "no space")
    assert (failed["state"], failed["message"]) == ("FAILED", "no space")


def flip_every_copy(path, needle):
    """Flips a bit of every copy of `needle` in the file, in place (the live
    record's and any stale page's), as a scribbled disk would."""
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        at, count = data.find(needle), 0
        while at >= 0:
            data[at + 1] ^= 0x20
            count += 1
            at = data.find(needle, at + 1)
        f.seek(0)
        f.write(data)
    return count


def test_a_damaged_record_reads_as_corrupt_naming_its_table(tmp_path):
    path = tmp_path / "ops.lmdb"
    ops = keel.Operations(path)
    ops.ready("ds-1", ["unpack"])
    ops.ready("ds-2", ["unpack"])
    ops.error("ds-1", "unpack", "damage-me")
    assert flip_every_copy(path, b"damage-me") >= 1
    with pytest.raises(keel.Corrupt, match="keel.op.records.*checksum"):
        ops.states("ds-1")
    assert [r["state"] for r in ops.states("ds-2")] == ["READY"], "the others read as before"


def test_queue_flow_fencing_and_unique_keys(tmp_path):
    q = keel.Queue(tmp_path / "jobs.lmdb")
    first = q.enqueue("mail", {"to": "a"}, unique_key="mail:a")
    again = q.enqueue("mail", {"to": "b"}, unique_key="mail:a")
    assert first["created"] and not again["created"] and again["id"] == first["id"]
    urgent = q.enqueue("mail", {"to": "c"}, priority=0)
    job = q.dequeue(["mail"], worker="w1")
    assert job["id"] == urgent["id"] and job["payload"] == {"to": "c"}
    with pytest.raises(keel.Conflict):
        q.complete(job["id"], job["token"] + 1)
    done = q.complete(job["id"], job["token"], {"sent": True})
    assert done["state"] == "completed" and done["result"] == {"sent": True}
    later = q.enqueue("mail", None, delay=3600)
    assert later["run_at"] > done["finished_at"]
    job = q.dequeue(["mail"], worker="w1")
    assert job["id"] == first["id"]
    failed = q.fail(job["id"], job["token"], "smtp down", retryable=False)
    assert failed["state"] == "dead"
    assert q.dequeue(["mail"], worker="w1") is None, "the scheduled job ran early"
    assert q.counts() == {"mail": {"queued": 1, "completed": 1, "dead": 1}}
    with pytest.raises(keel.NotFound):
        q.get(99999)
    with pytest.raises(keel.InvalidArgument):
        q.enqueue("bad kind", {})
    with pytest.raises(keel.InvalidArgument, match="cannot be stored as JSON"):
        q.enqueue("mail", object())


def test_worker_runs_python_handlers_and_a_failing_handler_fails_only_its_job(tmp_path):
    q = keel.Queue(tmp_path / "jobs.lmdb")
    good = [q.enqueue("work", {"n": n})["id"] for n in range(20)]
    bad = q.enqueue("work", {"boom": True}, max_attempts=1)["id"]
    permanent = q.enqueue("other", {}, max_attempts=5)["id"]
    seen = []
    lock = threading.Lock()
    all_ran = threading.Event()

    def note(job):
        with lock:
            seen.append(job["id"])
            if len(seen) == 22:
                all_ran.set()

    def work(job):
        note(job)
        if job["payload"].get("boom"):
            raise RuntimeError("handler blew up")
        return {"double": job["payload"]["n"] * 2}

    def other(job):
        note(job)
        raise keel.JobError("bad input", retryable=False)

    with keel.Worker(q, {"work": (work, 4), "other": other}, name="py", poll=0.05) as worker:
        assert sorted(worker.kinds) == ["other", "work"]
        assert all_ran.wait(PATIENCE)
    assert sorted(seen) == sorted(good + [bad, permanent])
    assert q.get(good[3])["result"] == {"double": 6}
    assert q.get(bad)["state"] == "dead" and "handler blew up" in q.get(bad)["last_error"]
    assert q.get(permanent)["state"] == "dead" and q.get(permanent)["attempts"] == 1
    stats = worker.stats()
    assert (stats["completed"], stats["failed"]) == (20, 2)


def test_a_handler_past_its_job_timeout_fails_only_that_attempt(tmp_path):
    q = keel.Queue(tmp_path / "jobs.lmdb")
    job_id = q.enqueue("hang", {})["id"]
    release = threading.Event()

    def hang(job):
        release.wait(PATIENCE)
        return {"late": True}

    worker = keel.Worker(q, {"hang": hang}, job_timeout=0.05, poll=0.05)
    try:
        deadline = time.monotonic() + PATIENCE
        while q.get(job_id)["state"] != "retrying":
            assert time.monotonic() < deadline, "the timeout never failed the attempt"
            time.sleep(0.005)
        assert "job timeout" in q.get(job_id)["last_error"]
        assert worker.stats()["timed_out"] == 1
    finally:
        release.set()
        worker.stop(PATIENCE)
    assert q.get(job_id)["result"] is None


def test_an_unknown_kind_fails_start_up(tmp_path):
    q = keel.Queue(tmp_path / "jobs.lmdb")
    with pytest.raises(keel.InvalidArgument):
        keel.Worker(q, {"a": lambda job: None}, allow=["a", "typo"])
    with pytest.raises(ValueError):
        keel.Worker(q, {"a": lambda job: None}, block=["typo"])
    with pytest.raises(TypeError):
        keel.Worker(q, {"a": 42})


def test_aio_queue_and_async_handlers(tmp_path):
    q = keel.Queue(tmp_path / "jobs.lmdb")

    async def main():
        aq = keel.aio.AsyncQueue(q)
        job = await aq.enqueue("mail", {"n": 1})
        claimed = await aq.dequeue(["mail"], worker="aio")
        assert claimed["id"] == job["id"]
        assert (await aq.complete(claimed["id"], claimed["token"], "ok"))["state"] == "completed"

        await aq.enqueue("async", {"n": 2})
        done = asyncio.Event()

        async def handler(job):
            await asyncio.sleep(0)
            done.set()
            return {"got": job["payload"]["n"]}

        worker = keel.aio.worker(q, {"async": handler}, poll=0.05)
        await asyncio.wait_for(done.wait(), PATIENCE)
        await keel.aio.run_blocking(lambda: worker.stop(PATIENCE))
        return await aq.counts()

    counts = asyncio.run(main())
    assert counts == {"mail": {"completed": 1}, "async": {"completed": 1}}
    ops = keel.aio.AsyncOperations(keel.Operations(tmp_path / "ops.lmdb"))

    async def claim():
        await ops.ready("ds", ["index"])
        return await ops.claim("index", worker="aio")

    assert [c["item"] for c in asyncio.run(claim())] == ["ds"]


def wait_for(what, condition):
    """Waits (polling) for an effect of keel's own threads or of real time."""
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.005)


def test_an_expired_claim_reads_as_expired_and_lapses_to_failed(tmp_path):
    ops = keel.Operations(tmp_path / "ops.lmdb", max_lapses=1)
    ops.ready("ds", ["index"])
    ops.claim("index", worker="dying", lease=0.01)
    wait_for("the lease to end", lambda: ops.states("ds")[0]["expired"])
    [listed] = ops.next("index")
    assert (listed["state"], listed["expired"]) == ("WORKING", True)
    assert ops.reset_expired() == {"ready": 1, "failed": 0}
    assert ops.states("ds")[0]["state"] == "READY"
    ops.claim("index", worker="dying", lease=0.01)
    wait_for("the lease to end", lambda: ops.states("ds")[0]["expired"])
    assert ops.reset_expired() == {"ready": 0, "failed": 1}
    record = ops.states("ds")[0]
    assert record["state"] == "FAILED" and "lapsed 2 times" in record["message"]


def test_next_lists_by_item_when_asked(tmp_path):
    ops = keel.Operations(tmp_path / "ops.lmdb")
    for item in ["c", "a", "b"]:
        ops.ready(item, ["unpack"])
    assert [r["item"] for r in ops.next("unpack", order="item")] == ["a", "b", "c"]
    assert [r["item"] for r in ops.next("unpack", 2, order="item")] == ["a", "b"]
    with pytest.raises(keel.InvalidArgument):
        ops.next("unpack", order="newest")


def test_negative_values_for_unsigned_parameters_are_invalid_arguments(tmp_path):
    q = keel.Queue(tmp_path / "jobs.lmdb")
    ops = keel.Operations(tmp_path / "ops.lmdb")
    calls = [
        lambda: q.enqueue("k", priority=-1),
        lambda: q.enqueue("k", max_attempts=-1),
        lambda: q.enqueue("k", priority=2**70),
        lambda: q.list("k", limit=-1),
        lambda: q.get(-1),
        lambda: q.cancel(-1),
        lambda: q.complete(-1, 1),
        lambda: q.heartbeat(1, -1),
        lambda: ops.next("unpack", -1),
        lambda: ops.claim("unpack", -1, worker="w"),
        lambda: ops.error("ds", "unpack", "x", token=-1),
        lambda: keel.Queue(tmp_path / "jobs.lmdb", max_resets=-1),
        lambda: keel.Operations(tmp_path / "ops.lmdb", max_lapses=-1),
        lambda: keel.Worker(q, {"k": (lambda job: None, -1)}),
    ]
    for call in calls:
        with pytest.raises(keel.InvalidArgument):
            call()


def test_a_zero_poll_interval_is_refused(tmp_path):
    q = keel.Queue(tmp_path / "jobs.lmdb")
    with pytest.raises(keel.InvalidArgument):
        keel.Worker(q, {"k": lambda job: None}, poll=0)


def test_max_resets_is_configurable(tmp_path):
    q = keel.Queue(tmp_path / "jobs.lmdb", max_resets=0)
    job_id = q.enqueue("k")["id"]
    q.dequeue(["k"], worker="dying", lease=0.01)
    wait_for("the lease to end", lambda: q.reset_expired()["dead"] == 1)
    job = q.get(job_id)
    assert job["state"] == "dead" and "kept dying" in job["last_error"]


def test_a_cancelled_jobs_handler_is_told_through_its_context(tmp_path):
    q = keel.Queue(tmp_path / "jobs.lmdb")
    job_id = q.enqueue("slow")["id"]
    started, told, finish = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def handler(job, ctx):
        seen["ids"] = (job["id"], ctx.id, ctx.attempt)
        started.set()
        while not ctx.lease_lost():
            time.sleep(0.002)
        seen["should_stop"] = ctx.should_stop()
        told.set()
        finish.wait(PATIENCE)

    with keel.Worker(q, {"slow": handler}, lease=0.3, heartbeat=0.05, poll=0.05) as worker:
        assert started.wait(PATIENCE)
        q.cancel(job_id, "operator")
        assert told.wait(PATIENCE), "the handler never learnt its job was cancelled"
        assert worker.running == 0, "the lost job is still in the running set"
        assert worker.stats()["lost"] == 1
        finish.set()
    assert seen == {"ids": (job_id, job_id, 1), "should_stop": True}
    assert q.get(job_id)["state"] == "cancelled"


def test_a_one_argument_handler_still_gets_the_job_dict(tmp_path):
    q = keel.Queue(tmp_path / "jobs.lmdb")
    job_id = q.enqueue("echo", {"n": 7})["id"]
    done = threading.Event()

    def handler(job):
        done.set()
        return job["payload"]

    with keel.Worker(q, {"echo": handler}, poll=0.05):
        assert done.wait(PATIENCE)
        wait_for("the result to be stored", lambda: q.get(job_id)["state"] == "completed")
    assert q.get(job_id)["result"] == {"n": 7}


def test_worker_stats_answer_while_stop_runs_in_another_thread(tmp_path):
    q = keel.Queue(tmp_path / "jobs.lmdb")
    q.enqueue("slow")
    stopping, release = threading.Event(), threading.Event()

    def handler(job, ctx):
        while not ctx.should_stop():
            time.sleep(0.002)
        stopping.set()  # stop() now holds the worker, waiting for this handler
        release.wait(PATIENCE)

    worker = keel.Worker(q, {"slow": handler}, poll=0.05)
    wait_for("the job to start", lambda: worker.running == 1)
    stopper = threading.Thread(target=worker.stop, args=(PATIENCE,))
    stopper.start()
    assert stopping.wait(PATIENCE)
    stats = worker.stats()
    kinds = worker.kinds
    still_stopping = stopper.is_alive()
    release.set()
    stopper.join()
    assert still_stopping, "stats() waited for stop() to finish"
    assert stats["completed"] == 0 and kinds == ["slow"]


def test_enqueue_many_stores_a_batch_in_order_with_options(tmp_path):
    q = keel.Queue(tmp_path / "jobs.lmdb")
    records = q.enqueue_many(
        [
            ("mail", {"n": 1}),
            {"kind": "mail", "payload": {"n": 2}, "priority": 1, "unique_key": "u"},
            {"kind": "mail", "payload": {"n": 3}, "unique_key": "u"},
            {"kind": "later", "delay": 3600},
        ]
    )
    assert [r["created"] for r in records] == [True, True, False, True]
    assert records[2]["id"] == records[1]["id"]
    assert records[3]["run_at"] >= records[0]["run_at"] + 3600  # seconds, as delay went in
    assert q.counts() == {"mail": {"queued": 2}, "later": {"queued": 1}}
    assert q.dequeue(["mail"], worker="w")["payload"] == {"n": 2}
    for bad in ([("mail", object())], [{"kind": "mail", "colour": 1}], [{"kind": "mail", "priority": -1}]):
        with pytest.raises((TypeError, keel.InvalidArgument)):
            q.enqueue_many(bad)
    with pytest.raises(keel.InvalidArgument):
        q.enqueue_many([{"kind": "mail", "priority": -1}])
    assert q.counts()["mail"] == {"queued": 1, "running": 1}, "a refused batch stored nothing"
    assert q.enqueue_many([]) == []

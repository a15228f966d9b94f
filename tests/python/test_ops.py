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

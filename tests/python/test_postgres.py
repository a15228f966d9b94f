"""keel.Queue and keel.Operations opened by URL on PostgreSQL (the server in
KEEL_TEST_PG_URL, which scripts/test starts with scripts/pg)."""
import os
import threading
import time

import pytest

import keel


def pg_url() -> str:
    url = os.environ.get("KEEL_TEST_PG_URL")
    if not url:
        pytest.fail(
            "KEEL_TEST_PG_URL is not set: start a server with `scripts/pg start` and "
            'export KEEL_TEST_PG_URL="$(scripts/pg url)" (scripts/test does both); '
            "install the server with `apt-get install postgresql`"
        )
    return url


def test_a_url_opens_postgresql_and_a_worker_runs_its_jobs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    queue = keel.Queue(pg_url())
    job = queue.enqueue("py.pg.mail", {"to": "ann"})
    done = threading.Event()
    seen = []

    def handle(record):
        seen.append(record["id"])
        done.set()

    worker = keel.Worker(queue, {"py.pg.mail": handle})
    try:
        assert done.wait(30), "the worker never ran the job"
    finally:
        worker.stop()
    assert job["id"] in seen
    assert not any(tmp_path.iterdir()), "no local folder was made for the URL"
    ops = keel.Operations(pg_url())
    ops.ready("py-ds", ["py.pg.unpack"])
    assert [r["item"] for r in ops.next("py.pg.unpack", 10)] == ["py-ds"]


def test_an_unknown_scheme_is_refused_not_made_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(keel.InvalidArgument):
        keel.Queue("mysql://db/app")
    assert not any(tmp_path.iterdir())


def test_on_postgresql_list_finds_failed_items_and_close_releases(tmp_path):
    import time
    import uuid

    op = f"py.pg.list.{uuid.uuid4().hex[:8]}"  # the database outlives the test
    with keel.Operations(pg_url()) as ops:
        for item in ["pg-c", "pg-a", "pg-b"]:
            ops.ready(item, [op])
        ops.error("pg-c", op, "bad tarball")
        ops.error("pg-a", op, "bad checksum")
        failed = ops.list(op, state="FAILED")
        assert [r["item"] for r in failed] == ["pg-a", "pg-c"]
        assert failed[0]["updated_at"] == pytest.approx(time.time(), abs=60), "the database's clock, in seconds"
    assert ops.closed and "closed" in repr(ops)
    with pytest.raises(keel.Closed):
        ops.list(op)
    with keel.Queue(pg_url()) as queue:
        job = queue.enqueue("py.pg.order", {"b": 1, "a": 2})
        assert list(queue.get(job["id"])["payload"]) == ["b", "a"], "the payload's order, on PostgreSQL too"
    with pytest.raises(keel.Closed):
        queue.counts()


# ---- cross-host keyed locks: keel.KeyedLocks(url) ----------------------------


def advisory_key(key: str, schema: str = "keel") -> int:
    """The advisory-lock id keel uses for `key` (FNV-1a of schema NUL key), signed."""
    value = 0xCBF29CE484222325
    for byte in f"{schema}\0{key}".encode():
        value ^= byte
        value = (value * 0x100000001B3) % (1 << 64)
    return value - (1 << 64) if value >= 1 << 63 else value


def psql(sql: str) -> str:
    """Runs `sql` on the test server with the server's own psql."""
    import glob
    import shutil
    import subprocess

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql")) or [shutil.which("psql")]
    assert found[-1], "psql not found"
    done = subprocess.run([found[-1], pg_url(), "-qtAc", sql], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def until(condition, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_url_locks_exclude_across_handles_and_shared_holders_share():
    a, b = keel.KeyedLocks(pg_url()), keel.KeyedLocks(pg_url())
    with a.lock("py-pg-modes"):
        assert b.try_lock("py-pg-modes") is None
        assert b.try_lock("py-pg-modes", shared=True) is None
        started = time.monotonic()
        with pytest.raises(keel.Timeout):
            b.lock("py-pg-modes", timeout=0.2)
        assert time.monotonic() - started >= 0.19
        assert a.stats() == {"entries": 1, "holders": 1, "waiters": 0}
        assert len(b) == 0, "b holds nothing"
    one = a.lock("py-pg-modes", shared=True)
    two = b.lock("py-pg-modes", shared=True, timeout=5)
    assert a.try_lock("py-pg-modes") is None
    one.release()
    two.release()
    assert b.try_lock("py-pg-modes") is not None
    assert len(a) == 0 and len(b) == 0


def test_url_lock_many_takes_every_key_or_none():
    a, b = keel.KeyedLocks(pg_url()), keel.KeyedLocks(pg_url())
    middle = a.lock("py-pg-many-b")
    with pytest.raises(keel.Timeout):
        b.lock_many(["py-pg-many-c", "py-pg-many-a", "py-pg-many-b"], timeout=0.2)
    ids = ",".join(str(advisory_key(f"py-pg-many-{k}")) for k in "abc")
    held = psql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
        f"AND ((classid::bigint << 32) | objid::bigint) IN ({ids})"
    )
    assert held == "1", "only the first holder's key is held"
    middle.release()
    with b.lock_many(["py-pg-many-c", "py-pg-many-a", "py-pg-many-b".encode()], timeout=5) as all_three:
        assert all_three.locked
        assert a.try_lock("py-pg-many-a") is None
    assert a.try_lock("py-pg-many-a") is not None


def test_a_url_guard_carries_a_growing_fencing_token_and_is_told_of_a_lost_session():
    a, b = keel.KeyedLocks(pg_url()), keel.KeyedLocks(pg_url())
    first = a.lock("py-pg-lost")
    first.check()
    assert isinstance(first.token, int) and first.token > 0
    # The server ends the holder's session (a network cut, a failover).
    key = advisory_key("py-pg-lost")
    psql(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        f"AND ((classid::bigint << 32) | objid::bigint) = {key}"
    )
    second = b.lock("py-pg-lost", timeout=10)
    with pytest.raises(keel.Closed):
        first.check()
    assert second.token > first.token, "a later holder carries a larger token"
    second.check()
    second.release()
    with pytest.raises(keel.Closed):
        second.check()
    assert keel.KeyedLocks().lock("in-process").token is None


def test_a_url_wait_ends_on_its_cancellation_token_holding_nothing():
    a, b = keel.KeyedLocks(pg_url()), keel.KeyedLocks(pg_url())
    held = a.lock("py-pg-cancel-k")
    token = keel.CancellationToken()
    outcome = []

    def wait():
        try:
            b.lock_many(["py-pg-cancel-j", "py-pg-cancel-k"], cancel=token)
            outcome.append("granted")
        except keel.Cancelled:
            outcome.append("cancelled")

    t = threading.Thread(target=wait)
    t.start()
    until(lambda: b.stats()["waiters"] == 1, "the wait never started")
    token.cancel()
    t.join(10)
    assert not t.is_alive() and outcome == ["cancelled"]
    assert b.stats() == {"entries": 0, "holders": 0, "waiters": 0}
    assert a.try_lock("py-pg-cancel-j") is not None, "the cancelled wait kept a key"
    held.release()


def test_url_locks_keep_passwords_out_and_refuse_bad_input():
    with_password = pg_url().replace("postgresql://keel@", "postgresql://keel:s3cret@")
    assert "s3cret" in with_password
    locks = keel.KeyedLocks(with_password)
    assert "s3cret" not in repr(locks) and "postgresql://" in repr(locks)
    guard = locks.lock("py-pg-repr")
    assert "s3cret" not in repr(guard) and f"token={guard.token}" in repr(guard)
    guard.release()
    with pytest.raises(keel.KeelError) as refused:
        keel.KeyedLocks("postgresql://keel:s3cret@127.0.0.1:1/keel")
    assert "s3cret" not in str(refused.value)
    with pytest.raises(keel.InvalidArgument):
        keel.KeyedLocks("mysql://db/app")
    with pytest.raises(keel.InvalidArgument):
        locks.lock(b"\xff\xfe")
    assert repr(keel.KeyedLocks("sources")).startswith('<keel.KeyedLocks "sources"')


def test_cancelling_an_aio_wait_for_a_url_lock_withdraws_it():
    import asyncio

    import keel.aio

    a, b = keel.KeyedLocks(pg_url()), keel.KeyedLocks(pg_url())
    held = a.lock("py-pg-aio")

    async def main():
        task = asyncio.create_task(keel.aio.acquire(b, "py-pg-aio"))
        deadline = time.monotonic() + 10
        while b.stats()["waiters"] == 0:
            assert time.monotonic() < deadline, "the wait never started"
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    until(lambda: b.stats() == {"entries": 0, "holders": 0, "waiters": 0}, "the cancelled wait stayed")
    held.release()
    with b.lock("py-pg-aio", timeout=5) as guard:
        assert guard.locked

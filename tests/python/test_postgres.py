"""keel.Queue and keel.Operations opened by URL on PostgreSQL (the server in
KEEL_TEST_PG_URL, which scripts/test starts with scripts/pg)."""
import os
import threading

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

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

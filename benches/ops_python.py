"""Durable jobs from Python, beside the raw durable commit and the Python peers.

Rows (ratio = keel's speed / the baseline's, median (min..max) of interleaved rounds):

- **worker vs raw LMDB**: jobs enqueued with ``Queue.enqueue_many`` and run by a
  ``keel.Worker`` with 8 handler threads (a Python no-op handler), until every
  completion is stored — against the raw durable single-put commit rate of LMDB
  (py-lmdb, one put per durable commit, ``sync=True``), measured in the same run on
  the same disk. Target >= 1.5: fewer commits per job than one (claims for every
  free handler in one transaction, completions several to a commit).
- **explicit calls vs raw LMDB**: 8 Python threads each doing ``enqueue`` ->
  ``dequeue`` -> ``complete`` (three durable calls per job). Reported.
- **enqueue_many vs enqueue**: 1,000 jobs in one call against 1,000 single
  enqueues. Target >= 20.
- **peers**: the same 8-thread job flow through sqlite3 (WAL, synchronous=FULL, a
  connection per thread, no Python lock), huey (SqliteHuey, WAL, fsync=True:
  enqueue, dequeue, execute) and persist-queue (SQLiteAckQueue, WAL with sqlite's
  default synchronous=FULL: put, get, ack) — every one durable — against keel's
  worker flow. Target >= 1.

Run: ``scripts/bench-env`` once (installs py-lmdb, huey, persist-queue into .venv),
``.venv/bin/maturin develop --release``, then ``.venv/bin/python benches/ops_python.py``.
``KEEL_BENCH_JOBS`` sets the jobs per round (default 160), ``KEEL_BENCH_ROUNDS``
the rounds (default 3).
"""

import os
import shutil
import sqlite3
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lmdb  # noqa: E402
import persistqueue  # noqa: E402
from huey import SqliteHuey  # noqa: E402

import keel  # noqa: E402
from support import header, interleaved, report, timed  # noqa: E402

JOBS = int(os.environ.get("KEEL_BENCH_JOBS", "160"))
ROUNDS = int(os.environ.get("KEEL_BENCH_ROUNDS", "3"))
THREADS = 8
BODY = "x" * 60


class Scratch:
    """A fresh file name per call, all in one folder removed at the end."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="keel-bench-ops-py-")
        self.count = 0

    def path(self, name):
        self.count += 1
        return os.path.join(self.folder, f"{self.count}-{name}")

    def close(self):
        shutil.rmtree(self.folder, ignore_errors=True)


def per_job(count, body):
    """Microseconds per job of `body`, which handles `count` jobs."""
    return timed(body) * 1e6 / count


def in_threads(count, job):
    """Runs `job(thread, i)` count times over THREADS threads."""
    per_thread = count // THREADS
    start = threading.Barrier(THREADS)

    def run(thread):
        start.wait()
        for i in range(per_thread):
            job(thread, i)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# ---- baselines -----------------------------------------------------------------


def raw_lmdb_put(scratch):
    env = lmdb.open(scratch.path("raw.lmdb"), map_size=1 << 30, sync=True, subdir=True)
    value = b"x" * 100

    def puts():
        for i in range(JOBS):
            with env.begin(write=True) as txn:
                txn.put(f"{i:08}".encode(), value)

    cost = per_job(JOBS, puts)
    env.close()
    return cost


def sqlite_flow(scratch):
    path = scratch.path("jobs.sqlite")
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, body TEXT, state INTEGER)")
    setup.commit()
    setup.close()
    local = threading.local()

    def connection():
        if not hasattr(local, "db"):
            local.db = sqlite3.connect(path, timeout=60, isolation_level=None)
            local.db.execute("PRAGMA synchronous=FULL")
        return local.db

    def job(thread, i):
        db = connection()
        db.execute("INSERT INTO jobs (body, state) VALUES (?, 0)", (BODY,))
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT id FROM jobs WHERE state = 0 ORDER BY id LIMIT 1").fetchone()
        db.execute("UPDATE jobs SET state = 1 WHERE id = ?", (row[0],))
        db.execute("COMMIT")
        db.execute("UPDATE jobs SET state = 2 WHERE id = ?", (row[0],))

    return per_job(JOBS, lambda: in_threads(JOBS, job))


def huey_flow(scratch):
    huey = SqliteHuey(filename=scratch.path("huey.db"), fsync=True, journal_mode="wal")

    @huey.task()
    def noop(n):
        return None

    def job(thread, i):
        noop(i)
        task = huey.dequeue()
        huey.execute(task)

    cost = per_job(JOBS, lambda: in_threads(JOBS, job))
    huey.storage.close()
    return cost


def persist_queue_flow(scratch):
    queue = persistqueue.SQLiteAckQueue(scratch.path("pq"), multithreading=True, auto_commit=True)

    def job(thread, i):
        queue.put({"thread": thread, "body": BODY})
        item = queue.get(block=True, timeout=60)
        queue.ack(item)

    return per_job(JOBS, lambda: in_threads(JOBS, job))


# ---- keel ------------------------------------------------------------------------


def keel_worker_flow(scratch):
    queue = keel.Queue(scratch.path("worker.lmdb"))
    done = threading.Event()
    lock = threading.Lock()
    handled = [0]

    def handler(job):
        with lock:
            handled[0] += 1
            if handled[0] == JOBS:
                done.set()

    def flow():
        queue.enqueue_many([("bench", {"n": n, "body": BODY}) for n in range(JOBS)])
        worker = keel.Worker(queue, {"bench": (handler, THREADS)}, poll=0.05)
        done.wait(600)
        # Stored, not just run: stop waits for the completer's last commit.
        worker.stop(60)
        assert worker.stats()["completed"] == JOBS, worker.stats()

    return per_job(JOBS, flow)


def keel_explicit_flow(scratch):
    queue = keel.Queue(scratch.path("explicit.lmdb"))

    def job(thread, i):
        queue.enqueue("bench", {"thread": thread, "body": BODY})
        claimed = queue.dequeue(["bench"], worker=f"bench-{thread}", lease=60)
        queue.complete(claimed["id"], claimed["token"])

    return per_job(JOBS, lambda: in_threads(JOBS, job))


BATCH = 1000


def keel_single_enqueues(scratch):
    queue = keel.Queue(scratch.path("single.lmdb"))
    count = BATCH // 10  # the slow side; its cost per job does not depend on the count

    def enqueues():
        for n in range(count):
            queue.enqueue("bench", {"n": n})

    return per_job(count, enqueues)


def keel_enqueue_many(scratch):
    queue = keel.Queue(scratch.path("many.lmdb"))
    jobs = [("bench", {"n": n}) for n in range(BATCH)]
    return per_job(BATCH, lambda: queue.enqueue_many(jobs))


def main():
    header(
        f"ops from Python: {JOBS} jobs per round, {ROUNDS} rounds, {THREADS} threads, durable, "
        f"{os.cpu_count()} cores"
    )
    scratch = Scratch()
    try:
        base, worker = interleaved(ROUNDS, lambda: raw_lmdb_put(scratch), lambda: keel_worker_flow(scratch))
        report("worker, 8 handlers vs raw LMDB put", "us", base, worker, target=1.5)
        base, explicit = interleaved(ROUNDS, lambda: raw_lmdb_put(scratch), lambda: keel_explicit_flow(scratch))
        report("explicit calls, 8 threads vs raw LMDB put", "us", base, explicit)
        single, many = interleaved(ROUNDS, lambda: keel_single_enqueues(scratch), lambda: keel_enqueue_many(scratch))
        report(f"enqueue_many({BATCH}) vs enqueue", "us", single, many, target=20)
        for name, peer in [
            ("sqlite3 (WAL, FULL)", sqlite_flow),
            ("huey (SqliteHuey, fsync)", huey_flow),
            ("persist-queue (SQLiteAckQueue)", persist_queue_flow),
        ]:
            base, worker = interleaved(ROUNDS, lambda: peer(scratch), lambda: keel_worker_flow(scratch))
            report(f"worker vs {name}", "us", base, worker, target=1.0)
    finally:
        scratch.close()


if __name__ == "__main__":
    main()

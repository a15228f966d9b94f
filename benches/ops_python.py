"""The durable job flow from Python, beside a durable single-row baseline.

keel: ``enqueue`` -> ``dequeue`` -> ``complete`` through keel.Queue (three durable
commits per job, the GIL released during each), from 1 and from 8 threads.
Baseline: one durable single-row write per call through the standard library's
sqlite3 (WAL, synchronous=FULL: one fsync per commit), from the same threads, on
the same disk. The ratio is baseline writes/s over keel jobs/s; about 3 means a
job costs what its three commits cost.

Run: ``.venv/bin/python benches/ops_python.py`` after installing the package.
``KEEL_BENCH_JOBS`` sets the jobs per thread (default 200).
"""

import os
import sqlite3
import tempfile
import threading
import time

import keel

PER_THREAD = int(os.environ.get("KEEL_BENCH_JOBS", "200"))


def rate(threads, op):
    start = threading.Barrier(threads + 1)

    def run(index):
        start.wait()
        for i in range(PER_THREAD):
            op(index, i)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    began = time.perf_counter()
    for w in workers:
        w.join()
    return threads * PER_THREAD / (time.perf_counter() - began)


def sqlite_baseline(path, threads):
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v BLOB)")
    setup.commit()
    setup.close()
    local = threading.local()
    lock = threading.Lock()  # sqlite allows one writer; take turns politely

    def put(thread, i):
        if not hasattr(local, "db"):
            local.db = sqlite3.connect(path, timeout=60, check_same_thread=False)
            local.db.execute("PRAGMA synchronous=FULL")
        with lock:
            local.db.execute("INSERT INTO t VALUES (?, ?)", (f"{thread}-{i}", b"x" * 100))
            local.db.commit()

    return rate(threads, put)


def keel_flow(path, threads):
    queue = keel.Queue(path)
    body = "x" * 60

    def flow(thread, i):
        queue.enqueue("bench", {"thread": thread, "body": body})
        job = queue.dequeue(["bench"], worker=f"bench-{thread}", lease=60)
        queue.complete(job["id"], job["token"])

    return rate(threads, flow)


def main():
    with tempfile.TemporaryDirectory(prefix="keel-bench-ops-py-") as folder:
        print(f"ops from Python: {PER_THREAD} per thread, durable")
        print(f"{'threads':<8} {'sqlite3 writes/s':>17} {'keel jobs/s':>12} {'ratio':>7}")
        for threads in (1, 8):
            base = sqlite_baseline(os.path.join(folder, f"base-{threads}.db"), threads)
            jobs = keel_flow(os.path.join(folder, f"jobs-{threads}.lmdb"), threads)
            print(f"{threads:<8} {base:>17.0f} {jobs:>12.0f} {base / jobs:>6.2f}x")


if __name__ == "__main__":
    main()

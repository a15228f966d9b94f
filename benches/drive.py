"""The drive benchmark's Python rows: the same operations as benches/drive.rs,
through keel.Drive. Run by the Rust benchmark when KEEL_BENCH_PYTHON names a
Python with keel installed; prints one JSON object of ops/s (items/s for
listings) keyed like the Rust rows.

    python benches/drive.py ITEMS DIR
"""

import json
import sys
import threading
import time


def rate(count, work):
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def items_rate(listing):
    start, items = time.perf_counter(), 0
    while time.perf_counter() - start < 0.3:
        items += listing()
    return items / (time.perf_counter() - start)


def parallel(threads, total, op):
    per_thread = total // threads
    barrier = threading.Barrier(threads)

    def run(t):
        barrier.wait()
        for i in range(per_thread):
            op(t, i)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return per_thread * threads / (time.perf_counter() - start)


def main():
    import keel

    n, folder_path = int(sys.argv[1]), sys.argv[2]
    rates = {}
    drive = keel.Drive(f"{folder_path}/py-nosync.lmdb", durable=False)
    folder = drive.make_path("bench/a/b")[-1]["id"]
    ids = []
    rates["create item (no fsync)"] = rate(
        n, lambda: ids.extend(drive.create(folder, f"item{i:05}", type="note")["id"] for i in range(n))
    )
    value = {"title": "a benchmark note", "tags": ["x", "y"], "count": 12345}
    rates["set data (no fsync)"] = rate(n, lambda: [drive.set_data(i, value) for i in ids])
    rates["get by id"] = rate(n, lambda: [drive.get(i) for i in ids])
    paths = [f"bench/a/b/item{i:05}" for i in range(n)]
    rates["resolve 5-step path"] = rate(n, lambda: [drive.resolve(p) for p in paths])
    for i in range(10):
        drive.make_path(f"a{i}/b/c")
    short = [f"a{i % 10}/b/c" for i in range(n)]
    rates["resolve 3-step path"] = rate(n, lambda: [drive.resolve(p) for p in short])
    rates["get current data"] = rate(n, lambda: [drive.get_data(i) for i in ids])
    rates["list children (items/s)"] = items_rate(lambda: sum(1 for _ in drive.children(folder)))
    rates["walk whole tree (items/s)"] = items_rate(lambda: sum(1 for _ in drive.walk()))

    durable = keel.Drive(f"{folder_path}/py-durable.lmdb")
    writes = max(n // 4, 64)
    for threads in (1, 16):
        parent = durable.create(None, f"t{threads}")["id"]
        rates[f"{threads} thread(s) creating items"] = parallel(
            threads, writes, lambda t, i, parent=parent: durable.create(parent, f"w{t}-{i}")
        )
    print(json.dumps(rates))


if __name__ == "__main__":
    main()

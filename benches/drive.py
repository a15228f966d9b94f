"""The drive from Python: keel.Drive beside py-lmdb (and sqlite3, WAL with
synchronous=FULL) doing the same work, in one run, rounds interleaved.

Baselines do what a drive built on them would: items are stored as their JSON
form (what keel returns) and parsed with json.loads on every read; a path step
is a child-index lookup plus the item; data is its own record. Every table
holds as many entries as the drive (N items), so neither side stays cache-hot
on a small table.

    scripts/bench-env && .venv/bin/python benches/drive.py [ITEMS]

ratio = keel's speed / the baseline's (above 1: keel is faster).
"""

import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import header, interleaved, report, timed  # noqa: E402

import keel  # noqa: E402
import lmdb  # noqa: E402

ROUNDS = 5
VALUE = {"title": "a benchmark note", "tags": ["x", "y"], "count": 12345}


class RawDrive:
    """A drive's layout in py-lmdb: items as JSON, a child index, data records."""

    def __init__(self, path, durable):
        self.env = lmdb.open(path, map_size=1 << 30, max_dbs=8, sync=durable, metasync=durable)
        self.items = self.env.open_db(b"items")
        self.children = self.env.open_db(b"children")
        self.types = self.env.open_db(b"types")
        self.data = self.env.open_db(b"data")

    def load(self, txn, id_):
        return json.loads(txn.get(id_, db=self.items))

    def create(self, txn, parent, name, kind=None):
        id_ = os.urandom(16)
        item = {
            "id": id_.hex(), "parent": parent.hex(), "name": name, "type": kind, "created": 0,
            "creator": "", "children": 0, "data_size": 0, "version": None, "updated": 0,
            "updater": "", "permissions": {"default": None, "users": {}, "roles": {}},
        }
        txn.put(id_, json.dumps(item).encode(), db=self.items)
        txn.put(parent + name.lower().encode(), id_, db=self.children)
        if kind:
            txn.put(kind.encode() + id_, b"", db=self.types)
        if parent != ROOT:
            up = self.load(txn, parent)
            up["children"] += 1
            txn.put(parent, json.dumps(up).encode(), db=self.items)
        return id_

    def set_data(self, txn, id_, value, version):
        text = json.dumps(value).encode()
        txn.put(id_ + version.encode(), text, db=self.data)
        item = self.load(txn, id_)
        item["version"], item["data_size"] = version, len(text)
        txn.put(id_, json.dumps(item).encode(), db=self.items)

    def resolve(self, txn, path):
        parent, steps = ROOT, []
        for name in path.strip("/ ").lower().split("/"):
            parent = txn.get(parent + name.encode(), db=self.children)
            steps.append(self.load(txn, parent))
        return steps

    def get_data(self, txn, id_):
        item = self.load(txn, id_)
        version = item["version"]
        return version, json.loads(txn.get(id_ + version.encode(), db=self.data))


ROOT = bytes(16)


def sqlite_open(path):
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS items (id BLOB PRIMARY KEY, parent BLOB, name TEXT, json TEXT)")
    return db


def per_call(count, body):
    """A cost: microseconds per call of `body` run over `count` calls."""
    return lambda: timed(body) / count * 1e6


def read_setup(folder, n):
    """The drive and its py-lmdb twin, each with N notes under bench/a."""
    drive = keel.Drive(f"{folder}/reads.lmdb", durable=False)
    raw = RawDrive(f"{folder}/raw-reads.lmdb", durable=False)
    top = drive.make_path("bench/a")[-1]["id"]
    with drive.batch() as b:
        ids = [b.create(top, f"item{i:05}", type="note")["id"] for i in range(n)]
    drive.apply([{"op": "set_data", "id": i, "data": VALUE} for i in ids])
    with raw.env.begin(write=True) as txn:
        bench = raw.create(txn, ROOT, "bench")
        a = raw.create(txn, bench, "a")
        raw_ids = [raw.create(txn, a, f"item{i:05}", "note") for i in range(n)]
        for i in raw_ids:
            raw.set_data(txn, i, VALUE, "0.0.1")
    paths = [f"bench/a/item{i:05}" for i in range(n)]
    return drive, raw, ids, raw_ids, paths


def read_ops(drive, raw, ids, raw_ids, paths):
    """(name, baseline, keel): each runs its call once per item."""

    def raw_get():
        for i in raw_ids:
            with raw.env.begin() as txn:
                raw.load(txn, i)

    def raw_resolve():
        for p in paths:
            with raw.env.begin() as txn:
                raw.resolve(txn, p)

    def raw_get_data():
        for i in raw_ids:
            with raw.env.begin() as txn:
                raw.get_data(txn, i)

    get = drive.get
    return [
        ("get", raw_get, lambda: [get(i) for i in ids]),
        ("resolve", raw_resolve, lambda: [drive.resolve(p) for p in paths]),
        ("get_data", raw_get_data, lambda: [drive.get_data(i) for i in ids]),
    ]


ROW_NAMES = {"get": "get by id", "resolve": "resolve 3-step path", "get_data": "get current data (parsed)"}


def reads(folder, n):
    print(f"\nreads ({n} items, every table {n} entries; us per call, lower is better)")
    drive, raw, ids, raw_ids, paths = read_setup(folder, n)
    get = drive.get
    for op, baseline, ours in read_ops(drive, raw, ids, raw_ids, paths):
        name = ROW_NAMES[op]
        b, k = interleaved(ROUNDS, per_call(n, baseline), per_call(n, ours))
        report(f"{name} vs py-lmdb+json.loads", "us", b, k, target=1.5)

    db = sqlite_open(f"{folder}/reads.sqlite")
    db.execute("BEGIN")
    sq_ids = [os.urandom(16) for _ in range(n)]
    for i, key in enumerate(sq_ids):
        db.execute("INSERT INTO items VALUES (?, ?, ?, ?)", (key, ROOT, f"item{i:05}", json.dumps(drive.get(ids[0]))))
    db.execute("COMMIT")

    def sqlite_get():
        for key in sq_ids:
            json.loads(db.execute("SELECT json FROM items WHERE id = ?", (key,)).fetchone()[0])

    b, k = interleaved(ROUNDS, per_call(n, sqlite_get), per_call(n, lambda: [get(i) for i in ids]))
    report("get by id vs sqlite3+json.loads", "us", b, k)


def batches(folder, writes=100, rounds_of=20):
    print(f"\n{writes} writes (creates) in one transaction, no fsync (us per write)")
    drive = keel.Drive(f"{folder}/batches.lmdb", durable=False)
    raw = RawDrive(f"{folder}/raw-batches.lmdb", durable=False)
    counter = iter(range(10**9))

    def raw_batch():
        for _ in range(rounds_of):
            with raw.env.begin(write=True) as txn:
                parent = raw.create(txn, ROOT, f"f{next(counter)}")
                for i in range(writes):
                    raw.create(txn, parent, f"item{i}", "note")

    def keel_batch():
        for _ in range(rounds_of):
            with drive.batch() as b:
                parent = b.create(None, f"f{next(counter)}")["id"]
                for i in range(writes):
                    b.create(parent, f"item{i}", type="note")

    def keel_apply():
        for _ in range(rounds_of):
            parent = drive.create(None, f"f{next(counter)}")["id"]
            drive.apply([{"op": "create", "parent": parent, "item": {"name": f"item{i}", "type": "note"}}
                         for i in range(writes)])

    calls = rounds_of * writes
    b, k = interleaved(ROUNDS, per_call(calls, raw_batch), per_call(calls, keel_batch))
    report("with drive.batch() vs py-lmdb txn", "us", b, k, target=0.8)
    b, k = interleaved(ROUNDS, per_call(calls, raw_batch), per_call(calls, keel_apply))
    report("drive.apply([...]) vs py-lmdb txn", "us", b, k, target=0.8)

    db = sqlite_open(f"{folder}/batches.sqlite")
    db.execute("PRAGMA synchronous=OFF")

    def sqlite_batch():
        for _ in range(rounds_of):
            db.execute("BEGIN")
            parent = os.urandom(16)
            for i in range(writes):
                db.execute("INSERT INTO items VALUES (?, ?, ?, ?)", (os.urandom(16), parent, f"item{i}", "{}"))
            db.execute("COMMIT")

    b, k = interleaved(ROUNDS, per_call(calls, sqlite_batch), per_call(calls, keel_batch))
    report("with drive.batch() vs sqlite3 txn (sync off)", "us", b, k)


def parallel(threads, per_thread, op):
    """Seconds for `threads` threads each calling op(t, i) `per_thread` times."""
    barrier = threading.Barrier(threads + 1)

    def run(t):
        barrier.wait()
        for i in range(per_thread):
            op(t, i)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    return time.perf_counter() - start


def durable(folder, threads=16, per_thread=25):
    print(f"\ndurable writes: {threads} Python threads x {per_thread} creates, each returning after fsync")
    drive = keel.Drive(f"{folder}/durable.lmdb")
    env = lmdb.open(f"{folder}/raw-durable.lmdb", map_size=1 << 30, sync=True, metasync=True)
    commits = threads * per_thread
    counter = iter(range(10**9))
    per_commit = []

    def bare_commits():
        # LMDB's bare durable commit rate: one put per commit, back to back.
        base = next(counter)
        start = time.perf_counter()
        for i in range(commits // 4):
            with env.begin(write=True) as txn:
                txn.put(b"k%d-%d" % (base, i), b"v" * 120)
        return (time.perf_counter() - start) / (commits // 4)

    def keel_commits():
        parent = drive.create(None, f"round{next(counter)}")["id"]
        before = drive.stats()
        seconds = parallel(threads, per_thread, lambda t, i: drive.create(parent, f"w{t}-{i}"))
        after = drive.stats()
        batches = after["batches"] - before["batches"]
        per_commit.append((after["writes"] - before["writes"]) / batches)
        return seconds / batches  # seconds per commit

    b, k = interleaved(ROUNDS, bare_commits, keel_commits)
    report("keel commits/s vs bare LMDB commits/s", "ms", [x * 1e3 for x in b], [x * 1e3 for x in k], target=0.8)
    m = statistics.median(per_commit)
    verdict = "met" if m >= 12 else "NOT MET"
    print(
        f"{'writes per commit (of ' + str(threads) + ' writers)':<40} median {m:.1f} "
        f"({min(per_commit):.1f}..{max(per_commit):.1f})  target >= 12: {verdict}"
    )

    db_path = f"{folder}/durable.sqlite"
    sqlite_open(db_path).close()
    local = threading.local()

    def sqlite_insert(t, i):
        if not hasattr(local, "db"):
            local.db = sqlite_open(db_path)
            local.db.execute("PRAGMA busy_timeout=10000")
        local.db.execute("INSERT INTO items VALUES (?, ?, ?, ?)", (os.urandom(16), ROOT, f"w{t}-{i}", "{}"))

    def sqlite_writes():
        return parallel(threads, per_thread, sqlite_insert) / commits

    def keel_writes():
        parent = drive.create(None, f"round{next(counter)}")["id"]
        return parallel(threads, per_thread, lambda t, i: drive.create(parent, f"w{t}-{i}")) / commits

    b, k = interleaved(3, sqlite_writes, keel_writes)
    report(f"{threads} threads' durable writes vs sqlite3", "us", [x * 1e6 for x in b], [x * 1e6 for x in k])


def count(folder, op, passes):
    """For callgrind: sets up, then runs read OP (or raw_OP) over every item
    `passes` times."""
    ops = {}
    for name, baseline, ours in read_ops(*read_setup(folder, 2000)):
        ops[name], ops["raw_" + name] = ours, baseline
    for _ in range(passes):
        ops[op]()


def main():
    folder = tempfile.mkdtemp(prefix="keel-bench-drive-py-")
    if sys.argv[1:2] == ["--count"]:
        try:
            count(folder, sys.argv[2], int(sys.argv[3]))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    try:
        header(f"drive from Python: {n} items, {ROUNDS} interleaved rounds, {os.cpu_count()} cores")
        reads(folder, n)
        batches(folder)
        durable(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Each object's ``stats()`` has exactly the keys of its entry in
``keel.stats()`` minus the entry's identity: both serialize the same core
stats struct, so a counter cannot be missing from one surface."""

import keel


def entry(part, field, value):
    found = [e for e in keel.stats().get(part, []) if e.get(field) == value]
    assert len(found) == 1, (part, field, value, found)
    return found[0]


def counters(entry, identity):
    return set(entry) - set(identity)


def test_locks_stats_keys_match_the_core():
    locks = keel.KeyedLocks("py-stats-keys-locks")
    listed = entry("locks", "name", "py-stats-keys-locks")
    assert set(locks.stats()) == counters(listed, ["name"])


def test_pool_stats_keys_match_the_core():
    pool = keel.SyncPool(2, name="py-stats-keys-pool")
    listed = entry("pool", "name", "py-stats-keys-pool")
    assert set(pool.stats()) == counters(listed, ["name", "max_concurrency"])
    pool.shutdown()


def test_journal_stats_keys_match_the_core(tmp_path):
    journal = keel.Journal(tmp_path)
    listed = entry("journal", "root", str(journal.root))
    assert set(journal.stats()) == counters(listed, ["root"])


def test_drive_stats_keys_match_the_core(tmp_path):
    drive = keel.Drive(str(tmp_path / "drive.lmdb"), durable=False)
    path = str((tmp_path / "drive.lmdb"))
    listed = [e for e in keel.stats()["drive"] if e["path"].endswith("drive.lmdb") and str(tmp_path.name) in e["path"]]
    assert len(listed) == 1, (path, keel.stats()["drive"])
    assert set(drive.stats()) == counters(listed[0], ["path"])
    assert "queued_writes" in drive.stats()


def test_worker_stats_keys_match_the_core(tmp_path):
    queue = keel.Queue(tmp_path / "jobs.lmdb")
    with keel.Worker(queue, {"noop": lambda job: None}, name="py-stats-keys-worker", poll=0.05) as worker:
        listed = entry("workers", "worker", "py-stats-keys-worker")
        assert set(worker.stats()) == counters(listed, ["worker", "kinds"])

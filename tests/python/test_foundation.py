"""The surface every part shares: version, errors, the panic boundary."""

import os
import pathlib
import re

import pytest

import keel
from keel import _keel

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_version_matches_cargo_toml():
    cargo = (ROOT / "Cargo.toml").read_text()
    workspace_package = cargo.split("[workspace.package]", 1)[1]
    version = re.search(r'^version\s*=\s*"([^"]+)"', workspace_package, re.M).group(1)
    assert keel.__version__ == version


@pytest.mark.parametrize(
    "name, builtin",
    [
        ("InvalidArgument", ValueError),
        ("NotFound", LookupError),
        ("Timeout", TimeoutError),
        ("PermissionDenied", PermissionError),
        ("IoError", OSError),
        ("StorageFull", OSError),
        ("WouldDeadlock", RuntimeError),
    ],
)
def test_error_kinds_derive_from_keel_error_and_the_matching_builtin(name, builtin):
    cls = getattr(keel, name)
    assert issubclass(cls, keel.KeelError)
    assert issubclass(cls, builtin)
    assert cls.__module__ == "keel"


def test_every_kind_has_a_distinct_stable_code():
    names = [
        "InvalidArgument", "NotFound", "AlreadyExists", "Conflict", "Busy", "Timeout",
        "Cancelled", "PermissionDenied", "Corrupt", "StorageFull", "IoError",
        "WouldDeadlock", "Closed", "Panic", "Unsupported",
    ]
    assert [getattr(keel, name).code for name in names] == list(range(1, 16))


def test_a_panic_in_keel_raises_keel_panic_not_a_crash():
    with pytest.raises(keel.Panic, match="_debug_panic was called"):
        _keel._debug_panic()
    # Panic is an ordinary Exception, so host code's `except Exception` sees it.
    assert issubclass(keel.Panic, Exception)


def test_stats_gathers_every_live_object_by_part():
    locks = keel.KeyedLocks("stats-probe")
    with locks.lock("a"):
        mine = [entry for entry in keel.stats()["locks"] if entry["name"] == "stats-probe"]
        assert mine == [{"name": "stats-probe", "entries": 1, "holders": 1, "waiters": 0}]
    del locks
    assert not [e for e in keel.stats().get("locks", []) if e["name"] == "stats-probe"]


@pytest.mark.parametrize("open_it", [
    lambda folder: keel.Drive(folder / "x.drive"),
    lambda folder: keel.Queue(folder / "jobs.lmdb"),
    lambda folder: keel.Operations(str(folder / "ops.lmdb")),
    lambda folder: keel.Journal(folder),
], ids=["drive", "queue", "operations", "journal"])
def test_opening_in_a_missing_folder_is_file_not_found_and_creates_nothing(tmp_path, open_it):
    import errno

    folder = tmp_path / "missing"
    with pytest.raises(FileNotFoundError) as raised:
        open_it(folder)
    assert isinstance(raised.value, keel.NotFound) and isinstance(raised.value, keel.FileNotFound)
    assert raised.value.errno == errno.ENOENT
    assert raised.value.filename is not None and "missing" in str(raised.value.filename)
    # The message names what failed, then the OS error — once, not repeated.
    assert str(raised.value).count(os.strerror(errno.ENOENT)) == 1, str(raised.value)
    assert not folder.exists()


def test_every_object_has_an_informative_repr(tmp_path):
    pool = keel.SyncPool(3, name="boot")
    locks = keel.KeyedLocks("sources")
    queue = keel.Queue(tmp_path / "jobs.lmdb")
    reprs = {
        "pool": repr(pool),
        "token": repr(keel.CancellationToken()),
        "locks": repr(locks),
        "guard": repr(locks.lock("k")),
        "queue": repr(queue),
        "ops": repr(keel.Operations(tmp_path / "ops.lmdb")),
        "worker": repr(keel.Worker(queue, {"mail": lambda job: None}, poll=0.05)),
    }
    assert reprs["pool"] == "<keel.SyncPool max_concurrency=3 in_flight=0>"
    assert reprs["token"] == "<keel.CancellationToken cancelled=False>"
    assert reprs["guard"] == "<keel.LockGuard keys=1 held>"
    assert "jobs.lmdb" in reprs["queue"] and "ops.lmdb" in reprs["ops"]
    assert reprs["worker"].startswith("<keel.Worker kinds=[\"mail\"]")
    assert all(" object at 0x" not in text for text in reprs.values()), reprs


def test_a_pool_is_a_context_manager_that_shuts_down():
    with keel.SyncPool(2) as pool:
        assert pool.run(lambda x: x + 1, [1]) == [2]
    assert "shut down" in repr(pool)
    assert isinstance(pool.run(lambda x: x, [1])[0], keel.Closed)

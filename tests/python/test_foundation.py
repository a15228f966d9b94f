"""The surface every part shares: version, errors, the panic boundary."""

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

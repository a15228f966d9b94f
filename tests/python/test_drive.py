"""keel.Drive from Python: dicts in and out, iterators, batches, permissions,
schemas with Python migrations, and the GIL released while LMDB works."""

import threading

import pytest

import keel


@pytest.fixture
def drive(tmp_path):
    return keel.Drive(str(tmp_path / "drive.lmdb"))


def test_items_are_dicts_and_paths_ignore_case(drive):
    users = drive.create(None, "Users")
    assert users["name"] == "Users" and users["parent"] == keel.DRIVE_ROOT
    ann = drive.create_at("users", "Ann", type="person")
    assert ann["type"] == "person" and len(ann["id"]) == 32
    assert [i["id"] for i in drive.resolve("/USERS/ann/")] == [users["id"], ann["id"]]
    assert drive.path_of(ann["id"]) == "Users/Ann"
    assert drive.get(ann["id"])["name"] == "Ann"
    assert drive.get(bytes.fromhex(ann["id"]))["name"] == "Ann"
    assert drive.get(users["id"])["children"] == 1
    with pytest.raises(keel.Conflict):
        drive.get(ann["id"], type="other")


def test_errors_are_typed_and_derive_from_builtins(drive):
    with pytest.raises(keel.NotFound) as missing:
        drive.resolve("a/b")
    assert isinstance(missing.value, LookupError) and "step 1" in str(missing.value)
    with pytest.raises(keel.InvalidArgument):
        drive.create(None, "a/b")
    with pytest.raises(ValueError):
        drive.create(None, "\U0001d538" * 128)
    with pytest.raises(keel.InvalidArgument):
        drive.get("not an id")
    drive.create(None, "x")
    with pytest.raises(keel.AlreadyExists):
        drive.create(None, "X")


def test_children_iterate_in_pages_with_after_and_limit(drive):
    folder = drive.create(None, "f")
    for i in range(600):
        drive.create(folder["id"], f"item{i:04}")
    names = [i["name"] for i in drive.children(folder["id"])]
    assert names == [f"item{i:04}" for i in range(600)]
    page = [i["name"] for i in drive.children(folder["id"], after="ITEM0010", limit=3)]
    assert page == ["item0011", "item0012", "item0013"]
    assert len(list(drive.children(folder["id"], limit=300))) == 300


def test_walk_and_by_type(drive):
    drive.make_path("a/b/c")
    a = drive.at_path("a")
    assert [i["name"] for i in drive.walk(a["id"])] == ["c", "b", "a"]
    assert [i["name"] for i in drive.walk(a["id"], order="parents_first")] == ["a", "b", "c"]
    with pytest.raises(keel.InvalidArgument):
        drive.walk(a["id"], order="sideways")
    ids = sorted(drive.create(None, f"n{i}", type="note")["id"] for i in range(5))
    assert [i["id"] for i in drive.by_type("note")] == ids
    assert [i["id"] for i in drive.by_type("note", after=ids[1], limit=2)] == ids[2:4]


def test_move_rename_delete(drive):
    a, b = drive.create(None, "a"), drive.create(None, "b")
    x = drive.create(a["id"], "x")
    moved = drive.move_item(x["id"], b["id"], "Y")
    assert moved["parent"] == b["id"] and moved["name"] == "Y"
    with pytest.raises(keel.InvalidArgument):
        drive.move_item(b["id"], x["id"])
    assert drive.rename(x["id"], "z")["name"] == "z"
    assert drive.delete(b["id"]) == 2
    assert drive.get(keel.DRIVE_ROOT)["children"] == 1


def test_versioned_data_and_schema_migration_in_python(drive):
    note = drive.create(None, "n", type="note")
    assert drive.set_data(note["id"], {"title": "one", "tags": ["a"], "n": 1.5}) == "0.0.1"
    assert drive.set_data(note["id"], {"title": "two"}, version="1.0.0") == "1.0.0"
    assert drive.get_data(note["id"]) == ("1.0.0", {"title": "two"})
    assert drive.get_data(note["id"], "0.0.1")[1] == {"title": "one", "tags": ["a"], "n": 1.5}
    assert [v["version"] for v in drive.versions(note["id"])] == ["1.0.0", "0.0.1"]
    with pytest.raises(keel.InvalidArgument):
        drive.set_data(note["id"], {"bad": float("nan")})

    schema = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}

    def migrate(item, version, data, from_schema, to_schema):
        assert item["id"] == note["id"] and from_schema is None and to_schema == 1
        return {"name": data["title"]}

    assert drive.set_schema("note", schema, 1, migrate) is True
    assert drive.set_schema("note", schema, 1, migrate) is False
    assert drive.get_data(note["id"], "0.0.1")[1] == {"name": "one"}
    with pytest.raises(keel.InvalidArgument):
        drive.set_data(note["id"], {"title": "old shape"})

    def broken(item, version, data, from_schema, to_schema):
        raise RuntimeError("cannot convert")

    with pytest.raises(keel.InvalidArgument, match="cannot convert"):
        drive.set_schema("note", {"type": "object"}, 2, broken)
    assert drive.schema("note") == (1, schema)
    assert drive.delete_data(note["id"], "1.0.0") == "0.0.1"


def test_a_batch_commits_on_success_and_undoes_on_exception(drive):
    with drive.batch() as b:
        a = b.create(None, "a")
        b.create(a["id"], "b")
        assert len(b.resolve("a/b")) == 2
    assert len(drive.resolve("a/b")) == 2
    with pytest.raises(KeyError):
        with drive.batch() as b:
            b.create(None, "c")
            raise KeyError("stop")
    with pytest.raises(keel.NotFound):
        drive.resolve("c")
    with drive.batch() as b:
        with pytest.raises(keel.WouldDeadlock):
            drive.create(None, "outside")
        with pytest.raises(keel.AlreadyExists):
            b.create(None, "A")  # fails alone; the batch goes on
        b.create(None, "d")
    assert drive.at_path("d")["name"] == "d"


def test_permissions_are_enforced_by_the_checked_view(drive):
    team = drive.create(None, "team", permissions={"default": "deny", "users": {"bob": "edit", "carl": "read"}})
    doc = drive.create(team["id"], "doc", type="note")
    bob, carl, dave = drive.as_user("bob"), drive.as_user("carl"), drive.as_user("dave", ["staff"])
    assert bob.checked and bob.user == "bob"
    assert carl.get(doc["id"])["name"] == "doc"
    with pytest.raises(keel.PermissionDenied) as denied:
        dave.get(doc["id"])
    assert isinstance(denied.value, PermissionError)
    assert bob.set_data(doc["id"], {"v": 1}) == "0.0.1"
    with pytest.raises(keel.PermissionDenied):
        carl.set_data(doc["id"], {"v": 2})
    with pytest.raises(keel.PermissionDenied):
        bob.delete(doc["id"])
    with pytest.raises(keel.PermissionDenied):
        bob.as_user("root")
    with pytest.raises(keel.PermissionDenied):
        list(dave.children(team["id"]))


def test_the_gil_is_released_while_writes_wait_for_disk(drive):
    folder = drive.create(None, "f")
    errors = []

    def writer(t):
        try:
            for i in range(20):
                drive.create(folder["id"], f"t{t}-{i}")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert drive.get(folder["id"])["children"] == 160
    stats = drive.stats()
    # Writers from several Python threads shared commits: only possible if
    # each released the GIL while its write waited.
    assert stats["batches"] < stats["writes"]


def test_backup_and_bad_files(tmp_path, drive):
    drive.create(None, "kept")
    drive.backup(str(tmp_path / "copy.lmdb"))
    assert keel.Drive(str(tmp_path / "copy.lmdb")).at_path("kept")["name"] == "kept"
    garbage = tmp_path / "garbage.lmdb"
    garbage.write_bytes(b"not lmdb" * 1000)
    with pytest.raises(keel.Corrupt):
        keel.Drive(str(garbage))


def test_a_batch_has_every_drive_call_and_runs_on_its_own_thread(drive):
    drive.create(None, "n", type="note")
    with drive.batch() as b:
        assert isinstance(b, keel.Drive) and isinstance(b, keel.DriveBatch)
        note = b.create(None, "m", type="note")
        assert b.set_schema("note", {"type": "object"}, 1) is True
        b.set_data(note["id"], {"v": 1})
        assert [v["version"] for v in b.versions(note["id"])] == ["0.0.1"]
        assert sorted(i["name"] for i in b.by_type("note")) == ["m", "n"]
        assert sorted(i["name"] for i in b.walk()) == ["m", "n"]
        assert [i["name"] for i in b.children()] == ["m", "n"]
        errors = []

        def elsewhere():
            try:
                b.create(None, "x")
            except keel.WouldDeadlock as exc:
                errors.append(exc)

        t = threading.Thread(target=elsewhere)
        t.start()
        t.join()
        assert len(errors) == 1 and "thread that opened it" in str(errors[0])
    assert drive.schema("note")[0] == 1
    assert drive.get_data(note["id"]) == ("0.0.1", {"v": 1})
    with pytest.raises(keel.Closed):
        b.get(note["id"])


def test_other_threads_writers_wait_for_a_batch_without_the_gil(drive):
    done = []
    with drive.batch() as b:
        b.create(None, "in-batch")
        t = threading.Thread(target=lambda: done.append(drive.create(None, "after")["name"]))
        t.start()
        # The other writer waits for the batch's transaction with the GIL
        # released: this thread goes on making calls meanwhile.
        for i in range(50):
            b.create(None, f"more{i}")
    t.join()
    assert done == ["after"]
    assert len(list(drive.children())) == 52


def test_apply_writes_many_calls_in_one_commit_or_none(drive):
    folder = drive.create(None, "f")
    before = drive.stats()["batches"]
    written = drive.apply(
        [{"op": "create", "parent": folder["id"], "item": {"name": f"n{i}", "type": "note"}} for i in range(100)]
    )
    assert drive.stats()["batches"] == before + 1
    assert [w["name"] for w in written] == [f"n{i}" for i in range(100)]
    first = written[0]["id"]
    results = drive.apply([{"op": "set_data", "id": first, "data": {"v": 1}}, {"op": "delete", "id": written[1]["id"]}])
    assert results == ["0.0.1", 1]
    with pytest.raises(keel.AlreadyExists, match="write 1"):
        drive.apply([{"op": "set_data", "id": first, "data": {"v": 2}}, {"op": "create", "parent": folder["id"], "item": {"name": "N0"}}])
    assert drive.get_data(first) == ("0.0.1", {"v": 1})
    with pytest.raises(keel.InvalidArgument):
        drive.apply([{"op": "explode"}])
    with drive.batch() as b:
        b.apply([{"op": "rename", "id": first, "name": "renamed"}])
        assert b.get(first)["name"] == "renamed"
    assert drive.get(first)["name"] == "renamed"

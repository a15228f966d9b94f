"""keel.Drive where Synapse's drive failed: history never overwritten by
accident, migrations checked up front, types needing a schema when asked, a
batch that filled the map succeeding when run again, and damaged files
verified (and refused for backup) without crashing the caller."""

import pytest

import keel
from keel import cli


@pytest.fixture
def drive(tmp_path):
    return keel.Drive(str(tmp_path / "drive.lmdb"))


def test_writing_a_stored_version_needs_replace(drive):
    note = drive.create(None, "n", type="note")
    drive.set_data(note["id"], {"v": 1}, "1.0.0")
    with pytest.raises(keel.AlreadyExists):
        drive.set_data(note["id"], {"v": 2}, "1.0.0")
    assert drive.get_data(note["id"], "1.0.0")[1] == {"v": 1}
    assert drive.set_data(note["id"], {"v": 2}, "1.0.0", replace=True) == "1.0.0"
    assert drive.get_data(note["id"], "1.0.0")[1] == {"v": 2}
    with pytest.raises(keel.InvalidArgument):
        drive.set_data(note["id"], {"v": 3}, replace=True)
    with drive.batch() as b:
        with pytest.raises(keel.AlreadyExists):
            b.set_data(note["id"], {"v": 4}, "1.0.0")
        b.set_data(note["id"], {"v": 5}, "1.0.0", replace=True)
    assert drive.get_data(note["id"])[1] == {"v": 5}


def test_a_migration_that_is_not_callable_is_refused_at_set_schema(drive):
    # No item of the type exists, so the migration would never be called.
    with pytest.raises(keel.InvalidArgument, match="callable"):
        drive.set_schema("note", {"type": "object"}, 1, "not a function")
    assert drive.schema("note") is None


def test_types_without_schema_are_refused_when_the_drive_says_so(tmp_path):
    strict = keel.Drive(str(tmp_path / "strict.lmdb"), allow_types_without_schema=False)
    with pytest.raises(keel.InvalidArgument, match="schema"):
        strict.create(None, "x", type="note")
    strict.set_schema("note", {"type": "object"}, 1)
    assert strict.create(None, "x", type="note")["type"] == "note"
    lax = keel.Drive(str(tmp_path / "lax.lmdb"))
    assert lax.create(None, "x", type="anything")["type"] == "anything"


def test_names_fold_fully_and_allow_punctuation(drive):
    street = drive.create(None, "Straße (alt), 1 & 2")
    assert drive.at_path("STRASSE (ALT), 1 & 2")["id"] == street["id"]
    decomposed = drive.create(None, "Cafe\u0301")
    assert decomposed["name"] == "Caf\u00e9"
    with pytest.raises(keel.InvalidArgument):
        drive.create(None, " padded ")


def test_a_batch_that_filled_the_map_succeeds_when_run_again(tmp_path):
    drive = keel.Drive(str(tmp_path / "small.lmdb"), initial_map_size=1 << 16)
    body = {"body": "x" * 4000}

    def fill():
        with drive.batch() as b:
            for n in range(64):
                item = b.create(None, f"n{n}", type="note")
                b.set_data(item["id"], body)

    with pytest.raises(keel.StorageFull):
        fill()
    for attempt in range(10):
        try:
            fill()
            break
        except keel.StorageFull:
            continue
    else:
        pytest.fail("the batch never fit")
    assert len(list(drive.children(None))) == 64


def _damage(drive, path):
    """Flips one byte of a stored value in a copy of the drive."""
    note = drive.create(None, "victim", type="note")
    drive.set_data(note["id"], {"marker": "FINDME-" * 20})
    data = open(path, "rb").read()
    at = data.index(b"FINDME-")
    damaged = data[:at] + b"G" + data[at + 1:]
    return damaged


def test_verify_reports_damage_and_backup_refuses_it(tmp_path, capsys):
    path = str(tmp_path / "drive.lmdb")
    drive = keel.Drive(path)
    assert drive.verify()["ok"]
    copy = str(tmp_path / "copy.lmdb")
    drive.backup(copy)
    damaged = _damage(keel.Drive(copy), copy)
    broken = str(tmp_path / "broken.lmdb")
    with open(broken, "wb") as f:
        f.write(damaged)
    report = keel.verify_file(broken)
    assert not report["ok"]
    assert any("drive.data" in p and "checksum" in p for p in report["problems"]), report

    assert cli.main(["drive", "verify", path]) == 0
    assert cli.main(["drive", "verify", broken]) == 2
    assert "DAMAGED" in capsys.readouterr().out
    dest = str(tmp_path / "backup.lmdb")
    assert cli.main(["drive", "backup", broken, dest]) == 2
    assert "fails verification" in capsys.readouterr().err
    assert not (tmp_path / "backup.lmdb").exists()
    assert cli.main(["drive", "backup", broken, dest, "--force"]) == 0
    assert (tmp_path / "backup.lmdb").exists()


def test_queue_and_ops_files_verify(tmp_path):
    path = str(tmp_path / "jobs.lmdb")
    keel.Queue(path).enqueue("k", "{}")
    assert cli.main(["queue", "verify", path]) == 0
    assert cli.main(["ops", "verify", path]) == 0

"""The keel command for operators, and the demo it runs."""

import json

import pytest

import keel
from keel import cli, demo


def run(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def drive_file(tmp_path):
    path = str(tmp_path / "cat.drive")
    drive = keel.Drive(path)
    drive.set_schema("note", {"type": "object", "required": ["text"]}, 1)
    drive.make_path("docs/a")
    item = drive.create_at("docs/a", "Readme", type="note")
    drive.set_data(item["id"], {"text": "hello"})
    return path


def test_drive_ls_tree_cat_and_backup(capsys, drive_file, tmp_path):
    code, out, _ = run(capsys, "drive", "ls", drive_file, "docs/a")
    assert code == 0 and "Readme" in out and "note" in out
    code, out, _ = run(capsys, "drive", "tree", drive_file)
    assert code == 0 and out.splitlines() == ["docs", "  a", "    Readme  [note]"]
    code, out, _ = run(capsys, "--json", "drive", "cat", drive_file, "docs/a/readme")
    assert code == 0 and json.loads(out)["data"] == {"text": "hello"}
    backup = str(tmp_path / "copy.drive")
    code, _, _ = run(capsys, "drive", "backup", drive_file, backup)
    assert code == 0
    code, out, _ = run(capsys, "drive", "ls", backup, "docs")
    assert "a" in out


def test_errors_are_one_line_and_a_nonzero_exit(capsys, tmp_path, drive_file):
    code, out, err = run(capsys, "drive", "ls", str(tmp_path / "missing.drive"))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("keel: NotFound:")
    assert not (tmp_path / "missing.drive").exists()  # inspecting never creates
    code, _, err = run(capsys, "drive", "cat", drive_file, "docs/nope")
    assert code == 1 and "nope" in err


def test_journal_status_and_recover(capsys, tmp_path):
    root = tmp_path / "kb"
    root.mkdir()
    journal = keel.Journal(str(root))
    with journal.mutation("add", "one file") as m:
        m.write("a.txt", b"a")
    code, out, _ = run(capsys, "journal", "status", str(root))
    assert code == 0 and "pending mutations: 0" in out
    code, out, _ = run(capsys, "--json", "journal", "recover", str(root))
    assert code == 0 and json.loads(out)["rolled_back"] == []


def test_queue_stats_list_and_retry_of_a_dead_job(capsys, tmp_path):
    path = str(tmp_path / "jobs.lmdb")
    queue = keel.Queue(path)
    job = queue.enqueue("mail", {"to": "x"}, max_attempts=1)
    claimed = queue.dequeue(["mail"], worker="w")
    queue.fail(claimed["id"], claimed["token"], "smtp down", retryable=False)
    code, out, _ = run(capsys, "--json", "queue", "stats", path)
    assert json.loads(out) == {"mail": {"dead": 1}}
    code, out, _ = run(capsys, "queue", "list", path, "--state", "dead")
    assert code == 0 and "smtp down" in out
    code, out, _ = run(capsys, "queue", "retry", path, str(job["id"]))
    assert code == 0 and "queued" in out
    assert queue.get(job["id"])["state"] == "queued"
    code, _, err = run(capsys, "queue", "retry", path, str(job["id"]))
    assert code == 1 and err.startswith("keel: Conflict:")


def test_ops_show(capsys, tmp_path):
    path = str(tmp_path / "ops.lmdb")
    ops = keel.Operations(path)
    ops.ready("dataset-1", ["unpack"])
    ops.update("dataset-1", "unpack", "FAILED", "tarball truncated")
    code, out, _ = run(capsys, "ops", "show", path, "dataset-1")
    assert code == 0 and "FAILED" in out and "tarball truncated" in out


def test_the_demo_tells_the_whole_story(tmp_path):
    summary = demo.run(size=30, folder=str(tmp_path / "demo"), quiet=True)
    boot = summary["boot"]
    assert boot["fetches"] == boot["sources"]  # one forced fetch per source
    assert boot["timed_out"] >= 2 and boot["failed"] >= 2
    assert boot["peak_concurrency"] <= demo.POOL_SIZE
    crash = summary["ingest"]["crash"]
    assert crash["child_killed"] and crash["pending_after_crash"] == 1
    assert crash["tree_restored_exactly"]
    assert summary["catalogue"]["schema_version"] == 2
    assert set(summary["catalogue"]["sample_after_migration"]) == {"title", "source", "word_count", "language"}
    documents = summary["ingest"]["documents"]
    assert summary["catalogue"]["items"] == documents
    assert summary["pipeline"]["jobs"] == {"extract": {"completed": documents}, "index": {"completed": documents}}
    assert summary["pipeline"]["retried_document_attempts"] == 2


def test_the_demo_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "x").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        demo.run(size=30, folder=str(tmp_path), quiet=True)

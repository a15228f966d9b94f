"""The keel command for operators, and the demo it runs."""

import hashlib
import json
import os
import subprocess
import sys

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
    assert code == cli.EXIT_CODES["NotFound"] and out == ""
    assert err.count("\n") == 1 and err.startswith("keel: NotFound:")
    assert not (tmp_path / "missing.drive").exists()  # inspecting never creates
    code, _, err = run(capsys, "drive", "cat", drive_file, "docs/nope")
    assert code == cli.EXIT_CODES["NotFound"] and "nope" in err


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
    assert code == cli.EXIT_CODES["Conflict"] and err.startswith("keel: Conflict:")


def test_ops_show(capsys, tmp_path):
    path = str(tmp_path / "ops.lmdb")
    ops = keel.Operations(path)
    ops.ready("dataset-1", ["unpack"])
    ops.update("dataset-1", "unpack", "FAILED", "tarball truncated")
    code, out, _ = run(capsys, "ops", "show", path, "dataset-1")
    assert code == 0 and "FAILED" in out and "tarball truncated" in out


def test_ops_list_finds_failed_items_reading_only(capsys, tmp_path):
    path = str(tmp_path / "ops.lmdb")
    with keel.Operations(path) as ops:
        for n in range(5):
            ops.ready(f"ds-{n}", ["unpack", "index"])
        for n in (3, 1, 4):
            ops.error(f"ds-{n}", "unpack", f"tarball {n} truncated\nsecond line")
        ops.error("ds-0", "index", "another operation")
    before = digest(path)
    code, out, _ = run(capsys, "ops", "list", path, "unpack", "--state", "FAILED")
    assert code == 0 and "tarball 1 truncated" in out and "second line" not in out
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["ds-1", "ds-3", "ds-4"]
    code, out, _ = run(capsys, "ops", "list", path, "unpack", "--state", "failed", "--limit", "2", "--json")
    records = json.loads(out)
    assert code == 0 and [(r["item"], r["state"]) for r in records] == [("ds-1", "FAILED"), ("ds-3", "FAILED")]
    code, out, _ = run(capsys, "--json", "ops", "list", path, "unpack")
    assert code == 0 and len(json.loads(out)) == 5
    code, _, err = run(capsys, "ops", "list", path, "unpack", "--limit", "0")
    assert code == cli.EXIT_CODES["InvalidArgument"] and "limit" in err
    with pytest.raises(SystemExit) as exit:
        run(capsys, "ops", "list", path, "unpack", "--state", "DONE")
    assert exit.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert digest(path) == before, "listing changes no byte"


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


def digest(path):
    """The bytes of a file, as a hash (and None if it does not exist)."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def jobs_file(tmp_path):
    path = str(tmp_path / "jobs.lmdb")
    queue = keel.Queue(path)
    for n in range(3):
        queue.enqueue("mail", {"n": n})
    queue.enqueue("sms", {})
    del queue
    return path


def test_inspection_of_a_file_of_another_kind_refuses_and_changes_no_byte(capsys, jobs_file, drive_file):
    before = digest(jobs_file)
    for argv in (["drive", "ls", jobs_file], ["drive", "tree", jobs_file], ["drive", "cat", jobs_file, "x"]):
        code, out, err = run(capsys, *argv)
        assert code == cli.EXIT_CODES["InvalidArgument"] and out == ""
        assert "is not a drive: it is an operations and jobs store (format " in err
    assert digest(jobs_file) == before
    drive_before = digest(drive_file)
    code, _, err = run(capsys, "queue", "stats", drive_file)
    assert code == cli.EXIT_CODES["InvalidArgument"] and "it is a drive (format " in err
    assert digest(drive_file) == drive_before


def test_inspection_of_an_empty_file_leaves_it_empty(capsys, tmp_path):
    empty = tmp_path / "empty.drive"
    empty.write_bytes(b"")
    for argv in (["drive", "ls", str(empty)], ["queue", "list", str(empty)], ["ops", "show", str(empty), "x"],
                 ["ops", "list", str(empty), "x"]):
        code, _, err = run(capsys, *argv)
        assert code == cli.EXIT_CODES["InvalidArgument"] and "it is an empty file" in err
    assert empty.read_bytes() == b""


def test_inspection_of_the_right_kind_changes_no_byte(capsys, jobs_file, drive_file):
    before = digest(drive_file), digest(jobs_file)
    assert run(capsys, "drive", "ls", drive_file, "docs")[0] == 0
    assert run(capsys, "drive", "tree", drive_file)[0] == 0
    assert run(capsys, "drive", "cat", drive_file, "docs/a/readme")[0] == 0
    assert run(capsys, "queue", "stats", jobs_file)[0] == 0
    assert run(capsys, "queue", "list", jobs_file)[0] == 0
    assert run(capsys, "queue", "show", jobs_file, "1")[0] == 0
    assert (digest(drive_file), digest(jobs_file)) == before


def test_json_after_the_subcommand_and_errors_as_json(capsys, tmp_path, jobs_file):
    code, out, _ = run(capsys, "queue", "stats", jobs_file, "--json")
    assert code == 0 and json.loads(out) == {"mail": {"queued": 3}, "sms": {"queued": 1}}
    code, out, err = run(capsys, "queue", "show", jobs_file, "99", "--json")
    assert code == cli.EXIT_CODES["NotFound"] and out == ""
    error = json.loads(err)["error"]
    assert error["kind"] == "NotFound" and error["code"] == keel.NotFound.code and "99" in error["message"]


def test_limit_counts_jobs_in_all_and_states_are_choices(capsys, jobs_file):
    code, out, _ = run(capsys, "--json", "queue", "list", jobs_file, "--limit", "2")
    assert code == 0 and len(json.loads(out)) == 2
    with pytest.raises(SystemExit) as exit:
        run(capsys, "queue", "list", jobs_file, "--state", "DEAD")
    assert exit.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_json_output_keeps_the_payloads_key_order(capsys, tmp_path):
    path = str(tmp_path / "jobs.lmdb")
    with keel.Queue(path) as queue:
        queue.enqueue("mail", {"to": "a", "subject": "b", "body": "c"})
    code, out, _ = run(capsys, "--json", "queue", "show", path, "1")
    assert code == 0 and list(json.loads(out)["payload"]) == ["to", "subject", "body"]
    assert list(json.loads(out))[:3] == ["id", "kind", "payload"], "a record's fields in keel's order"


def test_queue_show_and_cancel(capsys, jobs_file):
    code, out, _ = run(capsys, "--json", "queue", "show", jobs_file, "2")
    assert code == 0 and json.loads(out)["payload"] == {"n": 1}
    code, out, _ = run(capsys, "queue", "cancel", jobs_file, "2", "--reason", "not wanted")
    assert code == 0 and "cancelled" in out
    assert keel.Queue(jobs_file).get(2)["state"] == "cancelled"


def test_a_closed_pipe_prints_no_traceback(tmp_path):
    path = str(tmp_path / "big.drive")
    drive = keel.Drive(path)
    drive.make_path("/".join(f"level{n}" for n in range(40)))
    for n in range(2000):
        drive.create_at("level0", f"file{n}")
    del drive
    shell = f"{sys.executable} -m keel.cli drive tree {path} | head -n 2"
    done = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, timeout=120)
    assert len(done.stdout.splitlines()) == 2
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_long_work_prints_progress_when_stdout_is_not_a_terminal(tmp_path):
    path = str(tmp_path / "big.drive")
    drive = keel.Drive(path)
    for n in range(300):
        drive.create_at("", f"file{n}")
    del drive
    code = (
        "import sys, keel.cli as c\n"
        "c.progress.__defaults__ = (0.0,)\n"  # a line per item, not per second
        f"sys.exit(c.main(['drive', 'tree', {path!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 300
    assert "keel: items printed: 300 in all" in done.stderr

"""keel.Journal from Python: the context manager, inputs, errors, recovery."""

import io
import json
import os
import stat
import threading

import pytest

import keel


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "a.md").write_bytes(b"# A")
    (tmp_path / "tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(tmp_path / "tool", 0o755)
    os.symlink("pages/a.md", tmp_path / "latest")
    return tmp_path


def snapshot(root):
    """The whole tree except .keel: path -> (kind, mode, bytes or target)."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.samefile(dirpath, root) and ".keel" in dirnames:
            dirnames.remove(".keel")
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                result[rel] = ("link", 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                result[rel] = ("dir", stat.S_IMODE(st.st_mode), None)
            else:
                with open(path, "rb") as f:
                    result[rel] = ("file", stat.S_IMODE(st.st_mode), f.read())
    return result


def test_the_block_commits_on_success(tree):
    journal = keel.Journal(tree)
    with journal.mutation("add", "doc.pdf") as m:
        m.write("pages/a.md", b"# A v2")
        m.write("pages/b.md", "# B, from a str")
        m.write("notes/c.md", io.BytesIO(b"streamed " * 10_000))
        m.write("notes/d.md", io.StringIO("text stream"))
    assert (tree / "pages" / "a.md").read_bytes() == b"# A v2"
    assert (tree / "pages" / "b.md").read_text() == "# B, from a str"
    assert (tree / "notes" / "c.md").read_bytes() == b"streamed " * 10_000
    assert (tree / "notes" / "d.md").read_text() == "text stream"
    assert not m.active
    assert journal.status()["pending"] == []


def test_the_block_rolls_back_on_an_exception(tree):
    journal = keel.Journal(tree)
    before = snapshot(tree)
    with pytest.raises(RuntimeError, match="compile failed"):
        with journal.mutation("add") as m:
            m.write("pages/a.md", b"half done")
            m.remove("tool")
            m.symlink("latest", "elsewhere")
            m.declare(["pages"])
            (tree / "pages" / "caller.md").write_bytes(b"written by the caller")
            raise RuntimeError("compile failed")
    assert snapshot(tree) == before


def test_modes_are_kept_for_replaced_files(tree):
    journal = keel.Journal(tree)
    with journal.mutation("edit") as m:
        m.write("tool", b"#!/bin/sh\necho v2\n")
    assert stat.S_IMODE(os.stat(tree / "tool").st_mode) == 0o755


def test_staged_files_are_published(tree):
    journal = keel.Journal(tree)
    with journal.mutation("add") as m:
        staging = m.staging_dir()
        with open(os.path.join(staging, "new.md"), "wb") as f:
            f.write(b"staged")
        m.publish("pages")
    assert (tree / "pages" / "new.md").read_bytes() == b"staged"


def test_bad_paths_and_inputs_are_typed_errors(tree):
    journal = keel.Journal(tree)
    before = snapshot(tree)
    with journal.mutation("edit") as m:
        for bad in ["../escape", "/etc/passwd", "a/../../b", "a\0b", ".keel/lock"]:
            with pytest.raises(keel.InvalidArgument):
                m.write(bad, b"x")
        with pytest.raises(ValueError):
            m.write("../x", b"x")
        with pytest.raises(keel.NotFound):
            m.remove("missing")
        with pytest.raises(TypeError):
            m.write("x", 42)
    assert snapshot(tree) == before
    with pytest.raises(keel.Closed):
        m.commit()


def test_a_failing_reader_rolls_back(tree):
    class Broken(io.RawIOBase):
        def read(self, size=-1):
            raise OSError("the source went away")

    journal = keel.Journal(tree)
    before = snapshot(tree)
    with pytest.raises(keel.KeelError):
        with journal.mutation("edit") as m:
            m.write("pages/a.md", b"changed")
            m.write("pages/z.md", Broken())
    assert snapshot(tree) == before


def test_a_symlinked_state_folder_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "root" / ".keel")
    with pytest.raises(keel.InvalidArgument):
        keel.Journal(tmp_path / "root")


def test_threads_take_turns(tree):
    journal = keel.Journal(tree)
    (tree / "count").write_text("0")

    def work():
        for _ in range(10):
            with journal.mutation("count") as m:
                n = int((tree / "count").read_text())
                m.write("count", str(n + 1))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (tree / "count").read_text() == "40"


def test_status_recover_and_read(tree):
    journal = keel.Journal(tree)
    m = journal.begin("add", "doc")
    m.write("pages/a.md", b"x")
    status = journal.status()
    assert [p["status"] for p in status["pending"]] == ["active"]
    assert status["pending"][0]["paths"] == ["pages/a.md"]
    m.rollback()
    report = journal.recover()
    assert report["rolled_back"] == [] and report["quarantined"] == []
    with journal.read():
        assert (tree / "pages" / "a.md").read_bytes() == b"# A"
    with pytest.raises(keel.NotFound):
        journal.resolve(1)
    assert journal.stats()["fsyncs"] > 0


def test_try_begin_does_not_wait(tree):
    journal = keel.Journal(tree)
    held = journal.begin("hold")
    result = []
    t = threading.Thread(target=lambda: result.append(journal.try_begin("other")))
    t.start()
    t.join()
    assert result == [None]
    with pytest.raises(keel.WouldDeadlock):
        journal.begin("again")
    held.commit()
    m = journal.try_begin("now")
    assert m is not None
    m.rollback()


def test_waiting_for_the_lock_releases_the_gil(tree):
    journal = keel.Journal(tree)
    held = journal.begin("hold")
    got = []
    about_to_wait = threading.Event()

    def wait():
        about_to_wait.set()
        got.append(journal.begin("wait"))

    waiter = threading.Thread(target=wait)
    waiter.start()
    about_to_wait.wait()
    # This thread must keep running Python (many GIL switch intervals) while
    # the waiter blocks in begin(); were the GIL held there, it would hang.
    total = sum(range(100_000))
    for _ in range(20):
        total += sum(range(100_000)) - 4999950000
    held.commit()
    waiter.join(timeout=60)
    assert not waiter.is_alive()
    assert total == 4999950000
    got[0].rollback()


def test_a_copied_declared_folder_may_be_edited_in_place(tree):
    journal = keel.Journal(tree)
    before = snapshot(tree)
    with pytest.raises(RuntimeError):
        with journal.mutation("compile") as m:
            m.declare(["pages"], copy=True)
            with open(tree / "pages" / "a.md", "r+b") as f:
                f.write(b"# B")
            raise RuntimeError("compile failed")
    assert snapshot(tree) == before


def test_a_reader_that_touches_the_mutation_gets_an_error_not_a_hang(tree):
    journal = keel.Journal(tree)
    m = journal.begin("stream")
    seen = []

    class Touching(io.RawIOBase):
        def __init__(self):
            self.sent = False

        def readable(self):
            return True

        def read(self, size=-1):
            seen.append(m.active)  # never waits
            seen.append(m.seq)
            if not self.sent:
                self.sent = True
                m.write("other.txt", b"x")  # re-entry: refused, not a hang
            return b""

    with pytest.raises(keel.KeelError):
        m.write("streamed.txt", Touching())
    assert seen[0] is True and seen[1] == m.seq
    m.rollback()
    assert not (tree / "other.txt").exists()


def test_another_thread_reads_active_during_a_streamed_write(tree):
    journal = keel.Journal(tree)
    m = journal.begin("stream")
    reading = threading.Event()
    answers = []

    class Slow(io.RawIOBase):
        chunks = [b"a" * 10, b"b" * 10]

        def readable(self):
            return True

        def read(self, size=-1):
            if self.chunks and len(self.chunks) == 1:
                # Mid-write: another thread asks, and must get its answer
                # while this read() still holds the mutation.
                reading.set()
                other.join(timeout=30)
                assert not other.is_alive()
            return self.chunks.pop(0) if self.chunks else b""

    def ask():
        reading.wait()
        answers.append(m.active)
        answers.append(m.seq)

    other = threading.Thread(target=ask)
    other.start()
    assert m.write("streamed.txt", Slow()) == 20
    m.commit()
    assert answers[0] is True
    assert (tree / "streamed.txt").read_bytes() == b"a" * 10 + b"b" * 10


def test_a_forked_child_leaving_the_block_does_not_touch_the_parents_mutation(tree):
    journal = keel.Journal(tree)
    m = journal.begin("ingest")
    m.write("pages/a.md", b"# parent")
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            try:
                with m:
                    raise RuntimeError("the child leaves the block")
            except RuntimeError:
                pass
            try:
                m.commit()
                code = 2
            except keel.Closed:
                pass
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert (tree / "pages" / "a.md").read_bytes() == b"# parent"
    import fcntl

    with open(tree / ".keel" / "lock", "rb") as lock, pytest.raises(BlockingIOError):
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the parent still holds the root
    m.write("tool", b"#!/bin/sh\necho v2\n")
    m.commit()
    assert (tree / "pages" / "a.md").read_bytes() == b"# parent"
    assert os.stat(tree / "tool").st_mode & 0o777 == 0o755


CRASH = (
    "import keel, os, sys\n"
    "j = keel.Journal(sys.argv[1])\n"
    "m = j.begin('ingest', 'crash')\n"
    "m.write('pages/a.md', b'# half done')\n"
    "os.kill(os.getpid(), 9)\n"
)


def crash_in_a_child(root):
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", CRASH, str(root)], check=False)
    assert (root / "pages" / "a.md").read_bytes() == b"# half done"


def test_last_recovery_reports_what_opening_rolled_back(tree):
    before = snapshot(tree)
    crash_in_a_child(tree)
    journal = keel.Journal(tree)
    report = journal.last_recovery()
    assert report is not None and len(report["rolled_back"]) == 1
    assert journal.status()["last_recovery"] == report
    assert snapshot(tree) == before


def test_journal_status_inspects_without_writing_and_recover_fixes(tree, capsys):
    from keel import cli

    before = snapshot(tree)
    crash_in_a_child(tree)

    def everything():
        out = {}
        for dirpath, _, filenames in os.walk(tree):
            for name in filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                data = open(path, "rb").read() if stat.S_ISREG(st.st_mode) else None
                out[path] = (st.st_mode, st.st_mtime_ns, data)
        return out

    files = everything()
    assert cli.main(["--json", "journal", "status", str(tree)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [p["status"] for p in status["pending"]] == ["active"]
    assert everything() == files, "inspection changed the files it inspected"
    assert cli.main(["--json", "journal", "recover", str(tree)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["rolled_back"]) == 1
    assert snapshot(tree) == before
    assert keel.Journal.inspect(tree)["pending"] == []


def hold_in_another_thread(journal):
    """Holds the root's exclusive lock in a thread until the event is set."""
    taken, release = threading.Event(), threading.Event()

    def hold():
        m = journal.begin("hold")
        taken.set()
        release.wait()
        m.rollback()

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait()
    return holder, release


def test_begin_and_read_time_out(tree):
    journal = keel.Journal(tree)
    holder, release = hold_in_another_thread(journal)
    try:
        with pytest.raises(keel.Timeout):
            journal.begin("wait", timeout=0.2)
        with pytest.raises(keel.Timeout):
            journal.read(timeout=0)
        with pytest.raises(keel.InvalidArgument):
            journal.begin("wait", timeout=-1)
    finally:
        release.set()
        holder.join()
    journal.begin("after", timeout=5).rollback()
    journal.read(timeout=5).release()


def test_ctrl_c_interrupts_a_wait_for_the_journal(tree):
    import signal

    journal = keel.Journal(tree)
    holder, release = hold_in_another_thread(journal)
    try:
        for wait in (lambda: journal.begin("wait"), lambda: journal.read()):
            timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                wait()
            timer.join()
    finally:
        release.set()
        holder.join()
    # Nothing was left taken: the root is free again.
    journal.begin("after", timeout=5).commit()


def test_write_many_writes_them_all_or_changes_nothing(tree):
    journal = keel.Journal(tree)
    before = snapshot(tree)
    with journal.mutation("batch") as m:
        m.write_many({"pages/b.md": b"# B", "notes/c.md": bytearray(b"# C"), "pages/a.md": b"# A2"})
        m.write_many([("pages/d.md", b"# D"), ("pages/d.md", b"# D2")])  # the last bytes win
    assert (tree / "pages" / "b.md").read_bytes() == b"# B"
    assert (tree / "notes" / "c.md").read_bytes() == b"# C"
    assert (tree / "pages" / "a.md").read_bytes() == b"# A2"
    assert (tree / "pages" / "d.md").read_bytes() == b"# D2"

    after = snapshot(tree)
    with pytest.raises(keel.InvalidArgument):
        with journal.mutation("refused") as m:
            m.write_many({"pages/e.md": b"e", "../outside": b"x"})
    with pytest.raises(TypeError):
        with journal.mutation("not bytes") as m:
            m.write_many({"pages/f.md": "text is not bytes"})
    assert snapshot(tree) == after != before
    assert not (tree.parent / "outside").exists()

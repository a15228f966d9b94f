"""keel's events reach Python's logging under keel.* loggers, at their levels."""

import logging
import threading

import keel


def contend_once(locks):
    held = locks.lock("k")
    t = threading.Thread(target=lambda: _expect_timeout(locks))
    t.start()
    t.join()
    held.release()


def _expect_timeout(locks):
    try:
        locks.lock("k", timeout=0.005)
    except keel.Timeout:
        pass


def lock_waits(caplog):
    return [r for r in caplog.records if r.name == "keel.locks" and "lock wait:" in r.getMessage()]


def test_debug_events_reach_logging_when_enabled(caplog):
    caplog.set_level(logging.DEBUG, logger="keel.locks")
    keel.flush_logs()
    locks = keel.KeyedLocks("audit")
    contend_once(locks)
    keel.flush_logs()
    waits = lock_waits(caplog)
    assert len(waits) == 1
    assert waits[0].levelno == logging.DEBUG
    assert 'registry="audit"' in waits[0].getMessage()
    assert "outcome=timed_out" in waits[0].getMessage()


def test_nothing_is_logged_when_the_level_is_off(caplog):
    caplog.set_level(logging.WARNING, logger="keel.locks")
    keel.flush_logs()
    contend_once(keel.KeyedLocks())
    keel.flush_logs()
    assert lock_waits(caplog) == []


EXITING_WHILE_LOGGING = """
import logging, threading
import keel
logging.basicConfig(level=logging.DEBUG, handlers=[logging.NullHandler()])
locks = keel.KeyedLocks()
held = locks.lock("k")
def churn():
    while True:
        try:
            locks.lock("k", timeout=0.0005)
        except keel.Timeout:
            pass
for _ in range(3):
    threading.Thread(target=churn, daemon=True).start()
keel.flush_logs()
# Exit while keel's threads are still emitting events.
"""


def test_the_interpreter_exits_cleanly_while_events_are_emitted():
    import subprocess
    import sys

    for _ in range(5):
        done = subprocess.run([sys.executable, "-c", EXITING_WHILE_LOGGING], capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()[-2000:]


def records(caplog, logger, phrase):
    return [r for r in caplog.records if r.name == logger and r.getMessage().startswith(phrase)]


def time_out_one_call():
    release = threading.Event()
    pool = keel.SyncPool(1, timeout=0.05, name="logged")
    try:
        results = pool.run(lambda _: release.wait(), ["hung"])
        assert isinstance(results[0], keel.Timeout)
    finally:
        release.set()


def commit_one_mutation(root):
    journal = keel.Journal(str(root))
    mutation = journal.begin("add")
    mutation.write("a.txt", b"hello")
    mutation.commit()


def test_a_pool_timeout_is_a_warning_under_keel_pool(caplog):
    caplog.set_level(logging.WARNING, logger="keel.pool")
    keel.flush_logs()
    time_out_one_call()
    keel.flush_logs()
    timeouts = records(caplog, "keel.pool", "task timed out:")
    assert len(timeouts) == 1
    assert timeouts[0].levelno == logging.WARNING
    assert 'pool="logged"' in timeouts[0].getMessage()
    # Per-task debug events stay off at WARNING.
    assert records(caplog, "keel.pool", "task finished:") == []


def test_a_journal_commit_is_a_debug_event_under_keel_journal(caplog, tmp_path):
    caplog.set_level(logging.DEBUG, logger="keel.journal")
    keel.flush_logs()
    commit_one_mutation(tmp_path)
    keel.flush_logs()
    commits = records(caplog, "keel.journal", "mutation committed:")
    assert len(commits) == 1
    assert commits[0].levelno == logging.DEBUG
    text = commits[0].getMessage()
    assert 'operation="add"' in text and " files=2 " in text and " elapsed_us=" in text


def test_pool_and_journal_events_are_not_logged_when_their_level_is_off(caplog, tmp_path):
    caplog.set_level(logging.ERROR, logger="keel.pool")
    caplog.set_level(logging.INFO, logger="keel.journal")
    keel.flush_logs()
    time_out_one_call()
    commit_one_mutation(tmp_path)
    keel.flush_logs()
    assert [r for r in caplog.records if r.name in ("keel.pool", "keel.journal")] == []


NO_EVENT_LOST = """
import logging, sys, threading
import keel
# Configured after the import, used at once, never flushed by hand: the
# level change is seen at once and the queue is flushed at exit.
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(name)s|%(message)s")
locks = keel.KeyedLocks("first-second")
held = locks.lock("k")
def wait():
    try:
        locks.lock("k", timeout=0.005)
    except keel.Timeout:
        pass
t = threading.Thread(target=wait)
t.start(); t.join()
"""


def test_events_right_after_import_and_at_exit_are_not_lost():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", NO_EVENT_LOST], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'keel.locks|lock wait: registry="first-second"' in done.stdout, done.stdout + done.stderr


def test_a_level_set_later_applies_without_flush(caplog):
    caplog.set_level(logging.WARNING, logger="keel.locks")
    keel.flush_logs()
    caplog.set_level(logging.DEBUG, logger="keel.locks")  # no flush_logs() between
    contend_once(keel.KeyedLocks("later"))
    keel.flush_logs()
    assert len(lock_waits(caplog)) == 1


def test_records_carry_the_events_time_place_and_fields(caplog):
    import time

    caplog.set_level(logging.DEBUG, logger="keel.locks")
    before = time.time()
    contend_once(keel.KeyedLocks("audit"))
    keel.flush_logs()
    (wait,) = lock_waits(caplog)
    assert before <= wait.created <= time.time()
    assert "locks" in wait.pathname and wait.pathname.endswith(".rs") and wait.lineno > 0
    assert wait.funcName.startswith("keel::locks")
    assert wait.keel_event == "lock wait"
    fields = wait.keel_fields
    assert fields["registry"] == "audit" and fields["mode"] == "exclusive" and fields["outcome"] == "timed_out"
    assert isinstance(fields["waited_us"], int)


def test_a_failed_jobs_last_error_keeps_the_handlers_traceback(tmp_path):
    queue = keel.Queue(tmp_path / "jobs.lmdb")
    job = queue.enqueue("work", {}, max_attempts=1)["id"]
    failed = threading.Event()

    def inner_step():
        raise RuntimeError("the disk said no")

    def work(job):
        try:
            inner_step()
        finally:
            failed.set()

    with keel.Worker(queue, {"work": work}, poll=0.05):
        assert failed.wait(60)
    # Leaving the block stops the worker, which waits for the running job's
    # outcome to be recorded.
    assert queue.get(job)["state"] == "dead"
    error = queue.get(job)["last_error"]
    assert error.splitlines()[0] == "RuntimeError: the disk said no"
    assert "Traceback (most recent call last)" in error and "in inner_step" in error

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

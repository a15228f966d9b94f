"""No hang in the bindings: keel.flush_logs() from a logging handler or a forked
child returns, and each class's properties can be read from a second thread while
its longest blocking call runs — no binding waits on a keel lock with the GIL held,
nor holds a keel lock while calling into Python.

Each scenario runs in a child interpreter, so a hang fails the test at the failsafe
instead of hanging the suite.
"""

import os
import subprocess
import sys
import textwrap

import pytest

FAILSAFE = 30.0

PRELUDE = """
import os, sys, threading, time, logging
import keel
PATIENCE = 20.0

def run_during(blocking_call, read_properties):
    '''Runs blocking_call (which blocks until `release` is set) in a thread,
    reads properties from a second thread meanwhile, then releases.'''
    started, release = threading.Event(), threading.Event()
    reading = threading.Event()
    out = {}
    call = threading.Thread(target=lambda: out.setdefault("call", blocking_call(started, release)))
    call.start()
    assert started.wait(PATIENCE), "the blocking call never started"
    def reader():
        reading.set()
        out["read"] = read_properties()
    second = threading.Thread(target=reader)
    second.start()
    assert reading.wait(PATIENCE)
    # Give the reader the moment it needs to enter its call while the blocking
    # call is still inside keel (a hang needs that overlap to show).
    time.sleep(0.05)
    release.set()
    second.join(PATIENCE)
    call.join(PATIENCE)
    assert not second.is_alive() and not call.is_alive(), "hung"
    return out
"""


def run_scenario(tmp_path, body, failsafe=FAILSAFE):
    script = PRELUDE + textwrap.dedent(body) + "\nprint('OK')\n"
    env = dict(os.environ, SCRATCH=str(tmp_path))
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=failsafe, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the scenario hung")
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stdout + done.stderr


def test_flush_logs_from_a_logging_handler_returns(tmp_path):
    run_scenario(
        tmp_path,
        """
        flushed = threading.Event()
        class Flushing(logging.Handler):
            def emit(self, record):
                keel.flush_logs()  # on keel's log thread
                flushed.set()
        logging.getLogger("keel.ops").addHandler(Flushing())
        logging.getLogger("keel.ops").setLevel(logging.DEBUG)
        keel.flush_logs()
        q = keel.Queue(os.path.join(os.environ["SCRATCH"], "jobs.lmdb"))
        q.enqueue("k")
        assert flushed.wait(PATIENCE), "the handler's flush_logs never returned"
        keel.flush_logs()
        """,
    )


def test_flush_logs_in_a_forked_child_returns(tmp_path):
    run_scenario(
        tmp_path,
        """
        logging.getLogger("keel.ops").setLevel(logging.DEBUG)
        keel.flush_logs()
        pid = os.fork()
        if pid == 0:
            keel.flush_logs()
            os._exit(0)
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.kill(pid, 9)
            raise AssertionError("flush_logs hung in the forked child")
        assert os.waitstatus_to_exitcode(status) == 0
        """,
    )


def test_keyed_locks_are_readable_while_a_lock_waits(tmp_path):
    run_scenario(
        tmp_path,
        """
        locks = keel.KeyedLocks("audit")
        held = locks.lock("k")
        def wait_for_lock(started, release):
            started.set()
            guard = locks.lock("k", timeout=PATIENCE)
            guard.release()
        def read():
            return (len(locks), locks.stats(), held.locked)
        def blocking(started, release):
            waiter = threading.Thread(target=wait_for_lock, args=(started, release))
            waiter.start()
            release.wait(PATIENCE)
            held.release()
            waiter.join(PATIENCE)
        out = run_during(blocking, read)
        assert out["read"][0] == 1
        """,
    )


def test_a_sync_pool_is_readable_while_it_runs_a_batch(tmp_path):
    run_scenario(
        tmp_path,
        """
        pool = keel.SyncPool(2)
        def blocking(started, release):
            def task(n):
                started.set()
                release.wait(PATIENCE)
                return n
            return pool.run(task, [1, 2, 3])
        out = run_during(blocking, lambda: (pool.max_concurrency, pool.stats()))
        assert out["read"][0] == 2
        """,
    )


def test_a_journal_is_readable_while_a_mutation_streams_a_file(tmp_path):
    run_scenario(
        tmp_path,
        """
        root = os.path.join(os.environ["SCRATCH"], "root")
        os.makedirs(root)
        journal = keel.Journal(root)
        class Source:
            def __init__(self, started, release):
                self.started, self.release, self.sent = started, release, False
            def read(self, size):
                if self.sent:
                    return b""
                self.started.set()
                self.release.wait(PATIENCE)
                self.sent = True
                return b"data"
        box = {}
        def blocking(started, release):
            with journal.mutation("stream", "") as m:
                box["m"] = m
                return m.write("file.txt", Source(started, release))
        out = run_during(blocking, lambda: (journal.root, journal.stats()))
        assert out["call"] == 4
        """,
    )


def test_a_mutation_is_readable_while_it_streams_a_file(tmp_path):
    run_scenario(
        tmp_path,
        """
        root = os.path.join(os.environ["SCRATCH"], "root")
        os.makedirs(root)
        journal = keel.Journal(root)
        m = journal.begin("stream", "")
        class Source:
            def __init__(self, started, release):
                self.started, self.release, self.sent = started, release, False
            def read(self, size):
                if self.sent:
                    return b""
                self.started.set()
                self.release.wait(PATIENCE)
                self.sent = True
                return b"data"
        out = run_during(lambda s, r: m.write("file.txt", Source(s, r)), lambda: (m.active, m.seq))
        m.commit()
        """,
        failsafe=10.0,
    )


def test_a_drive_is_readable_while_a_batch_runs(tmp_path):
    run_scenario(
        tmp_path,
        """
        drive = keel.Drive(os.path.join(os.environ["SCRATCH"], "drive.lmdb"))
        def blocking(started, release):
            with drive.batch() as batch:
                started.set()
                release.wait(PATIENCE)
                return True
        out = run_during(blocking, lambda: (drive.path, drive.user, drive.checked, drive.stats()))
        assert out["call"] is True
        """,
    )


def test_a_queue_and_operations_are_readable_while_a_worker_stops(tmp_path):
    run_scenario(
        tmp_path,
        """
        q = keel.Queue(os.path.join(os.environ["SCRATCH"], "jobs.lmdb"))
        ops = keel.Operations(os.path.join(os.environ["SCRATCH"], "ops.lmdb"))
        q.enqueue("slow")
        gate = {}
        def handler(job, ctx):
            while not ctx.should_stop():
                time.sleep(0.002)
            gate["started"].set()
            gate["release"].wait(PATIENCE)
        worker = keel.Worker(q, {"slow": handler}, poll=0.05)
        while worker.running == 0:
            time.sleep(0.005)
        def blocking(started, release):
            gate["started"], gate["release"] = started, release
            return worker.stop(PATIENCE)
        out = run_during(
            blocking, lambda: (worker.stats(), worker.kinds, worker.running, q.counts(), ops.next("x"))
        )
        assert out["read"][1] == ["slow"]
        """,
    )

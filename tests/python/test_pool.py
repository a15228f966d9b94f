"""keel.SyncPool from Python: what must and must never happen.

Overlap is proven with barriers every task must reach, never with timings;
hung tasks block on an Event the test sets at its end.
"""

import asyncio
import threading

import pytest

import keel
import keel.aio

PATIENCE = 20.0  # seconds a test waits for something that must happen


class Occupancy:
    """Counts callables running at once, overall and per key."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.per_key = {}
        self.overlaps = 0

    def __enter__(self):
        return self

    def enter(self, key):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.per_key[key] = self.per_key.get(key, 0) + 1
            if self.per_key[key] > 1:
                self.overlaps += 1

    def leave(self, key):
        with self.lock:
            self.now -= 1
            self.per_key[key] -= 1


def test_results_come_back_in_order_with_exceptions_as_values():
    pool = keel.SyncPool(4)

    def work(item):
        if item % 5 == 1:
            raise ValueError(f"bad item {item}")
        if item % 5 == 2:
            raise keel.NotFound(f"item {item} is gone")
        return item * 10

    results = pool.run(work, range(30))
    for item, result in enumerate(results):
        if item % 5 == 1:
            assert isinstance(result, ValueError) and str(result) == f"bad item {item}"
        elif item % 5 == 2:
            assert isinstance(result, keel.NotFound) and isinstance(result, LookupError)
        else:
            assert result == item * 10
    stats = pool.stats()
    assert (stats["completed"], stats["failed"]) == (18, 12)


def test_io_bound_callables_really_run_in_parallel():
    n = 6
    pool = keel.SyncPool(n)
    barrier = threading.Barrier(n, timeout=PATIENCE)
    # Each call waits (GIL released) until all n are inside at once: a pool that
    # ran them one at a time, or held the GIL while waiting, breaks the barrier.
    results = pool.run(lambda item: barrier.wait(), range(n))
    assert not any(isinstance(r, BaseException) for r in results), results
    assert sorted(results) == list(range(n))


def test_concurrency_reaches_the_limit_and_never_exceeds_it():
    n = 3
    pool = keel.SyncPool(n)
    occupancy = Occupancy()
    barrier = threading.Barrier(n, timeout=PATIENCE)

    def work(item):
        occupancy.enter(item)
        try:
            barrier.wait()
        finally:
            occupancy.leave(item)

    results = pool.run(work, range(3 * n))
    assert not any(isinstance(r, BaseException) for r in results), results
    assert occupancy.peak == n
    assert pool.stats()["peak_concurrency"] == n
    assert keel.SyncPool(0).max_concurrency == 1


def test_items_of_one_key_never_overlap():
    pool = keel.SyncPool(8)
    occupancy = Occupancy()

    def work(item):
        key = f"source-{item % 3}"
        occupancy.enter(key)
        for _ in range(200):
            pass
        occupancy.leave(key)
        return item

    results = pool.run(work, range(300), key=lambda item: f"source-{item % 3}")
    assert results == list(range(300))
    assert occupancy.overlaps == 0


def test_singleflight_runs_each_key_once_and_shares_the_result():
    pool = keel.SyncPool(4)
    calls = []

    def fetch(source):
        calls.append(source)
        if source == "dead":
            raise ConnectionError(f"{source} unreachable")
        return f"fetched {source}"

    sources = ["a", "dead", "a", "b", "dead", "a"]
    results = pool.run(fetch, sources, key=lambda s: s, singleflight=True)
    assert sorted(calls) == ["a", "b", "dead"]
    assert results[0] == results[2] == results[5] == "fetched a"
    assert isinstance(results[1], ConnectionError) and results[4] is results[1]


def test_progress_reports_every_result():
    pool = keel.SyncPool(2)
    seen = []
    results = pool.run(lambda x: x + 1, range(10), progress=lambda done, total, index, result: seen.append(
        (done, total, index, result)))
    assert results == list(range(1, 11))
    assert [s[0] for s in seen] == list(range(1, 11))
    assert sorted((s[2], s[3]) for s in seen) == [(i, i + 1) for i in range(10)]


def test_a_hung_callable_times_out_and_the_others_finish():
    release = threading.Event()
    pool = keel.SyncPool(1, timeout=0.2)  # one slot: the hung call must give it up
    try:
        def work(item):
            if item == "dead":
                release.wait()
            return item

        results = pool.run(work, ["dead", "dead", "live", "other"], key=lambda item: item)
        assert isinstance(results[0], keel.Timeout) and isinstance(results[0], TimeoutError)
        assert isinstance(results[1], keel.Busy), "the key stays busy while its hung run lives"
        assert results[2:] == ["live", "other"]
        assert pool.stats()["abandoned"] == 1
    finally:
        release.set()


def test_past_the_abandoned_thread_cap_items_are_refused():
    release = threading.Event()
    pool = keel.SyncPool(1, timeout=0.2, max_abandoned=1)
    try:
        results = pool.run(lambda item: release.wait() if item == 0 else item, range(3))
        assert isinstance(results[0], keel.Timeout)
        assert all(isinstance(r, keel.Busy) for r in results[1:]), results
        assert "cap of 1" in str(results[1])
    finally:
        release.set()


def test_shutdown_returns_at_once_while_hung_callables_live():
    release = threading.Event()
    started = threading.Barrier(3, timeout=PATIENCE)
    pool = keel.SyncPool(2)  # no timeout at all
    box = {}

    def work(item):
        if item < 2:
            started.wait()
            release.wait()
        return item

    batch = threading.Thread(target=lambda: box.setdefault("results", pool.run(work, range(4))))
    batch.start()
    try:
        started.wait()  # both hung callables are running
        pool.shutdown()
        batch.join(PATIENCE)
        assert not batch.is_alive(), "shutdown must not wait for hung threads"
        assert all(isinstance(r, keel.Cancelled) for r in box["results"]), box["results"]
        later = pool.run(lambda x: x, [1])
        assert isinstance(later[0], keel.Closed)
    finally:
        release.set()


def test_pipeline_commits_in_input_order_on_the_calling_thread():
    pool = keel.SyncPool(4)
    caller = threading.get_ident()
    committed = []
    three_done = threading.Event()

    def prepare(item):
        if item == 0:
            assert three_done.wait(PATIENCE), "item 3 is prepared while item 0 still runs"
        if item == 3:
            three_done.set()
        if item == 5:
            raise OSError("unreadable")
        return item * 2

    def commit(prepared):
        assert threading.get_ident() == caller
        committed.append(prepared)
        if prepared == 14:
            raise keel.Conflict("registry changed")
        return prepared + 1

    results = pool.pipeline(prepare, range(10), commit, window=4)
    assert committed == [0, 2, 4, 6, 8, 12, 14, 16, 18]
    assert isinstance(results[5], OSError) and str(results[5]) == "unreadable"
    assert isinstance(results[7], keel.Conflict)
    assert results[:5] == [1, 3, 5, 7, 9] and results[8:] == [17, 19]


def test_pipeline_can_stop_at_the_first_commit_failure():
    pool = keel.SyncPool(2)
    committed = []

    def commit(prepared):
        committed.append(prepared)
        if prepared == 2:
            raise RuntimeError("disk full")
        return prepared

    results = pool.pipeline(lambda x: x, range(8), commit, stop_at_first_commit_failure=True)
    assert committed == [0, 1, 2]
    assert isinstance(results[2], RuntimeError)
    assert all(isinstance(r, keel.Cancelled) for r in results[3:]), results


def test_aio_forms_never_block_the_event_loop():
    pool = keel.SyncPool(4)
    gate = threading.Event()

    async def main():
        ticks = 0
        task = asyncio.ensure_future(keel.aio.run(pool, lambda x: gate.wait(PATIENCE) and x * 2, range(8)))
        # The loop keeps running while every pool callable waits on the gate.
        while ticks < 5:
            await asyncio.sleep(0)
            ticks += 1
        gate.set()
        results = await task
        committed = await keel.aio.pipeline(pool, lambda x: x, range(5), lambda p: p + 100)
        return results, committed

    results, committed = asyncio.run(main())
    assert results == [x * 2 for x in range(8)]
    assert committed == [100, 101, 102, 103, 104]


def test_cancelling_an_aio_run_cancels_the_batch():
    pool = keel.SyncPool(2)
    started = threading.Barrier(3, timeout=PATIENCE)
    saw_cancel = threading.Semaphore(0)

    def work(item, ctx):
        started.wait()
        # Woken by the batch's cancellation, not by the test.
        if ctx.wait_cancelled(PATIENCE):
            saw_cancel.release()
        return item

    async def main():
        task = asyncio.ensure_future(keel.aio.run(pool, work, range(2), context=True))
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert saw_cancel.acquire(timeout=PATIENCE) and saw_cancel.acquire(timeout=PATIENCE)


def test_bad_arguments_are_typed_errors():
    pool = keel.SyncPool(2)
    with pytest.raises(keel.InvalidArgument):
        keel.SyncPool(2, timeout=-1.0)
    with pytest.raises(TypeError):
        pool.run(lambda x: x, [1], key=lambda x: 3)


def test_the_context_says_first_of_key_and_cancellation():
    pool = keel.SyncPool(4, timeout=0.2)
    seen = {}

    def sync(source, ctx):
        seen[ctx.index] = (source, ctx.first_of_key)
        if source == "slow":
            # A well-behaved long call waits on its cancellation: the timeout wakes it.
            assert ctx.wait_cancelled(PATIENCE)
            assert ctx.cancelled and ctx.remaining == 0.0
        return ctx.first_of_key

    sources = ["a", "b", "a", "slow", "a"]
    results = pool.run(sync, sources, key=lambda s: s, context=True)
    assert results[:3] == [True, True, False] and results[4] is False
    assert isinstance(results[3], keel.Timeout)
    assert seen[0] == ("a", True) and seen[2] == ("a", False) and seen[4] == ("a", False)


def test_a_hung_callable_released_at_exit_does_not_crash_the_interpreter(tmp_path):
    # CPython < 3.14 kills a thread that re-enters Python during finalization
    # (pthread_exit); through keel's panic boundary that would abort. keel waits
    # (briefly) at exit for pool threads inside Python calls instead.
    import subprocess
    import sys

    script = tmp_path / "exit.py"
    # keel's events are silenced: the logging bridge's own thread has the same
    # exposure when it emits an event during finalization (not the pool's to fix).
    script.write_text(
        "import logging, threading, keel\n"
        "logging.getLogger('keel').setLevel(logging.CRITICAL)\n"
        "keel.flush_logs()\n"
        "gate = threading.Event()\n"
        "pool = keel.SyncPool(2, timeout=0.1)\n"
        "results = pool.run(lambda x: gate.wait(), [1])\n"
        "assert isinstance(results[0], keel.Timeout)\n"
        "gate.set()  # the abandoned call returns while the interpreter exits\n"
    )
    for _ in range(3):
        done = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=PATIENCE)
        assert done.returncode == 0, done.stderr.decode()


def test_the_limit_is_pool_wide_and_nested_runs_are_refused():
    pool = keel.SyncPool(2)
    occupancy = Occupancy()
    barrier = threading.Barrier(3, timeout=0.3)  # 3 at once is possible only past the limit

    def work(item):
        occupancy.enter(item)
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        finally:
            occupancy.leave(item)

    threads = [threading.Thread(target=pool.run, args=(work, [f"{t}-{i}" for i in range(3)])) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)
    assert occupancy.peak <= 2

    nested = pool.run(lambda item: pool.run(lambda x: x, [item]), [1])
    assert isinstance(nested[0][0], keel.WouldDeadlock)
    assert keel.SyncPool(1).run(lambda item: keel.SyncPool(1).run(lambda x: x + 1, [item]), [1]) == [[2]]


def test_out_of_range_numbers_are_invalid_argument_not_clamped():
    for bad in ({"max_concurrency": -5}, {"max_concurrency": 10**6}, {"max_abandoned": -1}):
        with pytest.raises(keel.InvalidArgument):
            keel.SyncPool(**bad)


def test_max_abandoned_zero_means_no_cap():
    release = threading.Event()
    pool = keel.SyncPool(1, timeout=0.2, max_abandoned=0)
    try:
        results = pool.run(lambda item: release.wait() if item < 2 else item, range(3))
        assert isinstance(results[0], keel.Timeout) and isinstance(results[1], keel.Timeout)
        assert results[2] == 2, "nothing is refused without a cap"
    finally:
        release.set()


def test_a_progress_callback_may_run_another_batch_on_the_same_pool():
    pool = keel.SyncPool(2)
    inner = []

    def progress(done, total, index, result):
        inner.append(pool.run(lambda x: x * 10, [1, 2]))

    results = pool.run(lambda x: x, range(4), key=lambda x: str(x), progress=progress)
    assert results == [0, 1, 2, 3]
    assert inner == [[10, 20]] * 4


def test_a_failing_key_is_paused_and_its_duplicates_cost_one_attempt():
    pool = keel.SyncPool(2, failure_backoff=(3600.0, 7200.0))
    attempts = []

    def fetch(source):
        attempts.append(source)
        if source == "dead":
            raise OSError("unreachable")
        return source

    results = pool.run(fetch, ["dead", "live", "dead"], key=lambda s: s)
    assert isinstance(results[0], OSError)
    assert results[1] == "live"
    assert isinstance(results[2], keel.Busy) and 0 < results[2].retry_in <= 3600
    assert attempts == ["dead", "live"] or attempts == ["live", "dead"]

    later = pool.run(fetch, ["dead"], key=lambda s: s)
    assert isinstance(later[0], keel.Busy) and "skipped" in str(later[0])
    assert pool.stats()["skipped"] == 2 and pool.stats()["paused_keys"] == 1

    # An explicit run bypasses the pause; its failure doubles it.
    forced = pool.run(fetch, ["dead"], key=lambda s: s, bypass_backoff=True)
    assert isinstance(forced[0], OSError)
    assert pool.run(fetch, ["dead"], key=lambda s: s)[0].retry_in > 3600
    assert attempts.count("dead") == 2


def test_without_failure_backoff_failing_keys_always_run():
    pool = keel.SyncPool(2)
    results = pool.run(lambda s: 1 / 0, ["a", "a"], key=lambda s: s)
    assert all(isinstance(r, ZeroDivisionError) for r in results)

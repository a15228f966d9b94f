"""KeyedLocks from Python: the same scenarios as the Rust and C tests."""

import asyncio
import threading

import pytest

import keel
import keel.aio


def test_exclusive_holders_never_overlap_and_nothing_is_left():
    locks = keel.KeyedLocks("sources")
    holders = []
    overlaps = []
    counter = [0]

    def work():
        for _ in range(300):
            with locks.lock("source-1"):
                holders.append(1)
                if len(holders) != 1:
                    overlaps.append(len(holders))
                counter[0] += 1
                holders.pop()

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert counter[0] == 6 * 300
    assert len(locks) == 0
    assert locks.stats() == {"entries": 0, "holders": 0, "waiters": 0}


def test_ten_thousand_keys_leave_no_entry():
    locks = keel.KeyedLocks()
    for i in range(10_000):
        with locks.lock(f"key-{i}", shared=bool(i % 2)):
            pass
    assert len(locks) == 0


def test_str_and_bytes_keys_name_the_same_utf8_key():
    locks = keel.KeyedLocks()
    with locks.lock("ключ"):
        other = []
        t = threading.Thread(target=lambda: other.append(locks.try_lock("ключ".encode())))
        t.start()
        t.join()
        assert other == [None]


def test_keys_of_other_types_are_a_type_error():
    with pytest.raises(TypeError):
        keel.KeyedLocks().lock(42)


def test_readers_share_and_a_writer_waits():
    locks = keel.KeyedLocks()
    first = locks.lock("doc", shared=True)
    results = []
    t = threading.Thread(target=lambda: results.append(locks.try_lock("doc", shared=True)))
    t.start()
    t.join()
    assert results[0] is not None and results[0].locked
    w = threading.Thread(target=lambda: results.append(locks.try_lock("doc")))
    w.start()
    w.join()
    assert results[1] is None
    results[0].release()
    first.release()
    assert len(locks) == 0


def test_try_lock_and_timeout_leave_nothing_behind():
    locks = keel.KeyedLocks()
    held = locks.lock("k")
    seen = {}

    def contender():
        seen["try"] = locks.try_lock("k")
        try:
            locks.lock("k", timeout=0.02)
        except keel.Timeout as exc:
            seen["timeout"] = exc

    t = threading.Thread(target=contender)
    t.start()
    t.join()
    assert seen["try"] is None
    assert isinstance(seen["timeout"], TimeoutError)
    assert locks.stats() == {"entries": 1, "holders": 1, "waiters": 0}
    held.release()
    assert len(locks) == 0


def test_negative_timeout_is_invalid_argument():
    with pytest.raises(keel.InvalidArgument):
        keel.KeyedLocks().lock("k", timeout=-1.0)
    with pytest.raises(ValueError):
        keel.KeyedLocks().lock("k", timeout=float("nan"))


def test_reentry_raises_would_deadlock_instead_of_hanging():
    locks = keel.KeyedLocks("repos")
    with locks.lock("k"):
        with pytest.raises(keel.WouldDeadlock, match="repos"):
            locks.lock("k", shared=True)


def test_a_guard_may_be_released_on_another_thread():
    locks = keel.KeyedLocks()
    guard = locks.lock("k")
    t = threading.Thread(target=guard.release)
    t.start()
    t.join()
    assert not guard.locked
    assert len(locks) == 0
    guard.release()  # twice is harmless


def test_lock_many_is_all_or_none_and_never_deadlocks():
    locks = keel.KeyedLocks()
    errors = []

    def work(order):
        try:
            for _ in range(200):
                with locks.lock_many(order):
                    pass
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(order,))
               for order in (["a", "b", "c"], ["c", "b", "a"], ["b", "a", b"c"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(locks) == 0

    held = locks.lock("c")
    failed = []
    t = threading.Thread(target=lambda: failed.append(
        pytest.raises(keel.Timeout, locks.lock_many, ["a", "b", "c"], timeout=0.01)))
    t.start()
    t.join()
    assert failed
    assert locks.stats() == {"entries": 1, "holders": 1, "waiters": 0}
    held.release()


def test_waiting_releases_the_gil():
    locks = keel.KeyedLocks()
    held = locks.lock("k")
    waiting = threading.Event()
    progressed = []

    def waiter():
        waiting.set()
        with locks.lock("k"):
            pass

    t = threading.Thread(target=waiter)
    t.start()
    waiting.wait()
    # While the waiter blocks inside keel, this thread keeps running Python.
    while locks.stats()["waiters"] == 0:
        progressed.append(1)
    held.release()
    t.join()
    assert len(locks) == 0


def test_aio_lock_does_not_block_the_event_loop():
    locks = keel.KeyedLocks()

    async def main():
        held = locks.lock("k")
        ticks = 0
        request = asyncio.ensure_future(keel.aio.lock(locks, "k", timeout=5))
        # The loop keeps running while the request waits in keel.
        while locks.stats()["waiters"] == 0:
            await asyncio.sleep(0)
            ticks += 1
        held.release()
        guard = await request
        assert guard.locked
        guard.release()
        async with keel.aio.lock(locks, "k"):
            assert len(locks) == 1
        return ticks

    asyncio.run(main())
    assert len(locks) == 0


def test_a_cancelled_aio_lock_gives_the_key_back():
    locks = keel.KeyedLocks()

    async def main():
        held = locks.lock("k")
        request = asyncio.ensure_future(keel.aio.lock(locks, "k"))
        while locks.stats()["waiters"] == 0:
            await asyncio.sleep(0)
        request.cancel()
        held.release()
        with pytest.raises(asyncio.CancelledError):
            await request
        # The waiting thread took the key after the cancel; it must hand it back.
        while len(locks) != 0:
            await asyncio.sleep(0.001)

    asyncio.run(main())
    assert len(locks) == 0


def test_a_key_that_is_not_valid_utf8_is_invalid_argument():
    with pytest.raises(keel.InvalidArgument, match="UTF-8"):
        keel.KeyedLocks().lock("\ud800")


def test_none_where_a_key_is_required_is_a_type_error():
    with pytest.raises(TypeError):
        keel.KeyedLocks().lock(None)


def test_a_cancelled_aio_lock_withdraws_its_waiter_and_unblocks_readers():
    locks = keel.KeyedLocks()

    async def main():
        reader = locks.lock("k", shared=True)
        request = asyncio.ensure_future(keel.aio.lock(locks, "k"))
        while locks.stats()["waiters"] == 0:
            await asyncio.sleep(0)
        # FIFO: a new reader queues behind the waiting writer.
        assert await keel.aio.run_blocking(lambda: locks.try_lock("k", shared=True)) is None
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        # The holder never released, yet the waiter is gone: nothing queued.
        while locks.stats()["waiters"] != 0:
            await asyncio.sleep(0.001)
        other = await keel.aio.run_blocking(lambda: locks.try_lock("k", shared=True))
        assert other is not None
        other.release()
        reader.release()

    asyncio.run(main())
    assert len(locks) == 0


def test_a_cancelled_token_stops_a_lock_wait_with_cancelled():
    locks = keel.KeyedLocks()
    held = locks.lock("k")
    token = keel.CancellationToken()
    errors = []

    def wait():
        try:
            locks.lock("k", cancel=token)
        except keel.Cancelled as exc:
            errors.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    while locks.stats()["waiters"] == 0:
        pass
    token.cancel()
    t.join()
    assert len(errors) == 1
    assert locks.stats()["waiters"] == 0
    held.release()
    assert len(locks) == 0

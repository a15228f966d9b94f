"""Benchmark 4: the OPAL boot workload from Python, keel beside plain asyncio and
concurrent.futures, in one run, with benches/support.py conventions (ratio = keel's
speed over the baseline's; median and spread of interleaved rounds).

200 tasks over 120 sources; the first task of a source "fetches" (time.sleep 50 ms),
the others work locally (5 ms); at most 10 at a time; tasks of one source never
overlap. Baselines:
- asyncio: Semaphore(10) + asyncio.to_thread + gather, one asyncio.Lock per source
  (the same exclusion), a default executor of 10 threads (to_thread's default pool
  has only min(32, cpus + 4) threads, which would handicap it on a small machine);
- concurrent.futures: ThreadPoolExecutor(10), one job per source running that
  source's items in order (the exclusion without any lock).
Target: keel at least 0.95x each (the work is sleeps: scheduling is what differs).
Also, reported only: 10,000 empty items, keel's pool.run against executor.map.

Run: python benches/pool_python.py   (with keel installed, built --release)
"""

import asyncio
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import header, interleaved, report, timed  # noqa: E402

import keel  # noqa: E402

TASKS, SOURCES, N = 200, 120, 10
FETCH, LOCAL = 0.050, 0.005
ROUNDS = 3
EMPTY_ITEMS = 10_000


def workload():
    seen = set()
    items = []
    for i in range(TASKS):
        source = f"source-{i % SOURCES}"
        items.append((source, LOCAL if source in seen else FETCH))
        seen.add(source)
    return items


def work(item):
    time.sleep(item[1])
    return item[0]


def run_keel(pool, items):
    results = []
    elapsed = timed(lambda: results.extend(pool.run(work, items, key=lambda item: item[0])))
    assert results == [source for source, _ in items], results
    assert pool.stats()["peak_concurrency"] <= N
    return elapsed * 1000


def run_asyncio(items):
    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(N))
        semaphore = asyncio.Semaphore(N)
        locks = {}

        async def one(item):
            lock = locks.setdefault(item[0], asyncio.Lock())
            async with lock:
                async with semaphore:
                    return await asyncio.to_thread(work, item)

        start = time.perf_counter()
        results = await asyncio.gather(*(one(item) for item in items), return_exceptions=True)
        elapsed = time.perf_counter() - start
        assert results == [source for source, _ in items]
        return elapsed * 1000

    return asyncio.run(main())


def run_futures(executor, items):
    def chain(indexed):
        return [(index, work(item)) for index, item in indexed]

    by_source = {}
    for index, item in enumerate(items):
        by_source.setdefault(item[0], []).append((index, item))
    start = time.perf_counter()
    results = [None] * len(items)
    for done in executor.map(chain, by_source.values()):
        for index, value in done:
            results[index] = value
    elapsed = time.perf_counter() - start
    assert results == [source for source, _ in items]
    return elapsed * 1000


def empty(item):
    return item


def main():
    header("SyncPool from Python against asyncio and concurrent.futures (same run)")
    items = workload()
    pool = keel.SyncPool(N)
    with ThreadPoolExecutor(N) as executor:
        run_keel(pool, items[:20])  # warm up all three
        run_asyncio(items[:20])
        run_futures(executor, items[:20])
        base, ours = interleaved(ROUNDS, lambda: run_asyncio(items), lambda: run_keel(pool, items))
        report("4. OPAL boot vs asyncio", "ms", base, ours, target=0.95)
        base, ours = interleaved(ROUNDS, lambda: run_futures(executor, items), lambda: run_keel(pool, items))
        report("   OPAL boot vs concurrent.futures", "ms", base, ours, target=0.95)

        numbers = list(range(EMPTY_ITEMS))
        base, ours = interleaved(
            ROUNDS,
            lambda: timed(lambda: list(executor.map(empty, numbers))) * 1e6 / EMPTY_ITEMS,
            lambda: timed(lambda: pool.run(empty, numbers)) * 1e6 / EMPTY_ITEMS,
        )
        report(f"   {EMPTY_ITEMS} empty items vs executor.map", "us/item", base, ours)


if __name__ == "__main__":
    main()

"""Benchmark 4: the OPAL boot workload from Python, keel versus plain asyncio.

200 tasks over 120 sources; the first task of a source "fetches" (time.sleep 50 ms),
the others work locally (5 ms); at most 10 at a time; tasks of one source never
overlap. Baseline, in the same run: asyncio.Semaphore(10) + asyncio.to_thread +
gather, with one asyncio.Lock per source (the same exclusion) and a default
executor of 10 threads (to_thread's default pool has only min(32, cpus + 4)
threads, which would handicap the baseline on a small machine).

Run: python benches/pool_python.py   (with keel installed)
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import keel

TASKS, SOURCES, N = 200, 120, 10
FETCH, LOCAL = 0.050, 0.005


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


def ideal(items):
    total = sum(duration for _, duration in items)
    return total / N


def run_keel(items):
    pool = keel.SyncPool(N)
    start = time.perf_counter()
    results = pool.run(work, items, key=lambda item: item[0])
    elapsed = time.perf_counter() - start
    assert results == [source for source, _ in items], results
    assert pool.stats()["peak_concurrency"] <= N
    return elapsed


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
        return elapsed

    return asyncio.run(main())


def main():
    items = workload()
    run_keel(items[:20])  # warm up both
    run_asyncio(items[:20])
    keel_time = min(run_keel(items) for _ in range(3))
    asyncio_time = min(run_asyncio(items) for _ in range(3))
    print(
        f"4. OPAL boot from Python ({TASKS} tasks, {SOURCES} sources, N={N}, time.sleep): "
        f"ideal {ideal(items) * 1000:.0f} ms, asyncio (Semaphore + to_thread + gather) "
        f"{asyncio_time * 1000:.0f} ms, keel {keel_time * 1000:.0f} ms, "
        f"ratio keel/asyncio {keel_time / asyncio_time:.3f}, keel/ideal {keel_time / ideal(items):.3f}"
    )


if __name__ == "__main__":
    main()

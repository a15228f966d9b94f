"""A fleet of sources synced by threads: one lock per source, none left behind.

Eight workers sync 200 scopes that share 30 sources. Work on one source never
overlaps (the per-key lock), distinct sources run in parallel, and when every
worker is done the registry holds no entry at all.
"""

import random
import threading
import time

import keel

locks = keel.KeyedLocks("sources")
scopes = [f"source-{random.randrange(30)}" for _ in range(200)]
busy: set[str] = set()
busy_guard = threading.Lock()
overlaps = 0
queue = list(enumerate(scopes))
queue_guard = threading.Lock()


def worker() -> None:
    global overlaps
    while True:
        with queue_guard:
            if not queue:
                return
            _, source = queue.pop()
        with locks.lock(source, timeout=10):
            with busy_guard:
                overlaps += source in busy
                busy.add(source)
            time.sleep(0.001)  # the "fetch"
            with busy_guard:
                busy.discard(source)


started = time.perf_counter()
threads = [threading.Thread(target=worker) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.perf_counter() - started

print(f"keel {keel.__version__}: synced {len(scopes)} scopes over {len(set(scopes))} sources "
      f"with 8 workers in {elapsed:.2f}s")
print(f"overlapping syncs of one source: {overlaps}")
print(f"lock registry entries left: {len(locks)}  (stats: {locks.stats()})")
assert overlaps == 0 and len(locks) == 0

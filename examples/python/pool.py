"""Booting a fleet of scopes the way OPAL does, with one source that hangs.

60 scopes share 20 sources. The first scope of each source fetches it (here a short
sleep); the others reuse the fetch. One source is unreachable: its fetch never
returns. With a 0.5 s timeout the boot still finishes: the hung fetch is reported
as a timeout, its later scopes are refused at once (the source stays busy until the
hung call returns), and every other source syncs normally.

Then an ordered pipeline: files are "converted" in parallel and registered one at a
time, in order.
"""

import threading
import time

from typing import Dict, List

import keel

never = threading.Event()  # the dead source's fetch waits on this forever
fetched: set[str] = set()


def sync(scope: Dict[str, str]) -> str:
    source = scope["source"]
    if source not in fetched:  # pass 1: the one fetch per source
        if source == "source-13":
            never.wait()
        time.sleep(0.02)
        fetched.add(source)
    return f"{scope['name']} synced from {source}"


scopes = [{"name": f"scope-{i}", "source": f"source-{i % 20}"} for i in range(60)]
pool = keel.SyncPool(10, timeout=0.5, name="boot")
results = pool.run(sync, scopes, key=lambda scope: scope["source"])

ok = [r for r in results if isinstance(r, str)]
timed_out = [r for r in results if isinstance(r, keel.Timeout)]
refused = [r for r in results if isinstance(r, keel.Busy)]
print(f"{len(ok)} synced, {len(timed_out)} timed out, {len(refused)} refused")
assert (len(ok), len(timed_out), len(refused)) == (57, 1, 2)
print("stats:", pool.stats())

registry: List[str] = []


def register(converted: str) -> int:
    registry.append(converted)
    return len(registry)


committed = pool.pipeline(
    lambda name: name.upper(),  # prepared in parallel on the pool
    [f"doc-{i}.md" for i in range(8)],
    register,  # in order, here
)
assert registry == [f"DOC-{i}.MD" for i in range(8)] and committed == list(range(1, 9))
print("registered in order:", registry)
never.set()

"""A dataset pipeline and a mail queue, as a small ingest service would run them.

Operations: each uploaded dataset moves upload -> unpack -> index; a claimer takes
READY items once each and enables the next step in the same transaction.
Jobs: a worker sends mail with a Python handler; one address is bad and its job
fails for good without stopping the others.
"""

import tempfile
import threading
from pathlib import Path

import keel
from keel.types import JobRecord, Json

with tempfile.TemporaryDirectory() as folder:
    ops = keel.Operations(Path(folder) / "ops.lmdb")
    for n in range(5):
        ops.ready(f"dataset-{n}", ["unpack"])
    while claims := ops.claim("unpack", 2, worker="unpacker", lease=60):
        for claim in claims:
            ops.update(claim["item"], "unpack", "OK", "unpacked", enable=["index"], token=claim["token"])
    print("ready to index:", [r["item"] for r in ops.next("index")])

    queue = keel.Queue(Path(folder) / "jobs.lmdb")
    for to in ["ann@example.org", "bob@example.org", "not-an-address"]:
        queue.enqueue("mail.send", {"to": to}, unique_key=to, max_attempts=3)
    done = threading.Semaphore(0)

    def send(job: JobRecord) -> Json:
        try:
            if "@" not in job["payload"]["to"]:
                raise keel.JobError("no such address", retryable=False)
            return {"sent_to": job["payload"]["to"]}
        finally:
            done.release()

    with keel.Worker(queue, {"mail.send": (send, 2)}, name="mailer", poll=0.05):
        for _ in range(3):
            done.acquire(timeout=30)
    print("jobs:", queue.counts())

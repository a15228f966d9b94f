"""keel's main job, end to end, on an embedded default: ``keel demo``.

1. Boot: a fleet of synthetic sources (some sharing a key, a few that hang forever,
   a few that fail) synced through the pool, N at a time.
2. Ingest: their documents written into a folder tree through the journal, prepared
   in parallel and committed in order; mid-way a child process is killed in the
   middle of a mutation and recovery puts the tree back exactly.
3. Catalogue: every document a typed drive item with versioned data; a schema
   upgrade migrates them all in one transaction.
4. Pipeline: operation states and jobs move each document through further stages
   on a worker, one stage failing once and being retried.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import keel
from keel.types import Item, JobRecord

POOL_SIZE = 10
FETCH_TIMEOUT = 0.5
DOCS_PER_SOURCE = 2
INGEST_BATCH = 20


class Progress:
    """A one-line progress bar on stderr (quiet when asked or not a terminal)."""

    def __init__(self, quiet: bool):
        self.enabled = not quiet and sys.stderr.isatty()
        self.quiet = quiet
        self.lock = threading.Lock()

    def update(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = width * done // max(total, 1)
        with self.lock:
            sys.stderr.write(f"\r{stage:<10} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}   ")
            sys.stderr.flush()

    def stage_done(self, stage: str, line: str) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 70 + "\r")
        if not self.quiet:
            print(f"{stage:<10} {line}", flush=True)


@dataclass(frozen=True)
class Scope:
    """A scope points at a source; several scopes may share one."""

    name: str
    source: str
    kind: str  # "ok", "hang" or "fail"


@dataclass(frozen=True)
class Document:
    source: str
    name: str
    title: str
    words: int


# -- 1. boot ------------------------------------------------------------------

def make_fleet(size: int, rng: random.Random) -> List[Scope]:
    hung = max(2, size // 75)
    failing = max(2, size // 50)
    kinds = ["hang"] * hung + ["fail"] * failing + ["ok"] * (size - hung - failing)
    rng.shuffle(kinds)
    sources = [(f"src-{i:04d}", kind) for i, kind in enumerate(kinds)]
    # About a third more scopes than sources: some sources serve several scopes.
    scopes = [Scope(f"scope-{i:04d}", src, kind) for i, (src, kind) in enumerate(sources)]
    for j in range(size // 3):
        src, kind = rng.choice(sources)
        scopes.append(Scope(f"scope-{size + j:04d}", src, kind))
    rng.shuffle(scopes)
    return scopes


def boot(size: int, rng: random.Random, ui: Progress, release_hung: threading.Event) -> Tuple[Dict[str, Any], List[Document]]:
    scopes = make_fleet(size, rng)
    pool = keel.SyncPool(POOL_SIZE, timeout=FETCH_TIMEOUT, max_abandoned=64, name="demo-boot")
    first_fetches = 0
    count_lock = threading.Lock()

    def sync(scope: Scope, ctx: "keel.TaskContext") -> List[Document]:
        nonlocal first_fetches
        if ctx.first_of_key:
            with count_lock:
                first_fetches += 1
            if scope.kind == "hang":
                release_hung.wait()  # an unreachable repository: never returns on its own
            if scope.kind == "fail":
                raise ConnectionError(f"{scope.source}: repository unreachable")
            time.sleep(rng.uniform(0.002, 0.01))  # the forced fetch
        else:
            time.sleep(0.001)  # local work only, after the fetch
        return [Document(scope.source, f"{scope.name}-{n}", f"{scope.name} part {n}", 50 + 10 * n)
                for n in range(DOCS_PER_SOURCE)]

    started = time.perf_counter()
    results = pool.run(sync, scopes, key=lambda scope: scope.source, context=True,
                       progress=lambda done, total, _i, _r: ui.update("boot", done, total))
    elapsed = time.perf_counter() - started
    stats = pool.stats()
    docs = [doc for result in results if isinstance(result, list) for doc in result]
    outcome = {
        "scopes": len(scopes),
        "sources": len({s.source for s in scopes}),
        "fetches": first_fetches,
        "ok": sum(isinstance(r, list) for r in results),
        "failed": sum(isinstance(r, ConnectionError) for r in results),
        "timed_out": sum(isinstance(r, keel.Timeout) for r in results),
        "refused": sum(isinstance(r, keel.KeelError) and not isinstance(r, keel.Timeout) for r in results),
        "peak_concurrency": stats.get("peak_concurrency"),
        "abandoned_threads": stats.get("abandoned"),
        "seconds": round(elapsed, 2),
    }
    pool.shutdown()
    ui.stage_done("boot", f"{outcome['scopes']} scopes over {outcome['sources']} sources: {outcome['ok']} ok, "
                  f"{outcome['failed']} failed, {outcome['timed_out']} timed out (hung), "
                  f"{outcome['fetches']} fetches (one per source), peak {outcome['peak_concurrency']} at once "
                  f"in {elapsed:.2f}s")
    return outcome, docs


# -- 2. ingest ----------------------------------------------------------------

def render(doc: Document) -> Tuple[str, bytes]:
    body = f"# {doc.title}\n\nsource: {doc.source}\n\n" + ("lorem ipsum " * doc.words) + "\n"
    return f"docs/{doc.source}/{doc.name}.md", body.encode()


def tree_state(root: Path) -> Dict[str, Tuple[int, str]]:
    """Every file under root but keel's own state: mode and content digest."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == ".keel" or rel.startswith(".keel/"):
            continue
        if path.is_file():
            state[rel] = (path.stat().st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            state[rel] = (path.stat().st_mode, "dir")
    return state


CRASHING_CHILD = """
import os, signal, sys
import keel
journal = keel.Journal(sys.argv[1])
m = journal.begin("add", "a batch that never finishes")
for i in range(25):
    m.write(f"docs/crash/doc-{i}.md", b"half-written " * 100)
m.write("index.md", b"an index that must not survive\\n")
os.kill(os.getpid(), signal.SIGKILL)
"""


def crash_a_child_mid_mutation(journal: "keel.Journal", root: Path) -> Dict[str, Any]:
    before = tree_state(root)
    child = subprocess.run([sys.executable, "-c", CRASHING_CHILD, str(root)], capture_output=True)
    killed = child.returncode == -signal.SIGKILL
    pending = len(journal.status()["pending"])
    report = journal.recover()
    after = tree_state(root)
    return {"child_killed": killed, "pending_after_crash": pending, "recovery": report,
            "tree_restored_exactly": before == after}


def ingest(root: Path, docs: List[Document], ui: Progress) -> Dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    journal = keel.Journal(str(root))
    batches = [docs[i:i + INGEST_BATCH] for i in range(0, len(docs), INGEST_BATCH)]
    pool = keel.SyncPool(4, name="demo-ingest")
    crash: Dict[str, Any] = {}
    committed = 0

    def prepare(batch: List[Document]) -> List[Tuple[str, bytes]]:
        return [render(doc) for doc in batch]

    def commit(files: List[Tuple[str, bytes]]) -> int:
        nonlocal committed
        with journal.mutation("add", f"{len(files)} documents") as m:
            for path, data in files:
                m.write(path, data)
            m.write("index.md", f"{committed + len(files)} documents\n".encode())
        committed += len(files)
        ui.update("ingest", committed, len(docs))
        if not crash and committed >= len(docs) // 2:
            crash.update(crash_a_child_mid_mutation(journal, root))
        return len(files)

    started = time.perf_counter()
    results = pool.pipeline(prepare, batches, commit)
    elapsed = time.perf_counter() - started
    pool.shutdown()
    failures = [r for r in results if isinstance(r, BaseException)]
    outcome = {
        "documents": committed,
        "mutations": len(batches) - len(failures),
        "failed_batches": len(failures),
        "crash": crash,
        "journal": journal.stats(),
        "seconds": round(elapsed, 2),
    }
    ui.stage_done("ingest", f"{committed} documents in {outcome['mutations']} journaled mutations in "
                  f"{elapsed:.2f}s; child killed mid-mutation: {crash.get('child_killed')}, "
                  f"tree restored exactly: {crash.get('tree_restored_exactly')}")
    return outcome


# -- 3. catalogue -------------------------------------------------------------

SCHEMA_V1 = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "source": {"type": "string"}, "words": {"type": "integer"}},
    "required": ["title", "source", "words"],
}
SCHEMA_V2 = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "source": {"type": "string"},
        "word_count": {"type": "integer", "minimum": 0},
        "language": {"type": "string"},
    },
    "required": ["title", "source", "word_count", "language"],
    "additionalProperties": False,
}


def upgrade_v1_to_v2(item: Item, version: str, data: Any, old: Optional[int], new: int) -> Any:
    return {"title": data["title"], "source": data["source"], "word_count": data["words"], "language": "en"}


def catalogue(path: Path, docs: List[Document], ui: Progress) -> Dict[str, Any]:
    drive = keel.Drive(str(path))
    drive.set_schema("document", SCHEMA_V1, 1)
    started = time.perf_counter()
    by_source: Dict[str, List[Document]] = {}
    for doc in docs:
        by_source.setdefault(doc.source, []).append(doc)
    made = 0
    for source, source_docs in sorted(by_source.items()):
        # One transaction per source: its folder, its items and their data.
        with drive.batch() as batch:
            batch.make_path(f"docs/{source}")
            for doc in source_docs:
                item = batch.create_at(f"docs/{source}", doc.name, type="document")
                batch.set_data(item["id"], {"title": doc.title, "source": doc.source, "words": doc.words})
                made += 1
        ui.update("catalogue", made, len(docs))
    created = time.perf_counter() - started
    started = time.perf_counter()
    upgraded = drive.set_schema("document", SCHEMA_V2, 2, migrate=upgrade_v1_to_v2)
    migrated = time.perf_counter() - started
    sample = next(iter(drive.by_type("document", limit=1)), None)
    stored = drive.get_data(sample["id"]) if sample else None
    sample_data = stored[1] if stored else None
    schema = drive.schema("document")
    outcome = {
        "items": made,
        "schema_upgraded": upgraded,
        "schema_version": schema[0] if schema else None,
        "sample_after_migration": sample_data,
        "create_seconds": round(created, 2),
        "migrate_seconds": round(migrated, 2),
    }
    ui.stage_done("catalogue", f"{made} typed items in {created:.2f}s; schema v1 -> v2 migrated every item "
                  f"in one transaction in {migrated:.2f}s")
    return outcome


# -- 4. pipeline --------------------------------------------------------------

def pipeline(folder: Path, docs: List[Document], ui: Progress) -> Dict[str, Any]:
    ops = keel.Operations(str(folder / "operations.lmdb"))
    queue = keel.Queue(str(folder / "jobs.lmdb"))
    flaky = docs[len(docs) // 3].name if docs else None
    attempts: Dict[str, int] = {}
    attempts_lock = threading.Lock()

    def extract(job: JobRecord) -> Any:
        name = job["payload"]["doc"]
        ops.update(name, "extract", "OK", "extracted", enable=["index"])
        queue.enqueue("index", {"doc": name}, unique_key=f"index:{name}")
        return {"doc": name}

    def index(job: JobRecord) -> Any:
        name = job["payload"]["doc"]
        with attempts_lock:
            attempts[name] = attempts.get(name, 0) + 1
            first = attempts[name] == 1
        if name == flaky and first:
            ops.error(name, "index", "search backend refused the first attempt")
            raise RuntimeError("search backend refused the first attempt")
        ops.update(name, "index", "OK", "indexed")
        return {"doc": name}

    started = time.perf_counter()
    for doc in docs:
        ops.ready(doc.name, ["extract"])
        queue.enqueue("extract", {"doc": doc.name}, max_attempts=3)
    total_jobs = 2 * len(docs)
    with keel.Worker(queue, {"extract": (extract, 4), "index": (index, 4)}, name="demo-worker", poll=0.05):
        while True:
            counts = queue.counts()
            done = sum(states.get("completed", 0) for states in counts.values())
            dead = sum(states.get("dead", 0) for states in counts.values())
            ui.update("pipeline", done, total_jobs)
            if done + dead >= total_jobs:
                break
            time.sleep(0.05)
    elapsed = time.perf_counter() - started
    flaky_states = {r["op"]: r["state"] for r in ops.states(flaky)} if flaky else {}
    outcome = {
        "jobs": queue.counts(),
        "retried_document": flaky,
        "retried_document_attempts": attempts.get(flaky or "", 0),
        "retried_document_states": flaky_states,
        "seconds": round(elapsed, 2),
    }
    ui.stage_done("pipeline", f"{done} jobs completed in {elapsed:.2f}s; {flaky} failed once and "
                  f"succeeded on attempt {outcome['retried_document_attempts']}")
    return outcome


# -- the whole story ----------------------------------------------------------

def print_summary(summary: Dict[str, Any]) -> None:
    boot_, ingest_, catalogue_, pipeline_ = (summary[k] for k in ("boot", "ingest", "catalogue", "pipeline"))
    rows = [
        ("boot (pool)", f"{boot_['scopes']} scopes / {boot_['sources']} sources; {boot_['fetches']} fetches; "
         f"{boot_['failed']} failed, {boot_['timed_out']} hung+timed out; peak {boot_['peak_concurrency']}",
         boot_["seconds"]),
        ("ingest (journal)", f"{ingest_['documents']} docs in {ingest_['mutations']} mutations; "
         f"crash recovered exactly: {ingest_['crash'].get('tree_restored_exactly')}", ingest_["seconds"]),
        ("catalogue (drive)", f"{catalogue_['items']} typed items; schema now v{catalogue_['schema_version']} "
         f"(migrated in one transaction)", catalogue_["create_seconds"] + catalogue_["migrate_seconds"]),
        ("pipeline (ops+jobs)", f"{sum(s.get('completed', 0) for s in pipeline_['jobs'].values())} jobs completed; "
         f"1 retried after failing once", pipeline_["seconds"]),
    ]
    width = max(len(r[1]) for r in rows)
    print()
    print(f"{'part':<20} {'what it did':<{width}} {'seconds':>8}")
    print(f"{'-' * 20} {'-' * width} {'-' * 8}")
    for part, what, seconds in rows:
        print(f"{part:<20} {what:<{width}} {seconds:>8.2f}")
    print(f"\nfiles are in {summary['folder']}")


def run(size: int = 300, folder: Optional[str] = None, quiet: bool = False, seed: int = 7) -> Dict[str, Any]:
    """Runs the four stages and returns (and, unless quiet, prints) the summary."""
    if size < 10:
        raise ValueError("size must be at least 10 sources")
    base = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="keel-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    if any(base.iterdir()):
        raise ValueError(f"{base} is not empty: give the demo a fresh folder")
    rng = random.Random(seed)
    ui = Progress(quiet)
    release_hung = threading.Event()
    summary: Dict[str, Any] = {"folder": str(base), "keel": keel.__version__}
    started = time.perf_counter()
    try:
        summary["boot"], docs = boot(size, rng, ui, release_hung)
        summary["ingest"] = ingest(base / "kb", docs, ui)
        summary["catalogue"] = catalogue(base / "catalogue.drive", docs, ui)
        summary["pipeline"] = pipeline(base, docs, ui)
    finally:
        release_hung.set()  # let the abandoned "hung" threads end
    summary["seconds"] = round(time.perf_counter() - started, 2)
    if not quiet:
        print_summary(summary)
        print(f"total {summary['seconds']:.2f}s")
    return summary

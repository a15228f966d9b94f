"""The ``keel`` command: run the demo, and inspect or repair keel's files.

    keel demo [--size N] [--dir DIR]
    keel drive ls|tree|cat|backup|verify DRIVE ...
    keel journal status|recover|resolve ROOT ...
    keel ops show|list|verify DB ...
    keel queue stats|list|show|retry|cancel|verify DB ...
    keel stats [--drive FILE] [--journal ROOT] [--ops FILE] [--queue FILE]

Inspection never writes: a file is first looked at read-only, and one of
another kind (a jobs file given to ``keel drive ls``, an empty file) is
refused, naming what it holds. Only ``journal recover``, ``journal resolve``,
``queue retry``, ``queue cancel`` and ``drive backup`` (which writes its copy)
change anything, and they say what they did.

Output is readable by default and JSON with ``--json`` (before or after the
subcommand); errors are then JSON too, one object on stderr:
``{"error": {"kind": ..., "code": ..., "message": ...}}``.

Exit codes:
  0   done
  1   any other keel error
  2   bad usage (argparse), or ``verify`` (or ``drive backup``) found damage
  3   not found (a missing file, item or job)
  4   wrong argument or wrong kind of file
  5   conflict (e.g. retrying a job that is not dead)
  6   busy or timed out (another process holds the file)
  7   corrupt file
  8   unsupported (e.g. a file of a newer format)
  9   permission denied
  10  other I/O error
  130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, TypeVar

T = TypeVar("T")

#: The exit code of each error kind (the module docstring lists them).
EXIT_CODES = {
    "NotFound": 3,
    "FileNotFound": 3,
    "InvalidArgument": 4,
    "Conflict": 5,
    "AlreadyExists": 5,
    "Busy": 6,
    "Timeout": 6,
    "Corrupt": 7,
    "Unsupported": 8,
    "PermissionDenied": 9,
    "IoError": 10,
    "StorageFull": 10,
}
EXIT_INTERRUPTED = 130

#: State names the core accepts (``--state`` choices).
JOB_STATES = ["queued", "running", "retrying", "completed", "dead", "cancelled"]
#: Operation states (``keel ops list --state``; given in any case).
OP_STATES = ["READY", "WORKING", "OK", "FAILED"]

import keel
from keel import _keel


class Output:
    """Prints a result as text or as JSON, as the operator asked."""

    def __init__(self, as_json: bool):
        self.as_json = as_json

    def emit(self, value: Any, text: Optional[Callable[[Any], str]] = None) -> None:
        if self.as_json or text is None:
            # Keys in keel's order: a record's fields as listed, a payload's
            # as its producer wrote them.
            print(json.dumps(value, indent=2, default=str))
        else:
            rendered = text(value)
            if rendered:
                print(rendered)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain text table, columns as wide as their widest cell."""
    cells = [list(map(str, header))] + [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def existing(path: str) -> str:
    """Inspecting never creates: a path that does not exist is an error.
    A URL (``postgresql://...``) names a database and is passed through."""
    if "://" in path:
        return path
    if not os.path.exists(path):
        raise keel.NotFound(f"{path}: no such file or folder")
    return path


def of_kind(path: str, part: str) -> str:
    """The path of an existing file holding ``part`` ("drive" or "ops"),
    checked read-only by its format marker before anything opens it for
    writing; anything else is refused, naming what the file holds."""
    report = _keel.inspect_file(existing(path))
    if part not in report["parts"]:
        what = {"drive": "a drive", "ops": "an operations and jobs store"}[part]
        raise keel.InvalidArgument(f"{path} is not {what}: it is {report['description']}")
    return path


def progress(items: Iterable[T], what: str, every: float = 1.0) -> Iterator[T]:
    """Yields ``items``; on long work whose output is not a terminal (so the
    operator cannot see it grow), prints a line on stderr each ``every``
    seconds saying how far it got."""
    quiet = sys.stdout.isatty()
    start = last = time.monotonic()
    count = 0
    for count, item in enumerate(items, 1):
        yield item
        if not quiet:
            now = time.monotonic()
            if now - last >= every:
                last = now
                print(f"keel: {what}: {count} so far ({now - start:.0f} s)", file=sys.stderr, flush=True)
    if not quiet and last != start:
        print(f"keel: {what}: {count} in all", file=sys.stderr, flush=True)


# -- drive --------------------------------------------------------------------

def _drive_item(drive: "keel.Drive", path: str) -> Optional["keel.types.Item"]:
    path = path.strip("/")
    return drive.at_path(path) if path else None


def drive_ls(args: argparse.Namespace, out: Output) -> None:
    drive = keel.Drive(of_kind(args.drive, "drive"))
    parent = _drive_item(drive, args.path)
    items = list(drive.children(parent["id"] if parent else None, limit=args.limit))
    out.emit(items, lambda items: table(
        [(i["name"], i.get("type") or "", i.get("children", 0), i.get("version") or "", i["id"]) for i in items],
        ["name", "type", "children", "version", "id"]))


def drive_tree(args: argparse.Namespace, out: Output) -> None:
    drive = keel.Drive(of_kind(args.drive, "drive"))
    top = _drive_item(drive, args.path)
    items = list(drive.walk(top["id"] if top else None, order="parents_first"))
    if out.as_json:
        out.emit(items)
        return
    prefix = drive.path_of(top["id"]) if top else ""
    for item in progress(items, "items printed"):
        path = drive.path_of(item["id"])
        depth = path[len(prefix):].strip("/").count("/")
        kind = f"  [{item['type']}]" if item.get("type") else ""
        print(f"{'  ' * depth}{item['name']}{kind}")


def drive_cat(args: argparse.Namespace, out: Output) -> None:
    drive = keel.Drive(of_kind(args.drive, "drive"))
    item = drive.at_path(args.path.strip("/"))
    version, data = drive.get_data(item["id"], args.version)
    out.emit({"path": args.path, "version": version, "data": data},
             lambda value: f"# {value['path']} @ {value['version']}\n{json.dumps(value['data'], indent=2)}")


def drive_backup(args: argparse.Namespace, out: Output) -> Optional[int]:
    path = of_kind(args.drive, "drive")
    if not args.force:
        report = keel.verify_file(path)
        if not report["ok"]:
            print(f"keel: refusing to back up {path}: it fails verification (--force copies it anyway)",
                  file=sys.stderr)
            print(_verify_text(report), file=sys.stderr)
            return 2
    keel.Drive(path).backup(args.dest)
    out.emit({"backup": args.dest}, lambda value: f"backed up {args.drive} to {value['backup']}")
    return None


def _verify_text(report: Dict[str, Any]) -> str:
    entries = sum(report["tables"].values())
    if report["ok"]:
        return f"{report['file']}: ok ({len(report['tables'])} tables, {entries} entries)"
    lines = [f"{report['file']}: DAMAGED ({len(report['problems']) + report['more_problems']} problems)"]
    lines += [f"  {problem}" for problem in report["problems"]]
    if report["more_problems"]:
        lines.append(f"  ... and {report['more_problems']} more")
    return "\n".join(lines)


def verify(args: argparse.Namespace, out: Output) -> int:
    """Walks every table of a keel LMDB file in a child process (never changes it)."""
    report = keel.verify_file(existing(args.file))
    out.emit(report, _verify_text)
    return 0 if report["ok"] else 2


# -- journal ------------------------------------------------------------------

def _journal_text(status: Dict[str, Any]) -> str:
    lines = [f"pending mutations: {len(status['pending'])}"]
    lines += [f"  #{p['seq']} {p['status']} {p['operation']} {p['details']} ({len(p['paths'])} paths)"
              for p in status["pending"]]
    lines.append(f"unreadable records: {len(status['unreadable'])}")
    lines.append(f"quarantined: {len(status['quarantined'])}")
    if status.get("last_recovery_error"):
        lines.append(f"last recovery error: {status['last_recovery_error']}")
    for problem in status.get("problems", []):
        lines.append(f"problem (recovery refused until it is removed): {problem}")
    if any(p["status"] == "active" for p in status["pending"]):
        lines.append("interrupted mutations are rolled back by `keel journal recover`")
    return "\n".join(lines)


def journal_status(args: argparse.Namespace, out: Output) -> None:
    # Inspection never writes: no .keel/ created, no lock, no recovery.
    out.emit(keel.Journal.inspect(existing(args.root)), _journal_text)


def journal_recover(args: argparse.Namespace, out: Output) -> None:
    journal = keel.Journal(existing(args.root))
    # Opening already recovered what it could; report that too.
    opened = journal.last_recovery() or {}
    report = journal.recover()
    for key in ("rolled_back", "discarded", "quarantined"):
        report[key] = list(opened.get(key, [])) + list(report[key])
    report["reaped"] += opened.get("reaped", 0)
    out.emit(report, lambda report: "recovered: " + json.dumps(report, sort_keys=True))


def journal_resolve(args: argparse.Namespace, out: Output) -> None:
    moved = keel.Journal(existing(args.root)).resolve(args.seq)
    out.emit({"seq": args.seq, "quarantined": moved}, lambda v: f"mutation #{v['seq']} resolved; kept in {v['quarantined']}")


# -- operations and jobs ------------------------------------------------------

def ops_show(args: argparse.Namespace, out: Output) -> None:
    records = keel.Operations(of_kind(args.db, "ops")).states(args.item)
    out.emit(records, lambda rs: table(
        [(r["op"], r["state"], r["attempts"], r["message"]) for r in rs],
        ["operation", "state", "attempts", "message"]))


def ops_list(args: argparse.Namespace, out: Output) -> None:
    with keel.Operations(of_kind(args.db, "ops")) as ops:
        records = ops.list(args.op, state=args.state, limit=args.limit)
    out.emit(records, lambda rs: table(
        [(r["item"], r["state"] + (" (lease ended)" if r["expired"] else ""), r["attempts"],
          time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["updated_at"])), r["message"].split("\n")[0])
         for r in rs],
        ["item", "state", "attempts", "updated (UTC)", "message"]))


def queue_stats(args: argparse.Namespace, out: Output) -> None:
    counts = keel.Queue(of_kind(args.db, "ops")).counts()
    out.emit(counts, lambda c: table(
        [(kind, state, n) for kind, states in sorted(c.items()) for state, n in sorted(states.items())],
        ["kind", "state", "jobs"]))


def _job_rows(jobs: Sequence[Dict[str, Any]]) -> str:
    return table(
        [(j["id"], j["kind"], j["state"], f"{j['attempts']}/{j['max_attempts']}", (j["last_error"] or "").split("\n")[0])
         for j in jobs],
        ["id", "kind", "state", "attempts", "last error"])


def queue_list(args: argparse.Namespace, out: Output) -> None:
    queue = keel.Queue(of_kind(args.db, "ops"))
    kinds = [args.kind] if args.kind else sorted(queue.counts())
    jobs: List["keel.types.JobRecord"] = []
    for kind in kinds:  # --limit counts jobs in all, not per kind
        if args.limit is not None and len(jobs) >= args.limit:
            break
        left = None if args.limit is None else args.limit - len(jobs)
        jobs += queue.list(kind, state=args.state, limit=left if left is not None else 1 << 31)
    out.emit(jobs, _job_rows)


def queue_show(args: argparse.Namespace, out: Output) -> None:
    job = keel.Queue(of_kind(args.db, "ops")).get(args.id)
    out.emit(job, lambda j: "\n".join(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}"
                                      for key, value in j.items()))


def queue_retry(args: argparse.Namespace, out: Output) -> None:
    job = keel.Queue(of_kind(args.db, "ops")).retry(args.id)
    out.emit(job, lambda j: f"job {j['id']} ({j['kind']}) is {j['state']} again")


def queue_cancel(args: argparse.Namespace, out: Output) -> None:
    job = keel.Queue(of_kind(args.db, "ops")).cancel(args.id, args.reason)
    out.emit(job, lambda j: f"job {j['id']} ({j['kind']}) is {j['state']}")


# -- stats and demo -----------------------------------------------------------

def stats(args: argparse.Namespace, out: Output) -> None:
    opened: List[Any] = []  # kept alive so gather() sees them
    opened += [keel.Drive(of_kind(path, "drive")) for path in args.drive]
    opened += [keel.Journal(existing(root)) for root in args.journal]
    opened += [keel.Operations(of_kind(path, "ops")) for path in args.ops]
    opened += [keel.Queue(of_kind(path, "ops")) for path in args.queue]
    gathered = keel.stats()
    out.emit(gathered, lambda g: "\n".join(
        f"{part}: {json.dumps(entry, sort_keys=True)}" for part, entries in sorted(g.items()) for entry in entries))


def demo(args: argparse.Namespace, out: Output) -> None:
    from keel import demo as demo_module

    summary = demo_module.run(size=args.size, folder=args.dir, quiet=out.as_json)
    if out.as_json:
        out.emit(summary)


class _Subcommands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Gives every subcommand ``--json`` too, so it works after it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        parser.register("action", "parsers", _Subcommands)
        parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                            help="print JSON instead of text (errors too)")
        return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keel", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__[__doc__.index("Exit codes:"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.register("action", "parsers", _Subcommands)
    parser.add_argument("--version", action="version", version=f"keel {keel.__version__}")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text (errors too)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("demo", help="run keel's main job end to end in a fresh folder",
                            description="Syncs a fleet of synthetic sources through the pool, ingests "
                            "their documents through the journal (killing a child process mid-commit and "
                            "recovering), catalogues them in a drive with a schema upgrade, and moves them "
                            "through operations and jobs on a worker. Prints a summary table.")
    p.add_argument("--size", type=int, default=300, help="number of sources (default 300)")
    p.add_argument("--dir", default=None, help="folder to work in (default: a new temporary folder)")
    p.set_defaults(run=demo)

    drive = commands.add_parser("drive", help="inspect a drive file").add_subparsers(dest="action", required=True)
    p = drive.add_parser("ls", help="list the children of a path")
    p.add_argument("drive"), p.add_argument("path", nargs="?", default="")
    p.add_argument("--limit", type=int, default=None, help="list at most this many children")
    p.set_defaults(run=drive_ls)
    p = drive.add_parser("tree", help="print the tree under a path")
    p.add_argument("drive"), p.add_argument("path", nargs="?", default="")
    p.set_defaults(run=drive_tree)
    p = drive.add_parser("cat", help="print an item's data")
    p.add_argument("drive"), p.add_argument("path")
    p.add_argument("--version", default=None, help="a data version (default: the current one)")
    p.set_defaults(run=drive_cat)
    p = drive.add_parser("backup", help="write a consistent, compacted copy (of a file that verifies)")
    p.add_argument("drive"), p.add_argument("dest")
    p.add_argument("--force", action="store_true", help="copy even a file that fails verification")
    p.set_defaults(run=drive_backup)
    p = drive.add_parser("verify", help="check every table, checksum and index (exit 2 if damaged)")
    p.add_argument("file")
    p.set_defaults(run=verify)

    journal = commands.add_parser("journal", help="inspect or repair a journaled tree").add_subparsers(
        dest="action", required=True)
    for name, func, help_text in [("status", journal_status, "pending, unreadable and quarantined records"),
                                  ("recover", journal_recover, "roll back interrupted mutations now")]:
        p = journal.add_parser(name, help=help_text)
        p.add_argument("root")
        p.set_defaults(run=func)
    p = journal.add_parser("resolve", help="give up rolling back a mutation that cannot be (keeps its record)")
    p.add_argument("root"), p.add_argument("seq", type=int)
    p.set_defaults(run=journal_resolve)

    ops = commands.add_parser("ops", help="inspect operation states").add_subparsers(dest="action", required=True)
    p = ops.add_parser("show", help="every operation state of an item")
    p.add_argument("db"), p.add_argument("item")
    p.set_defaults(run=ops_show)
    p = ops.add_parser("list", help="the records of an operation by item, e.g. the FAILED ones (--state FAILED)")
    p.add_argument("db"), p.add_argument("op")
    p.add_argument("--state", default=None, type=str.upper, choices=OP_STATES,
                   help="only records in this state (any case)")
    p.add_argument("--limit", type=int, default=50, help="list at most this many records (default 50)")
    p.set_defaults(run=ops_list)
    p = ops.add_parser("verify", help="walk every table of an operations file (exit 2 if damaged)")
    p.add_argument("file")
    p.set_defaults(run=verify)

    queue = commands.add_parser("queue", help="inspect or repair a job queue").add_subparsers(
        dest="action", required=True)
    p = queue.add_parser("stats", help="jobs per kind and state")
    p.add_argument("db")
    p.set_defaults(run=queue_stats)
    p = queue.add_parser("list", help="list jobs")
    p.add_argument("db"), p.add_argument("--state", default=None, choices=JOB_STATES)
    p.add_argument("--kind", default=None)
    p.add_argument("--limit", type=int, default=50, help="list at most this many jobs in all (default 50)")
    p.set_defaults(run=queue_list)
    p = queue.add_parser("show", help="every field of one job")
    p.add_argument("db"), p.add_argument("id", type=int)
    p.set_defaults(run=queue_show)
    p = queue.add_parser("retry", help="queue a dead or cancelled job again, with fresh attempts")
    p.add_argument("db"), p.add_argument("id", type=int)
    p.set_defaults(run=queue_retry)
    p = queue.add_parser("cancel", help="cancel a job that has not finished (it never runs again)")
    p.add_argument("db"), p.add_argument("id", type=int), p.add_argument("--reason", default="cancelled by keel queue cancel")
    p.set_defaults(run=queue_cancel)
    p = queue.add_parser("verify", help="walk every table of a queue file (exit 2 if damaged)")
    p.add_argument("file")
    p.set_defaults(run=verify)

    p = commands.add_parser("stats", help="counters of the given files, as keel.stats() reports them")
    p.add_argument("--drive", action="append", default=[])
    p.add_argument("--journal", action="append", default=[])
    p.add_argument("--ops", action="append", default=[])
    p.add_argument("--queue", action="append", default=[])
    p.set_defaults(run=stats)
    return parser


def _error(err: BaseException, as_json: bool) -> int:
    """Reports ``err`` on stderr (one line, JSON if asked); its exit code."""
    kind = type(err).__name__ if isinstance(err, keel.KeelError) else None
    if kind is None and isinstance(err, FileNotFoundError):
        kind = "NotFound"
    elif kind is None and isinstance(err, PermissionError):
        kind = "PermissionDenied"
    elif kind is None and isinstance(err, OSError):
        kind = "IoError"
    elif kind is None:
        kind = "InvalidArgument"
    code = EXIT_CODES.get(kind, 1)
    if as_json:
        body = {"kind": kind, "code": getattr(err, "code", None), "message": str(err), "exit": code}
        print(json.dumps({"error": body}), file=sys.stderr)
    else:
        print(f"keel: {kind}: {err}", file=sys.stderr)
    return code


def _quiet_broken_pipe() -> None:
    """``keel drive tree X | head``: the reader left. Point stdout at
    /dev/null so the interpreter's final flush raises nothing either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    as_json = bool(getattr(args, "json", False))
    try:
        code = args.run(args, Output(as_json))
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
        return 0
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (keel.KeelError, OSError, ValueError) as err:
        return _error(err, as_json)
    return code or 0


if __name__ == "__main__":
    sys.exit(main())

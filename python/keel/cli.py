"""The ``keel`` command: run the demo, and inspect or repair keel's files.

    keel demo [--size N] [--dir DIR]
    keel drive ls|tree|cat|backup|verify DRIVE ...
    keel journal status|recover|resolve ROOT ...
    keel ops show|verify DB ...
    keel queue stats|list|retry|verify DB ...
    keel stats [--drive FILE] [--journal ROOT] [--ops FILE] [--queue FILE]

Output is readable by default and JSON with ``--json``. An error is one line on
stderr and a non-zero exit code; ``verify`` exits with 2 when it finds damage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

import keel


class Output:
    """Prints a result as text or as JSON, as the operator asked."""

    def __init__(self, as_json: bool):
        self.as_json = as_json

    def emit(self, value: Any, text: Optional[Callable[[Any], str]] = None) -> None:
        if self.as_json or text is None:
            print(json.dumps(value, indent=2, sort_keys=True, default=str))
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


# -- drive --------------------------------------------------------------------

def _drive_item(drive: "keel.Drive", path: str) -> Optional[Dict[str, Any]]:
    path = path.strip("/")
    return drive.at_path(path) if path else None


def drive_ls(args: argparse.Namespace, out: Output) -> None:
    drive = keel.Drive(existing(args.drive))
    parent = _drive_item(drive, args.path)
    items = list(drive.children(parent["id"] if parent else None, limit=args.limit))
    out.emit(items, lambda items: table(
        [(i["name"], i.get("type") or "", i.get("children", 0), i.get("version") or "", i["id"]) for i in items],
        ["name", "type", "children", "version", "id"]))


def drive_tree(args: argparse.Namespace, out: Output) -> None:
    drive = keel.Drive(existing(args.drive))
    top = _drive_item(drive, args.path)
    items = list(drive.walk(top["id"] if top else None, order="parents_first"))
    if out.as_json:
        out.emit(items)
        return
    prefix = drive.path_of(top["id"]) if top else ""
    for item in items:
        path = drive.path_of(item["id"])
        depth = path[len(prefix):].strip("/").count("/")
        kind = f"  [{item['type']}]" if item.get("type") else ""
        print(f"{'  ' * depth}{item['name']}{kind}")


def drive_cat(args: argparse.Namespace, out: Output) -> None:
    drive = keel.Drive(existing(args.drive))
    item = drive.at_path(args.path.strip("/"))
    version, data = drive.get_data(item["id"], args.version)
    out.emit({"path": args.path, "version": version, "data": data},
             lambda value: f"# {value['path']} @ {value['version']}\n{json.dumps(value['data'], indent=2)}")


def drive_backup(args: argparse.Namespace, out: Output) -> Optional[int]:
    path = existing(args.drive)
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
    records = keel.Operations(existing(args.db)).states(args.item)
    out.emit(records, lambda rs: table(
        [(r["op"], r["state"], r["attempts"], r["message"]) for r in rs],
        ["operation", "state", "attempts", "message"]))


def queue_stats(args: argparse.Namespace, out: Output) -> None:
    counts = keel.Queue(existing(args.db)).counts()
    out.emit(counts, lambda c: table(
        [(kind, state, n) for kind, states in sorted(c.items()) for state, n in sorted(states.items())],
        ["kind", "state", "jobs"]))


def queue_list(args: argparse.Namespace, out: Output) -> None:
    queue = keel.Queue(existing(args.db))
    kinds = [args.kind] if args.kind else sorted(queue.counts())
    jobs = [job for kind in kinds for job in queue.list(kind, state=args.state, limit=args.limit)]
    out.emit(jobs, lambda js: table(
        [(j["id"], j["kind"], j["state"], f"{j['attempts']}/{j['max_attempts']}", j["last_error"]) for j in js],
        ["id", "kind", "state", "attempts", "last error"]))


def queue_retry(args: argparse.Namespace, out: Output) -> None:
    job = keel.Queue(existing(args.db)).retry(args.id)
    out.emit(job, lambda j: f"job {j['id']} ({j['kind']}) is {j['state']} again")


# -- stats and demo -----------------------------------------------------------

def stats(args: argparse.Namespace, out: Output) -> None:
    opened: List[Any] = []  # kept alive so gather() sees them
    opened += [keel.Drive(existing(path)) for path in args.drive]
    opened += [keel.Journal(existing(root)) for root in args.journal]
    opened += [keel.Operations(existing(path)) for path in args.ops]
    opened += [keel.Queue(existing(path)) for path in args.queue]
    gathered = keel.stats()
    out.emit(gathered, lambda g: "\n".join(
        f"{part}: {json.dumps(entry, sort_keys=True)}" for part, entries in sorted(g.items()) for entry in entries))


def demo(args: argparse.Namespace, out: Output) -> None:
    from keel import demo as demo_module

    summary = demo_module.run(size=args.size, folder=args.dir, quiet=out.as_json)
    if out.as_json:
        out.emit(summary)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"keel {keel.__version__}")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
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
    p.add_argument("--limit", type=int, default=None)
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
    p = ops.add_parser("verify", help="walk every table of an operations file (exit 2 if damaged)")
    p.add_argument("file")
    p.set_defaults(run=verify)

    queue = commands.add_parser("queue", help="inspect or repair a job queue").add_subparsers(
        dest="action", required=True)
    p = queue.add_parser("stats", help="jobs per kind and state")
    p.add_argument("db")
    p.set_defaults(run=queue_stats)
    p = queue.add_parser("list", help="list jobs")
    p.add_argument("db"), p.add_argument("--state", default=None), p.add_argument("--kind", default=None)
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(run=queue_list)
    p = queue.add_parser("retry", help="queue a dead or cancelled job again, with fresh attempts")
    p.add_argument("db"), p.add_argument("id", type=int)
    p.set_defaults(run=queue_retry)
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args, Output(args.json))
    except keel.KeelError as err:
        print(f"keel: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"keel: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `keel drive tree ... | head`
        sys.stderr.close()
        return 0
    return code or 0


if __name__ == "__main__":
    sys.exit(main())

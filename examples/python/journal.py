"""Ingesting documents into a knowledge-base folder, crash-safely.

``with journal.mutation(...) as m:`` commits when the block succeeds and rolls
everything back when it raises: here the "compiler" rejects an empty document
after its page was already published, and the tree ends exactly as before.
A crash (kill -9, power loss) is undone the same way by the next ``Journal()``.
"""

import os
import tempfile

import keel

root = tempfile.mkdtemp(prefix="keel-journal-example-")
journal = keel.Journal(root)


def add(name: str, body: str) -> None:
    with journal.mutation("add", name) as m:
        staging = m.staging_dir()
        with open(os.path.join(staging, f"{name}.md"), "w") as f:
            f.write(body)
        m.publish("wiki")
        index_path = os.path.join(root, "index.md")
        index = open(index_path).read() if os.path.exists(index_path) else ""
        m.write("index.md", index + f"- {name}\n")
        if not body:
            raise ValueError(f"{name}: empty document")


add("rivers", "# Rivers\nWater, moving.")
add("lakes", "# Lakes\nWater, resting.")
try:
    add("empty", "")
except ValueError as err:
    print("refused:", err)

index = open(os.path.join(root, "index.md")).read()
print(index)
assert index == "- rivers\n- lakes\n"
assert not os.path.exists(os.path.join(root, "wiki", "empty.md"))
assert journal.status()["pending"] == []

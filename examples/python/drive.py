"""A catalogue of documents in a drive: typed items with versioned data, a schema
upgrade that migrates every item in one transaction, and a checked view that enforces
permissions."""

import os
import tempfile
from typing import Any, Dict, Optional

import keel
from keel.types import Item

folder = tempfile.mkdtemp(prefix="keel-example-drive-")
drive = keel.Drive(os.path.join(folder, "catalogue.drive"))

drive.set_schema("document", {"type": "object", "required": ["title", "words"]}, 1)
docs = drive.create(None, "Docs")
with drive.batch() as batch:  # one transaction
    for name, words in [("intro", 120), ("design", 800)]:
        item = batch.create_at("docs", name, type="document")
        batch.set_data(item["id"], {"title": name, "words": words})


def upgrade(item: Item, version: str, data: Dict[str, Any], old_schema: Optional[int], new_schema: int) -> Dict[str, Any]:
    return {"title": data["title"], "word_count": data["words"]}


drive.set_schema("document", {"type": "object", "required": ["title", "word_count"]}, 2, migrate=upgrade)
design = drive.at_path("docs/DESIGN")  # lookups ignore case
print("docs/design:", drive.get_data(design["id"]))

drive.set_permissions(docs["id"], {"default": "read", "users": {"ada": "edit"}})
try:
    drive.as_user("bob").set_data(design["id"], {"title": "x", "word_count": 1})
except keel.PermissionDenied as refused:
    print("bob was refused:", refused)
version = drive.as_user("ada").set_data(design["id"], {"title": "design", "word_count": 900})
print("ada wrote version", version, "; versions:", [v["version"] for v in drive.versions(design["id"])])
for item in drive.walk(order="parents_first"):
    print(" ", drive.path_of(item["id"]), item.get("type") or "")

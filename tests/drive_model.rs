//! A long random sequence of tree operations, checked step by step against a
//! simple in-memory model: every index (child names, child counts, types)
//! must agree with the model after every operation.

use std::collections::HashMap;

use keel::drive::{Drive, DriveOptions, ItemId, NewItem, WalkOrder};
use keel::lmdb::Durability;
use keel::ErrorKind;

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[derive(Debug, Clone)]
struct ModelItem {
    parent: ItemId,
    name: String,
    kind: Option<String>,
}

#[derive(Default)]
struct Model {
    items: HashMap<ItemId, ModelItem>,
}

impl Model {
    fn children(&self, parent: ItemId) -> Vec<(String, ItemId)> {
        let mut kids: Vec<(String, ItemId)> = self
            .items
            .iter()
            .filter(|(_, item)| item.parent == parent)
            .map(|(id, item)| (item.name.to_lowercase(), *id))
            .collect();
        kids.sort();
        kids
    }

    fn name_taken(&self, parent: ItemId, name: &str, except: Option<ItemId>) -> bool {
        self.children(parent)
            .iter()
            .any(|(folded, id)| *folded == name.to_lowercase() && Some(*id) != except)
    }

    fn is_within(&self, mut id: ItemId, ancestor: ItemId) -> bool {
        loop {
            if id == ancestor {
                return true;
            }
            if id.is_root() {
                return false;
            }
            id = self.items[&id].parent;
        }
    }

    fn subtree(&self, top: ItemId) -> Vec<ItemId> {
        self.items
            .keys()
            .copied()
            .filter(|id| self.is_within(*id, top))
            .collect()
    }
}

const NAMES: [&str; 6] = ["a", "A", "b", "Beta", "beta", "c"];
const KINDS: [Option<&str>; 3] = [None, Some("note"), Some("image")];

fn random_target(rng: &mut Rng, model: &Model) -> ItemId {
    let mut ids: Vec<ItemId> = model.items.keys().copied().collect();
    ids.sort();
    ids.push(ItemId::ROOT);
    if rng.below(10) == 0 {
        return ItemId::from_bytes([0xee; 16]); // missing
    }
    *rng.pick(&ids)
}

/// Runs one random operation; returns what happened, for coverage counts.
fn step(rng: &mut Rng, drive: &Drive, model: &mut Model) -> String {
    match rng.below(20) {
        0..=10 => {
            let parent = random_target(rng, model);
            let name = *rng.pick(&NAMES);
            let kind = *rng.pick(&KINDS);
            let new = NewItem {
                name: name.into(),
                kind: kind.map(str::to_owned),
                ..NewItem::default()
            };
            let result = drive.create(parent, &new);
            if !parent.is_root() && !model.items.contains_key(&parent) {
                assert_eq!(result.unwrap_err().kind(), ErrorKind::NotFound);
                "create: no parent".into()
            } else if model.name_taken(parent, name, None) {
                assert_eq!(result.unwrap_err().kind(), ErrorKind::AlreadyExists);
                "create: name taken".into()
            } else {
                let item = result.unwrap();
                let kind = kind.map(str::to_owned);
                model.items.insert(
                    item.id,
                    ModelItem {
                        parent,
                        name: name.into(),
                        kind,
                    },
                );
                "create: ok".into()
            }
        }
        11..=17 => {
            let id = random_target(rng, model);
            let target = random_target(rng, model);
            let new_name = if rng.below(2) == 0 {
                Some(*rng.pick(&NAMES))
            } else {
                None
            };
            let result = drive.move_item(id, target, new_name);
            let expected = if id.is_root() {
                Err(ErrorKind::InvalidArgument)
            } else if !model.items.contains_key(&id) || (!target.is_root() && !model.items.contains_key(&target)) {
                Err(ErrorKind::NotFound)
            } else if model.is_within(target, id) {
                Err(ErrorKind::InvalidArgument)
            } else {
                let name = new_name.map_or_else(|| model.items[&id].name.clone(), str::to_owned);
                if model.name_taken(target, &name, Some(id)) {
                    Err(ErrorKind::AlreadyExists)
                } else {
                    Ok(name)
                }
            };
            match (result, expected) {
                (Ok(item), Ok(name)) => {
                    assert_eq!((item.parent, &item.name), (target, &name));
                    let entry = model.items.get_mut(&id).unwrap();
                    entry.parent = target;
                    entry.name = name;
                    "move: ok".into()
                }
                (Err(err), Err(kind)) => {
                    assert_eq!(err.kind(), kind, "{err}");
                    format!("move: {kind:?}")
                }
                (result, expected) => panic!("move {id} -> {target}: got {result:?}, expected {expected:?}"),
            }
        }
        _ => {
            let id = random_target(rng, model);
            let result = drive.delete(id);
            if id.is_root() {
                assert_eq!(result.unwrap_err().kind(), ErrorKind::InvalidArgument);
                "delete: root".into()
            } else if !model.items.contains_key(&id) {
                assert_eq!(result.unwrap_err().kind(), ErrorKind::NotFound);
                "delete: missing".into()
            } else {
                let doomed = model.subtree(id);
                assert_eq!(result.unwrap(), doomed.len() as u64);
                let label = if doomed.len() > 1 {
                    "delete: subtree"
                } else {
                    "delete: leaf"
                };
                for gone in doomed {
                    model.items.remove(&gone);
                }
                label.into()
            }
        }
    }
}

fn check_invariants(drive: &Drive, model: &Model) {
    let mut parents: Vec<ItemId> = model.items.keys().copied().collect();
    parents.push(ItemId::ROOT);
    for parent in parents {
        let expected = model.children(parent);
        let listed = drive.children(parent, None, usize::MAX).unwrap();
        let listed: Vec<(String, ItemId)> = listed.iter().map(|i| (i.name.to_lowercase(), i.id)).collect();
        assert_eq!(listed, expected, "children of {parent}");
        assert_eq!(
            drive.get(parent).unwrap().children,
            expected.len() as u64,
            "child count of {parent}"
        );
    }
    for (id, expected) in &model.items {
        let item = drive.get(*id).unwrap();
        assert_eq!(
            (item.parent, &item.name, &item.kind),
            (expected.parent, &expected.name, &expected.kind)
        );
        let path = drive.path_of(*id).unwrap();
        assert_eq!(drive.resolve(&path.to_uppercase()).unwrap().last().unwrap().id, *id);
    }
    for kind in ["note", "image"] {
        let mut expected: Vec<ItemId> = model
            .items
            .iter()
            .filter(|(_, item)| item.kind.as_deref() == Some(kind))
            .map(|(id, _)| *id)
            .collect();
        expected.sort();
        let listed: Vec<ItemId> = drive
            .by_type(kind, None, usize::MAX)
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(listed, expected, "type index of {kind}");
    }
    let walked = drive.walk(ItemId::ROOT, WalkOrder::ChildrenFirst).unwrap();
    assert_eq!(walked.len(), model.items.len());
    // No stray records: exactly one stored item per model item, plus the root,
    // and exactly one child-index entry per item.
    let env = drive.env();
    let count = |name: &str| {
        let db = env.database(name).unwrap();
        env.read(|txn| {
            use lmdb::{Cursor, Transaction};
            let mut cursor = txn.open_ro_cursor(db).map_err(|e| keel::lmdb::map_err(name, e))?;
            Ok(cursor.iter_start().count())
        })
        .unwrap()
    };
    assert_eq!(count("drive.items"), model.items.len() + 1);
    assert_eq!(count("drive.children"), model.items.len());
    let typed = model.items.values().filter(|item| item.kind.is_some()).count();
    assert_eq!(count("drive.types"), typed);
}

#[test]
fn indexes_match_a_simple_model_through_a_long_random_sequence() {
    let dir = std::env::temp_dir().join(format!("keel-drive-model-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Fsync adds nothing to what this test checks; it only costs time.
    let options = DriveOptions {
        durability: Durability::NoSyncRisksLastCommits,
        ..DriveOptions::default()
    };
    let drive = Drive::open(dir.join("drive.lmdb"), &options).unwrap();
    let mut model = Model::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut largest = 0;
    for round in 0..1500 {
        *seen.entry(step(&mut rng, &drive, &mut model)).or_default() += 1;
        largest = largest.max(model.items.len());
        if round % 50 == 49 {
            check_invariants(&drive, &model);
        }
    }
    check_invariants(&drive, &model);
    eprintln!(
        "outcomes: {seen:?}; largest tree: {largest} items; final: {}",
        model.items.len()
    );
    assert!(
        largest > 30,
        "the sequence should grow a real tree (at most {largest} items)"
    );
    // The sequence must exercise every path, or it proves little.
    for outcome in [
        "create: ok",
        "create: name taken",
        "create: no parent",
        "move: ok",
        "move: AlreadyExists",
        "move: InvalidArgument",
        "move: NotFound",
        "delete: subtree",
        "delete: leaf",
    ] {
        assert!(
            seen.get(outcome).copied().unwrap_or(0) >= 3,
            "{outcome} too rare: {seen:?}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

//! `docs/parity.md` is true: each name it gives exists in its surface, and
//! every C function and every Python method is listed, so a new call fails
//! here until its row is added (see the table's introduction).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// The names in each surface's column: (rust, c, python).
#[derive(Default)]
struct Table {
    rust: Vec<String>,
    c: Vec<String>,
    python: Vec<String>,
}

/// The `code` spans of a cell, skipping the parenthesised notes of a `—`.
fn names_in(cell: &str) -> Vec<String> {
    let cell = cell.trim();
    if cell.starts_with('—') {
        return Vec::new();
    }
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

fn parse_table(text: &str) -> Table {
    let mut table = Table::default();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').collect();
        // | operation | rust | c | python |  →  ["", op, rust, c, python, ""]
        if cells.len() != 6 || cells[1].trim() == "Operation" || cells[1].trim().starts_with("---") {
            continue;
        }
        table.rust.extend(names_in(cells[2]));
        table.c.extend(names_in(cells[3]));
        table.python.extend(names_in(cells[4]));
    }
    table
}

/// The functions `keel.h` declares: `<type> keel_name(` at the start of a line.
fn header_functions(header: &str) -> BTreeSet<String> {
    header
        .lines()
        .filter(|line| !line.starts_with(' ') && !line.starts_with("typedef") && !line.starts_with('#'))
        .filter_map(|line| {
            let open = line.find('(')?;
            let name = line[..open].rsplit([' ', '*']).next()?;
            name.starts_with("keel_").then(|| name.to_owned())
        })
        .collect()
}

/// The classes of the stub, and its `Class.method` and module `function` names
/// (dunders left out).
fn python_names(stub: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut classes = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut class: Option<String> = None;
    for line in stub.lines() {
        if let Some(rest) = line.strip_prefix("class ") {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            classes.insert(name.clone());
            class = Some(name);
        } else if let Some(rest) = line.strip_prefix("def ") {
            class = None;
            names.insert(rest.split('(').next().unwrap().trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("    def ") {
            let method = rest.split('(').next().unwrap().trim();
            if let (Some(class), false) = (&class, method.starts_with("__")) {
                names.insert(format!("{class}.{method}"));
            }
        } else if !line.starts_with(' ') && !line.trim().is_empty() && !line.starts_with('@') && !line.starts_with('#')
        {
            class = None;
        }
    }
    (classes, names)
}

fn rust_sources(dir: &Path, found: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            found.push((path, text));
        }
    }
}

/// Whether `Type::method` (an `impl` of Type with `pub fn method` in one
/// file) or `module::function` (a file of that module with `pub fn function`)
/// exists in `src/`.
fn rust_name_exists(name: &str, sources: &[(PathBuf, String)]) -> bool {
    let Some((owner, function)) = name.rsplit_once("::") else {
        return false;
    };
    let owner = owner.rsplit("::").next().unwrap();
    let defines =
        |text: &str| text.contains(&format!("pub fn {function}(")) || text.contains(&format!("pub fn {function}<"));
    sources.iter().any(|(path, text)| {
        let in_owner = if owner.starts_with(char::is_lowercase) {
            path.components().any(|part| part.as_os_str() == owner)
                || path.file_stem().is_some_and(|stem| stem == owner)
        } else {
            text.lines().any(|line| {
                line.starts_with("impl")
                    && line
                        .split(|c: char| !c.is_alphanumeric() && c != '_')
                        .any(|word| word == owner)
            })
        };
        in_owner && defines(text)
    })
}

#[test]
fn every_c_name_in_the_table_is_in_the_header_and_every_header_function_is_in_the_table() {
    let table = parse_table(&read("docs/parity.md"));
    let declared = header_functions(&read("include/keel.h"));
    assert!(
        declared.len() > 50,
        "parsed only {} functions from keel.h",
        declared.len()
    );
    let listed: BTreeSet<String> = table.c.iter().cloned().collect();
    let unknown: Vec<_> = listed.difference(&declared).collect();
    let unlisted: Vec<_> = declared.difference(&listed).collect();
    assert!(
        unknown.is_empty(),
        "docs/parity.md names C calls keel.h lacks: {unknown:?}"
    );
    assert!(unlisted.is_empty(), "add these C calls to docs/parity.md: {unlisted:?}");
}

#[test]
fn every_python_name_in_the_table_is_in_the_stub_and_every_method_is_in_the_table() {
    let table = parse_table(&read("docs/parity.md"));
    let (classes, declared) = python_names(&read("python/keel/_keel.pyi"));
    assert!(
        declared.len() > 50,
        "parsed only {} names from the stub",
        declared.len()
    );
    let listed: BTreeSet<String> = table.python.iter().cloned().collect();
    let unknown: Vec<_> = listed
        .iter()
        .filter(|name| !declared.contains(*name) && !classes.contains(*name))
        .collect();
    let unlisted: Vec<_> = declared.difference(&listed).collect();
    assert!(
        unknown.is_empty(),
        "docs/parity.md names Python calls the stub lacks: {unknown:?}"
    );
    assert!(
        unlisted.is_empty(),
        "add these Python calls to docs/parity.md: {unlisted:?}"
    );
}

#[test]
fn every_rust_name_in_the_table_exists() {
    let table = parse_table(&read("docs/parity.md"));
    let mut sources = Vec::new();
    rust_sources(&root().join("src"), &mut sources);
    assert!(table.rust.len() > 50, "parsed only {} Rust names", table.rust.len());
    let unknown: Vec<_> = table
        .rust
        .iter()
        .filter(|name| !rust_name_exists(name, &sources))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/parity.md names Rust calls src/ lacks: {unknown:?}"
    );
}

#[test]
fn the_checks_refuse_what_does_not_exist() {
    let table = parse_table(
        "| Operation | Rust | C | Python |\n|---|---|---|---|\n\
         | x | `Nope::missing` | `keel_nope` | — (none) |\n",
    );
    assert_eq!(table.c, ["keel_nope"]);
    assert!(table.python.is_empty());
    let mut sources = Vec::new();
    rust_sources(&root().join("src"), &mut sources);
    assert!(!rust_name_exists("Nope::missing", &sources));
    assert!(!rust_name_exists("Queue::no_such_call", &sources));
    assert!(rust_name_exists("Queue::enqueue", &sources));
    let (_, names) = python_names(
        "class A:\n    def b(self) -> None: ...\n    def __len__(self) -> int: ...\ndef c() -> None: ...\n",
    );
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["A.b", "c"]);
}

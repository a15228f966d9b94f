//! Ingesting documents into a knowledge-base folder, crash-safely.
//!
//! Each `add` prepares its files in the mutation's private staging folder,
//! publishes them into the live tree and updates the index; a failure at any
//! point (here: a document the "compiler" rejects) leaves the tree exactly as
//! it was. A crash would be undone the same way by the next `Journal::open`.

use std::fs;

use keel::{Error, Journal, Result};

fn add(journal: &Journal, name: &str, body: &str) -> Result<()> {
    let mut m = journal.begin("add", name)?;
    let staging = m.staging_dir()?;
    fs::write(staging.join(format!("{name}.md")), body).map_err(|e| Error::io("stage page", e))?;
    m.publish("wiki")?;
    let root = journal.root();
    let index = fs::read_to_string(root.join("index.md")).unwrap_or_default();
    m.write("index.md", format!("{index}- {name}\n").as_bytes())?;
    if body.is_empty() {
        // Dropping `m` (here, by returning early) rolls everything back.
        return Err(Error::invalid_argument(format!("{name}: empty document")));
    }
    m.commit()
}

fn main() -> Result<()> {
    let root = std::env::temp_dir().join(format!("keel-journal-example-{}", std::process::id()));
    fs::create_dir_all(&root).map_err(|e| Error::io("create root", e))?;
    let journal = Journal::open(&root)?;

    add(&journal, "rivers", "# Rivers\nWater, moving.")?;
    add(&journal, "lakes", "# Lakes\nWater, resting.")?;
    let refused = add(&journal, "empty", "");
    println!("adding an empty document: {}", refused.unwrap_err());

    let index = fs::read_to_string(root.join("index.md")).unwrap_or_default();
    println!("index after three adds (one refused):\n{index}");
    assert_eq!(index, "- rivers\n- lakes\n");
    assert!(!root.join("wiki/empty.md").exists());
    println!("status: {:?}", journal.status()?);
    fs::remove_dir_all(&root).map_err(|e| Error::io("clean up", e))
}

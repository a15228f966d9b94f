//! The C stats structs in `include/keel.h` have exactly the fields of the
//! core's stats structs, by name and in order, so C reads the same counters
//! as `keel::stats::gather()` and Python's `stats()` methods.

use keel_core::ops::WorkerStats;
use keel_core::pool::PoolStats;
use keel_core::LockStats;
use serde::Serialize;

/// The field names of a core stats struct, in declaration order.
fn core_fields(stats: impl Serialize) -> Vec<String> {
    // serde_json's map is ordered by key unless preserve_order is on, so
    // read the order from the serializer's text instead.
    let text = serde_json::to_string(&stats).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut names: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
    names.sort_by_key(|name| text.find(&format!("\"{name}\":")).unwrap());
    names
}

/// The fields of `typedef struct [name] { ... } name;` in the header.
fn header_fields(header: &str, name: &str) -> Vec<String> {
    let end = header
        .find(&format!("}} {name};"))
        .unwrap_or_else(|| panic!("keel.h has no struct {name}"));
    let start = header[..end].rfind("typedef struct").unwrap();
    header[start..end]
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|line| line.ends_with(';') && !line.starts_with('*') && !line.starts_with("/*"))
        .map(|line| line.trim_end_matches(';').rsplit(' ').next().unwrap().to_owned())
        .collect()
}

fn header() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../include/keel.h")).unwrap()
}

#[test]
fn keel_lock_stats_has_the_fields_of_lock_stats() {
    assert_eq!(
        header_fields(&header(), "keel_lock_stats"),
        core_fields(LockStats::default())
    );
}

#[test]
fn keel_pool_stats_has_the_fields_of_pool_stats() {
    assert_eq!(
        header_fields(&header(), "keel_pool_stats"),
        core_fields(PoolStats::default())
    );
}

#[test]
fn keel_worker_stats_has_the_fields_of_worker_stats() {
    assert_eq!(
        header_fields(&header(), "keel_worker_stats"),
        core_fields(WorkerStats::default())
    );
}

#[test]
fn the_header_reader_finds_fields_and_skips_comments() {
    let header =
        "typedef struct keel_x {\n  /**\n   * Doc; with a semicolon.\n   */\n  size_t a;\n  uint64_t b;\n} keel_x;\n";
    assert_eq!(header_fields(header, "keel_x"), ["a", "b"]);
}

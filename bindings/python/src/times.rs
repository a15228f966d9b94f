//! Times as Python takes them: seconds, as floats. The core keeps
//! milliseconds (and C and Rust get them so); every time handed to Python
//! goes through here, so what comes out is what goes in — a Unix time like
//! `time.time()` (`run_at`, `lease_until`, `created`, ...) or a number of
//! seconds (`oldest_ready_age`).
//!
//! The rule: a key keeps the core's name, unless that name spells a unit
//! (`oldest_ready_age_ms`), which Python's drops; a time the core gives as 0
//! for "none" (`lease_until` of a record not claimed, `finished_at` of a job
//! not finished) is None.

use serde_json::{Map, Value};

/// Milliseconds (since the Unix epoch, or of a duration) as seconds.
pub fn seconds(millis: u64) -> f64 {
    millis as f64 / 1000.0
}

/// Keys whose values are Unix times in milliseconds, in the JSON forms of
/// operation records and claims, jobs, items and data versions.
const TIMES: [&str; 6] = ["run_at", "ready_at", "created_at", "updated_at", "created", "updated"];
/// The same, where 0 means "none".
const OPTIONAL_TIMES: [&str; 2] = ["lease_until", "finished_at"];

/// A record's JSON form (an operation record or claim, a job, an item, a
/// data version) with its times in seconds. Other keys, and values that are
/// not numbers (an enqueued job's `created` flag), are left as they are.
pub fn in_seconds(mut record: Value) -> Value {
    if let Value::Object(map) = &mut record {
        convert(map);
    }
    record
}

fn convert(map: &mut Map<String, Value>) {
    for (key, value) in map.iter_mut() {
        let Some(millis) = value.as_u64() else {
            continue;
        };
        if TIMES.contains(&key.as_str()) {
            *value = Value::from(seconds(millis));
        } else if OPTIONAL_TIMES.contains(&key.as_str()) {
            *value = match millis {
                0 => Value::Null,
                millis => Value::from(seconds(millis)),
            };
        }
    }
}

/// `keel.stats()`'s entries with seconds: a queue's
/// `oldest_ready_age_ms` (kind → milliseconds) becomes `oldest_ready_age`
/// (kind → seconds).
pub fn stats_in_seconds(mut gathered: Value) -> Value {
    let queues = gathered.get_mut("queue").and_then(Value::as_array_mut);
    for entry in queues.into_iter().flatten() {
        let Some(entry) = entry.as_object_mut() else {
            continue;
        };
        if let Some(Value::Object(ages)) = entry.shift_remove("oldest_ready_age_ms") {
            let ages: Map<String, Value> = ages
                .into_iter()
                .map(|(kind, age)| {
                    let age = age.as_u64().map_or(age, |millis| Value::from(seconds(millis)));
                    (kind, age)
                })
                .collect();
            entry.insert("oldest_ready_age".to_owned(), Value::Object(ages));
        }
    }
    gathered
}

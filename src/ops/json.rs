//! JSON forms of records, for the C and Python surfaces and for logs.
//!
//! Payloads and results are JSON already and are embedded as values, not
//! strings; times are milliseconds since the Unix epoch.

use serde_json::{json, Map, Value};

use super::records::{JobRecord, OpClaim, OpRecord};
use super::store::KindCount;

/// Stored JSON text as a value (text stored before validation existed, or
/// empty, becomes a string or null rather than an error).
fn embedded(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

impl OpRecord {
    /// `{"item", "op", "state", "message", "attempts", "token", "worker",
    /// "lease_until", "ready_at", "created_at", "updated_at", "expired"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "item": self.item,
            "op": self.op,
            "state": self.state.name(),
            "message": self.message,
            "attempts": self.attempts,
            "token": self.token,
            "worker": self.worker,
            "lease_until": self.lease_until,
            "ready_at": self.ready_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expired": self.expired,
        })
    }
}

impl OpClaim {
    /// `{"item", "op", "token", "lease_until", "attempt"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "item": self.item,
            "op": self.op,
            "token": self.token,
            "lease_until": self.lease_until,
            "attempt": self.attempt,
        })
    }
}

impl JobRecord {
    /// Every field, with `payload` and `result` embedded as JSON values.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "kind": self.kind,
            "payload": embedded(&self.payload),
            "state": self.state.name(),
            "priority": self.priority,
            "run_at": self.run_at,
            "attempts": self.attempts,
            "failures": self.failures,
            "max_attempts": self.max_attempts,
            "resets": self.resets,
            "token": self.token,
            "worker": self.worker,
            "lease_until": self.lease_until,
            "unique_key": self.unique_key,
            "last_error": self.last_error,
            "result": embedded(&self.result),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
        })
    }
}

/// `{"kind": {"state": count, ...}, ...}`.
pub fn counts_to_json(counts: &[KindCount]) -> Value {
    let mut kinds = Map::new();
    for count in counts {
        let states = kinds
            .entry(count.kind.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(states) = states {
            states.insert(count.state.name().to_owned(), Value::from(count.count));
        }
    }
    Value::Object(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::JobState;

    #[test]
    fn counts_group_by_kind() {
        let counts = vec![
            KindCount {
                kind: "a".into(),
                state: JobState::Queued,
                count: 2,
            },
            KindCount {
                kind: "a".into(),
                state: JobState::Dead,
                count: 1,
            },
        ];
        assert_eq!(counts_to_json(&counts), json!({"a": {"queued": 2, "dead": 1}}));
    }

    #[test]
    fn op_records_name_their_state() {
        let record = OpRecord::new_ready("ds", "unpack", 5);
        assert_eq!(record.to_json()["state"], "READY");
        assert_eq!(record.to_json()["item"], "ds");
    }
}

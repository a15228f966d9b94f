//! Operations' conformance tests: READY/WORKING/OK/FAILED per (item,
//! operation), claims with leases and tokens, all-or-nothing updates. Every
//! test runs on every store.

use std::collections::HashSet;
use std::time::Duration;

use keel::ops::OpState;
use keel::ErrorKind;

use super::{Backend, LEASE};

fn items(records: &[keel::ops::OpRecord]) -> Vec<&str> {
    records.iter().map(|record| record.item.as_str()).collect()
}

pub fn next_lists_ready_items_oldest_first_without_claiming(b: &dyn Backend) {
    let (ops, clock) = b.operations("next");
    for item in ["ds-b", "ds-a", "ds-c"] {
        ops.ready(item, &["unpack"]).unwrap();
        clock.advance(Duration::from_millis(5));
    }
    assert_eq!(items(&ops.next("unpack", 10).unwrap()), ["ds-b", "ds-a", "ds-c"]);
    assert_eq!(items(&ops.next("unpack", 2).unwrap()), ["ds-b", "ds-a"]);
    assert_eq!(ops.next("unpack", 10).unwrap().len(), 3, "next claims nothing");
    assert!(ops.next("index", 10).unwrap().is_empty());
}

pub fn claim_takes_oldest_ready_items_once_each_with_a_token(b: &dyn Backend) {
    let (ops, clock) = b.operations("claim");
    for item in ["a", "b", "c"] {
        ops.ready(item, &["backup"]).unwrap();
        clock.advance(Duration::from_millis(1));
    }
    let first = ops.claim("backup", 2, "w1", LEASE).unwrap();
    assert_eq!(first.iter().map(|c| c.item.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let second = ops.claim("backup", 5, "w2", LEASE).unwrap();
    assert_eq!(second.len(), 1);
    assert!(ops.claim("backup", 5, "w3", LEASE).unwrap().is_empty());
    let tokens: HashSet<u64> = first.iter().chain(&second).map(|c| c.token).collect();
    assert_eq!(tokens.len(), 3, "tokens are unique");
    let state = &ops.states("a").unwrap()[0];
    assert_eq!(
        (state.state, state.attempts, state.worker.as_str()),
        (OpState::Working, 1, "w1")
    );
}

pub fn update_enables_downstream_operations_in_the_same_transaction(b: &dyn Backend) {
    let (ops, _) = b.operations("enable");
    ops.ready("ds", &["unpack"]).unwrap();
    let claim = ops.claim("unpack", 1, "w", LEASE).unwrap().remove(0);
    let done = ops
        .update(
            "ds",
            "unpack",
            Some(claim.token),
            OpState::Ok,
            "unpacked",
            &["index", "backup"],
        )
        .unwrap();
    assert_eq!((done.state, done.message.as_str()), (OpState::Ok, "unpacked"));
    let states: Vec<(String, OpState)> = ops.states("ds").unwrap().into_iter().map(|r| (r.op, r.state)).collect();
    assert_eq!(
        states,
        vec![
            ("backup".into(), OpState::Ready),
            ("index".into(), OpState::Ready),
            ("unpack".into(), OpState::Ok),
        ]
    );
}

pub fn a_refused_update_enables_nothing(b: &dyn Backend) {
    let (ops, _) = b.operations("all-or-nothing");
    ops.ready("ds", &["unpack"]).unwrap();
    let claim = ops.claim("unpack", 1, "w", LEASE).unwrap().remove(0);
    let stale = ops.update("ds", "unpack", Some(claim.token + 1), OpState::Ok, "", &["index"]);
    assert_eq!(stale.unwrap_err().kind(), ErrorKind::Conflict);
    let bad_name = ops.update(
        "ds",
        "unpack",
        Some(claim.token),
        OpState::Ok,
        "",
        &["index", "bad name"],
    );
    assert_eq!(bad_name.unwrap_err().kind(), ErrorKind::InvalidArgument);
    let states = ops.states("ds").unwrap();
    assert_eq!(states.len(), 1, "nothing enabled: {states:?}");
    assert_eq!(states[0].state, OpState::Working);
}

pub fn an_expired_lease_is_claimable_again_and_the_dead_workers_update_is_refused(b: &dyn Backend) {
    let (ops, clock) = b.operations("lease");
    ops.ready("ds", &["index"]).unwrap();
    let dead = ops.claim("index", 1, "dead-worker", LEASE).unwrap().remove(0);
    clock.advance(LEASE - Duration::from_millis(1));
    assert!(
        ops.claim("index", 1, "w2", LEASE).unwrap().is_empty(),
        "claimed while the lease holds"
    );
    clock.advance(Duration::from_millis(1));
    let alive = ops.claim("index", 1, "w2", LEASE).unwrap().remove(0);
    assert_eq!((alive.item.as_str(), alive.attempt), ("ds", 2));
    let late = ops.update("ds", "index", Some(dead.token), OpState::Ok, "late", &["delete"]);
    assert_eq!(late.unwrap_err().kind(), ErrorKind::Conflict);
    let late_error = ops.error("ds", "index", Some(dead.token), "late failure");
    assert_eq!(late_error.unwrap_err().kind(), ErrorKind::Conflict);
    ops.update("ds", "index", Some(alive.token), OpState::Ok, "indexed", &[])
        .unwrap();
    assert_eq!(ops.states("ds").unwrap().len(), 1, "the refused update enabled nothing");
}

pub fn error_marks_the_operation_failed_with_its_reason(b: &dyn Backend) {
    let (ops, _) = b.operations("error");
    ops.ready("ds", &["unpack"]).unwrap();
    let claim = ops.claim("unpack", 1, "w", LEASE).unwrap().remove(0);
    let failed = ops.error("ds", "unpack", Some(claim.token), "corrupt tarball").unwrap();
    assert_eq!(
        (failed.state, failed.message.as_str()),
        (OpState::Failed, "corrupt tarball")
    );
    assert!(ops.claim("unpack", 1, "w", LEASE).unwrap().is_empty());
}

pub fn an_update_without_a_token_is_refused_while_a_claim_is_live(b: &dyn Backend) {
    let (ops, clock) = b.operations("no-token");
    ops.ready("ds", &["unpack"]).unwrap();
    ops.claim("unpack", 1, "w", LEASE).unwrap();
    let err = ops
        .update("ds", "unpack", None, OpState::Ready, "retry", &[])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    clock.advance(LEASE);
    let requeued = ops.update("ds", "unpack", None, OpState::Ready, "retry", &[]).unwrap();
    assert_eq!(requeued.state, OpState::Ready);
    // Updating an item nobody made ready creates its record.
    let created = ops
        .update("new", "upload", None, OpState::Ok, "uploaded", &["unpack"])
        .unwrap();
    assert_eq!(created.state, OpState::Ok);
    assert_eq!(ops.states("new").unwrap().len(), 2);
}

pub fn bad_names_and_keys_are_invalid_arguments(b: &dyn Backend) {
    let (ops, _) = b.operations("bad-input");
    let cases = [
        ops.ready("", &["unpack"]).map(drop),
        ops.ready("a\0b", &["unpack"]).map(drop),
        ops.ready("ds", &["un pack"]).map(drop),
        ops.next("unpack", 0).map(drop),
        ops.claim("unpack", 1, "w", Duration::ZERO).map(drop),
        ops.update("ds", "unpack", None, OpState::Working, "", &[]).map(drop),
        ops.update("ds", "unpack", None, OpState::Ok, "", &["unpack"]).map(drop),
    ];
    for case in cases {
        assert_eq!(case.unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
    assert!(ops.states("ds").unwrap().is_empty());
}

pub fn an_expired_claim_reads_as_expired_and_is_listed_by_next(b: &dyn Backend) {
    let (ops, clock) = b.operations("expired");
    ops.ready("ds", &["index"]).unwrap();
    ops.claim("index", 1, "dead-worker", LEASE).unwrap();
    let live = &ops.states("ds").unwrap()[0];
    assert_eq!((live.state, live.expired), (OpState::Working, false));
    assert!(
        ops.next("index", 10).unwrap().is_empty(),
        "a live claim guards the item"
    );
    clock.advance(LEASE);
    let lapsed = &ops.states("ds").unwrap()[0];
    assert_eq!((lapsed.state, lapsed.expired), (OpState::Working, true));
    assert_eq!(lapsed.to_json()["expired"], true);
    let listed = ops.next("index", 10).unwrap();
    assert_eq!((items(&listed), listed[0].expired), (vec!["ds"], true));
    // It no longer guards the item: an update without a token goes through.
    let failed = ops.error("ds", "index", None, "given up by hand").unwrap();
    assert_eq!((failed.state, failed.expired), (OpState::Failed, false));
}

pub fn the_reset_pass_requeues_lapsed_claims_and_fails_them_past_max_lapses(b: &dyn Backend) {
    let (ops, clock) = b.operations("lapses");
    let ops = ops.with_policy(keel::ops::OpPolicy { max_lapses: 2 });
    ops.ready("old", &["index"]).unwrap();
    clock.advance(Duration::from_millis(1));
    ops.ready("young", &["index"]).unwrap();
    for lapse in 1..=2 {
        let claims = ops.claim("index", 1, "dying", LEASE).unwrap();
        assert_eq!(claims[0].item, "old", "a lapsed claim keeps its place (lapse {lapse})");
        clock.advance(LEASE);
        let report = ops.reset_expired().unwrap();
        assert_eq!((report.ready, report.failed), (1, 0));
        let record = &ops.states("old").unwrap()[0];
        assert_eq!((record.state, record.expired), (OpState::Ready, false));
        let late = ops.update("old", "index", Some(claims[0].token), OpState::Ok, "late", &[]);
        assert_eq!(late.unwrap_err().kind(), ErrorKind::Conflict);
    }
    ops.claim("index", 1, "dying", LEASE).unwrap();
    clock.advance(LEASE);
    // claim counts the lapse itself: the third one fails the record.
    let next = ops.claim("index", 1, "w", LEASE).unwrap();
    assert_eq!(next[0].item, "young");
    let record = &ops.states("old").unwrap()[0];
    assert_eq!(record.state, OpState::Failed);
    assert!(record.message.contains("lapsed 3 times"), "{}", record.message);
    assert_eq!(ops.reset_expired().unwrap(), keel::ops::OpResetReport::default());
}

pub fn an_update_by_the_holder_clears_the_lapse_count(b: &dyn Backend) {
    let (ops, clock) = b.operations("lapse-clear");
    let ops = ops.with_policy(keel::ops::OpPolicy { max_lapses: 1 });
    ops.ready("ds", &["unpack"]).unwrap();
    for _ in 0..3 {
        ops.claim("unpack", 1, "dying", LEASE).unwrap();
        clock.advance(LEASE);
        assert_eq!(ops.reset_expired().unwrap().ready, 1);
        let claim = ops.claim("unpack", 1, "w", LEASE).unwrap().remove(0);
        ops.update("ds", "unpack", Some(claim.token), OpState::Ready, "again", &[])
            .unwrap();
    }
    assert_eq!(ops.states("ds").unwrap()[0].state, OpState::Ready);
}

pub fn next_lists_by_item_key_when_asked_and_oldest_first_by_default(b: &dyn Backend) {
    let (ops, clock) = b.operations("next-order");
    for item in ["ds-c", "ds-a", "ds-d", "ds-b"] {
        ops.ready(item, &["unpack"]).unwrap();
        clock.advance(Duration::from_millis(5));
    }
    ops.claim("unpack", 1, "dead", LEASE).unwrap(); // ds-c, lapsing below
    clock.advance(LEASE);
    let by_item = ops.next_in("unpack", 3, keel::ops::NextOrder::Item).unwrap();
    assert_eq!(items(&by_item), ["ds-a", "ds-b", "ds-c"]);
    assert!(by_item[2].expired);
    assert_eq!(
        items(&ops.next("unpack", 10).unwrap()),
        ["ds-c", "ds-a", "ds-d", "ds-b"]
    );
    assert_eq!(
        items(&ops.next_in("unpack", 10, keel::ops::NextOrder::Oldest).unwrap()),
        ["ds-c", "ds-a", "ds-d", "ds-b"]
    );
}

pub fn list_finds_the_records_of_an_operation_in_a_state_by_item(b: &dyn Backend) {
    let (ops, clock) = b.operations("list");
    for item in ["ds-c", "ds-a", "ds-d", "ds-b"] {
        ops.ready(item, &["unpack", "index"]).unwrap();
        clock.advance(Duration::from_millis(5));
    }
    ops.error("ds-d", "unpack", None, "bad tarball").unwrap();
    ops.error("ds-a", "unpack", None, "bad checksum").unwrap();
    ops.error("ds-b", "index", None, "not this operation").unwrap();
    ops.update("ds-c", "unpack", None, OpState::Ok, "done", &[]).unwrap();

    let failed = ops.list("unpack", Some(OpState::Failed), 10).unwrap();
    assert_eq!(items(&failed), ["ds-a", "ds-d"], "by item key, only unpack's FAILED");
    assert_eq!(failed[0].message, "bad checksum");
    assert_eq!(items(&ops.list("unpack", Some(OpState::Failed), 1).unwrap()), ["ds-a"]);
    assert_eq!(items(&ops.list("unpack", Some(OpState::Ok), 10).unwrap()), ["ds-c"]);
    assert_eq!(items(&ops.list("unpack", Some(OpState::Ready), 10).unwrap()), ["ds-b"]);
    assert_eq!(
        items(&ops.list("unpack", None, 10).unwrap()),
        ["ds-a", "ds-b", "ds-c", "ds-d"]
    );
    assert!(ops.list("backup", None, 10).unwrap().is_empty());

    ops.claim("index", 1, "dead", LEASE).unwrap(); // ds-c, lapsing below
    clock.advance(LEASE);
    let working = ops.list("index", Some(OpState::Working), 10).unwrap();
    assert_eq!(items(&working), ["ds-c"]);
    assert!(working[0].expired, "a lapsed claim is listed as expired");
    assert_eq!(
        ops.list("index", Some(OpState::Working), 10).unwrap().len(),
        1,
        "listing changes nothing"
    );
    assert_eq!(
        ops.list("unpack", None, 0).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(ops.list("", None, 1).unwrap_err().kind(), ErrorKind::InvalidArgument);
}

//! The job queue's conformance tests: priorities, scheduling, unique keys,
//! fencing, retries with backoff, the resetter, retention and counts. Time
//! is a ManualClock, so nothing here sleeps. Every test runs on every store.

use std::time::Duration;

use keel::ops::{Clock, EnqueueOptions, JobState};
use keel::ErrorKind;

use super::{Backend, LEASE, START};

fn opts() -> EnqueueOptions {
    EnqueueOptions::default()
}

pub fn dequeue_takes_the_most_urgent_priority_then_the_oldest(b: &dyn Backend) {
    let (q, clock) = b.queue("priority");
    let low = q
        .enqueue("mail", r#"{"n":1}"#, &EnqueueOptions { priority: 7, ..opts() })
        .unwrap()
        .job;
    clock.advance(Duration::from_millis(1));
    let urgent_old = q
        .enqueue("mail", r#"{"n":2}"#, &EnqueueOptions { priority: 1, ..opts() })
        .unwrap()
        .job;
    clock.advance(Duration::from_millis(1));
    let urgent_new = q
        .enqueue("mail", r#"{"n":3}"#, &EnqueueOptions { priority: 1, ..opts() })
        .unwrap()
        .job;
    let order: Vec<u64> = (0..3)
        .map(|_| q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap().id)
        .collect();
    assert_eq!(order, vec![urgent_old.id, urgent_new.id, low.id]);
    assert!(q.dequeue(&["mail"], "w", LEASE).unwrap().is_none());
}

pub fn dequeue_only_takes_the_kinds_asked_for(b: &dyn Backend) {
    let (q, _) = b.queue("kinds");
    let report = q.enqueue("report", "{}", &opts()).unwrap().job;
    q.enqueue("mail", "{}", &opts()).unwrap();
    assert!(q.dequeue(&["other"], "w", LEASE).unwrap().is_none());
    let job = q.dequeue(&["report", "other"], "w", LEASE).unwrap().unwrap();
    assert_eq!(job.id, report.id);
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.attempts, 1);
    assert_ne!(job.token, 0);
}

pub fn scheduled_jobs_do_not_run_early(b: &dyn Backend) {
    let (q, clock) = b.queue("scheduled");
    let later = START + 60_000;
    let job = q
        .enqueue(
            "mail",
            "{}",
            &EnqueueOptions {
                run_at: Some(later),
                priority: 0,
                ..opts()
            },
        )
        .unwrap()
        .job;
    // A less urgent job that is due runs first; the scheduled one waits.
    let due = q
        .enqueue("mail", "{}", &EnqueueOptions { priority: 9, ..opts() })
        .unwrap()
        .job;
    let running = q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap();
    assert_eq!(running.id, due.id);
    q.complete(running.id, running.token, "").unwrap();
    clock.set(later - 1);
    assert!(q.dequeue(&["mail"], "w", LEASE).unwrap().is_none(), "ran 1 ms early");
    clock.set(later);
    assert_eq!(q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap().id, job.id);
}

pub fn a_live_unique_key_returns_the_existing_job_until_it_finishes(b: &dyn Backend) {
    let (q, _) = b.queue("unique");
    let unique = EnqueueOptions {
        unique_key: Some("sync:repo-1".into()),
        ..opts()
    };
    let first = q.enqueue("sync", r#"{"a":1}"#, &unique).unwrap();
    assert!(first.created);
    let second = q.enqueue("sync", r#"{"a":2}"#, &unique).unwrap();
    assert!(!second.created);
    assert_eq!(second.job.id, first.job.id);
    assert_eq!(second.job.payload, r#"{"a":1}"#);
    // The same key in another kind is another job.
    assert!(q.enqueue("other", "{}", &unique).unwrap().created);
    // Still live while running.
    let running = q.dequeue(&["sync"], "w", LEASE).unwrap().unwrap();
    assert!(!q.enqueue("sync", "{}", &unique).unwrap().created);
    q.complete(running.id, running.token, "").unwrap();
    let third = q.enqueue("sync", "{}", &unique).unwrap();
    assert!(third.created, "a finished job frees its unique key");
    assert_ne!(third.job.id, first.job.id);
    assert_eq!(q.count("sync", JobState::Queued).unwrap(), 1);
}

pub fn an_always_failing_job_is_dead_after_exactly_max_attempts_with_growing_delays(b: &dyn Backend) {
    let (q, clock) = b.queue("dead");
    let id = q
        .enqueue(
            "flaky",
            "{}",
            &EnqueueOptions {
                max_attempts: 5,
                ..opts()
            },
        )
        .unwrap()
        .job
        .id;
    let mut delays = Vec::new();
    let mut attempts = 0;
    while let Some(job) = q.dequeue(&["flaky"], "w", LEASE).unwrap() {
        attempts += 1;
        let failed = q.fail(job.id, job.token, &format!("boom {attempts}"), true).unwrap();
        if failed.state == JobState::Retrying {
            let delay = failed.run_at - clock.now();
            assert!(
                q.dequeue(&["flaky"], "w", LEASE).unwrap().is_none(),
                "retried before its backoff"
            );
            delays.push(delay);
            clock.set(failed.run_at);
        }
        assert!(attempts <= 5, "ran more than max_attempts");
    }
    let job = q.get(id).unwrap();
    assert_eq!(attempts, 5);
    assert_eq!((job.state, job.attempts, job.failures), (JobState::Dead, 5, 5));
    assert_eq!(job.last_error, "boom 5");
    assert_eq!(delays.len(), 4);
    for pair in delays.windows(2) {
        assert!(pair[1] > pair[0], "delays do not grow: {delays:?}");
    }
    assert_eq!(q.count("flaky", JobState::Dead).unwrap(), 1);
}

pub fn a_non_retryable_failure_is_dead_at_once(b: &dyn Backend) {
    let (q, _) = b.queue("permanent");
    q.enqueue("mail", "{}", &opts()).unwrap();
    let job = q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap();
    let dead = q.fail(job.id, job.token, "bad address", false).unwrap();
    assert_eq!((dead.state, dead.attempts), (JobState::Dead, 1));
}

pub fn an_expired_lease_is_reset_and_the_late_finish_is_refused(b: &dyn Backend) {
    let (q, clock) = b.queue("fencing");
    let id = q.enqueue("mail", "{}", &opts()).unwrap().job.id;
    let first = q.dequeue(&["mail"], "w1", LEASE).unwrap().unwrap();
    clock.advance(LEASE - Duration::from_millis(1));
    assert!(
        q.dequeue(&["mail"], "w2", LEASE).unwrap().is_none(),
        "taken while the lease holds"
    );
    clock.advance(Duration::from_millis(1));
    let second = q.dequeue(&["mail"], "w2", LEASE).unwrap().unwrap();
    assert_eq!(second.id, id);
    assert_ne!(second.token, first.token);
    for late in [
        q.complete(id, first.token, "").map(drop),
        q.fail(id, first.token, "x", true).map(drop),
        q.heartbeat(id, first.token, LEASE).map(drop),
        q.release(id, first.token).map(drop),
    ] {
        assert_eq!(late.unwrap_err().kind(), ErrorKind::Conflict);
    }
    let done = q.complete(id, second.token, r#"{"sent":true}"#).unwrap();
    assert_eq!((done.state, done.attempts, done.resets), (JobState::Completed, 2, 1));
    assert_eq!(done.result, r#"{"sent":true}"#);
}

pub fn a_heartbeat_keeps_the_lease(b: &dyn Backend) {
    let (q, clock) = b.queue("heartbeat");
    q.enqueue("mail", "{}", &opts()).unwrap();
    let job = q.dequeue(&["mail"], "w1", LEASE).unwrap().unwrap();
    for _ in 0..5 {
        clock.advance(LEASE / 2);
        q.heartbeat(job.id, job.token, LEASE).unwrap();
        assert_eq!(q.reset_expired().unwrap().requeued, 0);
    }
    assert_eq!(q.get(job.id).unwrap().state, JobState::Running);
}

pub fn past_max_resets_the_job_dies_saying_its_processor_kept_dying(b: &dyn Backend) {
    let (q, clock) = b.queue("resets");
    let id = q.enqueue("mail", "{}", &opts()).unwrap().job.id;
    for round in 1..=3 {
        q.dequeue(&["mail"], "crashy", LEASE).unwrap().unwrap();
        clock.advance(LEASE);
        let report = q.reset_expired().unwrap();
        if round <= 2 {
            assert_eq!((report.requeued, report.dead), (1, 0));
        } else {
            assert_eq!((report.requeued, report.dead), (0, 1));
        }
    }
    let job = q.get(id).unwrap();
    assert_eq!((job.state, job.resets), (JobState::Dead, 3));
    assert!(job.last_error.contains("processor kept dying"), "{}", job.last_error);
    assert!(q.dequeue(&["mail"], "w", LEASE).unwrap().is_none());
}

pub fn cancel_fences_a_running_attempt_and_refuses_finished_jobs(b: &dyn Backend) {
    let (q, _) = b.queue("cancel");
    let id = q.enqueue("mail", "{}", &opts()).unwrap().job.id;
    let job = q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap();
    assert_eq!(q.cancel(id, "user asked").unwrap().state, JobState::Cancelled);
    assert_eq!(q.complete(id, job.token, "").unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(q.cancel(id, "again").unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(q.get(999).unwrap_err().kind(), ErrorKind::NotFound);
}

pub fn release_requeues_without_counting_a_failure(b: &dyn Backend) {
    let (q, _) = b.queue("release");
    q.enqueue("mail", "{}", &opts()).unwrap();
    let job = q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap();
    let released = q.release(job.id, job.token).unwrap();
    assert_eq!((released.state, released.failures), (JobState::Queued, 0));
    assert_eq!(q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap().id, job.id);
}

pub fn cleanup_deletes_only_finished_jobs_past_retention(b: &dyn Backend) {
    let (q, clock) = b.queue("retention");
    let old = q.enqueue("mail", "{}", &opts()).unwrap().job.id;
    let job = q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap();
    q.complete(job.id, job.token, "").unwrap();
    let pending = q
        .enqueue(
            "mail",
            "{}",
            &EnqueueOptions {
                run_at: Some(START + 10 * 86_400_000),
                ..opts()
            },
        )
        .unwrap()
        .job
        .id;
    clock.advance(Duration::from_secs(3600));
    let recent = q.enqueue("mail", "{}", &opts()).unwrap().job.id;
    let job = q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap();
    assert_eq!(job.id, recent);
    q.cancel(recent, "no").unwrap();
    assert_eq!(q.cleanup(Duration::from_secs(1800)).unwrap(), 1);
    assert_eq!(q.get(old).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(q.get(recent).unwrap().state, JobState::Cancelled);
    assert_eq!(q.get(pending).unwrap().state, JobState::Queued);
    assert_eq!(q.count("mail", JobState::Completed).unwrap(), 0);
}

pub fn counts_follow_every_move(b: &dyn Backend) {
    let (q, _) = b.queue("counts");
    for _ in 0..3 {
        q.enqueue("a", "{}", &opts()).unwrap();
    }
    q.enqueue("b", "{}", &opts()).unwrap();
    let job = q.dequeue(&["a"], "w", LEASE).unwrap().unwrap();
    q.fail(job.id, job.token, "x", false).unwrap();
    let job = q.dequeue(&["a"], "w", LEASE).unwrap().unwrap();
    let mut counts: Vec<(String, JobState, u64)> = q
        .counts()
        .unwrap()
        .into_iter()
        .map(|c| (c.kind, c.state, c.count))
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        vec![
            ("a".into(), JobState::Queued, 1),
            ("a".into(), JobState::Running, 1),
            ("a".into(), JobState::Dead, 1),
            ("b".into(), JobState::Queued, 1),
        ]
    );
    q.complete(job.id, job.token, "").unwrap();
    assert_eq!(q.count("a", JobState::Running).unwrap(), 0);
    assert_eq!(q.count("a", JobState::Completed).unwrap(), 1);
    assert_eq!(q.list("a", Some(JobState::Dead), 10).unwrap().len(), 1);
}

pub fn bad_input_is_refused_and_stores_nothing(b: &dyn Backend) {
    let (q, _) = b.queue("bad-input");
    let cases = [
        q.enqueue("bad kind", "{}", &opts()),
        q.enqueue("mail", "{not json", &opts()),
        q.enqueue("mail", "{}", &EnqueueOptions { priority: 10, ..opts() }),
        q.enqueue(
            "mail",
            "{}",
            &EnqueueOptions {
                max_attempts: 0,
                ..opts()
            },
        ),
        q.enqueue(
            "mail",
            "{}",
            &EnqueueOptions {
                unique_key: Some("a\0b".into()),
                ..opts()
            },
        ),
    ];
    for case in cases {
        assert_eq!(case.unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
    assert!(q.counts().unwrap().is_empty());
    assert_eq!(
        q.dequeue(&[], "w", LEASE).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        q.dequeue(&["mail"], "w", Duration::ZERO).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    q.enqueue("mail", "{}", &opts()).unwrap();
    let job = q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap();
    assert_eq!(
        q.complete(job.id, job.token, "{oops").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(q.get(job.id).unwrap().state, JobState::Running);
}

pub fn the_dequeues_resetter_requeues_and_kills_as_reset_expired_does(b: &dyn Backend) {
    let (q, clock) = b.queue("dequeue-resets");
    let id = q.enqueue("mail", "{}", &opts()).unwrap().job.id;
    // A worker name that needs quoting, as the message shows it.
    let crashy = "crashy \"w\" \\ 1";
    let mut tokens = Vec::new();
    for round in 1..=3 {
        // Each dequeue first resets the lease that just ended, then may
        // claim the very job it reset.
        let job = q.dequeue(&["mail"], crashy, LEASE).unwrap().unwrap();
        assert_eq!((job.id, job.attempts, job.resets), (id, round, round - 1));
        tokens.push(job.token);
        clock.advance(LEASE);
    }
    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "fresh tokens: {tokens:?}"
    );
    assert!(
        q.dequeue(&["mail"], "w", LEASE).unwrap().is_none(),
        "dead past max resets"
    );
    let job = q.get(id).unwrap();
    assert_eq!((job.state, job.resets, job.token), (JobState::Dead, 3, 0));
    assert_eq!(job.finished_at, clock.now());
    assert_eq!(
        job.last_error,
        format!("its processor kept dying: the lease expired 3 times (max resets 2), last held by {crashy:?}")
    );
    assert_eq!(q.count("mail", JobState::Dead).unwrap(), 1);
    assert_eq!(q.count("mail", JobState::Running).unwrap(), 0);
}

pub fn dequeue_many_claims_the_best_first_each_with_its_own_token(b: &dyn Backend) {
    let (q, clock) = b.queue("dequeue-many");
    for priority in [5, 1, 9, 3] {
        q.enqueue("k", "{}", &EnqueueOptions { priority, ..opts() }).unwrap();
        clock.advance(Duration::from_millis(1));
    }
    q.enqueue("other", "{}", &opts()).unwrap();
    let claimed = q.dequeue_many(&["k"], 3, "w", LEASE).unwrap();
    let priorities: Vec<u8> = claimed.iter().map(|job| job.priority).collect();
    assert_eq!(priorities, [1, 3, 5]);
    let tokens: std::collections::HashSet<u64> = claimed.iter().map(|job| job.token).collect();
    assert_eq!(tokens.len(), 3, "each claim has its own token");
    assert!(claimed
        .iter()
        .all(|job| job.state == JobState::Running && job.attempts == 1 && job.worker == "w"));
    assert_eq!(q.dequeue_many(&["k"], 5, "w", LEASE).unwrap().len(), 1);
    assert!(q.dequeue_many(&["k"], 5, "w", LEASE).unwrap().is_empty());
    assert_eq!(q.count("k", JobState::Running).unwrap(), 4);
    assert_eq!(q.count("other", JobState::Queued).unwrap(), 1);
    assert_eq!(
        q.dequeue_many(&["k"], 0, "w", LEASE).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

pub fn finish_many_stores_each_outcome_on_its_own(b: &dyn Backend) {
    use keel::ops::Finish;
    let (q, _) = b.queue("finish-many");
    for _ in 0..4 {
        q.enqueue("k", "{}", &opts()).unwrap();
    }
    let jobs = q.dequeue_many(&["k"], 4, "w", LEASE).unwrap();
    let results = q
        .finish_many(&[
            (jobs[0].id, jobs[0].token, Finish::Complete { result: r#"{"ok":1}"# }),
            (jobs[1].id, jobs[1].token + 100, Finish::Complete { result: "" }),
            (
                jobs[2].id,
                jobs[2].token,
                Finish::Fail {
                    error: "boom",
                    retryable: true,
                },
            ),
            (jobs[3].id, jobs[3].token, Finish::Complete { result: "" }),
            (9_999_999, 1, Finish::Complete { result: "" }),
        ])
        .unwrap();
    let done = results[0].as_ref().unwrap();
    assert_eq!(
        (done.state, done.token, done.result.as_str()),
        (JobState::Completed, 0, r#"{"ok":1}"#)
    );
    assert_eq!(results[1].as_ref().unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(results[2].as_ref().unwrap().state, JobState::Retrying);
    assert_eq!(results[3].as_ref().unwrap().state, JobState::Completed);
    assert_eq!(results[4].as_ref().unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        q.get(jobs[1].id).unwrap().state,
        JobState::Running,
        "the stale entry changed nothing"
    );
    // The same job twice: the second sees the first's outcome.
    let twice = q
        .finish_many(&[
            (jobs[1].id, jobs[1].token, Finish::Complete { result: "" }),
            (jobs[1].id, jobs[1].token, Finish::Complete { result: "" }),
        ])
        .unwrap();
    assert_eq!(twice[0].as_ref().unwrap().state, JobState::Completed);
    assert_eq!(twice[1].as_ref().unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(q.count("k", JobState::Completed).unwrap(), 3);
    assert_eq!(q.count("k", JobState::Running).unwrap(), 0);
}

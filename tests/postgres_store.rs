//! What only the PostgreSQL store does: database time, its versioned
//! schema, secrets kept out of locations, enqueue inside the caller's
//! transaction (Rust and SQL), and wake-ups across queue handles. The
//! shared behaviours are in `tests/store_conformance.rs`.
#![cfg(feature = "postgres")]

#[path = "conformance/mod.rs"]
#[allow(dead_code)]
mod conformance;

use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use conformance::postgres::{fresh_schema, store, url};
use keel::ops::store::postgres::enqueue_in;
use keel::ops::{EnqueueOptions, JobState, ManualClock, PgStore, Queue, Worker};
use keel::postgres::client::{Client, NoTls};
use keel::postgres::{PgOptions, TimeSource, SCHEMA_VERSION};
use keel::ErrorKind;

const LEASE: Duration = Duration::from_secs(30);

fn client() -> Client {
    Client::connect(&url(), NoTls).unwrap()
}

fn options(schema: String) -> PgOptions {
    PgOptions {
        schema,
        pool_size: 2,
        ..PgOptions::default()
    }
}

#[test]
fn leases_and_run_at_follow_the_database_clock_not_the_callers() {
    // The caller's clock is years behind the database's.
    let clock = ManualClock::new(1_000_000);
    let store = store("db-time", TimeSource::Database);
    let queue = store.queue(Arc::new(clock.clone()), Default::default());
    let job = queue.enqueue("mail", "{}", &EnqueueOptions::default()).unwrap().job;
    assert!(
        job.run_at > 1_700_000_000_000,
        "run-at moved onto the database's clock: {}",
        job.run_at
    );
    let running = queue
        .dequeue(&["mail"], "w", LEASE)
        .unwrap()
        .expect("due on the database's clock");
    assert_eq!(
        running.lease_until - running.updated_at,
        30_000,
        "the lease is 30 s of database time"
    );
    // Moving the caller's clock past the lease changes nothing: the
    // database has not reached the lease's end.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(queue.reset_expired().unwrap().requeued, 0);
    assert_eq!(queue.get(job.id).unwrap().state, JobState::Running);
}

#[test]
fn the_schema_version_is_recorded_and_a_newer_one_is_unsupported() {
    let schema = fresh_schema("versions");
    PgStore::open_with(&url(), &options(schema.clone())).unwrap();
    // Opening again (an up-to-date schema) changes nothing.
    PgStore::open_with(&url(), &options(schema.clone())).unwrap();
    let mut db = client();
    let version: String = db
        .query_one(
            &format!("SELECT value FROM {schema}.meta WHERE key = 'schema_version'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION.to_string());
    db.execute(
        &format!("UPDATE {schema}.meta SET value = '99' WHERE key = 'schema_version'"),
        &[],
    )
    .unwrap();
    let err = PgStore::open_with(&url(), &options(schema)).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.message().contains("99"), "{err}");
}

#[test]
fn a_version_1_schema_is_upgraded_on_open_keeping_its_records() {
    let schema = fresh_schema("upgrade");
    let ops =
        keel::ops::Operations::with_store(Arc::new(PgStore::open_with(&url(), &options(schema.clone())).unwrap()));
    ops.ready("ds", &["unpack"]).unwrap();
    // Back to version 1: the lapse counts did not exist yet.
    let mut db = client();
    db.batch_execute(&format!(
        "ALTER TABLE {schema}.op_records DROP COLUMN lapses; \
         UPDATE {schema}.meta SET value = '1' WHERE key = 'schema_version'"
    ))
    .unwrap();
    let upgraded =
        keel::ops::Operations::with_store(Arc::new(PgStore::open_with(&url(), &options(schema.clone())).unwrap()));
    let version: String = db
        .query_one(
            &format!("SELECT value FROM {schema}.meta WHERE key = 'schema_version'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION.to_string());
    let claims = upgraded.claim("unpack", 10, "w", LEASE).unwrap();
    assert_eq!(claims.len(), 1, "the version-1 record survived the upgrade");
}

#[test]
fn a_version_2_schema_gains_the_one_round_trip_calls_on_open_keeping_its_jobs() {
    let schema = fresh_schema("upgrade-v2");
    let queue = PgStore::open_with(&url(), &options(schema.clone()))
        .unwrap()
        .queue(Arc::new(keel::ops::SystemClock), Default::default());
    let waiting = queue.enqueue("mail", "{}", &EnqueueOptions::default()).unwrap().job;
    // Back to version 2: no claim_jobs, no insert_job_quiet (and so an
    // insert_job that cannot run until the upgrade redefines it).
    let mut db = client();
    db.batch_execute(&format!(
        "DROP FUNCTION {schema}.claim_jobs; DROP FUNCTION {schema}.quoted; \
         DROP FUNCTION {schema}.insert_job_quiet; \
         UPDATE {schema}.meta SET value = '2' WHERE key = 'schema_version'"
    ))
    .unwrap();
    let upgraded = PgStore::open_with(&url(), &options(schema.clone()))
        .unwrap()
        .queue(Arc::new(keel::ops::SystemClock), Default::default());
    let version: String = db
        .query_one(
            &format!("SELECT value FROM {schema}.meta WHERE key = 'schema_version'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION.to_string());
    let claimed = upgraded
        .dequeue(&["mail"], "w", LEASE)
        .unwrap()
        .expect("the version-2 job survived");
    assert_eq!(claimed.id, waiting.id);
    upgraded.complete(claimed.id, claimed.token, "").unwrap();
    assert!(
        upgraded
            .enqueue("mail", "{}", &EnqueueOptions::default())
            .unwrap()
            .created
    );
    let id: i64 = db
        .query_one(&format!("SELECT {schema}.enqueue('mail', '{{}}')"), &[])
        .unwrap()
        .get(0);
    assert!(id > 0, "SQL enqueue works on the upgraded schema");
}

#[test]
fn concurrent_first_opens_create_the_schema_once() {
    let schema = fresh_schema("concurrent-open");
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let options = options(schema.clone());
            thread::spawn(move || PgStore::open_with(&url(), &options).map(drop))
        })
        .collect();
    for handle in opened {
        handle.join().unwrap().unwrap();
    }
}

#[test]
fn schemas_keep_applications_apart() {
    let clock = Arc::new(ManualClock::new(conformance::START));
    let a = store("app-a", TimeSource::Caller).queue(clock.clone(), Default::default());
    let b = store("app-b", TimeSource::Caller).queue(clock, Default::default());
    a.enqueue("mail", "{}", &EnqueueOptions::default()).unwrap();
    assert!(b.dequeue(&["mail"], "w", LEASE).unwrap().is_none());
    assert!(a.dequeue(&["mail"], "w", LEASE).unwrap().is_some());
}

#[test]
fn passwords_never_appear_in_locations_stats_or_errors() {
    let with_password = url().replacen("://keel@", "://keel:s3cret-pw@", 1);
    assert!(
        with_password.contains("s3cret-pw"),
        "the test URL has the expected form: {with_password}"
    );
    let options = options(fresh_schema("secrets"));
    let store = PgStore::open_with(&with_password, &options).unwrap();
    let location = keel::ops::JobStore::location(&store);
    assert!(
        !location.contains("s3cret-pw") && location.contains("schema=t_secrets"),
        "{location}"
    );
    let queue = Queue::with_store(Arc::new(store));
    let stats = keel::stats::gather().to_string();
    assert!(!stats.contains("s3cret-pw"));
    drop(queue);
    // An unreachable server: the error names the place, not the secret.
    let closed = "postgresql://keel:s3cret-pw@127.0.0.1:1/keel";
    let err = PgStore::open_with(
        closed,
        &PgOptions {
            connect_timeout: Duration::from_secs(2),
            ..options
        },
    )
    .err()
    .unwrap();
    assert!(!err.message().contains("s3cret-pw"), "{err}");
    assert!(err.message().contains("127.0.0.1:1"), "{err}");
}

#[test]
fn an_enqueue_in_the_callers_transaction_exists_only_if_it_commits() {
    let schema = fresh_schema("in-txn");
    let store = PgStore::open_with(&url(), &options(schema.clone())).unwrap();
    let queue = Queue::with_store(Arc::new(store));
    let mut db = client();
    db.batch_execute("CREATE TABLE IF NOT EXISTS public.keel_test_orders (id text PRIMARY KEY)")
        .unwrap();
    let mut txn = db.transaction().unwrap();
    txn.execute(
        "INSERT INTO public.keel_test_orders VALUES ('rolled-back') ON CONFLICT DO NOTHING",
        &[],
    )
    .unwrap();
    let gone = enqueue_in(
        &mut txn,
        &schema,
        "ship",
        r#"{"order":"rolled-back"}"#,
        &EnqueueOptions::default(),
    )
    .unwrap()
    .job;
    txn.rollback().unwrap();
    assert_eq!(queue.get(gone.id).unwrap_err().kind(), ErrorKind::NotFound);

    let mut txn = db.transaction().unwrap();
    let kept = enqueue_in(
        &mut txn,
        &schema,
        "ship",
        r#"{"order":"kept"}"#,
        &EnqueueOptions::default(),
    )
    .unwrap()
    .job;
    assert_eq!(
        queue.get(kept.id).unwrap_err().kind(),
        ErrorKind::NotFound,
        "invisible before commit"
    );
    txn.commit().unwrap();
    assert_eq!(queue.get(kept.id).unwrap().state, JobState::Queued);
    let bad = enqueue_in(&mut db, &schema, "bad kind", "{}", &EnqueueOptions::default());
    assert_eq!(bad.unwrap_err().kind(), ErrorKind::InvalidArgument);
}

#[test]
fn the_sql_enqueue_function_queues_a_job_any_client_can_call() {
    let schema = fresh_schema("sql-enqueue");
    let store = PgStore::open_with(&url(), &options(schema.clone())).unwrap();
    let queue = Queue::with_store(Arc::new(store));
    let mut db = client();
    let id: i64 = db
        .query_one(
            &format!("SELECT {schema}.enqueue('mail', '{{\"to\":\"ann\"}}', 2)"),
            &[],
        )
        .unwrap()
        .get(0);
    let again: i64 = db
        .query_one(
            &format!("SELECT {schema}.enqueue('mail', '{{}}', unique_key => 'u1')"),
            &[],
        )
        .unwrap()
        .get(0);
    let same: i64 = db
        .query_one(
            &format!("SELECT {schema}.enqueue('mail', '{{}}', unique_key => 'u1')"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(again, same, "a held unique key returns its job");
    let job = queue.get(id as u64).unwrap();
    assert_eq!(
        (job.kind.as_str(), job.priority, job.state),
        ("mail", 2, JobState::Queued)
    );
    assert_eq!(queue.count("mail", JobState::Queued).unwrap(), 2);
    let bad = db.query_one(&format!("SELECT {schema}.enqueue('mail', 'not json')"), &[]);
    assert!(bad.is_err());
    let running = queue.dequeue(&["mail"], "w", LEASE).unwrap().unwrap();
    assert_eq!(running.id, id as u64, "priority 2 goes first");
}

/// A worker of `slots` "mail" handlers that polls once a minute (so only a
/// notification wakes it), sending each job's id as it runs, and a second
/// queue handle on the same schema to enqueue through.
fn idle_worker_and_another_handle(name: &str, slots: usize) -> (Worker, mpsc::Receiver<u64>, Queue) {
    let schema = fresh_schema(name);
    let waiting = Queue::postgres_with(&url(), &options(schema.clone())).unwrap();
    let (ran_tx, ran_rx) = mpsc::channel();
    let ran_tx = Mutex::new(ran_tx);
    let worker = Worker::builder(&waiting)
        .map_options(|options| options.poll_interval = Duration::from_secs(60))
        .handler("mail", slots, move |ctx| {
            ran_tx.lock().unwrap().send(ctx.job().id).unwrap();
            Ok(String::new())
        })
        .start()
        .unwrap();
    let other = Queue::with_store(Arc::new(PgStore::open_with(&url(), &options(schema)).unwrap()));
    (worker, ran_rx, other)
}

#[test]
fn a_job_enqueued_through_another_handle_wakes_an_idle_worker_before_its_poll() {
    let (mut worker, ran_rx, other) = idle_worker_and_another_handle("wakeup", 1);
    let started = Instant::now();
    let job = other.enqueue("mail", "{}", &EnqueueOptions::default()).unwrap().job;
    let ran = ran_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the worker was not woken");
    assert_eq!(ran, job.id);
    assert!(started.elapsed() < Duration::from_secs(30));
    worker.stop(Duration::from_secs(10));
}

#[test]
fn bursts_of_enqueues_from_several_threads_each_wake_an_idle_worker_elsewhere() {
    // Crowded enqueues leave their notifications to the announcer's thread,
    // which gathers them: the last of every burst must still wake the
    // worker, which polls once a minute.
    let (mut worker, ran_rx, other) = idle_worker_and_another_handle("wakeup-bursts", 2);
    for burst in 0..5 {
        thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..25 {
                        other.enqueue("mail", "{}", &EnqueueOptions::default()).unwrap();
                    }
                });
            }
        });
        for n in 0..100 {
            ran_rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("burst {burst}: job {n} of 100 never ran: a wake-up was lost"));
        }
        // Idle again before the next burst.
        thread::sleep(Duration::from_millis(50));
    }
    worker.stop(Duration::from_secs(10));
}

#[test]
fn queue_and_operations_open_by_url() {
    let schema = fresh_schema("by-url");
    let queue = Queue::postgres_with(&url(), &options(schema.clone())).unwrap();
    queue.enqueue("mail", "{}", &EnqueueOptions::default()).unwrap();
    assert_eq!(queue.count("mail", JobState::Queued).unwrap(), 1);
    let ops = keel::ops::Operations::postgres_with(&url(), &options(schema)).unwrap();
    ops.ready("ds", &["unpack"]).unwrap();
    assert_eq!(ops.next("unpack", 10).unwrap().len(), 1);
    let bad = Queue::postgres("postgresql://keel@127.0.0.1:notaport/keel")
        .err()
        .unwrap();
    assert_eq!(bad.kind(), ErrorKind::InvalidArgument);
}

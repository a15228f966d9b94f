//! keel's events through the `log` facade: emitted with timings when on,
//! not even timed when off.

use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use keel::{ErrorKind, KeyedLocks, LockMode};
use log::{Level, LevelFilter, Log, Metadata, Record};

struct Capture(Mutex<Vec<(Level, String, String)>>);

impl Log for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }
    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let event = (record.level(), record.target().to_owned(), record.args().to_string());
            self.0.lock().unwrap().push(event);
        }
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

fn time_out_once(locks: &KeyedLocks<String>) {
    let held = locks.lock("k").unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            let err = locks
                .lock_timeout("k", LockMode::Exclusive, Duration::from_millis(5))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout);
        });
    });
    drop(held);
}

// One test: the logger and the max level are process-wide.
#[test]
fn a_lock_wait_is_one_timed_event_when_on_and_none_when_off() {
    log::set_logger(&CAPTURE).unwrap();
    let locks: KeyedLocks<String> = KeyedLocks::named("sources");

    log::set_max_level(LevelFilter::Debug);
    time_out_once(&locks);
    let events = std::mem::take(&mut *CAPTURE.0.lock().unwrap());
    assert_eq!(events.len(), 1, "{events:?}");
    let (level, target, text) = &events[0];
    assert_eq!((*level, target.as_str()), (Level::Debug, "keel::locks"));
    assert!(
        text.starts_with("lock wait: registry=\"sources\" mode=exclusive waited_us="),
        "{text}"
    );
    assert!(text.ends_with("outcome=timed_out"), "{text}");
    let waited: u64 = text
        .split("waited_us=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(waited >= 5_000, "waited only {waited} us for a 5 ms timeout");

    log::set_max_level(LevelFilter::Info);
    time_out_once(&locks);
    assert!(CAPTURE.0.lock().unwrap().is_empty());
}

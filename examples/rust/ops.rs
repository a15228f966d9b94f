//! A mail queue with a worker: jobs enqueued durably, run by a handler at a
//! concurrency of 2, the bad one failing for good without stopping the rest.

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use keel::ops::{EnqueueOptions, HandlerError, Queue, Worker};

fn main() -> keel::Result<()> {
    let folder = std::env::temp_dir().join(format!("keel-example-ops-{}", std::process::id()));
    std::fs::create_dir_all(&folder).map_err(|e| keel::Error::io("create the example's folder", e))?;
    let queue = Queue::open(folder.join("jobs.lmdb"))?;
    for to in ["ann@example.org", "bob@example.org", "not-an-address"] {
        let options = EnqueueOptions {
            unique_key: Some(to.to_owned()),
            max_attempts: 3,
            ..EnqueueOptions::default()
        };
        queue.enqueue("mail.send", &format!(r#"{{"to":"{to}"}}"#), &options)?;
    }
    let (done_tx, done_rx) = mpsc::channel();
    let done_tx = Mutex::new(done_tx);
    let mut worker = Worker::builder(&queue)
        .handler("mail.send", 2, move |job| {
            let _ = done_tx.lock().unwrap().send(());
            if !job.payload().contains('@') {
                return Err(HandlerError::permanent("no such address"));
            }
            Ok(r#"{"sent":true}"#.to_owned())
        })
        .start()?;
    for _ in 0..3 {
        done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the worker runs every job");
    }
    worker.stop(Duration::from_secs(30));
    for count in queue.counts()? {
        println!("{} {}: {}", count.kind, count.state, count.count);
    }
    std::fs::remove_dir_all(&folder).ok();
    Ok(())
}

//! OPAL's boot with keel: 60 scopes over 20 sources, one source that hangs.
//!
//! The first scope of each source fetches it; the others reuse the fetch.
//! The dead source's fetch never returns: it is reported timed out after
//! 0.5 s, its later scopes are refused at once, and the boot finishes.

use std::time::Duration;

use keel::pool::{Outcome, PoolConfig, SyncPool, Task, TaskContext};

fn main() {
    let (release, never) = crossbeam_channel::bounded::<()>(0);
    let pool: SyncPool<String> = SyncPool::new(PoolConfig::new(10).with_task_timeout(Duration::from_millis(500)));
    let tasks = (0..60).map(|i| {
        let source = format!("source-{}", i % 20);
        let never = never.clone();
        Task::new(source.clone(), move |ctx: &TaskContext| {
            if ctx.is_first_of_key() {
                if source == "source-13" {
                    let _ = never.recv(); // an unreachable repository
                }
                ctx.sleep(Duration::from_millis(20))?; // the fetch
            }
            Ok(format!("scope-{i} synced from {source}"))
        })
    });
    let outcomes = pool.run_batch(tasks);
    let count = |name: &str| outcomes.iter().filter(|o| o.name() == name).count();
    println!(
        "{} synced, {} timed out, {} refused",
        count("value"),
        count("timed_out"),
        count("refused")
    );
    assert_eq!((count("value"), count("timed_out"), count("refused")), (57, 1, 2));
    assert!(matches!(outcomes[13], Outcome::TimedOut));
    println!("{:?}", pool.stats());
    drop(release); // the hung fetch returns; its thread exits
}

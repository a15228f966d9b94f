//! Eight threads sync 200 scopes over 30 sources: work on one source never
//! overlaps, distinct sources run in parallel, and no entry is left behind.

use std::collections::HashSet;
use std::sync::Mutex;
use std::thread;

use keel::KeyedLocks;

fn main() -> keel::Result<()> {
    let locks: KeyedLocks<String> = KeyedLocks::named("sources");
    let scopes: Vec<String> = (0..200).map(|i| format!("source-{}", (i * 7) % 30)).collect();
    let busy = Mutex::new(HashSet::new());
    let next = Mutex::new(0usize);
    let overlaps = Mutex::new(0usize);

    thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| -> keel::Result<()> {
                loop {
                    let index = {
                        let mut next = next.lock().unwrap();
                        *next += 1;
                        *next - 1
                    };
                    let Some(source) = scopes.get(index) else { return Ok(()) };
                    let _guard = locks.lock(source.as_str())?;
                    if !busy.lock().unwrap().insert(source.clone()) {
                        *overlaps.lock().unwrap() += 1;
                    }
                    thread::yield_now(); // the "fetch"
                    busy.lock().unwrap().remove(source);
                }
            });
        }
    });

    let overlaps = *overlaps.lock().unwrap();
    println!(
        "synced {} scopes; overlapping syncs of one source: {overlaps}",
        scopes.len()
    );
    println!("registry entries left: {}", locks.len());
    assert_eq!(overlaps, 0);
    assert!(locks.is_empty());
    Ok(())
}

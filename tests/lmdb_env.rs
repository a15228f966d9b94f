//! The shared LMDB layer: registry, group commit, growth, bad files, several
//! processes, backups.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc, Barrier};
use std::thread;

use keel::lmdb::{map_err, Database, Env, EnvOptions, Transaction, WriteFlags};
use keel::{Error, ErrorKind};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-lmdb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn put(env: &Env, db: Database, key: &str, value: &[u8]) -> keel::Result<()> {
    env.write(|txn| {
        txn.put(db, &key, &value, WriteFlags::empty())
            .map_err(|e| map_err(key, e))
    })
}

fn get(env: &Env, db: Database, key: &str) -> Option<Vec<u8>> {
    env.read(|txn| match txn.get(db, &key) {
        Ok(bytes) => Ok(Some(bytes.to_vec())),
        Err(lmdb::Error::NotFound) => Ok(None),
        Err(e) => Err(map_err(key, e)),
    })
    .unwrap()
}

#[test]
fn two_opens_of_one_file_share_one_environment() {
    let dir = temp_dir("registry");
    let a = Env::open(dir.join("db.lmdb"), &EnvOptions::default()).unwrap();
    std::fs::create_dir_all(dir.join("x")).unwrap();
    let b = Env::open(dir.join("./x/../db.lmdb"), &EnvOptions::default()).unwrap();
    assert!(a.same_as(&b));
    std::os::unix::fs::symlink(dir.join("db.lmdb"), dir.join("link.lmdb")).unwrap();
    let c = Env::open(dir.join("link.lmdb"), &EnvOptions::default()).unwrap();
    assert!(a.same_as(&c));
    assert_eq!(a.path(), c.path());
    let other = Env::open(dir.join("other.lmdb"), &EnvOptions::default()).unwrap();
    assert!(!a.same_as(&other));
}

#[test]
fn a_closed_environment_is_reopened_fresh_and_keeps_its_data() {
    let dir = temp_dir("reopen");
    let path = dir.join("db.lmdb");
    let env = Env::open(&path, &EnvOptions::default()).unwrap();
    let db = env.database("t").unwrap();
    put(&env, db, "k", b"v").unwrap();
    let writes_before = env.stats().writes;
    drop(env);
    let env = Env::open(&path, &EnvOptions::default()).unwrap();
    assert_eq!(
        env.stats().writes,
        0,
        "a fresh environment, not the dropped one ({writes_before})"
    );
    let db = env.database("t").unwrap();
    assert_eq!(get(&env, db, "k").as_deref(), Some(&b"v"[..]));
}

#[test]
fn group_commit_combines_concurrent_writers_and_each_write_is_visible_on_return() {
    let dir = temp_dir("group");
    let env = Env::open(dir.join("db.lmdb"), &EnvOptions::default()).unwrap();
    let db = env.database("t").unwrap();
    const THREADS: usize = 16;
    const WRITES: usize = 40;
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (env, start) = (env.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                for i in 0..WRITES {
                    let key = format!("{t}/{i}");
                    put(&env, db, &key, key.as_bytes()).unwrap();
                    assert_eq!(
                        get(&env, db, &key).as_deref(),
                        Some(key.as_bytes()),
                        "{key} not visible"
                    );
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let stats = env.stats();
    assert_eq!(stats.writes, (THREADS * WRITES) as u64);
    assert!(stats.batches < stats.writes, "no writes were combined: {stats:?}");
    assert!(stats.largest_batch > 1, "{stats:?}");
    // Durable: a fresh process-level view (a reopen) sees every write.
    drop(env);
    let env = Env::open(dir.join("db.lmdb"), &EnvOptions::default()).unwrap();
    let db = env.database("t").unwrap();
    let count = env
        .read(|txn| {
            use lmdb::Cursor;
            let mut cursor = txn.open_ro_cursor(db).map_err(|e| map_err("cursor", e))?;
            Ok(cursor.iter_start().count())
        })
        .unwrap();
    assert_eq!(count, THREADS * WRITES);
}

/// Starts a writer and holds it inside its closure (so it leads a batch that
/// cannot finish) until the returned sender is signalled. Writers arriving
/// meanwhile all queue for the next batch.
fn hold_leader(env: &Env, db: Database) -> (thread::JoinHandle<()>, mpsc::Sender<()>) {
    let (release, released) = mpsc::channel::<()>();
    let (entered, is_entered) = mpsc::channel::<()>();
    let leader_env = env.clone();
    let leader = thread::spawn(move || {
        let mut released = Some(released);
        let mut entered = Some(entered);
        put_with(&leader_env, db, "leader", |_| {
            if let (Some(entered), Some(released)) = (entered.take(), released.take()) {
                entered.send(()).unwrap();
                released.recv().unwrap();
            }
        })
        .unwrap();
    });
    is_entered.recv().unwrap();
    (leader, release)
}

fn put_with(env: &Env, db: Database, key: &str, mut before: impl FnMut(&str) + Send) -> keel::Result<()> {
    env.write(|txn| {
        before(key);
        txn.put(db, &key, &key, WriteFlags::empty())
            .map_err(|e| map_err(key, e))
    })
}

fn wait_until_queued(env: &Env, count: usize) {
    while env.stats().queued_writes < count {
        thread::yield_now();
    }
}

#[test]
fn a_failing_writer_does_not_undo_the_others_in_its_batch() {
    let dir = temp_dir("failing");
    let env = Env::open(dir.join("db.lmdb"), &EnvOptions::default()).unwrap();
    let db = env.database("t").unwrap();
    let (leader, release) = hold_leader(&env, db);
    let batches_before = env.stats().batches;
    let spawn = |name: &'static str, fail: bool| {
        let env = env.clone();
        thread::spawn(move || {
            env.write(|txn| {
                txn.put(db, &name, &name, WriteFlags::empty())
                    .map_err(|e| map_err(name, e))?;
                if fail {
                    return Err(Error::conflict(format!("{name} refuses")));
                }
                Ok(name)
            })
        })
    };
    let good1 = spawn("good1", false);
    let bad = spawn("bad", true);
    let good2 = spawn("good2", false);
    let panicky = {
        let env = env.clone();
        thread::spawn(move || {
            env.write(|txn| -> keel::Result<()> {
                txn.put(db, &"panicky", &"x", WriteFlags::empty()).unwrap();
                panic!("writer bug");
            })
        })
    };
    wait_until_queued(&env, 4);
    release.send(()).unwrap();
    leader.join().unwrap();
    assert_eq!(good1.join().unwrap().unwrap(), "good1");
    assert_eq!(good2.join().unwrap().unwrap(), "good2");
    let err = bad.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.message().contains("bad refuses"));
    assert_eq!(panicky.join().unwrap().unwrap_err().kind(), ErrorKind::Panic);
    let stats = env.stats();
    assert_eq!(
        stats.batches - batches_before,
        1,
        "the four writers shared one batch: {stats:?}"
    );
    assert!(stats.largest_batch >= 4);
    assert!(get(&env, db, "leader").is_some());
    assert!(get(&env, db, "good1").is_some());
    assert!(get(&env, db, "good2").is_some());
    assert!(
        get(&env, db, "bad").is_none(),
        "the failed writer's change must be undone"
    );
    assert!(
        get(&env, db, "panicky").is_none(),
        "the panicked writer's change must be undone"
    );
}

#[test]
fn a_write_from_inside_a_write_is_would_deadlock_not_a_hang() {
    let dir = temp_dir("reentrant");
    let env = Env::open(dir.join("db.lmdb"), &EnvOptions::default()).unwrap();
    let db = env.database("t").unwrap();
    let inner = env.clone();
    let result = env.write(move |_txn| {
        let err = put(&inner, db, "inner", b"x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldDeadlock);
        Ok(())
    });
    result.unwrap();
    put(&env, db, "after", b"y").unwrap();
}

#[test]
fn an_error_commits_nothing_of_that_write() {
    let dir = temp_dir("error");
    let env = Env::open(dir.join("db.lmdb"), &EnvOptions::default()).unwrap();
    let db = env.database("t").unwrap();
    let result: keel::Result<()> = env.write(|txn| {
        txn.put(db, &"a", &"1", WriteFlags::empty())
            .map_err(|e| map_err("a", e))?;
        Err(Error::invalid_argument("no"))
    });
    assert_eq!(result.unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert!(get(&env, db, "a").is_none());
}

#[test]
fn the_map_grows_when_writes_outgrow_it() {
    let dir = temp_dir("grow");
    let options = EnvOptions {
        initial_map_size: 64 << 10,
        ..EnvOptions::default()
    };
    let env = Env::open(dir.join("db.lmdb"), &options).unwrap();
    let db = env.database("t").unwrap();
    let value = vec![7u8; 4000];
    for i in 0..300 {
        put(&env, db, &format!("k{i:04}"), &value).unwrap();
    }
    // One write far larger than the whole initial map.
    let big = vec![9u8; 3 << 20];
    put(&env, db, "big", &big).unwrap();
    let stats = env.stats();
    assert!(stats.map_growths >= 2, "{stats:?}");
    assert!(stats.map_size > 3 << 20, "{stats:?}");
    assert_eq!(get(&env, db, "k0000").as_deref(), Some(&value[..]));
    assert_eq!(get(&env, db, "big").map(|v| v.len()), Some(3 << 20));
}

#[test]
fn concurrent_writers_survive_map_growth() {
    let dir = temp_dir("grow-concurrent");
    let options = EnvOptions {
        initial_map_size: 64 << 10,
        ..EnvOptions::default()
    };
    let env = Env::open(dir.join("db.lmdb"), &options).unwrap();
    let db = env.database("t").unwrap();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let env = env.clone();
            thread::spawn(move || {
                for i in 0..50 {
                    let key = format!("{t}/{i}");
                    put(&env, db, &key, &[t as u8; 2000]).unwrap();
                    assert!(get(&env, db, &key).is_some());
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert!(env.stats().map_growths >= 1);
}

#[test]
fn a_file_that_is_not_lmdb_is_corrupt() {
    let dir = temp_dir("garbage");
    let path = dir.join("db.lmdb");
    std::fs::write(&path, vec![0x5au8; 64 << 10]).unwrap();
    let err = Env::open(&path, &EnvOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.message().contains("db.lmdb"), "{err}");
    // Nothing was lost: the file is untouched.
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x5au8; 64 << 10]);
}

#[test]
fn a_truncated_file_is_corrupt() {
    let dir = temp_dir("truncated");
    let path = dir.join("db.lmdb");
    {
        let env = Env::open(&path, &EnvOptions::default()).unwrap();
        let db = env.database("t").unwrap();
        for i in 0..50 {
            put(&env, db, &format!("k{i}"), &[1u8; 3000]).unwrap();
        }
    }
    let full = std::fs::metadata(&path).unwrap().len();
    for cut in [full / 2, 6000, 100] {
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        let err = Env::open(&path, &EnvOptions::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "cut to {cut}: {err}");
    }
}

#[test]
fn bad_paths_are_invalid_arguments() {
    assert_eq!(
        Env::open(Path::new(""), &EnvOptions::default()).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let dir = temp_dir("badpath");
    assert_eq!(
        Env::open(&dir, &EnvOptions::default()).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn backup_is_a_consistent_copy_taken_while_writers_run() {
    let dir = temp_dir("backup");
    let env = Env::open(dir.join("db.lmdb"), &EnvOptions::default()).unwrap();
    let db = env.database("t").unwrap();
    for i in 0..100 {
        put(&env, db, &format!("before{i}"), &[3u8; 500]).unwrap();
    }
    let writer = {
        let env = env.clone();
        thread::spawn(move || {
            for i in 0..100 {
                put(&env, db, &format!("during{i}"), &[4u8; 500]).unwrap();
            }
        })
    };
    env.backup(dir.join("copy.lmdb")).unwrap();
    writer.join().unwrap();
    let copy = Env::open(dir.join("copy.lmdb"), &EnvOptions::default()).unwrap();
    assert!(!copy.same_as(&env));
    let db = copy.database("t").unwrap();
    for i in 0..100 {
        assert!(get(&copy, db, &format!("before{i}")).is_some());
    }
    // After the writer finished, a new backup has everything.
    env.backup(dir.join("copy2.lmdb")).unwrap();
    let copy2 = Env::open(dir.join("copy2.lmdb"), &EnvOptions::default()).unwrap();
    let db = copy2.database("t").unwrap();
    assert!(get(&copy2, db, "during99").is_some());
    let onto_itself = env.backup(dir.join("db.lmdb")).unwrap_err();
    assert_eq!(onto_itself.kind(), ErrorKind::InvalidArgument);
    assert!(get(&env, env.database("t").unwrap(), "before0").is_some());
}

// ---------------------------------------------------------------------------
// Several processes. The parent re-runs this test binary with
// KEEL_LMDB_CHILD set; `child_process_role` then plays the role named there.

const CHILD_VAR: &str = "KEEL_LMDB_CHILD";

#[test]
fn child_process_role() {
    let Ok(spec) = std::env::var(CHILD_VAR) else {
        return; // run normally: nothing to do
    };
    let mut parts = spec.splitn(3, '|');
    let (role, path, arg) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(""));
    let options = EnvOptions {
        initial_map_size: 64 << 10,
        ..EnvOptions::default()
    };
    if role == "fill" {
        limit_file_size(Path::new(path), 256 << 10);
    }
    let env = Env::open(Path::new(path), &options).unwrap();
    let db = env.database("t").unwrap();
    match role {
        "expect" => assert_eq!(
            get(&env, db, arg).as_deref(),
            Some(arg.as_bytes()),
            "child cannot see {arg}"
        ),
        "write" => write_and_count(&env, db, arg, 150),
        "fill" => fill_until_full(&env, db),
        "hold-write" => hold_the_write_lock(&env, db),
        other => panic!("unknown role {other}"),
    }
}

/// Takes the write lock (mid-transaction, a change made) and never lets go:
/// the parent kills this process there.
fn hold_the_write_lock(env: &Env, db: Database) {
    env.write(|txn| {
        txn.put(db, &"uncommitted", &"x", WriteFlags::empty())
            .map_err(|e| map_err("put", e))?;
        println!("holding");
        use std::io::Write;
        std::io::stdout().flush().unwrap();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap(); // until killed
        Ok(())
    })
    .unwrap();
}

/// Makes the disk "full" for this process: files may not grow past
/// `headroom` bytes beyond `path`'s current size (writes past it fail with
/// EFBIG rather than killing the process).
fn limit_file_size(path: &Path, headroom: u64) {
    let limit = std::fs::metadata(path).unwrap().len() + headroom;
    // SAFETY: plain syscalls on this process, with valid arguments.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let rlimit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit), 0);
    }
}

/// Writes 4 KiB values until the storage is full; prints how many
/// committed.
fn fill_until_full(env: &Env, db: Database) {
    for i in 0.. {
        let key = format!("fill/{i:06}");
        match put(env, db, &key, &[9u8; 4096]) {
            Ok(()) => {}
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
                println!("committed={i}");
                return;
            }
        }
        assert!(i < 100_000, "the size limit never bit");
    }
}

/// Writes `count` keys named for `who` (2 KiB each, so the map must grow)
/// and bumps a shared counter in the same transaction each time.
fn write_and_count(env: &Env, db: Database, who: &str, count: usize) {
    for i in 0..count {
        env.write(|txn| {
            let key = format!("{who}/{i}");
            txn.put(db, &key, &[1u8; 2048], WriteFlags::empty())
                .map_err(|e| map_err(&key, e))?;
            let n = read_counter(txn, db)?;
            txn.put(db, &"counter", &(n + 1).to_be_bytes(), WriteFlags::empty())
                .map_err(|e| map_err("counter", e))
        })
        .unwrap();
    }
}

fn read_counter(txn: &impl Transaction, db: Database) -> keel::Result<u64> {
    match txn.get(db, &"counter") {
        Ok(bytes) => Ok(u64::from_be_bytes(
            bytes.try_into().map_err(|_| Error::corrupt("counter"))?,
        )),
        Err(lmdb::Error::NotFound) => Ok(0),
        Err(e) => Err(map_err("counter", e)),
    }
}

fn child(role: &str, path: &Path, arg: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child_process_role", "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, format!("{role}|{}|{arg}", path.display()));
    command
}

#[test]
fn a_second_process_sees_committed_writes() {
    let dir = temp_dir("process-read");
    let path = dir.join("db.lmdb");
    let env = Env::open(&path, &EnvOptions::default()).unwrap();
    let db = env.database("t").unwrap();
    put(&env, db, "hello", b"hello").unwrap();
    let status = child("expect", &path, "hello").status().unwrap();
    assert!(status.success(), "the child did not see the committed write");
    let status = child("expect", &path, "never-written")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        !status.success(),
        "the child must fail on a missing key (else this test proves nothing)"
    );
}

#[test]
fn a_full_disk_is_storage_full_and_loses_nothing_committed() {
    let dir = temp_dir("full");
    let path = dir.join("db.lmdb");
    {
        let env = Env::open(&path, &EnvOptions::default()).unwrap();
        let db = env.database("t").unwrap();
        for i in 0..50 {
            put(&env, db, &format!("before/{i}"), b"kept").unwrap();
        }
    }
    let output = child("fill", &path, "").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let committed: usize = stdout
        .lines()
        .find_map(|line| line.split("committed=").nth(1))
        .unwrap_or_else(|| panic!("the child reports its count: {stdout}"))
        .parse()
        .unwrap();
    assert!(committed > 0, "some writes fit before the disk filled");
    // Everything committed before the failure is intact, and the file opens.
    let env = Env::open(&path, &EnvOptions::default()).unwrap();
    let db = env.database("t").unwrap();
    for i in 0..50 {
        assert_eq!(get(&env, db, &format!("before/{i}")).as_deref(), Some(&b"kept"[..]));
    }
    for i in 0..committed {
        assert!(
            get(&env, db, &format!("fill/{i:06}")).is_some(),
            "committed write {i} lost"
        );
    }
    assert!(
        get(&env, db, &format!("fill/{committed:06}")).is_none(),
        "the failed write left nothing"
    );
    put(&env, db, "after", b"writable again").unwrap();
}

#[test]
fn a_writer_killed_holding_the_write_lock_does_not_block_the_next() {
    use std::io::BufRead;
    let dir = temp_dir("killed-writer");
    let path = dir.join("db.lmdb");
    let mut holder = child("hold-write", &path, "")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(holder.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|line| line.unwrap().contains("holding")),
        "the child took the lock"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    // LMDB's lock is a robust mutex: the next writer recovers it.
    let env = Env::open(&path, &EnvOptions::default()).unwrap();
    let db = env.database("t").unwrap();
    put(&env, db, "next", b"written").unwrap();
    assert_eq!(get(&env, db, "next").as_deref(), Some(&b"written"[..]));
    assert!(
        get(&env, db, "uncommitted").is_none(),
        "the killed writer's change is gone"
    );
}

#[test]
fn two_writing_processes_do_not_corrupt_the_file() {
    let dir = temp_dir("process-write");
    let path = dir.join("db.lmdb");
    let env = Env::open(
        &path,
        &EnvOptions {
            initial_map_size: 64 << 10,
            ..EnvOptions::default()
        },
    )
    .unwrap();
    let db = env.database("t").unwrap();
    let mut children: Vec<_> = ["a", "b"]
        .iter()
        .map(|who| child("write", &path, who).spawn().unwrap())
        .collect();
    write_and_count(&env, db, "parent", 150);
    for child in children.iter_mut() {
        assert!(child.wait().unwrap().success(), "a writing child failed");
    }
    let (counter, keys) = env
        .read(|txn| {
            use lmdb::Cursor;
            let mut cursor = txn.open_ro_cursor(db).map_err(|e| map_err("cursor", e))?;
            let keys = cursor
                .iter_start()
                .filter(|e| e.as_ref().map(|(k, _)| *k != b"counter").unwrap_or(true))
                .count();
            Ok((read_counter(txn, db)?, keys))
        })
        .unwrap();
    assert_eq!(keys, 450, "every write of every process is present");
    assert_eq!(counter, 450, "no read-modify-write was lost between processes");
}

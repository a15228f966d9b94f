//! Crash safety, tested at every step: each scenario runs once to count its
//! file-system steps, then once per step with (1) an injected error,
//! (2) a SIGKILL in a child process, (3) a simulated power loss that also
//! throws away everything not yet fsynced. After recovery the whole tree
//! (bytes, modes, symlinks, no extra files) must equal exactly the state
//! before or the state after the mutation.

mod journal_support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use journal_support::*;
use keel::journal::FaultPlan;
use keel::{Journal, Mutation, Result};

type Scenario = fn(&mut Mutation, &Path) -> Result<()>;

const SCENARIOS: &[(&str, Scenario)] = &[
    ("write_new", write_new),
    ("write_many", write_many),
    ("write_existing", write_existing),
    ("remove", remove),
    ("rename", rename),
    ("publish", publish),
    ("declared_folder", declared_folder),
    ("declared_copy_in_place", declared_copy_in_place),
    ("nested", nested),
];

fn write_new(m: &mut Mutation, _root: &Path) -> Result<()> {
    m.write("fresh.txt", b"fresh")?;
    m.write("new/dir/deep.txt", b"deep")
}

fn write_many(m: &mut Mutation, _root: &Path) -> Result<()> {
    m.write("readme.txt", b"one by one first")?;
    m.write_many(&[
        ("bin/tool", &b"#!/bin/sh\necho v2\n"[..]),
        ("new/dir/deep.txt", b"deep"),
        ("new/other.txt", b"other"),
        ("bin/tool", b"written twice in the batch"),
        ("wiki/latest", b"a file where a symlink was"),
        ("readme.txt", b"then in the batch"),
    ])
}

fn write_existing(m: &mut Mutation, _root: &Path) -> Result<()> {
    m.write("bin/tool", b"#!/bin/sh\necho v2\n")?;
    m.write("secret/key", b"new key")?;
    m.write("wiki/latest", b"a file where a symlink was")
}

fn remove(m: &mut Mutation, _root: &Path) -> Result<()> {
    m.remove("readme.txt")?;
    m.remove("wiki/pages")?;
    m.remove("outside")
}

fn rename(m: &mut Mutation, _root: &Path) -> Result<()> {
    m.rename("wiki/pages/a.md", "wiki/index.md")?;
    m.rename("secret", "moved/secret")
}

fn publish(m: &mut Mutation, _root: &Path) -> Result<()> {
    let staging = m.staging_dir()?;
    fs::create_dir_all(staging.join("pages/new")).unwrap();
    fs::write(staging.join("pages/a.md"), b"# A published").unwrap();
    fs::write(staging.join("pages/new/n.md"), b"# N").unwrap();
    fs::write(staging.join("log.md"), b"log").unwrap();
    m.publish("wiki")
}

fn declared_folder(m: &mut Mutation, root: &Path) -> Result<()> {
    m.declare(&["wiki/pages"])?;
    // The caller edits the declared folder itself, replacing files.
    let pages = root.join("wiki/pages");
    fs::write(pages.join(".tmp"), b"# A edited").unwrap();
    fs::rename(pages.join(".tmp"), pages.join("a.md")).unwrap();
    fs::remove_file(pages.join("b.md")).unwrap();
    fs::write(pages.join("added.md"), b"added").unwrap();
    fs::set_permissions(pages.join("deep"), fs::Permissions::from_mode(0o700)).unwrap();
    // ...and edits existing files in it through the mutation.
    m.write("wiki/pages/deep/c.md", b"# C edited")?;
    m.write("wiki/index.md", b"index edited")
}

fn declared_copy_in_place(m: &mut Mutation, root: &Path) -> Result<()> {
    m.declare_copy(&["wiki/pages"])?;
    // The caller edits files of the declared folder in place (same inodes).
    let pages = root.join("wiki/pages");
    let mut a = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(pages.join("a.md"))
        .unwrap();
    std::io::Write::write_all(&mut a, b"# A rewritten in place").unwrap();
    let mut b = fs::OpenOptions::new().append(true).open(pages.join("b.md")).unwrap();
    std::io::Write::write_all(&mut b, b"\nappended").unwrap();
    fs::set_permissions(pages.join("deep/c.md"), fs::Permissions::from_mode(0o600)).unwrap();
    m.write("wiki/index.md", b"index edited")
}

fn nested(m: &mut Mutation, _root: &Path) -> Result<()> {
    m.write("wiki/pages/deep/c.md", b"# C v2")?;
    m.create_dir("wiki/pages/deep/deeper/deepest")?;
    m.write("wiki/pages/deep/deeper/x.md", b"x")?;
    m.symlink("wiki/latest", "pages/deep/c.md")?;
    // A parent snapshotted after its children were changed.
    m.rename("wiki/pages", "wiki/archive")?;
    m.write("wiki/pages/again.md", b"again")
}

fn scratch(tag: &str) -> TempDir {
    TempDir::new(tag)
}

fn run(journal: &Journal, scenario: Scenario) -> Result<()> {
    let mut m = journal.begin("scenario", "crash test")?;
    scenario(&mut m, journal.root())?;
    m.commit()
}

struct States {
    before: Tree,
    after: Tree,
    /// Indexes of the steps that change the disk.
    mutating: Vec<usize>,
    total: usize,
}

fn states(name: &str, scenario: Scenario) -> States {
    let dir = scratch(&format!("{name}-states"));
    seed_tree(dir.path());
    let before = capture(dir.path());
    let journal = Journal::open(dir.path()).unwrap();
    let plan = Arc::new(FaultPlan::count());
    journal.set_fault_plan(Some(Arc::clone(&plan)));
    run(&journal, scenario).unwrap();
    let after = capture(dir.path());
    assert_ne!(before, after, "{name} must change something");
    let steps = plan.steps();
    let mutating = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.mutates)
        .map(|(i, _)| i)
        .collect();
    States {
        before,
        after,
        mutating,
        total: steps.len(),
    }
}

#[test]
fn an_error_at_any_step_leaves_before_or_after() {
    let mut checked = 0;
    for &(name, scenario) in SCENARIOS {
        let states = states(name, scenario);
        for step in 0..states.total {
            let dir = scratch(&format!("{name}-err{step}"));
            seed_tree(dir.path());
            let journal = Journal::open(dir.path()).unwrap();
            journal.set_fault_plan(Some(Arc::new(FaultPlan::fail_at(step, libc::EIO))));
            let outcome = run(&journal, scenario);
            journal.set_fault_plan(None);
            journal.recover().unwrap();
            let context = format!("{name}: EIO at step {step}");
            let now = which(&capture(dir.path()), &states.before, &states.after, &context);
            let expected = if outcome.is_ok() { "after" } else { "before" };
            assert_eq!(now, expected, "{context}: outcome {outcome:?}");
            assert_state_clean(dir.path());
            checked += 1;
        }
    }
    println!("error injection: {checked} fault points checked");
    assert!(checked > 100);
}

/// The child side of the kill tests: runs one scenario with a kill armed.
#[test]
fn crash_child() {
    let Ok(root) = std::env::var("KEEL_CRASH_ROOT") else {
        return; // Run normally: nothing to do.
    };
    let name = std::env::var("KEEL_CRASH_SCENARIO").unwrap();
    let step: usize = std::env::var("KEEL_CRASH_STEP").unwrap().parse().unwrap();
    let scenario = SCENARIOS.iter().find(|(n, _)| *n == name).unwrap().1;
    let plan = Arc::new(match std::env::var("KEEL_CRASH_GHOSTS") {
        Ok(ghosts) => FaultPlan::power_loss_at(step, ghosts.into()),
        Err(_) => FaultPlan::kill_at(step),
    });
    if std::env::var("KEEL_CRASH_IN_RECOVERY").is_ok() {
        // The parent left an interrupted mutation; the crash hits the
        // recovery that open() runs.
        let _ = Journal::open_with_fault_plan(&root, plan);
        return;
    }
    let journal = Journal::open(&root).unwrap();
    journal.set_fault_plan(Some(plan));
    let _ = run(&journal, scenario);
    // Reaching here means the step was never hit; the parent treats a
    // normal exit as a failure.
}

fn crash_every_step(power_loss: bool) -> usize {
    let mut checked = 0;
    let exe = std::env::current_exe().unwrap();
    for &(name, scenario) in SCENARIOS {
        let states = states(name, scenario);
        for &step in &states.mutating {
            let dir = scratch(&format!("{name}-kill{step}-{power_loss}"));
            seed_tree(dir.path());
            let ghosts = scratch(&format!("{name}-ghosts{step}-{power_loss}"));
            let mut command = Command::new(&exe);
            command
                .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
                .env("KEEL_CRASH_ROOT", dir.path())
                .env("KEEL_CRASH_SCENARIO", name)
                .env("KEEL_CRASH_STEP", step.to_string())
                .stdout(std::process::Stdio::null());
            if power_loss {
                command.env("KEEL_CRASH_GHOSTS", ghosts.path().join("g"));
            }
            let status = command.status().unwrap();
            let context = format!(
                "{name}: {} at step {step}",
                if power_loss { "power loss" } else { "SIGKILL" }
            );
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "{context}: child was not killed ({status})"
            );
            let journal = Journal::open(dir.path()).unwrap();
            assert!(journal.status().unwrap().last_recovery_error.is_none(), "{context}");
            which(&capture(dir.path()), &states.before, &states.after, &context);
            assert_state_clean(dir.path());
            checked += 1;
        }
    }
    checked
}

#[test]
fn a_kill_at_any_step_leaves_before_or_after() {
    let checked = crash_every_step(false);
    println!("SIGKILL: {checked} crash points checked");
    assert!(checked > 50);
}

#[test]
fn a_power_loss_at_any_step_leaves_before_or_after() {
    let checked = crash_every_step(true);
    println!("power loss: {checked} crash points checked");
    assert!(checked > 50);
}

/// Leaves the scenario's record `active` with every change still in place:
/// the commit and its rollback both fail.
fn interrupted(journal: &Journal, scenario: Scenario) {
    let mut m = journal.begin("scenario", "crash test").unwrap();
    scenario(&mut m, journal.root()).unwrap();
    journal.set_fault_plan(Some(Arc::new(FaultPlan::fail_from(0, libc::EIO))));
    assert!(m.commit().is_err());
    journal.set_fault_plan(None);
}

#[test]
fn a_recovery_cut_short_at_any_step_finishes_on_the_next_run() {
    let mut checked = 0;
    for &(name, scenario) in SCENARIOS {
        let before = {
            let dir = scratch(&format!("{name}-rec-before"));
            seed_tree(dir.path());
            capture(dir.path())
        };
        let steps = {
            let dir = scratch(&format!("{name}-rec-count"));
            seed_tree(dir.path());
            let journal = Journal::open(dir.path()).unwrap();
            interrupted(&journal, scenario);
            let plan = Arc::new(FaultPlan::count());
            journal.set_fault_plan(Some(Arc::clone(&plan)));
            journal.recover().unwrap();
            plan.steps().len()
        };
        for step in 0..steps {
            let dir = scratch(&format!("{name}-rec{step}"));
            seed_tree(dir.path());
            let journal = Journal::open(dir.path()).unwrap();
            interrupted(&journal, scenario);
            // Every step from `step` on fails: recovery stops there, as if
            // the process had died.
            journal.set_fault_plan(Some(Arc::new(FaultPlan::fail_from(step, libc::EIO))));
            assert!(
                journal.recover().is_err(),
                "{name}: recovery cut at {step} cannot succeed"
            );
            journal.set_fault_plan(None);
            journal.recover().unwrap();
            let context = format!("{name}: recovery cut at step {step}");
            assert_eq!(which(&capture(dir.path()), &before, &before, &context), "before");
            assert_state_clean(dir.path());
            checked += 1;
        }
    }
    println!("recovery cut short: {checked} points checked");
    assert!(checked > 50);
}

/// Runs the child of `crash_child` and checks it died by SIGKILL.
fn crash_child_at(name: &str, root: &Path, step: usize, power_loss: Option<&Path>, in_recovery: bool) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("KEEL_CRASH_ROOT", root)
        .env("KEEL_CRASH_SCENARIO", name)
        .env("KEEL_CRASH_STEP", step.to_string())
        .stdout(std::process::Stdio::null());
    if let Some(ghosts) = power_loss {
        command.env("KEEL_CRASH_GHOSTS", ghosts);
    }
    if in_recovery {
        command.env("KEEL_CRASH_IN_RECOVERY", "1");
    }
    let status = command.status().unwrap();
    let what = if power_loss.is_some() { "power loss" } else { "SIGKILL" };
    let context = format!(
        "{name}: {what} at {} step {step}",
        if in_recovery { "recovery" } else { "mutation" }
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{context}: child was not killed ({status})"
    );
    context
}

fn crash_recovery_at_every_step(power_loss: bool) -> usize {
    let mut checked = 0;
    for &(name, scenario) in SCENARIOS {
        let (before, mutating) = {
            let dir = scratch(&format!("{name}-rcount"));
            seed_tree(dir.path());
            let before = capture(dir.path());
            interrupted(&Journal::open(dir.path()).unwrap(), scenario);
            let plan = Arc::new(FaultPlan::count());
            Journal::open_with_fault_plan(dir.path(), Arc::clone(&plan)).unwrap();
            let steps = plan.steps();
            let mutating: Vec<usize> = steps
                .iter()
                .enumerate()
                .filter(|(_, s)| s.mutates)
                .map(|(i, _)| i)
                .collect();
            (before, mutating)
        };
        for &step in &mutating {
            let dir = scratch(&format!("{name}-rcrash{step}-{power_loss}"));
            seed_tree(dir.path());
            interrupted(&Journal::open(dir.path()).unwrap(), scenario);
            let ghosts = scratch(&format!("{name}-rghosts{step}-{power_loss}"));
            let ghosts = ghosts.path().join("g");
            let context = crash_child_at(name, dir.path(), step, power_loss.then_some(ghosts.as_path()), true);
            let journal = Journal::open(dir.path()).unwrap();
            assert!(journal.status().unwrap().last_recovery_error.is_none(), "{context}");
            assert_eq!(which(&capture(dir.path()), &before, &before, &context), "before");
            assert_state_clean(dir.path());
            checked += 1;
        }
    }
    checked
}

#[test]
fn a_kill_during_recovery_is_recovered_by_the_next_open() {
    let checked = crash_recovery_at_every_step(false);
    println!("SIGKILL during recovery: {checked} crash points checked");
    assert!(checked > 50);
}

#[test]
fn a_power_loss_during_recovery_is_recovered_by_the_next_open() {
    let checked = crash_recovery_at_every_step(true);
    println!("power loss during recovery: {checked} crash points checked");
    assert!(checked > 50);
}

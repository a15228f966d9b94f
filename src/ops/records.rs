//! The records of operations and jobs and their states, as every store
//! hands them out. How a store lays them out is its own business (the LMDB
//! store's bytes: `store/lmdb/tables.rs`; PostgreSQL's columns:
//! `store/postgres`).

use std::fmt;
use std::str::FromStr;

use super::clock::Millis;
use crate::{Error, Result};

/// A claim or attempt token: changes with every claim, so a holder whose
/// lease expired and was claimed again cannot finish the new attempt.
pub type Token = u64;

/// A job's id, unique within its store and increasing with enqueue order.
pub type JobId = u64;

/// The state of one operation on one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum OpState {
    /// Waiting to be claimed.
    Ready = 1,
    /// Claimed by a worker until its lease ends.
    Working = 2,
    /// Done.
    Ok = 3,
    /// Failed, with the reason in the message.
    Failed = 4,
}

impl OpState {
    /// Every state, in the order of its number.
    pub const ALL: [OpState; 4] = [OpState::Ready, OpState::Working, OpState::Ok, OpState::Failed];

    /// The state's name: `READY`, `WORKING`, `OK`, `FAILED`.
    pub fn name(self) -> &'static str {
        match self {
            OpState::Ready => "READY",
            OpState::Working => "WORKING",
            OpState::Ok => "OK",
            OpState::Failed => "FAILED",
        }
    }

    /// The state numbered `code`; Corrupt (prefixed by `what`) if none is.
    pub(crate) fn from_code(code: u8, what: &str) -> Result<OpState> {
        Self::ALL
            .into_iter()
            .find(|state| *state as u8 == code)
            .ok_or_else(|| Error::corrupt(format!("{what}: unknown operation state {code}")))
    }
}

impl fmt::Display for OpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OpState {
    type Err = Error;
    fn from_str(text: &str) -> Result<OpState> {
        Self::ALL
            .into_iter()
            .find(|state| state.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| Error::invalid_argument(format!("unknown operation state {text:?}")))
    }
}

/// One operation's record for one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRecord {
    /// The item (dataset, file, ...) the operation applies to.
    pub item: String,
    /// The operation's name.
    pub op: String,
    pub state: OpState,
    /// Why it failed, or what the last update said.
    pub message: String,
    /// How many times it was claimed.
    pub attempts: u32,
    /// The current claim's token (0 when not WORKING).
    pub token: Token,
    /// Who claimed it last.
    pub worker: String,
    /// When the current claim ends (0 when not WORKING).
    pub lease_until: Millis,
    /// When it last became READY; orders `next` and `claim`, oldest first.
    pub ready_at: Millis,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// WORKING under a lease that had ended when the record was read: the
    /// claim no longer guards the item (it is claimable, and updatable
    /// without a token) until a claim or the reset pass moves it. Derived
    /// by [`Operations`](crate::ops::Operations) when reading, never stored;
    /// stores leave it false.
    pub expired: bool,
}

impl OpRecord {
    /// A fresh READY record.
    pub fn new_ready(item: &str, op: &str, now: Millis) -> OpRecord {
        OpRecord {
            item: item.to_owned(),
            op: op.to_owned(),
            state: OpState::Ready,
            message: String::new(),
            attempts: 0,
            token: 0,
            worker: String::new(),
            lease_until: 0,
            ready_at: now,
            created_at: now,
            updated_at: now,
            expired: false,
        }
    }
}

/// What a successful claim hands the claimer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpClaim {
    pub item: String,
    pub op: String,
    /// Present this token with `update`/`error`; it is refused once the
    /// lease expired and someone else claimed the item.
    pub token: Token,
    pub lease_until: Millis,
    /// Which claim this is (1 for the first).
    pub attempt: u32,
}

/// The state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum JobState {
    /// Waiting for its run-at time and a worker.
    Queued = 1,
    /// Claimed by a worker until its lease ends.
    Running = 2,
    /// Failed an attempt; waiting out its backoff before the next one.
    Retrying = 3,
    /// Finished successfully.
    Completed = 4,
    /// Out of attempts or resets: kept for inspection, never run again.
    Dead = 5,
    /// Cancelled; never run again.
    Cancelled = 6,
}

impl JobState {
    /// Every state, in the order of its number.
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Completed,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The state's name: `queued`, `running`, `retrying`, `completed`,
    /// `dead`, `cancelled`.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job will never run again.
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Completed | JobState::Dead | JobState::Cancelled)
    }

    /// Whether a worker may dequeue it once its run-at time has come.
    pub fn is_available(self) -> bool {
        matches!(self, JobState::Queued | JobState::Retrying)
    }

    pub(crate) fn from_code(code: u8, what: &str) -> Result<JobState> {
        Self::ALL
            .into_iter()
            .find(|state| *state as u8 == code)
            .ok_or_else(|| Error::corrupt(format!("{what}: unknown job state {code}")))
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for JobState {
    type Err = Error;
    fn from_str(text: &str) -> Result<JobState> {
        Self::ALL
            .into_iter()
            .find(|state| state.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| Error::invalid_argument(format!("unknown job state {text:?}")))
    }
}

/// A job and its whole history that matters: attempts, failures, resets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: JobId,
    pub kind: String,
    /// The JSON payload given to `enqueue`.
    pub payload: String,
    pub state: JobState,
    /// 0 runs first, 9 last.
    pub priority: u8,
    /// Not dequeued before this time.
    pub run_at: Millis,
    /// How many times a worker dequeued it.
    pub attempts: u32,
    /// How many attempts failed (the handler returned an error or panicked).
    pub failures: u32,
    /// After this many failures the job is dead.
    pub max_attempts: u32,
    /// How many times its lease expired and the resetter requeued it.
    pub resets: u32,
    /// The current attempt's token (0 when not running).
    pub token: Token,
    /// Who dequeued it last.
    pub worker: String,
    /// When the current attempt's lease ends (0 when not running).
    pub lease_until: Millis,
    /// A second enqueue with this key, while this job is not finished,
    /// returns this job.
    pub unique_key: Option<String>,
    /// The last failure's message, or why it died or was cancelled.
    pub last_error: String,
    /// The JSON result given to `complete` (empty when none).
    pub result: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// When it reached a finished state (0 before).
    pub finished_at: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn states_parse_by_name_and_refuse_unknown_names() {
        for state in JobState::ALL {
            assert_eq!(state.name().parse::<JobState>().unwrap(), state);
        }
        for state in OpState::ALL {
            assert_eq!(state.name().parse::<OpState>().unwrap(), state);
        }
        assert_eq!(
            "done".parse::<JobState>().unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
}

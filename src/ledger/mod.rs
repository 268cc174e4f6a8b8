//! The ledger: `.pipe/ledger.jsonl`, the append-only record of bakes, verifications,
//! promotions, rollbacks, rejections, approvals, broken promotion locks and prunes.
//!
//! One JSON object per line, each carrying the sha256 of the previous line, so an edit
//! anywhere breaks the chain at a line `pipe history --verify` can name. The last line is
//! covered by the anchor, `ledger.head` (its seq and sha256), written after each append: an
//! edited or removed last line no longer matches it. Every command that trusts the ledger
//! (promote, rollback, verify, reject, releases) reads it through [`Ledger::checked_entries`],
//! which refuses a broken chain.
//!
//! What this defends against: accidents, a careless edit, a partial restore from a backup.
//! What it cannot: someone who rewrites the whole file and its anchor (or removes the anchor:
//! a ledger without one is taken as written before anchors existed).
//!
//! Appends hold an exclusive lock on the file and fsync before returning. A crash mid-append
//! leaves at most a torn last line without a newline: readers skip it, and the next append moves
//! it to `ledger.torn` before writing, so no earlier entry is ever hidden or damaged. A crash
//! between the line and its anchor leaves the anchor one line behind, which is accepted (the
//! next append moves it).
//!
//! With `[ledger] backend = "s3"` the same entries live in S3, one object per entry, appended
//! with conditional writes so a team shares one chain ([`shared`]); [`Ledger::of`] picks the
//! backend from the Pipelinefile and every command reads and appends through it unchanged.

mod release;
mod s3;
pub mod shared;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{LedgerSettings, Pipelinefile, S3LedgerSettings};
use crate::engine::aws::{AwsClient, AwsSettings};
use shared::SharedLedger;

pub use release::{
    Approval, Artifact, PrunedImage, Release, ReleaseStatus, ReleaseView, VerifyOutcome,
    artifact_key, entry_env, find_release, previous_release, releases,
};

/// The chain's start.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A ledger event's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A release was baked (and maybe verified in the same run).
    Bake { release: Box<Release> },
    /// A release was verified (again).
    Verify {
        release: String,
        outcome: VerifyOutcome,
    },
    /// A release became current in an environment, or failed to.
    Promote {
        release: String,
        env: String,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A rollback re-promoted an earlier release.
    Rollback {
        release: String,
        env: String,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A release was made unpromotable.
    Reject {
        release: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A release was approved for promotion into an environment (`pipe approve`); the entry's
    /// `who` and `time` say by whom and when.
    Approve { release: String, env: String },
    /// `pipe destroy` removed the machine serving `release` in `env` (a target that serves
    /// from machines on this host): the environment serves nothing until the next promotion.
    Destroy {
        release: String,
        env: String,
        machine: String,
    },
    /// A release's images were removed by `pipe prune` (`images`: each deregistered AMI and
    /// the snapshots deleted with it); the release can no longer be promoted.
    Prune {
        release: String,
        env: String,
        images: Vec<PrunedImage>,
    },
    /// A promotion into `env`, which runs in another AWS account, gave `account` launch
    /// permission on the release's AMI `image` in `region` and create-volume permission on
    /// its `snapshots` (appended as soon as the grant is made, whatever the promotion's
    /// outcome: the permission stays).
    Share {
        release: String,
        env: String,
        account: String,
        region: String,
        image: String,
        snapshots: Vec<String>,
    },
    /// An environment's promotion lock was removed (`pipe promote ENV --break-lock`): the
    /// entry's `who` broke the lock `holder` held, as the lock said.
    BreakLock {
        env: String,
        holder: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        release: Option<String>,
    },
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// 1-based position.
    pub seq: u64,
    /// sha256 of the previous line's bytes (without its newline), or [`GENESIS`].
    pub prev: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// `user@host`.
    pub who: String,
    #[serde(flatten)]
    pub event: Event,
}

/// Ledger failures.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `at`: `line N` in the file, `seq N` in S3.
    #[error("ledger {location}: {at} is not a valid entry: {message}")]
    Corrupt {
        location: String,
        at: String,
        message: String,
    },
    /// The hash chain or the anchor does not hold: nothing in it can be trusted.
    #[error("ledger {location}: broken at {at}: {reason}")]
    Broken {
        location: String,
        at: String,
        reason: String,
    },
    /// The shared ledger's store failed (after the SDK's retries).
    #[error("ledger {location}: {detail}")]
    Store {
        location: String,
        detail: String,
        hint: Option<String>,
    },
    /// Other writers took every next seq this append tried.
    #[error(
        "ledger {location}: gave up appending after {attempts} tries, other writers took every next seq"
    )]
    Contended { location: String, attempts: u32 },
    /// The Pipelinefile keeps the ledger in S3, but a local one was never moved there.
    #[error(
        "the Pipelinefile keeps the ledger in {location}, but {} holds a local ledger that was not moved there",
        .path.display()
    )]
    NotMoved { path: PathBuf, location: String },
}

/// `ledger.head`: the seq and sha256 of the last line appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    seq: u64,
    sha256: String,
}

impl From<LedgerError> for crate::error::Error {
    fn from(e: LedgerError) -> Self {
        let hint = match &e {
            LedgerError::Store { hint, .. } => hint.clone().or_else(|| {
                Some("check the bucket, the credentials and the IAM permissions in the README (\"Sharing the ledger\")".into())
            }),
            LedgerError::Contended { .. } => Some("try again: nothing was appended".into()),
            LedgerError::NotMoved { .. } => Some(
                "`pipe ledger push` moves it into S3 (and keeps the file as ledger.jsonl.pushed); if S3 already holds another chain, move .pipe/ledger.jsonl aside".into(),
            ),
            _ => Some("`pipe history --verify` checks the ledger entry by entry".to_string()),
        };
        crate::error::Error::runtime(e.to_string(), hint)
    }
}

/// The ledger of one Pipelinefile folder: `.pipe/ledger.jsonl`, or shared in S3.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// The local file (with the S3 backend: where a local ledger would be, which must not
    /// hold one that was not moved).
    path: PathBuf,
    shared: Option<SharedLedger>,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainCheck {
    /// Every line links to the previous one; the count of entries.
    Intact { entries: usize, torn_tail: bool },
    /// The first line (1-based) whose `prev` or `seq` does not match, or that does not parse.
    Broken { line: usize, reason: String },
}

impl Ledger {
    /// The ledger in a state folder (`.pipe`).
    pub fn open(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("ledger.jsonl"),
            shared: None,
        }
    }

    /// The Pipelinefile's ledger: `[ledger]`'s backend. A shared ledger refuses to open while
    /// a local ledger with entries was not moved into it, so no history is forked unseen.
    pub fn of(pf: &Pipelinefile) -> Result<Self, LedgerError> {
        let local = Self::open(&crate::state::dir(&pf.root));
        let LedgerSettings::S3(s) = &pf.ledger else {
            return Ok(local);
        };
        let shared = Self::connect(s, &pf.root)?;
        if std::fs::metadata(&local.path).is_ok_and(|m| m.len() > 0) {
            return Err(LedgerError::NotMoved {
                path: local.path.clone(),
                location: shared.location().to_string(),
            });
        }
        Ok(Self {
            path: local.path,
            shared: Some(shared),
        })
    }

    /// The shared ledger `[ledger]` names, whatever the local file holds (for moving it in).
    pub fn of_shared(pf: &Pipelinefile, s: &S3LedgerSettings) -> Result<Self, LedgerError> {
        let local = Self::open(&crate::state::dir(&pf.root));
        let shared = Self::connect(s, &pf.root)?;
        Ok(Self {
            path: local.path,
            shared: Some(shared),
        })
    }

    /// The shared ledger `s` names, with its entries cached in the project's state folder
    /// (`.pipe/ledger-cache/<hash of s3://bucket/prefix>/`).
    fn connect(s: &S3LedgerSettings, root: &Path) -> Result<SharedLedger, LedgerError> {
        let location = s3_location(&s.bucket, &s.prefix);
        let client = AwsClient::connect(&AwsSettings {
            region: s.region.clone(),
            endpoint_url: s.endpoint_url.clone(),
            ..AwsSettings::default()
        })
        .map_err(|e| LedgerError::Store {
            location: location.clone(),
            hint: e.hint(),
            detail: e.to_string(),
        })?;
        let store = s3::S3Store {
            client,
            bucket: s.bucket.clone(),
        };
        // Named by a hash of the location: a prefix is not a path on this host.
        let cache = crate::state::dir(root)
            .join("ledger-cache")
            .join(&sha256_hex(location.as_bytes())[..16]);
        Ok(SharedLedger::new(std::sync::Arc::new(store), location, &s.prefix).with_cache(cache))
    }

    /// The local file (with the S3 backend, where a local ledger would be).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the entries are, for messages: the file's path, or `s3://bucket/prefix`.
    pub fn location(&self) -> String {
        match &self.shared {
            Some(s) => s.location().to_string(),
            None => self.path.display().to_string(),
        }
    }

    /// What a position in this ledger is called: a `line` of the file, a `seq` in S3.
    pub fn unit(&self) -> &'static str {
        if self.shared.is_some() { "seq" } else { "line" }
    }

    /// The shared ledger, when the ledger is in S3.
    pub fn shared(&self) -> Option<&SharedLedger> {
        self.shared.as_ref()
    }

    /// Every complete line of the local file after checking its chain (for moving it into S3).
    pub fn local_lines(&self) -> Result<Vec<Vec<u8>>, LedgerError> {
        if let ChainCheck::Broken { line, reason } = self.verify_local()? {
            return Err(self.broken(line, reason));
        }
        let data = match std::fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(e)),
        };
        let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        Ok(data[..complete]
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }

    fn broken(&self, line: usize, reason: String) -> LedgerError {
        LedgerError::Broken {
            location: self.path.display().to_string(),
            at: format!("line {line}"),
            reason,
        }
    }

    fn io(&self, source: std::io::Error) -> LedgerError {
        LedgerError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends an event under an exclusive lock, fsynced; returns the written entry.
    pub fn append(&self, who: &str, event: Event) -> Result<Entry, LedgerError> {
        if let Some(shared) = &self.shared {
            return shared.append(who, event);
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        file.lock().map_err(|e| self.io(e))?;
        // Nothing is added to a broken ledger: a new link would hide where it broke.
        if let ChainCheck::Broken { line, reason } = self.verify_local()? {
            let _ = file.unlock();
            return Err(self.broken(line, reason));
        }
        let result = self.append_locked(&mut file, who, event);
        let _ = file.unlock();
        result
    }

    fn append_locked(
        &self,
        file: &mut File,
        who: &str,
        event: Event,
    ) -> Result<Entry, LedgerError> {
        let mut data = Vec::new();
        file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        file.read_to_end(&mut data).map_err(|e| self.io(e))?;
        let complete = match data.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None => 0,
        };
        if complete < data.len() {
            // A torn line from a crash mid-append: keep it aside, then drop it.
            let torn = self.path.with_extension("torn");
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&torn)
                .map_err(|e| self.io(e))?;
            f.write_all(&data[complete..]).map_err(|e| self.io(e))?;
            f.write_all(b"\n").map_err(|e| self.io(e))?;
            f.sync_all().map_err(|e| self.io(e))?;
            file.set_len(complete as u64).map_err(|e| self.io(e))?;
            data.truncate(complete);
        }
        let lines: Vec<&[u8]> = data
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let prev = lines.last().map_or(GENESIS.to_string(), |l| sha256_hex(l));
        let entry = Entry {
            seq: lines.len() as u64 + 1,
            prev,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            who: who.to_string(),
            event,
        };
        let mut line = serde_json::to_vec(&entry).expect("entries serialize");
        let head = Head {
            seq: entry.seq,
            sha256: sha256_hex(&line),
        };
        line.push(b'\n');
        file.seek(SeekFrom::End(0)).map_err(|e| self.io(e))?;
        file.write_all(&line).map_err(|e| self.io(e))?;
        file.sync_all().map_err(|e| self.io(e))?;
        let data = serde_json::to_vec(&head).expect("heads serialize");
        crate::state::write_atomic(&self.head_path(), &data).map_err(|e| self.io(e))?;
        Ok(entry)
    }

    fn head_path(&self) -> PathBuf {
        self.path.with_extension("head")
    }

    /// Every entry, after checking the chain and the anchor; a broken ledger is an error
    /// naming the first bad line. What every command that acts on the ledger reads.
    pub fn checked_entries(&self) -> Result<Vec<Entry>, LedgerError> {
        if let Some(shared) = &self.shared {
            return shared.checked_entries();
        }
        match self.verify()? {
            ChainCheck::Intact { .. } => self.entries(),
            ChainCheck::Broken { line, reason } => Err(self.broken(line, reason)),
        }
    }

    /// Every complete entry, in order; a torn last line is skipped. Unchecked: for showing
    /// the history, not for deciding anything.
    pub fn entries(&self) -> Result<Vec<Entry>, LedgerError> {
        if let Some(shared) = &self.shared {
            return shared.entries();
        }
        let data = match std::fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(e)),
        };
        let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let mut out = Vec::new();
        for (i, line) in data[..complete].split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let entry: Entry = serde_json::from_slice(line).map_err(|e| LedgerError::Corrupt {
                location: self.path.display().to_string(),
                at: format!("line {}", i + 1),
                message: e.to_string(),
            })?;
            out.push(entry);
        }
        Ok(out)
    }

    /// Checks the hash chain entry by entry (and the anchor or head); `line` in a
    /// [`ChainCheck::Broken`] is the seq, which is the line number in the file.
    pub fn verify(&self) -> Result<ChainCheck, LedgerError> {
        match &self.shared {
            Some(shared) => shared.verify(),
            None => self.verify_local(),
        }
    }

    /// Checks the local file's hash chain line by line.
    fn verify_local(&self) -> Result<ChainCheck, LedgerError> {
        let data = match std::fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ChainCheck::Intact {
                    entries: 0,
                    torn_tail: false,
                });
            }
            Err(e) => return Err(self.io(e)),
        };
        let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let mut prev = GENESIS.to_string();
        let mut count = 0usize;
        let body = &data[..complete.saturating_sub(1)];
        for (i, line) in body.split(|b| *b == b'\n').enumerate() {
            let n = i + 1;
            if complete == 0 {
                break;
            }
            if line.is_empty() {
                return Ok(ChainCheck::Broken {
                    line: n,
                    reason: "empty line".into(),
                });
            }
            let entry: Entry = match serde_json::from_slice(line) {
                Ok(e) => e,
                Err(e) => {
                    return Ok(ChainCheck::Broken {
                        line: n,
                        reason: format!("not a ledger entry: {e}"),
                    });
                }
            };
            if entry.prev != prev {
                return Ok(ChainCheck::Broken {
                    line: n,
                    reason: "its `prev` does not match the sha256 of the line before it (that line or this one was changed, or a line was removed)".into(),
                });
            }
            if entry.seq != count as u64 + 1 {
                return Ok(ChainCheck::Broken {
                    line: n,
                    reason: format!("its seq is {}, expected {}", entry.seq, count + 1),
                });
            }
            prev = sha256_hex(line);
            count += 1;
        }
        if let Some(broken) = self.check_head(count, &prev)? {
            return Ok(broken);
        }
        Ok(ChainCheck::Intact {
            entries: count,
            torn_tail: complete < data.len(),
        })
    }
}

impl Ledger {
    /// The anchor against the chain's last line (`count` lines, the last hashing to `last`).
    fn check_head(&self, count: usize, last: &str) -> Result<Option<ChainCheck>, LedgerError> {
        let head = match std::fs::read(self.head_path()) {
            Ok(d) => d,
            // Written before anchors existed (or never appended to): nothing to compare.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        let Ok(head) = serde_json::from_slice::<Head>(&head) else {
            return Ok(Some(ChainCheck::Broken {
                line: count,
                reason: format!("its anchor {} is not readable", self.head_path().display()),
            }));
        };
        let count = count as u64;
        if head.seq == count && head.sha256 == last {
            return Ok(None);
        }
        // A crash between writing a line and its anchor: the anchor is one line behind and
        // names that line exactly.
        if head.seq + 1 == count && self.line_sha(head.seq)?.as_deref() == Some(&head.sha256) {
            return Ok(None);
        }
        let reason = if head.seq > count {
            format!(
                "the anchor says the ledger has {} line(s), it has {count}: the last line(s) were removed",
                head.seq
            )
        } else {
            "it does not match the anchor's sha256 (the last line was changed, or lines were removed and others added)".to_string()
        };
        Ok(Some(ChainCheck::Broken {
            line: count.min(head.seq).max(1) as usize,
            reason,
        }))
    }

    /// The sha256 of line `seq` (1-based), if there is one.
    fn line_sha(&self, seq: u64) -> Result<Option<String>, LedgerError> {
        let data = std::fs::read(&self.path).map_err(|e| self.io(e))?;
        Ok(data
            .split(|b| *b == b'\n')
            .nth(seq.saturating_sub(1) as usize)
            .filter(|_| seq > 0)
            .map(sha256_hex))
    }
}

/// Deletes the promotion lock `key` of the shared ledger in `bucket` while run `run` holds it
/// (the cleanup of a journaled lock, by the run or by `pipe clean`); false when it does not.
pub fn release_s3_lock(
    client: AwsClient,
    bucket: &str,
    key: &str,
    run: &str,
) -> Result<bool, crate::engine::aws::AwsError> {
    let store = s3::S3Store {
        client,
        bucket: bucket.to_string(),
    };
    shared::release_lock(&store, key, run)
}

/// `s3://bucket/prefix`, how messages name a shared ledger.
pub fn s3_location(bucket: &str, prefix: &str) -> String {
    match prefix.trim_matches('/') {
        "" => format!("s3://{bucket}"),
        p => format!("s3://{bucket}/{p}"),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The user part of a `user@host` (what approvals compare: the same person on another host is
/// still the same person).
pub fn user_of(who: &str) -> &str {
    who.rsplit_once('@').map_or(who, |(user, _)| user)
}

/// `user@host` of whoever runs pipe.
pub fn who() -> String {
    let named = ["USER", "LOGNAME"]
        .into_iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    // SAFETY: getuid cannot fail and touches no memory of ours.
    let user = user_name(named, unsafe { libc::getuid() });
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

/// Who runs pipe: `USER`/`LOGNAME` when set (`named`), else the name of `uid` in the user
/// database (containers and CI often set neither), else the uid itself.
fn user_name(named: Option<String>, uid: libc::uid_t) -> String {
    named
        .or_else(|| passwd_name(uid))
        .unwrap_or_else(|| uid.to_string())
}

/// The user database's name for `uid` (`getpwuid_r`, thread-safe), if it has one.
fn passwd_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: an all-zero passwd is a valid out-parameter (null pointers, zero ids).
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to memory we own for the whole call, `buf.len()` is its size;
    // on success `found` points at `pwd`, whose strings live in `buf`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`, still alive here.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without `USER` and `LOGNAME` the ledger names the uid's user, or the uid (issue 13).
    #[test]
    fn who_falls_back_to_the_uids_name_then_the_uid() {
        assert_eq!(user_name(Some("alice".into()), 0), "alice");
        assert_eq!(user_name(None, 0), "root");
        // No user database has this one.
        assert_eq!(user_name(None, 3_999_999_999), "3999999999");
    }

    fn reject(id: &str) -> Event {
        Event::Reject {
            release: id.into(),
            reason: None,
        }
    }

    #[test]
    fn chains_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path());
        for i in 0..3 {
            l.append("me@here", reject(&format!("r{i}"))).unwrap();
        }
        assert_eq!(
            l.verify().unwrap(),
            ChainCheck::Intact {
                entries: 3,
                torn_tail: false
            }
        );
        let entries = l.entries().unwrap();
        assert_eq!(entries[0].prev, GENESIS);
        assert_eq!(entries[2].seq, 3);
    }

    #[test]
    fn an_edited_line_breaks_the_chain_at_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path());
        for i in 0..4 {
            l.append("me@here", reject(&format!("r{i}"))).unwrap();
        }
        let text = std::fs::read_to_string(l.path()).unwrap();
        std::fs::write(l.path(), text.replacen("\"r1\"", "\"rX\"", 1)).unwrap();
        match l.verify().unwrap() {
            ChainCheck::Broken { line, .. } => assert_eq!(line, 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_torn_last_line_hides_nothing_and_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path());
        l.append("me@here", reject("r0")).unwrap();
        l.append("me@here", reject("r1")).unwrap();
        // A crash mid-append: half a line, no newline.
        let mut f = OpenOptions::new().append(true).open(l.path()).unwrap();
        f.write_all(b"{\"seq\":3,\"prev\":\"ab").unwrap();
        drop(f);
        assert_eq!(l.entries().unwrap().len(), 2);
        assert_eq!(
            l.verify().unwrap(),
            ChainCheck::Intact {
                entries: 2,
                torn_tail: true
            }
        );
        let e = l.append("me@here", reject("r2")).unwrap();
        assert_eq!(e.seq, 3);
        assert_eq!(
            l.verify().unwrap(),
            ChainCheck::Intact {
                entries: 3,
                torn_tail: false
            }
        );
        let torn = std::fs::read_to_string(dir.path().join("ledger.torn")).unwrap();
        assert!(torn.starts_with("{\"seq\":3,\"prev\":\"ab"));
    }

    #[test]
    fn concurrent_appends_keep_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path());
        std::thread::scope(|s| {
            for t in 0..4 {
                let l = l.clone();
                s.spawn(move || {
                    for i in 0..10 {
                        l.append("me@here", reject(&format!("t{t}-{i}"))).unwrap();
                    }
                });
            }
        });
        assert_eq!(
            l.verify().unwrap(),
            ChainCheck::Intact {
                entries: 40,
                torn_tail: false
            }
        );
    }

    #[test]
    fn approvals_compare_the_user_part() {
        assert_eq!(user_of("alice@host-1"), "alice");
        assert_eq!(user_of("alice"), "alice");
        assert_eq!(user_of("a@b@c"), "a@b");
    }

    #[test]
    fn approvals_and_broken_locks_round_trip_through_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path());
        let approve = Event::Approve {
            release: "r1".into(),
            env: "production".into(),
        };
        let broke = Event::BreakLock {
            env: "production".into(),
            holder: "bob@ci".into(),
            run: Some("run-1".into()),
            since: None,
            release: None,
        };
        l.append("alice@here", approve.clone()).unwrap();
        l.append("alice@here", broke.clone()).unwrap();
        let text = std::fs::read_to_string(l.path()).unwrap();
        assert!(
            text.contains(r#""event":"approve","release":"r1","env":"production""#),
            "{text}"
        );
        assert!(text.contains(r#""event":"break_lock""#), "{text}");
        let entries = l.checked_entries().unwrap();
        assert_eq!(entries[0].event, approve);
        assert_eq!(entries[1].event, broke);
    }
}

//! The shared ledger: the same hash-chained entries as `.pipe/ledger.jsonl`, one object per
//! entry in an object store (S3), so a team on several hosts and CI runners keeps one history.
//!
//! Layout under the prefix:
//! - `entries/00000000000000000042.json`: entry 42, the exact bytes a local line would have
//!   (its `prev` is the sha256 of entry 41's object), so a local ledger moves in unchanged;
//! - `head.json`: `{"seq", "sha256"}` of the last entry, the anchor that covers it;
//! - `locks/ENV.json`: the promotion lock of an environment while a promotion runs.
//!
//! **Appends never lose or fork an entry.** An entry is created with `If-None-Match: *` under
//! its seq's key, so of two writers that want seq 42 exactly one gets it; the other reads
//! entry 42 (checking that it links to what it already checked), builds its entry again as 43
//! with entry 42's sha256 as `prev`, and tries again. The head is then moved forward with
//! `If-Match: <etag>` (never back), so it may lag behind the last entry (a writer that
//! crashed in between) but never names an entry that is not there.
//!
//! **Checking** reads every entry (in parallel) and the head: a missing seq, an entry whose
//! `prev` or `seq` does not match, or a head that names more entries than exist or an entry
//! with another sha256 breaks the chain at a seq `pipe history --verify` names. As with the
//! local file, someone who can rewrite every object and the head is not stopped; S3 object
//! versioning keeps what they overwrote.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::aws::{AwsError, S3Listed, S3Object};

use super::{ChainCheck, Entry, Event, GENESIS, Head, LedgerError, sha256_hex};

/// How many times an append tries the next seq before it gives up.
const APPEND_ATTEMPTS: u32 = 100;
/// How often a push tries a seq that S3 said was being written, and then was not.
const PUSH_ATTEMPTS: u32 = 8;
/// How many times moving the head forward is tried.
const HEAD_ATTEMPTS: u32 = 20;
/// The zero-padded width of seqs in keys, so S3 lists entries in order.
const SEQ_WIDTH: usize = 20;

/// What the shared ledger needs from an object store: reads with ETags, conditional writes,
/// listing. S3 ([`super::s3::S3Store`]) and, in unit tests, an in-memory store implement it.
pub trait ObjectStore: Send + Sync {
    /// The object `key`; `None` when there is none.
    fn get(&self, key: &str) -> Result<Option<S3Object>, AwsError>;
    /// The objects `keys`, in order.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<S3Object>>, AwsError> {
        keys.iter().map(|k| self.get(k)).collect()
    }
    /// Creates `key` only if absent: its ETag, or `None` when it exists.
    fn create(&self, key: &str, body: &[u8]) -> Result<Option<String>, AwsError>;
    /// Replaces `key` only if its ETag is `etag`: the new ETag, or `None`.
    fn replace(&self, key: &str, body: &[u8], etag: &str) -> Result<Option<String>, AwsError>;
    /// Deletes `key` only if its ETag is `etag`; false when it changed or is gone.
    fn delete_if(&self, key: &str, etag: &str) -> Result<bool, AwsError>;
    /// Every key under `prefix`, with its ETag.
    fn list(&self, prefix: &str) -> Result<Vec<S3Listed>, AwsError>;
}

/// A ledger in an object store, under a prefix.
#[derive(Clone)]
pub struct SharedLedger {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket/prefix`, for messages.
    location: String,
    /// The key prefix, empty or ending in `/`.
    prefix: String,
    /// A folder of entries read before, each kept under its seq and ETag (see
    /// [`SharedLedger::with_cache`]).
    cache: Option<PathBuf>,
}

impl std::fmt::Debug for SharedLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLedger")
            .field("location", &self.location)
            .finish()
    }
}

/// `Ok((entries, the last one's sha256))`, or `Err((seq, reason))` where the chain breaks.
type Checked = Result<(u64, String), (u64, String)>;

/// The entries as stored: each seq's object, in order, as far as they are contiguous.
struct Stored {
    /// `(seq, bytes)` for seq 1, 2, ...
    objects: Vec<(u64, Vec<u8>)>,
    /// The first seq that is missing while a later one exists.
    gap: Option<u64>,
    /// A key under `entries/` that is not an entry's.
    stray: Option<String>,
    /// The head, read before the entries: entries only ever come after it, so a head
    /// that names more entries than were listed means some were removed, not that a writer
    /// appended in between. `Err`: why it is unreadable.
    head: Result<Option<Head>, String>,
}

impl SharedLedger {
    /// The ledger under `prefix` (without trailing `/`) of `store`, named `location`.
    pub fn new(store: Arc<dyn ObjectStore>, location: String, prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        Self {
            store,
            location,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            cache: None,
        }
    }

    /// Keeps the entries it reads in `dir` and reads an entry from there again while the
    /// listing gives it the same ETag: entries are written once, so a command then reads only
    /// the entries it has not seen. An entry changed in S3 has another ETag and is read again
    /// (and the chain check sees the change); `verify` reads every entry from S3.
    pub fn with_cache(mut self, dir: PathBuf) -> Self {
        self.cache = Some(dir);
        self
    }

    /// The cache file of entry `seq` with `etag`; `None` without a cache or a usable ETag.
    fn cached_path(&self, seq: u64, etag: &str) -> Option<PathBuf> {
        let etag: String = etag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let dir = self.cache.as_ref()?;
        (!etag.is_empty()).then(|| dir.join(format!("{seq:0SEQ_WIDTH$}-{etag}.json")))
    }

    /// Keeps `body`, entry `seq` with `etag`, in the cache (best effort: a cache that cannot
    /// be written only means reading from S3 next time).
    fn keep(&self, seq: u64, etag: &str, body: &[u8]) {
        // Not `state::write_atomic`: that syncs each file, and a cold read of a long ledger
        // writes one file per entry; a cache lost in a crash is only read from S3 again.
        let Some(path) = self.cached_path(seq, etag) else {
            return;
        };
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let _ = std::fs::create_dir_all(path.parent().expect("in the cache folder"))
            .and_then(|()| std::fs::write(&tmp, body))
            .and_then(|()| std::fs::rename(&tmp, &path));
        let _ = std::fs::remove_file(&tmp);
    }

    /// `s3://bucket/prefix`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The key of entry `seq`.
    pub fn entry_key(&self, seq: u64) -> String {
        format!("{}entries/{seq:0SEQ_WIDTH$}.json", self.prefix)
    }

    fn head_key(&self) -> String {
        format!("{}head.json", self.prefix)
    }

    /// The key of `env`'s promotion lock.
    pub fn lock_key(&self, env: &str) -> String {
        format!("{}locks/{env}.json", self.prefix)
    }

    fn store_error(&self, e: AwsError) -> LedgerError {
        LedgerError::Store {
            location: self.location.clone(),
            hint: e.hint(),
            detail: e.to_string(),
        }
    }

    fn broken(&self, seq: u64, reason: impl Into<String>) -> LedgerError {
        LedgerError::Broken {
            location: self.location.clone(),
            at: format!("seq {seq}"),
            reason: reason.into(),
        }
    }

    fn read(&self) -> Result<Stored, LedgerError> {
        self.read_from(true)
    }

    /// What is stored; with `cached`, entries whose listed ETag the cache holds come from it.
    fn read_from(&self, cached: bool) -> Result<Stored, LedgerError> {
        let head = match self.head() {
            Ok(h) => Ok(h.map(|(head, _)| head)),
            Err(LedgerError::Broken { reason, .. }) => Err(reason),
            Err(e) => return Err(e),
        };
        let dir = format!("{}entries/", self.prefix);
        let listed = self.store.list(&dir).map_err(|e| self.store_error(e))?;
        let mut seqs = Vec::new();
        let mut stray = None;
        for l in listed {
            match l
                .key
                .strip_prefix(&dir)
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|n| n.len() == SEQ_WIDTH)
                .and_then(|n| n.parse::<u64>().ok())
            {
                Some(seq) => seqs.push((seq, l.etag)),
                None => {
                    stray.get_or_insert(l.key);
                }
            }
        }
        seqs.sort_unstable();
        let contiguous = seqs
            .iter()
            .enumerate()
            .take_while(|(i, (s, _))| *s == *i as u64 + 1)
            .count();
        let mut gap = (contiguous < seqs.len()).then_some(contiguous as u64 + 1);
        let mut bodies: Vec<Option<Vec<u8>>> = seqs[..contiguous]
            .iter()
            .map(|(seq, etag)| {
                let path = self.cached_path(*seq, etag).filter(|_| cached)?;
                std::fs::read(path).ok()
            })
            .collect();
        let missing: Vec<usize> = (0..contiguous).filter(|i| bodies[*i].is_none()).collect();
        let keys: Vec<String> = missing
            .iter()
            .map(|i| self.entry_key(*i as u64 + 1))
            .collect();
        let fetched = self
            .store
            .get_many(&keys)
            .map_err(|e| self.store_error(e))?;
        for (i, o) in missing.into_iter().zip(fetched) {
            if let Some(o) = o {
                self.keep(i as u64 + 1, &o.etag, &o.body);
                bodies[i] = Some(o.body);
            }
        }
        let mut objects = Vec::with_capacity(bodies.len());
        for (i, body) in bodies.into_iter().enumerate() {
            match body {
                Some(b) => objects.push((i as u64 + 1, b)),
                // Listed, then gone before it was read.
                None => {
                    gap = Some(i as u64 + 1);
                    break;
                }
            }
        }
        Ok(Stored {
            objects,
            gap,
            stray,
            head,
        })
    }

    fn head(&self) -> Result<Option<(Head, String)>, LedgerError> {
        let Some(o) = self
            .store
            .get(&self.head_key())
            .map_err(|e| self.store_error(e))?
        else {
            return Ok(None);
        };
        let head = serde_json::from_slice::<Head>(&o.body).map_err(|e| {
            self.broken(
                0,
                format!("its head {} is not readable: {e}", self.head_key()),
            )
        })?;
        Ok(Some((head, o.etag)))
    }

    /// Checks the chain entry by entry, and the head against it, every entry read from the
    /// store (not the cache).
    pub fn verify(&self) -> Result<ChainCheck, LedgerError> {
        let stored = self.read_from(false)?;
        Ok(match self.check_stored(&stored)? {
            Ok((count, _)) => ChainCheck::Intact {
                entries: count as usize,
                torn_tail: false,
            },
            Err((seq, reason)) => ChainCheck::Broken {
                line: seq as usize,
                reason,
            },
        })
    }

    /// `Ok((entries, the last one's sha256))`, or `Err((seq, reason))` where it breaks.
    fn check(&self) -> Result<Checked, LedgerError> {
        Ok(self.read_checked()?.1)
    }

    /// What is stored, and [`Self::check`]'s verdict on it.
    fn read_checked(&self) -> Result<(Stored, Checked), LedgerError> {
        let stored = self.read()?;
        let verdict = self.check_stored(&stored)?;
        Ok((stored, verdict))
    }

    fn check_stored(&self, stored: &Stored) -> Result<Checked, LedgerError> {
        let mut prev = GENESIS.to_string();
        for (seq, body) in &stored.objects {
            if let Err(reason) = links(*seq, body, &prev) {
                return Ok(Err((*seq, reason)));
            }
            prev = sha256_hex(body);
        }
        let count = stored.objects.len() as u64;
        if let Some(gap) = stored.gap {
            return Ok(Err((
                gap,
                format!(
                    "its object {} is missing while later seqs exist (it was removed)",
                    self.entry_key(gap)
                ),
            )));
        }
        if let Some(stray) = &stored.stray {
            return Ok(Err((
                count + 1,
                format!("{stray} is not an entry's key (entries are entries/<20-digit seq>.json)"),
            )));
        }
        let head = match &stored.head {
            Ok(h) => h,
            Err(reason) => return Ok(Err((count.max(1), reason.clone()))),
        };
        if let Some(head) = head {
            if head.seq > count {
                return Ok(Err((
                    count + 1,
                    format!(
                        "the head says the ledger has {} entries, it has {count}: the last entries were removed",
                        head.seq
                    ),
                )));
            }
            // Entries after the head are appends whose writer has not moved it yet.
            let at = stored
                .objects
                .get(head.seq.saturating_sub(1) as usize)
                .filter(|_| head.seq > 0);
            if head.seq > 0 && at.is_none_or(|(_, b)| sha256_hex(b) != head.sha256) {
                return Ok(Err((
                    head.seq,
                    "it does not match the head's sha256 (it was changed)".to_string(),
                )));
            }
        }
        Ok(Ok((count, prev)))
    }

    /// Every entry after checking the chain and the head; a broken ledger is an error naming
    /// the first bad seq.
    pub fn checked_entries(&self) -> Result<Vec<Entry>, LedgerError> {
        let (stored, verdict) = self.read_checked()?;
        if let Err((seq, reason)) = verdict {
            return Err(self.broken(seq, reason));
        }
        stored
            .objects
            .iter()
            .map(|(seq, body)| parse(body).map_err(|reason| self.broken(*seq, reason)))
            .collect()
    }

    /// Every entry that parses, in order, up to the first gap. Unchecked: for showing.
    pub fn entries(&self) -> Result<Vec<Entry>, LedgerError> {
        let stored = self.read()?;
        stored
            .objects
            .iter()
            .map(|(seq, body)| {
                parse(body).map_err(|message| LedgerError::Corrupt {
                    location: self.location.clone(),
                    at: format!("seq {seq}"),
                    message,
                })
            })
            .collect()
    }

    /// The raw bytes of every entry, after checking the chain (for moving a ledger in).
    pub fn raw_entries(&self) -> Result<Vec<Vec<u8>>, LedgerError> {
        let (stored, verdict) = self.read_checked()?;
        if let Err((seq, reason)) = verdict {
            return Err(self.broken(seq, reason));
        }
        Ok(stored.objects.into_iter().map(|(_, b)| b).collect())
    }

    /// Appends `event` as the next entry: created only if its seq is free, else built again
    /// on the entry that took it, until one is created. Nothing is added to a broken chain.
    pub fn append(&self, who: &str, event: Event) -> Result<Entry, LedgerError> {
        let (mut seq, mut prev) = match self.check()? {
            Ok(last) => last,
            Err((at, reason)) => return Err(self.broken(at, reason)),
        };
        for attempt in 0..APPEND_ATTEMPTS {
            let entry = Entry {
                seq: seq + 1,
                prev: prev.clone(),
                time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                who: who.to_string(),
                event: event.clone(),
            };
            let body = serde_json::to_vec(&entry).expect("entries serialize");
            let created = self
                .store
                .create(&self.entry_key(entry.seq), &body)
                .map_err(|e| self.store_error(e))?;
            if let Some(etag) = created {
                self.keep(entry.seq, &etag, &body);
                self.move_head(entry.seq, &sha256_hex(&body))?;
                return Ok(entry);
            }
            // Another writer took this seq: follow the chain to its new end, checking each
            // link on the way, then try the seq after it.
            (seq, prev) = self.follow(seq, prev)?;
            std::thread::sleep(backoff(attempt));
        }
        Err(LedgerError::Contended {
            location: self.location.clone(),
            attempts: APPEND_ATTEMPTS,
        })
    }

    /// From entry `seq` (hashing to `prev`), reads the entries written after it, each checked
    /// against the one before; the new last seq and its sha256.
    fn follow(&self, mut seq: u64, mut prev: String) -> Result<(u64, String), LedgerError> {
        loop {
            let Some(o) = self
                .store
                .get(&self.entry_key(seq + 1))
                .map_err(|e| self.store_error(e))?
            else {
                return Ok((seq, prev));
            };
            links(seq + 1, &o.body, &prev).map_err(|reason| self.broken(seq + 1, reason))?;
            seq += 1;
            prev = sha256_hex(&o.body);
        }
    }

    /// Moves the head to `seq` unless it is there or further already. Not moving it is not
    /// an error: a head that lags is caught up by the next append.
    fn move_head(&self, seq: u64, sha256: &str) -> Result<(), LedgerError> {
        let body = serde_json::to_vec(&Head {
            seq,
            sha256: sha256.to_string(),
        })
        .expect("heads serialize");
        for attempt in 0..HEAD_ATTEMPTS {
            let moved = match self.head() {
                Ok(Some((head, _))) if head.seq >= seq => return Ok(()),
                Ok(Some((_, etag))) => self.store.replace(&self.head_key(), &body, &etag),
                Ok(None) => self.store.create(&self.head_key(), &body),
                Err(e) => return Err(e),
            }
            .map_err(|e| self.store_error(e))?;
            if moved.is_some() {
                return Ok(());
            }
            std::thread::sleep(backoff(attempt));
        }
        Ok(())
    }

    /// Writes `lines` (a local ledger's, checked) as entries after the `have` already there
    /// and moves the head; `Ok(false)` when one of those seqs was taken meanwhile.
    pub fn push(&self, lines: &[Vec<u8>], have: usize) -> Result<bool, LedgerError> {
        for (i, line) in lines.iter().enumerate().skip(have) {
            if !self.push_one(i as u64 + 1, line)? {
                return Ok(false);
            }
        }
        if let Some(last) = lines.last() {
            self.move_head(lines.len() as u64, &sha256_hex(last))?;
        }
        Ok(true)
    }

    /// Writes `line` as entry `seq` unless it is there; false when another entry took `seq`.
    /// A lost condition is looked at: S3 also answers `ConditionalRequestConflict` while
    /// another write of the key is in flight, and that write may not land. The same bytes
    /// there already (an earlier push's) count as written.
    fn push_one(&self, seq: u64, line: &[u8]) -> Result<bool, LedgerError> {
        let key = self.entry_key(seq);
        for attempt in 0..PUSH_ATTEMPTS {
            let created = self
                .store
                .create(&key, line)
                .map_err(|e| self.store_error(e))?;
            if created.is_some() {
                return Ok(true);
            }
            match self.store.get(&key).map_err(|e| self.store_error(e))? {
                Some(o) => return Ok(o.body == line),
                None => std::thread::sleep(backoff(attempt)),
            }
        }
        // Writes in flight every time: someone else is writing there.
        Ok(false)
    }

    /// Takes `env`'s promotion lock with `value` (the holder, as JSON): `None` when taken,
    /// else the value of the lock someone else holds.
    pub fn take_lock(&self, env: &str, value: &str) -> Result<Option<String>, LedgerError> {
        let key = self.lock_key(env);
        for _ in 0..3 {
            if self
                .store
                .create(&key, value.as_bytes())
                .map_err(|e| self.store_error(e))?
                .is_some()
            {
                return Ok(None);
            }
            // Held; unless it was released between the write and this read.
            if let Some(o) = self.store.get(&key).map_err(|e| self.store_error(e))? {
                return Ok(Some(String::from_utf8_lossy(&o.body).into_owned()));
            }
        }
        Ok(Some("(a lock taken and released again and again)".into()))
    }

    /// Removes `env`'s promotion lock if run `run` holds it; false when it does not (or it is
    /// gone).
    pub fn release_lock(&self, env: &str, run: &str) -> Result<bool, LedgerError> {
        release_lock(&*self.store, &self.lock_key(env), run).map_err(|e| self.store_error(e))
    }

    /// Removes `env`'s promotion lock unless `keep` says its value must stay; the removed
    /// value, `Ok(None)` when there was no lock (or it changed hands meanwhile: the delete is
    /// conditional on the lock that was read), `Err(value)` inside when `keep` refused.
    pub fn break_lock(
        &self,
        env: &str,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Result<Option<String>, String>, LedgerError> {
        let key = self.lock_key(env);
        let Some(o) = self.store.get(&key).map_err(|e| self.store_error(e))? else {
            return Ok(Ok(None));
        };
        let value = String::from_utf8_lossy(&o.body).into_owned();
        if keep(&value) {
            return Ok(Err(value));
        }
        let deleted = self
            .store
            .delete_if(&key, &o.etag)
            .map_err(|e| self.store_error(e))?;
        Ok(Ok(deleted.then_some(value)))
    }
}

/// Deletes the lock object `key` if its `run` is `run`, conditional on the lock that was
/// read (what the runner's cleanup and `pipe clean` do for a journaled lock).
pub fn release_lock(store: &dyn ObjectStore, key: &str, run: &str) -> Result<bool, AwsError> {
    let Some(o) = store.get(key)? else {
        return Ok(false);
    };
    let holder: serde_json::Value = serde_json::from_slice(&o.body).unwrap_or_default();
    if holder["run"].as_str() != Some(run) {
        return Ok(false);
    }
    store.delete_if(key, &o.etag)
}

/// Whether `body` is entry `seq` and links to `prev`; why not.
fn links(seq: u64, body: &[u8], prev: &str) -> Result<(), String> {
    let entry = parse(body)?;
    if entry.seq != seq {
        return Err(format!("its object says seq {}", entry.seq));
    }
    if entry.prev != prev {
        return Err(format!(
            "its `prev` does not match the sha256 of seq {} (that entry or this one was changed)",
            seq - 1
        ));
    }
    Ok(())
}

fn parse(body: &[u8]) -> Result<Entry, String> {
    serde_json::from_slice(body).map_err(|e| format!("not a ledger entry: {e}"))
}

/// A short pause that grows with the attempt, jittered, so writers that collided spread out.
fn backoff(attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let base = 10u64 << attempt.min(5);
    Duration::from_millis(base + u64::from(nanos) % (base + 1))
}

#[cfg(test)]
pub(crate) mod memory {
    //! An in-memory [`ObjectStore`] with S3's conditional-write semantics, for unit tests.

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// Objects with ETags that change on every write; `before_create` runs before each create
    /// is decided (to let a test write first, as a concurrent writer would).
    #[derive(Default)]
    pub struct MemoryStore {
        pub objects: Mutex<BTreeMap<String, S3Object>>,
        counter: Mutex<u64>,
        #[allow(clippy::type_complexity)]
        pub before_create: Mutex<Option<Box<dyn FnMut(&str) + Send>>>,
        /// How many creates to answer as S3's `ConditionalRequestConflict` (409): lost,
        /// with nothing written, as when a concurrent write of the key was in flight.
        pub conflicts: Mutex<u32>,
        /// Keys read, in order.
        pub reads: Mutex<Vec<String>>,
    }

    impl MemoryStore {
        fn etag(&self) -> String {
            let mut c = self.counter.lock().unwrap();
            *c += 1;
            format!("\"{c}\"")
        }

        /// Overwrites `key` unconditionally (an edit behind pipe's back).
        pub fn put(&self, key: &str, body: &[u8]) {
            let etag = self.etag();
            self.objects.lock().unwrap().insert(
                key.to_string(),
                S3Object {
                    body: body.to_vec(),
                    etag,
                },
            );
        }
    }

    impl ObjectStore for MemoryStore {
        fn get(&self, key: &str) -> Result<Option<S3Object>, AwsError> {
            self.reads.lock().unwrap().push(key.to_string());
            Ok(self.objects.lock().unwrap().get(key).cloned())
        }

        fn create(&self, key: &str, body: &[u8]) -> Result<Option<String>, AwsError> {
            let hook = self.before_create.lock().unwrap().take();
            if let Some(mut hook) = hook {
                hook(key);
                *self.before_create.lock().unwrap() = Some(hook);
            }
            {
                let mut conflicts = self.conflicts.lock().unwrap();
                if *conflicts > 0 {
                    *conflicts -= 1;
                    return Ok(None);
                }
            }
            let etag = self.etag();
            let mut objects = self.objects.lock().unwrap();
            if objects.contains_key(key) {
                return Ok(None);
            }
            objects.insert(
                key.to_string(),
                S3Object {
                    body: body.to_vec(),
                    etag: etag.clone(),
                },
            );
            Ok(Some(etag))
        }

        fn replace(&self, key: &str, body: &[u8], etag: &str) -> Result<Option<String>, AwsError> {
            let new = self.etag();
            let mut objects = self.objects.lock().unwrap();
            match objects.get_mut(key) {
                Some(o) if o.etag == etag => {
                    *o = S3Object {
                        body: body.to_vec(),
                        etag: new.clone(),
                    };
                    Ok(Some(new))
                }
                _ => Ok(None),
            }
        }

        fn delete_if(&self, key: &str, etag: &str) -> Result<bool, AwsError> {
            let mut objects = self.objects.lock().unwrap();
            if objects.get(key).is_some_and(|o| o.etag == etag) {
                objects.remove(key);
                return Ok(true);
            }
            Ok(false)
        }

        fn list(&self, prefix: &str) -> Result<Vec<S3Listed>, AwsError> {
            Ok(self
                .objects
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, o)| S3Listed {
                    key: k.clone(),
                    etag: o.etag.clone(),
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryStore;
    use super::*;

    fn reject(id: &str) -> Event {
        Event::Reject {
            release: id.into(),
            reason: None,
        }
    }

    fn ledger(store: &Arc<MemoryStore>) -> SharedLedger {
        SharedLedger::new(store.clone(), "mem://team/p".into(), "team/p")
    }

    #[test]
    fn appends_chain_like_the_local_file() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(&store);
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
        let entries = l.checked_entries().unwrap();
        assert_eq!(entries[0].prev, GENESIS);
        assert_eq!(entries[2].seq, 3);
        assert!(
            store
                .objects
                .lock()
                .unwrap()
                .contains_key("team/p/entries/00000000000000000003.json")
        );
        let head: Head =
            serde_json::from_slice(&store.get("team/p/head.json").unwrap().unwrap().body).unwrap();
        assert_eq!(head.seq, 3);
    }

    /// A writer that loses its seq to another one builds its entry again on the winner's.
    #[test]
    fn a_lost_seq_is_retried_on_the_entry_that_took_it() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(&store);
        l.append("me@here", reject("r0")).unwrap();
        // Just before our create of seq 2 is decided, another host appends seq 2 and 3.
        let other = ledger(&store);
        let mut fired = false;
        *store.before_create.lock().unwrap() = Some(Box::new(move |key: &str| {
            if !fired && key.ends_with("00000000000000000002.json") {
                fired = true;
                // The hook is taken out while it runs: these creates do not re-enter it.
                other.append("them@there", reject("theirs-1")).unwrap();
                other.append("them@there", reject("theirs-2")).unwrap();
            }
        }));
        let mine = l.append("me@here", reject("mine")).unwrap();
        assert_eq!(mine.seq, 4);
        let entries = l.checked_entries().unwrap();
        let who: Vec<&str> = entries.iter().map(|e| e.who.as_str()).collect();
        assert_eq!(who, ["me@here", "them@there", "them@there", "me@here"]);
        assert_eq!(
            entries[3].prev,
            sha256_hex(&serde_json::to_vec(&entries[2]).unwrap())
        );
    }

    #[test]
    fn concurrent_appends_keep_every_entry() {
        let store = Arc::new(MemoryStore::default());
        std::thread::scope(|s| {
            for t in 0..8 {
                let l = ledger(&store);
                s.spawn(move || {
                    for i in 0..5 {
                        l.append("me@here", reject(&format!("t{t}-{i}"))).unwrap();
                    }
                });
            }
        });
        let entries = ledger(&store).checked_entries().unwrap();
        assert_eq!(entries.len(), 40);
        let mut ids: Vec<String> = entries
            .iter()
            .map(|e| match &e.event {
                Event::Reject { release, .. } => release.clone(),
                _ => unreachable!(),
            })
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 40);
    }

    #[test]
    fn an_edited_entry_breaks_the_chain_at_the_next_seq_and_nothing_is_appended() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(&store);
        for i in 0..4 {
            l.append("me@here", reject(&format!("r{i}"))).unwrap();
        }
        let key = l.entry_key(2);
        let text = String::from_utf8(store.get(&key).unwrap().unwrap().body).unwrap();
        store.put(&key, text.replace("\"r1\"", "\"rX\"").as_bytes());
        match l.verify().unwrap() {
            ChainCheck::Broken { line, reason } => {
                assert_eq!(line, 3, "{reason}");
                assert!(reason.contains("sha256 of seq 2"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let err = l.append("me@here", reject("r4")).unwrap_err().to_string();
        assert!(err.contains("broken at seq 3"), "{err}");
        assert!(store.get(&l.entry_key(5)).unwrap().is_none());
    }

    #[test]
    fn a_removed_entry_or_last_entry_is_named() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(&store);
        for i in 0..4 {
            l.append("me@here", reject(&format!("r{i}"))).unwrap();
        }
        let last = store
            .objects
            .lock()
            .unwrap()
            .remove(&l.entry_key(4))
            .unwrap();
        match l.verify().unwrap() {
            ChainCheck::Broken { line, reason } => {
                assert_eq!(line, 4);
                assert!(reason.contains("head says the ledger has 4"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        store.put(&l.entry_key(4), &last.body);
        store.objects.lock().unwrap().remove(&l.entry_key(2));
        match l.verify().unwrap() {
            ChainCheck::Broken { line, reason } => {
                assert_eq!(line, 2);
                assert!(reason.contains("missing"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_changed_last_entry_does_not_match_the_head() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(&store);
        for i in 0..2 {
            l.append("me@here", reject(&format!("r{i}"))).unwrap();
        }
        let key = l.entry_key(2);
        let text = String::from_utf8(store.get(&key).unwrap().unwrap().body).unwrap();
        store.put(&key, text.replace("\"r1\"", "\"rX\"").as_bytes());
        match l.verify().unwrap() {
            ChainCheck::Broken { line, reason } => {
                assert_eq!(line, 2);
                assert!(reason.contains("head's sha256"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A head that lags (a writer died between its entry and the head) is accepted, and
    /// the next append moves it.
    #[test]
    fn a_lagging_head_is_accepted_and_caught_up() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(&store);
        l.append("me@here", reject("r0")).unwrap();
        let head = store.get("team/p/head.json").unwrap().unwrap();
        l.append("me@here", reject("r1")).unwrap();
        store.put("team/p/head.json", &head.body);
        assert!(matches!(
            l.verify().unwrap(),
            ChainCheck::Intact { entries: 2, .. }
        ));
        l.append("me@here", reject("r2")).unwrap();
        let head: Head =
            serde_json::from_slice(&store.get("team/p/head.json").unwrap().unwrap().body).unwrap();
        assert_eq!(head.seq, 3);
    }

    /// A push that stopped half-way is finished by the next; a seq taken meanwhile stops it.
    #[test]
    fn a_push_writes_the_missing_entries_unchanged() {
        let source = Arc::new(MemoryStore::default());
        let l = ledger(&source);
        for i in 0..3 {
            l.append("me@here", reject(&format!("r{i}"))).unwrap();
        }
        let lines = l.raw_entries().unwrap();
        let target = Arc::new(MemoryStore::default());
        let t = ledger(&target);
        assert!(t.push(&lines[..2], 0).unwrap());
        assert!(t.push(&lines, 2).unwrap());
        assert_eq!(t.raw_entries().unwrap(), lines);
        assert!(matches!(
            t.verify().unwrap(),
            ChainCheck::Intact { entries: 3, .. }
        ));
        // Someone appended seq 4 before this push of another seq 4 got there.
        t.append("them@there", reject("theirs")).unwrap();
        let mut more = lines.clone();
        more.push(b"{}".to_vec());
        assert!(!t.push(&more, 3).unwrap());
    }

    /// With a cache, a read gets only the head and the entries it has not seen; an entry
    /// changed in the store (another ETag) is read again and breaks the chain as without a
    /// cache; `verify` reads every entry.
    #[test]
    fn a_cached_read_gets_only_new_or_changed_entries() {
        let store = Arc::new(MemoryStore::default());
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(&store).with_cache(dir.path().to_path_buf());
        for i in 0..5 {
            l.append("me@here", reject(&format!("r{i}"))).unwrap();
        }
        let reads = |f: &dyn Fn()| -> Vec<String> {
            store.reads.lock().unwrap().clear();
            f();
            store.reads.lock().unwrap().clone()
        };
        // Its own appends were kept: only the head is read.
        let got = reads(&|| assert_eq!(l.checked_entries().unwrap().len(), 5));
        assert_eq!(got, ["team/p/head.json"]);

        // Another working copy (no cache) appends two: those two are read, once.
        let other = ledger(&store);
        other.append("them@there", reject("t1")).unwrap();
        other.append("them@there", reject("t2")).unwrap();
        let got = reads(&|| assert_eq!(l.checked_entries().unwrap().len(), 7));
        assert_eq!(
            got,
            [
                "team/p/head.json",
                "team/p/entries/00000000000000000006.json",
                "team/p/entries/00000000000000000007.json"
            ]
        );
        let got = reads(&|| assert_eq!(l.checked_entries().unwrap().len(), 7));
        assert_eq!(got.len(), 1, "{got:?}");

        // `verify` reads every entry from the store.
        let got = reads(&|| {
            assert!(matches!(
                l.verify().unwrap(),
                ChainCheck::Intact { entries: 7, .. }
            ))
        });
        assert_eq!(got.len(), 8, "{got:?}");

        // Seq 3 edited behind pipe's back: a new ETag, read again, the chain breaks at 4.
        let key = "team/p/entries/00000000000000000003.json";
        let mut edited: Entry =
            serde_json::from_slice(&store.get(key).unwrap().unwrap().body).unwrap();
        edited.who = "mallory@elsewhere".into();
        store.put(key, &serde_json::to_vec(&edited).unwrap());
        let got = reads(&|| {
            let err = l.checked_entries().unwrap_err().to_string();
            assert!(err.contains("broken at seq 4"), "{err}");
        });
        assert!(got.contains(&key.to_string()), "{got:?}");
    }

    /// S3's 409 for a write in flight that then did not land loses the condition with nothing
    /// written: an append retries the same seq, a push writes it and goes on, and a push of an
    /// entry that is already there (the same bytes) counts it as written.
    #[test]
    fn a_conflict_with_nothing_written_is_retried() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(&store);
        l.append("me@here", reject("r0")).unwrap();
        *store.conflicts.lock().unwrap() = 2;
        let e = l.append("me@here", reject("r1")).unwrap();
        assert_eq!(e.seq, 2);
        assert_eq!(*store.conflicts.lock().unwrap(), 0);
        let lines = l.raw_entries().unwrap();

        let target = Arc::new(MemoryStore::default());
        let t = ledger(&target);
        *target.conflicts.lock().unwrap() = 3;
        assert!(t.push(&lines, 0).unwrap());
        assert_eq!(t.raw_entries().unwrap(), lines);
        // Pushed again from the start (a push that died before renaming the local file).
        assert!(t.push(&lines, 0).unwrap());
        assert!(matches!(
            t.verify().unwrap(),
            ChainCheck::Intact { entries: 2, .. }
        ));
        // A conflict on every try ends the push (`pipe ledger push` says to run it again),
        // with nothing written.
        *target.conflicts.lock().unwrap() = u32::MAX;
        let mut more = lines.clone();
        more.push(b"{}".to_vec());
        assert!(!t.push(&more, 2).unwrap());
        assert_eq!(t.raw_entries().unwrap(), lines);
    }

    #[test]
    fn a_lock_is_taken_once_released_by_its_run_and_broken_conditionally() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(&store);
        let a = r#"{"run":"run-a","who":"alice@one"}"#;
        let b = r#"{"run":"run-b","who":"bob@two"}"#;
        assert_eq!(l.take_lock("production", a).unwrap(), None);
        assert_eq!(l.take_lock("production", b).unwrap().as_deref(), Some(a));
        // Another environment has its own lock.
        assert_eq!(l.take_lock("staging", b).unwrap(), None);
        assert!(!l.release_lock("production", "run-b").unwrap());
        assert!(l.release_lock("production", "run-a").unwrap());
        assert_eq!(l.take_lock("production", b).unwrap(), None);
        assert_eq!(
            l.break_lock("production", |v| v.contains("run-b")).unwrap(),
            Err(b.to_string())
        );
        assert_eq!(
            l.break_lock("production", |_| false).unwrap(),
            Ok(Some(b.to_string()))
        );
        assert_eq!(l.break_lock("production", |_| false).unwrap(), Ok(None));
    }
}

//! Releases: what a bake records, and their status derived from the whole ledger.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Entry, Event};
use crate::config::TargetKind;

/// The result of running `[verify]` on a fresh machine from a baked image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyOutcome {
    pub ok: bool,
    /// The last lines of the checks' output (secrets masked).
    pub excerpt: String,
}

/// A baked app image for an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// sha256 over the app digest, environment, artifacts and bake time.
    pub id: String,
    /// The id's first 10 characters, accepted wherever an id is.
    pub alias: String,
    pub pipeline: String,
    pub env: String,
    /// The target kind it was baked on.
    pub target: TargetKind,
    /// Artifact ids keyed by target, or by target and region (`ec2:eu-west-1`): `docker` →
    /// image id, `qemu` → the standalone qcow2, `ec2:<region>` → an AMI per region. The key
    /// format is what ledgers have always held, so every ledger written before reads as is.
    pub artifacts: BTreeMap<String, String>,
    pub base_digest: String,
    /// The base layer's image the app was built on (the base AMI), when the target records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_artifact: Option<String>,
    /// The snapshots behind each artifact, by the artifacts' keys (`ec2:<region>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub snapshots: BTreeMap<String, Vec<String>>,
    pub app_digest: String,
    pub git_commit: String,
    pub git_dirty: bool,
    /// sha256 of the Pipelinefile's text.
    pub pipelinefile_digest: String,
    pub who: String,
    pub when: String,
    /// `None` when baked with `--skip-verify`.
    pub verify: Option<VerifyOutcome>,
}

impl Release {
    /// Computes the id and alias from the other fields.
    pub fn seal(mut self) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [&self.app_digest, &self.env, &self.when] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        for (k, v) in &self.artifacts {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k.as_bytes());
            h.update((v.len() as u64).to_be_bytes());
            h.update(v.as_bytes());
        }
        self.id = hex::encode(h.finalize());
        self.alias = self.id[..10].to_string();
        self
    }
}

/// One artifact of a release: where it is, and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Artifact<'r> {
    /// The region of a cloud artifact; `None` on local targets.
    pub region: Option<&'r str>,
    pub id: &'r str,
}

impl Release {
    /// Its artifacts on `kind`, one per region (one, without a region, on local targets).
    pub fn artifacts_on(&self, kind: TargetKind) -> Vec<Artifact<'_>> {
        self.artifacts
            .iter()
            .filter_map(|(key, id)| {
                let (target, region) = match key.split_once(':') {
                    Some((t, r)) => (t, Some(r)),
                    None => (key.as_str(), None),
                };
                (target == kind.as_str()).then_some(Artifact {
                    region,
                    id: id.as_str(),
                })
            })
            .collect()
    }

    /// Its artifact on a local target (`kind` without a region).
    pub fn artifact(&self, kind: TargetKind) -> Option<&str> {
        self.artifacts_on(kind)
            .into_iter()
            .find(|a| a.region.is_none())
            .map(|a| a.id)
    }
}

/// The ledger key of an artifact: the target, or `target:region`.
pub fn artifact_key(kind: TargetKind, region: Option<&str>) -> String {
    match region {
        Some(r) => format!("{kind}:{r}"),
        None => kind.to_string(),
    }
}

/// An image `pipe prune` removed: where, its id, and the snapshots deleted with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedImage {
    /// The region of a cloud image; `None` on local targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
}

/// Where a release stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStatus {
    /// Baked, not verified (`--skip-verify`): cannot be promoted.
    Unverified,
    Verified,
    /// Verification failed: cannot be promoted.
    Failed,
    /// Rejected by `pipe reject`: cannot be promoted.
    Rejected,
    /// Its images were removed by `pipe prune`: cannot be promoted.
    Pruned,
}

/// A release with what the ledger says about it since.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseView {
    #[serde(flatten)]
    pub release: Release,
    pub status: ReleaseStatus,
    /// Environments where it is current now.
    pub current_in: Vec<String>,
    /// Environments it was ever promoted into successfully.
    pub promoted_to: Vec<String>,
    /// When its latest successful verification was recorded (the ledger entry's time: its
    /// bake's, or a later `pipe verify`'s); what `min_soak` counts from.
    pub verified_at: Option<String>,
    /// Who approved it for which environment, oldest first.
    pub approvals: Vec<Approval>,
}

/// An approval of a release for an environment (`pipe approve`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub env: String,
    /// `user@host`.
    pub who: String,
    /// RFC 3339, UTC: the ledger entry's time.
    pub when: String,
}

impl ReleaseView {
    pub fn promotable(&self) -> bool {
        self.status == ReleaseStatus::Verified
    }
}

/// Folds the ledger into releases (oldest first) and the current release of each environment.
pub fn releases(entries: &[Entry]) -> (Vec<ReleaseView>, BTreeMap<String, String>) {
    let mut views: Vec<ReleaseView> = Vec::new();
    let mut current: BTreeMap<String, String> = BTreeMap::new();
    let find =
        |views: &mut Vec<ReleaseView>, id: &str| views.iter().position(|v| v.release.id == id);
    for e in entries {
        match &e.event {
            Event::Bake { release } => {
                let status = match &release.verify {
                    None => ReleaseStatus::Unverified,
                    Some(v) if v.ok => ReleaseStatus::Verified,
                    Some(_) => ReleaseStatus::Failed,
                };
                views.push(ReleaseView {
                    release: (**release).clone(),
                    status,
                    current_in: Vec::new(),
                    promoted_to: Vec::new(),
                    verified_at: (status == ReleaseStatus::Verified).then(|| e.time.clone()),
                    approvals: Vec::new(),
                });
            }
            Event::Verify { release, outcome } => {
                if let Some(i) = find(&mut views, release) {
                    views[i].release.verify = Some(outcome.clone());
                    if outcome.ok {
                        views[i].verified_at = Some(e.time.clone());
                    }
                    if !matches!(
                        views[i].status,
                        ReleaseStatus::Rejected | ReleaseStatus::Pruned
                    ) {
                        views[i].status = if outcome.ok {
                            ReleaseStatus::Verified
                        } else {
                            ReleaseStatus::Failed
                        };
                    }
                }
            }
            Event::Promote {
                release, env, ok, ..
            }
            | Event::Rollback {
                release, env, ok, ..
            } => {
                if *ok {
                    current.insert(env.clone(), release.clone());
                    if let Some(i) = find(&mut views, release)
                        && !views[i].promoted_to.contains(env)
                    {
                        views[i].promoted_to.push(env.clone());
                    }
                }
            }
            Event::Reject { release, .. } => {
                if let Some(i) = find(&mut views, release)
                    && views[i].status != ReleaseStatus::Pruned
                {
                    views[i].status = ReleaseStatus::Rejected;
                }
            }
            Event::Prune { release, .. } => {
                if let Some(i) = find(&mut views, release) {
                    views[i].status = ReleaseStatus::Pruned;
                }
            }
            Event::Approve { release, env } => {
                if let Some(i) = find(&mut views, release) {
                    views[i].approvals.push(Approval {
                        env: env.clone(),
                        who: e.who.clone(),
                        when: e.time.clone(),
                    });
                }
            }
            Event::Destroy { release, env, .. } => {
                if current.get(env) == Some(release) {
                    current.remove(env);
                }
            }
            Event::BreakLock { .. } | Event::Share { .. } => {}
        }
    }
    for v in &mut views {
        v.current_in = current
            .iter()
            .filter(|(_, id)| **id == v.release.id)
            .map(|(env, _)| env.clone())
            .collect();
    }
    (views, current)
}

/// The release `pipe rollback ENV` re-promotes: the one that was current in `env` before the
/// current one (the `previous` of the last successful promotion or rollback there). Rolling back
/// twice thus returns to where it started, like `kubectl rollout undo`.
pub fn previous_release(entries: &[Entry], env: &str) -> Option<String> {
    // Nothing serves it (its serving machine was destroyed): nothing to roll back from.
    if !releases(entries).1.contains_key(env) {
        return None;
    }
    entries.iter().rev().find_map(|e| match &e.event {
        Event::Promote {
            env: en,
            ok: true,
            previous,
            ..
        }
        | Event::Rollback {
            env: en,
            ok: true,
            previous,
            ..
        } if en == env => Some(previous.clone()),
        _ => None,
    })?
}

/// The environment an entry is about (a verification or rejection: its release's).
pub fn entry_env(entry: &Entry, views: &[ReleaseView]) -> Option<String> {
    let of = |id: &str| {
        views
            .iter()
            .find(|v| v.release.id == id)
            .map(|v| v.release.env.clone())
    };
    match &entry.event {
        Event::Bake { release } => Some(release.env.clone()),
        Event::Promote { env, .. }
        | Event::Rollback { env, .. }
        | Event::Approve { env, .. }
        | Event::Destroy { env, .. }
        | Event::Prune { env, .. }
        | Event::Share { env, .. }
        | Event::BreakLock { env, .. } => Some(env.clone()),
        Event::Verify { release, .. } | Event::Reject { release, .. } => of(release),
    }
}

/// Finds a release by full id, alias, or any unique prefix of at least 6 characters.
pub fn find_release<'a>(views: &'a [ReleaseView], key: &str) -> Result<&'a ReleaseView, String> {
    let matches: Vec<&ReleaseView> = views
        .iter()
        .filter(|v| v.release.id == key || (key.len() >= 6 && v.release.id.starts_with(key)))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] if key.len() < 6 => Err(format!(
            "`{key}` is too short to name a release: give at least 6 characters of its id"
        )),
        [] => Err(format!("no release `{key}` in the ledger")),
        _ => Err(format!(
            "`{key}` matches {} releases; give more characters",
            matches.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bake entry as pipe wrote them before targets were typed and artifacts had regions.
    const OLD: &str = r#"{"id":"ab","alias":"ab","pipeline":"p","env":"staging","target":"docker",
        "artifacts":{"docker":"sha256:1"},"base_digest":"b","app_digest":"a","git_commit":"c",
        "git_dirty":false,"pipelinefile_digest":"d","who":"w","when":"t","verify":null}"#;

    #[test]
    fn releases_written_before_still_read_and_artifacts_carry_regions() {
        let old: Release = serde_json::from_str(OLD).unwrap();
        assert_eq!(old.target, TargetKind::Docker);
        assert_eq!(old.artifact(TargetKind::Docker), Some("sha256:1"));
        assert!(old.artifacts_on(TargetKind::Ec2).is_empty());
        // Written back, the target is the same string as before.
        let text = serde_json::to_string(&old).unwrap();
        assert!(text.contains(r#""target":"docker""#), "{text}");
        // Listings pad it like the string it was.
        assert_eq!(format!("{:<8}|", old.target), "docker  |");

        let mut ec2 = old.clone();
        ec2.target = TargetKind::Ec2;
        ec2.artifacts = BTreeMap::from([
            (
                artifact_key(TargetKind::Ec2, Some("us-east-1")),
                "ami-1".into(),
            ),
            (
                artifact_key(TargetKind::Ec2, Some("eu-west-1")),
                "ami-2".into(),
            ),
        ]);
        let amis = ec2.artifacts_on(TargetKind::Ec2);
        assert_eq!(
            amis,
            vec![
                Artifact {
                    region: Some("eu-west-1"),
                    id: "ami-2"
                },
                Artifact {
                    region: Some("us-east-1"),
                    id: "ami-1"
                },
            ]
        );
        assert_eq!(ec2.artifact(TargetKind::Ec2), None, "no region-less AMI");
    }

    fn entry(seq: u64, time: &str, who: &str, event: Event) -> Entry {
        Entry {
            seq,
            prev: String::new(),
            time: time.into(),
            who: who.into(),
            event,
        }
    }

    fn outcome(ok: bool) -> VerifyOutcome {
        VerifyOutcome {
            ok,
            excerpt: String::new(),
        }
    }

    #[test]
    fn soak_counts_from_the_latest_successful_verification_and_approvals_are_kept() {
        let mut r: Release = serde_json::from_str(OLD).unwrap();
        r.verify = Some(outcome(true));
        let id = r.id.clone();
        let verify = |ok| Event::Verify {
            release: id.clone(),
            outcome: outcome(ok),
        };
        let approve = |env: &str| Event::Approve {
            release: id.clone(),
            env: env.into(),
        };
        let t = |h: u32| format!("2025-01-01T{h:02}:00:00Z");
        let mut entries = vec![entry(
            1,
            &t(1),
            "bob@a",
            Event::Bake {
                release: Box::new(r.clone()),
            },
        )];
        let (views, _) = releases(&entries);
        assert_eq!(views[0].verified_at.as_deref(), Some(t(1).as_str()));
        assert!(views[0].approvals.is_empty());

        entries.push(entry(2, &t(2), "bob@a", verify(true)));
        entries.push(entry(3, &t(3), "alice@b", approve("production")));
        entries.push(entry(4, &t(4), "bob@a", verify(false)));
        let (views, _) = releases(&entries);
        // A failed verification is not one to count from; the release is failed anyway.
        assert_eq!(views[0].verified_at.as_deref(), Some(t(2).as_str()));
        assert_eq!(views[0].status, ReleaseStatus::Failed);
        assert_eq!(
            views[0].approvals,
            vec![Approval {
                env: "production".into(),
                who: "alice@b".into(),
                when: t(3)
            }]
        );
        entries.push(entry(5, &t(5), "bob@a", verify(true)));
        let (views, _) = releases(&entries);
        assert_eq!(views[0].verified_at.as_deref(), Some(t(5).as_str()));
        assert_eq!(views[0].status, ReleaseStatus::Verified);
        assert_eq!(
            entry_env(&entries[2], &views).as_deref(),
            Some("production")
        );

        // Baked without verification: nothing to count from.
        r.verify = None;
        let (views, _) = releases(&[entry(
            1,
            &t(1),
            "bob@a",
            Event::Bake {
                release: Box::new(r),
            },
        )]);
        assert_eq!(views[0].verified_at, None);
    }

    /// `pipe destroy` of the machine serving an environment's current release: the release is
    /// no longer current there, nothing is left to roll back from, and the destroy of a
    /// machine running an older release changes nothing (issue 13).
    #[test]
    fn a_destroyed_serving_machine_leaves_its_environment_serving_nothing() {
        let mut a: Release = serde_json::from_str(OLD).unwrap();
        a.verify = Some(outcome(true));
        let mut b = a.clone();
        b.id = "cd".into();
        let promote = |release: &str, previous: Option<&str>| Event::Promote {
            release: release.into(),
            env: "production".into(),
            ok: true,
            previous: previous.map(str::to_string),
            detail: None,
        };
        let destroy = |release: &str| Event::Destroy {
            release: release.into(),
            env: "production".into(),
            machine: "pipe-p-production-x".into(),
        };
        let t = "2025-01-01T00:00:00Z";
        let mut entries = vec![
            entry(
                1,
                t,
                "w",
                Event::Bake {
                    release: Box::new(a.clone()),
                },
            ),
            entry(
                2,
                t,
                "w",
                Event::Bake {
                    release: Box::new(b.clone()),
                },
            ),
            entry(3, t, "w", promote("ab", None)),
            entry(4, t, "w", promote("cd", Some("ab"))),
            // An old machine of `ab` going changes nothing: `cd` serves.
            entry(5, t, "w", destroy("ab")),
        ];
        let (views, current) = releases(&entries);
        assert_eq!(current.get("production").map(String::as_str), Some("cd"));
        assert_eq!(views[1].current_in, vec!["production".to_string()]);
        assert_eq!(
            previous_release(&entries, "production").as_deref(),
            Some("ab")
        );

        entries.push(entry(6, t, "w", destroy("cd")));
        let (views, current) = releases(&entries);
        assert_eq!(current.get("production"), None);
        assert!(views.iter().all(|v| v.current_in.is_empty()));
        assert_eq!(previous_release(&entries, "production"), None);
        assert_eq!(
            entry_env(&entries[5], &views).as_deref(),
            Some("production")
        );

        // Promoted again, it serves again.
        entries.push(entry(7, t, "w", promote("cd", None)));
        let (_, current) = releases(&entries);
        assert_eq!(current.get("production").map(String::as_str), Some("cd"));
    }
}

//! The gates a release passes before it becomes current in an environment (exit code 5 when
//! one refuses): what `pipe promote` and `pipe rollback` check before they switch anything.
//!
//! Every gate gives a [`Verdict`]; `--plan` shows them all, a promotion goes ahead only when
//! none refuses. The release's own gates (verified and not rejected, baked for this kind of
//! target, from the right environment) always apply. The environment's gates (`min_soak`,
//! `require_approval`) apply to promotions and are skipped by rollbacks: a rollback restores
//! what ran there before, and refusing it for soak time or a missing approval would hold up
//! the way back from a bad release.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Pipelinefile, TargetKind, duration};
use crate::error::Error;
use crate::ledger::{ReleaseStatus, ReleaseView, user_of};
use crate::plan;

/// A refusing gate (exit code 5).
pub fn gate(message: impl Into<String>, hint: Option<String>) -> Error {
    Error::Gate {
        message: message.into(),
        hint,
    }
}

/// ` --local` when ENV's declared target differs from where it runs.
pub fn local_flag(pf: &Pipelinefile, env: &str, target: TargetKind) -> &'static str {
    if pf.envs.get(env).is_some_and(|e| e.target.value != target) {
        " --local"
    } else {
        ""
    }
}

/// What one gate said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Refused,
    /// Set for the environment, not applied to this switch (a rollback).
    Skipped,
}

/// One gate's verdict on a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `verified`, `target`, `source`, `min_soak`, `approval`.
    pub gate: &'static str,
    pub outcome: Outcome,
    /// Why, as a sentence (the error's message when it refuses).
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Verdict {
    fn passed(gate: &'static str, detail: String) -> Self {
        Self {
            gate,
            outcome: Outcome::Passed,
            detail,
            hint: None,
        }
    }

    fn refused(gate: &'static str, detail: String, hint: Option<String>) -> Self {
        Self {
            gate,
            outcome: Outcome::Refused,
            detail,
            hint,
        }
    }

    fn skipped(gate: &'static str, detail: &str) -> Self {
        Self {
            gate,
            outcome: Outcome::Skipped,
            detail: detail.to_string(),
            hint: None,
        }
    }

    pub fn refuses(&self) -> bool {
        self.outcome == Outcome::Refused
    }
}

/// A switch of an environment, as the gates see it.
#[derive(Debug, Clone)]
pub struct Promotion<'a> {
    /// The environment switched.
    pub env: &'a str,
    /// Where its releases come from (`promote_from`, else itself).
    pub source: &'a str,
    /// What it runs on here.
    pub target: TargetKind,
    /// ` --local` when that is not its declared target (for hints).
    pub local_flag: &'static str,
    pub min_soak: Option<Duration>,
    pub require_approval: bool,
    /// `user@host` of whoever switches it.
    pub who: String,
    pub now: DateTime<Utc>,
    pub rollback: bool,
}

impl<'a> Promotion<'a> {
    /// A switch of `env` by whoever runs pipe, now, with the environment's gates.
    pub fn new(
        pf: &'a Pipelinefile,
        env: &'a str,
        source: &'a str,
        target: TargetKind,
        rollback: bool,
    ) -> Self {
        let e = pf.envs.get(env);
        Self {
            env,
            source,
            target,
            local_flag: local_flag(pf, env, target),
            min_soak: e.and_then(|e| e.min_soak.as_ref()).map(|s| s.value),
            require_approval: e.is_some_and(|e| e.require_approval),
            who: crate::ledger::who(),
            now: Utc::now(),
            rollback,
        }
    }
}

/// Every gate's verdict on switching `p.env` to `view`, in the order they are shown.
pub fn check(p: &Promotion<'_>, view: &ReleaseView) -> Vec<Verdict> {
    let mut out = vec![
        verified(view),
        target(p, view),
        source(view, p.env, p.source),
    ];
    const ROLLBACK: &str = "not applied to a rollback: it restores what ran there before";
    if let Some(min) = p.min_soak {
        out.push(if p.rollback {
            Verdict::skipped("min_soak", ROLLBACK)
        } else {
            soak(view, p.env, min, p.now)
        });
    }
    if p.require_approval {
        out.push(if p.rollback {
            Verdict::skipped("approval", ROLLBACK)
        } else {
            approval(view, p.env, &p.who)
        });
    }
    out
}

/// The error of the gates that refuse (exit code 5), if any does.
pub fn refusal(verdicts: &[Verdict]) -> Option<Error> {
    let refused: Vec<&Verdict> = verdicts.iter().filter(|v| v.refuses()).collect();
    if refused.is_empty() {
        return None;
    }
    let message: Vec<&str> = refused.iter().map(|v| v.detail.as_str()).collect();
    let hints: Vec<&str> = refused.iter().filter_map(|v| v.hint.as_deref()).collect();
    Some(gate(
        message.join("; and "),
        (!hints.is_empty()).then(|| hints.join("; ")),
    ))
}

/// Whether one of the release's own gates refuses: then there is nothing to plan with it
/// (its artifact may not even exist on this target).
pub fn blocks_plan(verdicts: &[Verdict]) -> bool {
    verdicts
        .iter()
        .any(|v| v.refuses() && matches!(v.gate, "verified" | "target" | "source"))
}

/// The verdicts as lines, for `--plan`.
pub fn report(verdicts: &[Verdict]) -> String {
    let mut out = String::from("gates:\n");
    for v in verdicts {
        let outcome = match v.outcome {
            Outcome::Passed => "passed",
            Outcome::Refused => "REFUSED",
            Outcome::Skipped => "skipped",
        };
        out.push_str(&format!("  {:<9} {outcome:<8} {}\n", v.gate, v.detail));
    }
    out
}

/// Verified, and not rejected since.
pub fn verified(view: &ReleaseView) -> Verdict {
    let r = &view.release;
    let why = match view.status {
        ReleaseStatus::Verified => {
            return Verdict::passed("verified", format!("release {} is verified", r.alias));
        }
        ReleaseStatus::Unverified => "was never verified (baked with --skip-verify)",
        ReleaseStatus::Failed => "failed verification",
        ReleaseStatus::Rejected => "was rejected (`pipe reject`)",
        ReleaseStatus::Pruned => "was pruned (`pipe prune`): its images are gone",
    };
    Verdict::refused(
        "verified",
        format!("release {} {why}: it cannot be promoted", r.alias),
        Some(format!("bake a new one: pipe bake --env {}", r.env)),
    )
}

/// Baked on the kind of target the environment runs on here.
fn target(p: &Promotion<'_>, view: &ReleaseView) -> Verdict {
    let (r, env, target, flag) = (&view.release, p.env, p.target, p.local_flag);
    if r.target == target {
        return Verdict::passed("target", format!("baked on {target}"));
    }
    Verdict::refused(
        "target",
        format!(
            "release {} was baked on {}, and `{env}` runs on {target} here",
            r.alias, r.target
        ),
        Some(if flag.is_empty() && r.target == plan::LOCAL {
            format!(
                "releases baked with --local are promoted with --local: pipe promote {env} --local"
            )
        } else {
            format!("bake for {target}: pipe bake --env {}{flag}", r.env)
        }),
    )
}

/// Baked in the environment `env` takes releases from (or in `env` itself).
pub fn source(view: &ReleaseView, env: &str, source: &str) -> Verdict {
    let r = &view.release;
    if r.env == source || r.env == env {
        return Verdict::passed("source", format!("baked in `{}`", r.env));
    }
    Verdict::refused(
        "source",
        format!(
            "release {} was baked in `{}`; `{env}` takes releases from `{source}`",
            r.alias, r.env
        ),
        None,
    )
}

/// `min_soak`: at least `min` since the release's latest successful verification.
fn soak(view: &ReleaseView, env: &str, min: Duration, now: DateTime<Utc>) -> Verdict {
    let alias = &view.release.alias;
    let min_text = duration::format(min);
    let Some(at) = &view.verified_at else {
        return Verdict::refused(
            "min_soak",
            format!("release {alias} has no successful verification to count `min_soak` from"),
            None,
        );
    };
    let Ok(at) = DateTime::parse_from_rfc3339(at).map(|t| t.with_timezone(&Utc)) else {
        return Verdict::refused(
            "min_soak",
            format!("release {alias}'s verification time `{at}` is not a time"),
            Some("`pipe history --verify` checks the ledger".into()),
        );
    };
    // A verification stamped in the future (another host's clock) has soaked for nothing yet.
    let soaked = (now - at).to_std().unwrap_or(Duration::ZERO);
    let ago = duration::format(soaked);
    if soaked >= min {
        return Verdict::passed(
            "min_soak",
            format!("verified {ago} ago, at least {min_text} (min_soak)"),
        );
    }
    // Whole seconds, rounded up: never "0s left" while it still refuses.
    let left = min - soaked;
    let left = Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0));
    let ready = chrono::Duration::from_std(min)
        .ok()
        .and_then(|m| at.checked_add_signed(m))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    Verdict::refused(
        "min_soak",
        format!(
            "release {alias} was verified {ago} ago, and `{env}` takes releases verified at least {min_text} ago (min_soak): {} left",
            duration::format(left)
        ),
        ready.map(|t| format!("promote it at {t} or later")),
    )
}

/// `require_approval`: approved for `env` by another user than the one promoting (`who`).
fn approval(view: &ReleaseView, env: &str, who: &str) -> Verdict {
    let alias = &view.release.alias;
    let me = user_of(who);
    let (others, own): (Vec<_>, Vec<_>) = view
        .approvals
        .iter()
        .filter(|a| a.env == env)
        .partition(|a| user_of(&a.who) != me);
    if !others.is_empty() {
        let by: Vec<String> = others
            .iter()
            .map(|a| format!("{} at {}", a.who, a.when))
            .collect();
        return Verdict::passed("approval", format!("approved by {}", by.join(", ")));
    }
    let ask = format!("someone other than {me} runs: pipe approve {alias} --env {env}");
    if own.is_empty() {
        Verdict::refused(
            "approval",
            format!("release {alias} is not approved for `{env}` (require_approval)"),
            Some(ask),
        )
    } else {
        Verdict::refused(
            "approval",
            format!(
                "release {alias} is approved for `{env}` only by {me}, who is promoting it: an approval must come from another user (require_approval)"
            ),
            Some(ask),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Approval, Release};

    const RELEASE: &str = r#"{"id":"abcdef0123456789","alias":"abcdef0123","pipeline":"p",
        "env":"staging","target":"docker","artifacts":{"docker":"sha256:1"},"base_digest":"b",
        "app_digest":"a","git_commit":"c","git_dirty":false,"pipelinefile_digest":"d",
        "who":"bob@ci","when":"2025-01-01T10:00:00Z","verify":{"ok":true,"excerpt":""}}"#;

    fn view(
        status: ReleaseStatus,
        verified_at: Option<&str>,
        approvals: &[(&str, &str)],
    ) -> ReleaseView {
        let release: Release = serde_json::from_str(RELEASE).unwrap();
        ReleaseView {
            release,
            status,
            current_in: Vec::new(),
            promoted_to: Vec::new(),
            verified_at: verified_at.map(str::to_string),
            approvals: approvals
                .iter()
                .map(|(env, who)| Approval {
                    env: env.to_string(),
                    who: who.to_string(),
                    when: "2025-01-01T10:30:00Z".into(),
                })
                .collect(),
        }
    }

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    fn promotion(who: &str, now: &str) -> Promotion<'static> {
        Promotion {
            env: "production",
            source: "staging",
            target: TargetKind::Docker,
            local_flag: "",
            min_soak: Some(Duration::from_secs(2 * 3600)),
            require_approval: true,
            who: who.into(),
            now: at(now),
            rollback: false,
        }
    }

    fn verdict<'v>(vs: &'v [Verdict], gate: &str) -> &'v Verdict {
        vs.iter()
            .find(|v| v.gate == gate)
            .unwrap_or_else(|| panic!("no {gate} in {vs:?}"))
    }

    #[test]
    fn min_soak_counts_from_the_verification_and_says_how_long_is_left() {
        let v = view(ReleaseStatus::Verified, Some("2025-01-01T10:00:00Z"), &[]);
        let mut p = promotion("bob@ci", "2025-01-01T11:15:00Z");
        p.require_approval = false;
        let vs = check(&p, &v);
        let soak = verdict(&vs, "min_soak");
        assert!(soak.refuses());
        assert!(
            soak.detail.contains("verified 1h15m ago"),
            "{}",
            soak.detail
        );
        assert!(soak.detail.contains("at least 2h ago"), "{}", soak.detail);
        assert!(soak.detail.ends_with("45m left"), "{}", soak.detail);
        assert_eq!(
            soak.hint.as_deref(),
            Some("promote it at 2025-01-01T12:00:00Z or later")
        );
        let e = refusal(&vs).unwrap();
        assert_eq!(e.exit_code(), crate::error::exit::GATE);
        assert!(!blocks_plan(&vs), "the plan can still be shown");

        // Exactly the soak time, and later: passes.
        for now in ["2025-01-01T12:00:00Z", "2025-01-02T00:00:00Z"] {
            p.now = at(now);
            let vs = check(&p, &v);
            assert_eq!(verdict(&vs, "min_soak").outcome, Outcome::Passed, "{now}");
            assert!(refusal(&vs).is_none());
        }
        // One second short: one second left, never "0s".
        p.now = at("2025-01-01T11:59:59Z");
        assert!(
            verdict(&check(&p, &v), "min_soak")
                .detail
                .ends_with(": 1s left")
        );
        // Stamped in the future by another host's clock: the whole soak is left.
        p.now = at("2025-01-01T09:00:00Z");
        assert!(
            verdict(&check(&p, &v), "min_soak")
                .detail
                .ends_with(": 2h left")
        );
    }

    #[test]
    fn an_approval_counts_only_from_another_user() {
        let p = promotion("bob@laptop", "2025-01-02T00:00:00Z");
        let none = view(ReleaseStatus::Verified, Some("2025-01-01T10:00:00Z"), &[]);
        let a = verdict(&check(&p, &none), "approval").clone();
        assert!(
            a.refuses() && a.detail.contains("is not approved for `production`"),
            "{a:?}"
        );
        assert_eq!(
            a.hint.as_deref(),
            Some("someone other than bob runs: pipe approve abcdef0123 --env production")
        );

        // Bob's own approval, from another host, or for another environment, does not count.
        let own = view(
            ReleaseStatus::Verified,
            Some("2025-01-01T10:00:00Z"),
            &[("production", "bob@ci"), ("staging", "alice@desk")],
        );
        let a = verdict(&check(&p, &own), "approval").clone();
        assert!(a.refuses(), "{a:?}");
        assert!(
            a.detail.contains("only by bob, who is promoting it"),
            "{}",
            a.detail
        );

        let other = view(
            ReleaseStatus::Verified,
            Some("2025-01-01T10:00:00Z"),
            &[("production", "bob@ci"), ("production", "alice@desk")],
        );
        let vs = check(&p, &other);
        let a = verdict(&vs, "approval");
        assert_eq!(a.outcome, Outcome::Passed);
        assert!(
            a.detail.contains("alice@desk") && !a.detail.contains("bob"),
            "{}",
            a.detail
        );
        assert!(refusal(&vs).is_none());
    }

    #[test]
    fn every_refusal_is_reported_and_a_rollback_skips_the_environment_gates() {
        let p = promotion("bob@laptop", "2025-01-01T10:00:01Z");
        let v = view(ReleaseStatus::Verified, Some("2025-01-01T10:00:00Z"), &[]);
        let vs = check(&p, &v);
        let gates: Vec<(&str, Outcome)> = vs.iter().map(|v| (v.gate, v.outcome)).collect();
        assert_eq!(
            gates,
            vec![
                ("verified", Outcome::Passed),
                ("target", Outcome::Passed),
                ("source", Outcome::Passed),
                ("min_soak", Outcome::Refused),
                ("approval", Outcome::Refused),
            ]
        );
        let e = refusal(&vs).unwrap().to_string();
        assert!(
            e.contains("min_soak") && e.contains("require_approval"),
            "{e}"
        );
        let report = report(&vs);
        assert!(
            report.contains("  min_soak  REFUSED  release abcdef0123 was verified 1s ago"),
            "{report}"
        );

        let back = Promotion {
            rollback: true,
            ..p.clone()
        };
        let vs = check(&back, &v);
        assert_eq!(verdict(&vs, "min_soak").outcome, Outcome::Skipped);
        assert_eq!(verdict(&vs, "approval").outcome, Outcome::Skipped);
        assert!(refusal(&vs).is_none());

        // The release's own gates still apply to a rollback, and block a plan.
        let rejected = view(ReleaseStatus::Rejected, Some("2025-01-01T10:00:00Z"), &[]);
        let vs = check(&back, &rejected);
        assert!(verdict(&vs, "verified").refuses());
        assert!(blocks_plan(&vs));
        let wrong = Promotion {
            target: TargetKind::Qemu,
            source: "canary",
            ..back
        };
        let vs = check(&wrong, &v);
        assert!(verdict(&vs, "target").refuses() && verdict(&vs, "source").refuses());

        // Without the environment's gates there is no verdict for them.
        let plain = Promotion {
            min_soak: None,
            require_approval: false,
            ..p
        };
        assert_eq!(check(&plain, &v).len(), 3);
    }
}

//! `pipe prune --env NAME --keep N [--plan]`: removes the images of an environment's old
//! releases, keeping its newest N, and never one that is current or previous (what `pipe
//! rollback` goes back to) in any environment, whose image something outside the ledger uses
//! (a launch template version), whose image a release that stays shares, or that the target
//! will not remove (a protected AMI). Each pruned release is recorded in the ledger once its
//! images are gone, so an interrupted prune is finished by running it again; a pruned
//! release can no longer be promoted. Base images stay: later bakes reuse them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::cli::PruneArgs;
use crate::error::{Error, Result};
use crate::ledger::{
    Event, Ledger, PrunedImage, ReleaseStatus, ReleaseView, previous_release, releases, who,
};
use crate::targets::PrunePlan;

use super::Ctx;

/// What becomes of one release of the environment.
#[derive(Debug, Clone)]
pub struct Decision<'v> {
    pub view: &'v ReleaseView,
    /// Why it stays; `None`: its images go.
    pub keep: Option<String>,
}

/// The environment's releases on `kind`, newest first, each kept (and why) or not. Pure: the
/// target is asked afterwards about the ones that go (a protected AMI still keeps one).
pub fn select<'v>(
    views: &'v [ReleaseView],
    env: &str,
    kind: crate::config::TargetKind,
    keep: usize,
    previous: &BTreeMap<String, String>,
    in_use: &BTreeMap<String, String>,
) -> Vec<Decision<'v>> {
    let mut out: Vec<Decision<'v>> = Vec::new();
    let mine = views
        .iter()
        .rev()
        .filter(|v| v.release.env == env && v.release.target == kind)
        .filter(|v| v.status != ReleaseStatus::Pruned);
    for (n, v) in mine.enumerate() {
        let r = &v.release;
        let why = if n < keep {
            Some(format!("one of the newest {keep} of `{env}`"))
        } else if !v.current_in.is_empty() {
            Some(format!("current in {}", quoted(&v.current_in)))
        } else if let Some(envs) = previous_in(previous, &r.id) {
            Some(format!(
                "previous in {envs} (what `pipe rollback` goes back to)"
            ))
        } else {
            r.artifacts
                .values()
                .find_map(|id| in_use.get(id).map(|why| format!("its image {id}: {why}")))
        };
        out.push(Decision { view: v, keep: why });
    }
    // An image shared with a release that stays (an unchanged re-bake reuses the app image,
    // other environments may hold the same one) stays with it.
    let going: BTreeSet<&str> = out
        .iter()
        .filter(|d| d.keep.is_none())
        .map(|d| d.view.release.id.as_str())
        .collect();
    let staying: Vec<&ReleaseView> = views
        .iter()
        .filter(|v| v.status != ReleaseStatus::Pruned && !going.contains(v.release.id.as_str()))
        .collect();
    for d in out.iter_mut().filter(|d| d.keep.is_none()) {
        let r = &d.view.release;
        d.keep = staying.iter().find_map(|s| {
            let shared = r
                .artifacts
                .values()
                .find(|id| s.release.artifacts.values().any(|o| o == *id));
            let what = match shared {
                Some(id) => format!("its image {id}"),
                None if s.release.app_digest == r.app_digest && s.release.target == r.target => {
                    "its app layer".to_string()
                }
                None => return None,
            };
            Some(format!(
                "{what} is also release {}'s, which stays",
                s.release.alias
            ))
        });
    }
    out
}

fn quoted(envs: &[String]) -> String {
    envs.iter()
        .map(|e| format!("`{e}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn previous_in(previous: &BTreeMap<String, String>, id: &str) -> Option<String> {
    let envs: Vec<String> = previous
        .iter()
        .filter(|(_, p)| *p == id)
        .map(|(e, _)| e.clone())
        .collect();
    (!envs.is_empty()).then(|| quoted(&envs))
}

#[derive(Debug, Serialize)]
struct Kept {
    release: String,
    alias: String,
    reason: String,
}

#[derive(Debug, Serialize)]
struct Removed {
    release: String,
    alias: String,
    images: Vec<PrunedImage>,
}

fn describe(images: &[PrunedImage]) -> String {
    if images.is_empty() {
        return "nothing left to remove".to_string();
    }
    images
        .iter()
        .map(|i| {
            let place = i
                .region
                .as_ref()
                .map(|r| format!(" in {r}"))
                .unwrap_or_default();
            let id = if i.id.is_empty() { "(gone)" } else { &i.id };
            format!("{id}{place} ({} snapshot(s))", i.snapshots.len())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn run(ctx: &Ctx, args: PruneArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let Some(asked) = ctx.global.env.as_deref() else {
        return Err(Error::usage(
            "`pipe prune` needs the environment whose releases it prunes",
            Some("pipe prune --env staging --keep 5".to_string()),
        ));
    };
    let env = crate::plan::pick_env(&pf, Some(asked))?;
    let kind = pf.envs[&env].target.value;
    let target = crate::targets::open(kind, &pf)?;
    let ledger = Ledger::of(&pf)?;
    let entries = ledger.checked_entries()?;
    let (views, current) = releases(&entries);
    let previous: BTreeMap<String, String> = current
        .keys()
        .filter_map(|e| previous_release(&entries, e).map(|p| (e.clone(), p)))
        .collect();
    let in_use = target.images_in_use(&pf)?;
    let decisions = select(&views, &env, kind, args.keep, &previous, &in_use);
    if !args.plan {
        crate::interrupt::install();
    }
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    let mut human = String::new();
    let mut unsupported = false;
    for d in &decisions {
        let r = &d.view.release;
        let reason = match &d.keep {
            Some(why) => Some(why.clone()),
            None => match target.prune_plan(&pf, r, &in_use)? {
                None => {
                    unsupported = true;
                    break;
                }
                Some(PrunePlan::Keep(why)) => {
                    ctx.printer
                        .warn(format!("release {} stays: {why}", r.alias), None);
                    Some(why)
                }
                Some(PrunePlan::Remove(images)) => {
                    if !args.plan {
                        target.prune_artifacts(&pf, r, &images)?;
                        ledger.append(
                            &who(),
                            Event::Prune {
                                release: r.id.clone(),
                                env: env.clone(),
                                images: images.clone(),
                            },
                        )?;
                    }
                    human.push_str(&format!(
                        "{} {} (baked {}): {}\n",
                        if args.plan { "would remove" } else { "removed" },
                        r.alias,
                        r.when.get(..19).unwrap_or(&r.when),
                        describe(&images)
                    ));
                    removed.push(Removed {
                        release: r.id.clone(),
                        alias: r.alias.clone(),
                        images,
                    });
                    None
                }
            },
        };
        if let Some(reason) = reason {
            human.push_str(&format!("keep {}: {reason}\n", r.alias));
            kept.push(Kept {
                release: r.id.clone(),
                alias: r.alias.clone(),
                reason,
            });
        }
    }
    if unsupported {
        ctx.printer.result(
            "prune",
            serde_json::json!({"env": env, "keep": args.keep, "plan": args.plan, "removed": [], "kept": [], "target": kind}),
            &format!(
                "nothing to prune on {kind}: its images live on this host (`pipe clean` and `pipe box remove` free space there)"
            ),
        );
        return Ok(());
    }
    if decisions.is_empty() {
        human.push_str(&format!("`{env}` has no releases on {kind} to prune\n"));
    } else if removed.is_empty() {
        human.push_str("nothing to remove\n");
    }
    human.push_str("base images stay: later bakes with the same base reuse them\n");
    if args.plan {
        human.push_str("nothing was changed (--plan)");
    }
    ctx.printer.result(
        "prune",
        serde_json::json!({
            "env": env,
            "keep": args.keep,
            "plan": args.plan,
            "removed": removed,
            "kept": kept,
        }),
        human.trim_end(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetKind;
    use crate::ledger::{Entry, Release};

    fn bake(seq: u64, id: &str, env: &str, ami: &str, digest: &str) -> Entry {
        let text = format!(
            r#"{{"id":"{id}","alias":"{id}","pipeline":"p","env":"{env}","target":"ec2",
            "artifacts":{{"ec2:us-east-1":"{ami}"}},"base_digest":"b","app_digest":"{digest}",
            "git_commit":"c","git_dirty":false,"pipelinefile_digest":"d","who":"w","when":"t{seq}",
            "verify":{{"ok":true,"excerpt":""}}}}"#
        );
        let release: Release = serde_json::from_str(&text).unwrap();
        entry(
            seq,
            Event::Bake {
                release: Box::new(release),
            },
        )
    }

    fn entry(seq: u64, event: Event) -> Entry {
        Entry {
            seq,
            prev: String::new(),
            time: format!("2025-01-01T00:00:{seq:02}Z"),
            who: "w".into(),
            event,
        }
    }

    fn promote(seq: u64, id: &str, env: &str, previous: Option<&str>) -> Entry {
        entry(
            seq,
            Event::Promote {
                release: id.into(),
                env: env.into(),
                ok: true,
                previous: previous.map(str::to_string),
                detail: None,
            },
        )
    }

    fn decide(
        entries: &[Entry],
        keep: usize,
        in_use: &[(&str, &str)],
    ) -> Vec<(String, Option<String>)> {
        let (views, current) = releases(entries);
        let previous = current
            .keys()
            .filter_map(|e| previous_release(entries, e).map(|p| (e.clone(), p)))
            .collect();
        let in_use = in_use
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        select(&views, "staging", TargetKind::Ec2, keep, &previous, &in_use)
            .into_iter()
            .map(|d| (d.view.release.id.clone(), d.keep))
            .collect()
    }

    #[test]
    fn keeps_the_newest_current_previous_in_use_and_shared_and_nothing_else() {
        let mut entries = vec![
            bake(1, "r1", "staging", "ami-1", "d1"),
            bake(2, "r2", "staging", "ami-2", "d2"),
            bake(3, "r3", "staging", "ami-3", "d3"),
            bake(4, "r4", "staging", "ami-4", "d4"),
            bake(5, "r5", "staging", "ami-5", "d5"),
            // An unchanged re-bake: the same app AMI as r6.
            bake(6, "r6", "staging", "ami-6", "d6"),
            bake(7, "r7", "staging", "ami-6", "d6"),
            bake(8, "o1", "other", "ami-9", "d9"),
        ];
        entries.push(promote(9, "r2", "production", None));
        entries.push(promote(10, "r3", "production", Some("r2")));
        let got = decide(&entries, 1, &[("ami-4", "launch template t version 3")]);
        let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            ["r7", "r6", "r5", "r4", "r3", "r2", "r1"],
            "newest first"
        );
        let why = |id: &str| got.iter().find(|(i, _)| i == id).unwrap().1.clone();
        assert_eq!(why("r7").unwrap(), "one of the newest 1 of `staging`");
        assert_eq!(
            why("r6").unwrap(),
            "its image ami-6 is also release r7's, which stays"
        );
        assert_eq!(why("r5"), None);
        assert_eq!(
            why("r4").unwrap(),
            "its image ami-4: launch template t version 3"
        );
        assert_eq!(why("r3").unwrap(), "current in `production`");
        assert_eq!(
            why("r2").unwrap(),
            "previous in `production` (what `pipe rollback` goes back to)"
        );
        assert_eq!(why("r1"), None);
    }

    #[test]
    fn pruned_releases_are_done_and_do_not_count_among_the_newest() {
        let entries = vec![
            bake(1, "r1", "staging", "ami-1", "d1"),
            bake(2, "r2", "staging", "ami-2", "d2"),
            bake(3, "r3", "staging", "ami-3", "d3"),
            entry(
                4,
                Event::Prune {
                    release: "r3".into(),
                    env: "staging".into(),
                    images: vec![],
                },
            ),
        ];
        let got = decide(&entries, 1, &[]);
        assert_eq!(
            got,
            vec![
                (
                    "r2".to_string(),
                    Some("one of the newest 1 of `staging`".to_string())
                ),
                ("r1".to_string(), None),
            ]
        );
        let (views, _) = releases(&entries);
        assert_eq!(views[2].status, ReleaseStatus::Pruned);
        assert!(!views[2].promotable());
    }

    #[test]
    fn a_shared_app_layer_keeps_an_older_release_even_with_another_image() {
        let entries = vec![
            bake(1, "r1", "staging", "ami-1", "d1"),
            bake(2, "r2", "staging", "ami-2", "d1"),
        ];
        let got = decide(&entries, 1, &[]);
        assert_eq!(
            got[1].1.as_deref(),
            Some("its app layer is also release r2's, which stays")
        );
        // Keep 0: both go, nothing stays to share with.
        let got = decide(&entries, 0, &[]);
        assert!(got.iter().all(|(_, k)| k.is_none()), "{got:?}");
    }
}

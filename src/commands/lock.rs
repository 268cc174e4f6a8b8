//! The promotion lock of a shared ledger: with `[ledger] backend = "s3"`, every promotion and
//! rollback (docker, qemu, ec2 alike) first creates `locks/ENV.json` next to the entries, only
//! if absent, so two hosts never switch one environment at once. It is journaled (a run that
//! fails, is interrupted or killed leaves nothing `pipe clean` cannot remove), held until the
//! outcome is in the ledger, and removed by `pipe promote ENV --break-lock` when its run died.
//! An ec2 environment still takes its SSM lock too: it guards the fleet against a host that
//! promotes with another ledger.

use crate::config::{LedgerSettings, Pipelinefile};
use crate::error::{Error, Result};
use crate::ledger::shared::SharedLedger;
use crate::ledger::{Ledger, Release, releases};
use crate::runner::{Journal, Resource, Runner};
use crate::state;
use crate::targets::fleet::LockHolder;
use crate::targets::resource::{self, Destroyer};

use super::Ctx;

/// Runs `switch` holding `env`'s promotion lock when the ledger is shared (else just runs
/// it). After taking the lock the ledger is read again: if `env`'s current release is no
/// longer `expected` (someone promoted it meanwhile), nothing is switched.
pub fn with_lock(
    ctx: &Ctx,
    pf: &Pipelinefile,
    ledger: &Ledger,
    env: &str,
    release: &Release,
    expected: Option<&str>,
    switch: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let (Some(shared), LedgerSettings::S3(settings)) = (ledger.shared(), &pf.ledger) else {
        return switch();
    };
    let journal = Journal::start(&state::dir(&pf.root), "lock", &pf.pipeline.name.value)?;
    let mut runner = Runner::new(journal, ctx.printer);
    let run = runner.run_id();
    let lock = Resource::LedgerLock {
        bucket: settings.bucket.clone(),
        key: shared.lock_key(env),
        region: settings.region.clone(),
        endpoint: settings.endpoint_url.clone(),
        run: run.clone(),
    };
    let result = runner
        .step(
            &format!("lock promotions of `{env}` in {}", shared.location()),
            |runner| {
                resource::create(runner, Destroyer::default(), &lock, || {
                    take(shared, env, &run, release)
                })
            },
        )
        .and_then(|()| unchanged(ledger, env, expected))
        .and_then(|()| switch());
    runner.finish(result)
}

/// Takes the lock, or says who holds it.
fn take(shared: &SharedLedger, env: &str, run: &str, release: &Release) -> Result<()> {
    let holder = LockHolder {
        run: Some(run.to_string()),
        who: Some(crate::ledger::who()),
        since: Some(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        release: Some(release.alias.clone()),
    };
    let value = serde_json::to_string(&holder).expect("lock holders serialize");
    match shared.take_lock(env, &value)? {
        None => Ok(()),
        Some(held) => {
            let h = LockHolder::parse(&held);
            let field = |f: &Option<String>| f.clone().unwrap_or_else(|| "?".into());
            Err(Error::Gate {
                message: format!(
                    "another promotion of `{env}` is in progress: {} since {} (release {}, run {}; lock {})",
                    field(&h.who),
                    field(&h.since),
                    field(&h.release),
                    field(&h.run),
                    shared.lock_key(env)
                ),
                hint: Some(format!(
                    "wait for it; if that run is dead, `pipe promote {env} --break-lock` removes its lock (recorded in the ledger)"
                )),
            })
        }
    }
}

/// Refuses when `env`'s current release changed since the promotion read the ledger.
fn unchanged(ledger: &Ledger, env: &str, expected: Option<&str>) -> Result<()> {
    let entries = ledger.checked_entries()?;
    let (_, current) = releases(&entries);
    let now = current.get(env).map(String::as_str);
    if now == expected {
        return Ok(());
    }
    let short =
        |id: Option<&str>| id.map_or("nothing".to_string(), |i| i[..10.min(i.len())].into());
    Err(Error::Gate {
        message: format!(
            "`{env}` changed while this promotion started: it runs {} now, not {}",
            short(now),
            short(expected)
        ),
        hint: Some(format!(
            "see `pipe history --env {env}`, then run the command again if it is still wanted"
        )),
    })
}

/// `pipe promote ENV --break-lock` on a shared ledger: removes `env`'s lock unless its run is
/// in `live`; who held it, `None` when there was none.
pub fn break_lock(
    ledger: &Ledger,
    env: &str,
    live: &std::collections::BTreeSet<String>,
) -> Result<Option<LockHolder>> {
    let Some(shared) = ledger.shared() else {
        return Ok(None);
    };
    let alive = |v: &str| {
        LockHolder::parse(v)
            .run
            .is_some_and(|r| live.contains(r.as_str()))
    };
    match shared.break_lock(env, alive)? {
        Ok(removed) => Ok(removed.as_deref().map(LockHolder::parse)),
        Err(held) => Err(Error::Gate {
            message: format!(
                "the promotion lock of `{env}` in {} is held by run {}, which is still running on this host",
                shared.location(),
                LockHolder::parse(&held).run.unwrap_or_default()
            ),
            hint: Some("wait for it, or stop it with Ctrl-C (its cleanup removes the lock)".into()),
        }),
    }
}

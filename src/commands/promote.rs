//! `pipe promote ENV`: the newest release verified in the environment's `promote_from` (or the
//! one named) becomes current in ENV, after the gates ([`super::gates`]: verified, not
//! rejected, baked for the same kind of target and in the right env, the env's `min_soak` and
//! `require_approval`) and not already serving there. `--plan` only says what would happen,
//! with every gate's verdict.
//! `pipe rollback` goes through [`switch`] too. `--break-lock` only removes a promotion lock a
//! dead run left (recorded in the ledger) and exits.

use std::collections::BTreeMap;

use crate::cli::PromoteArgs;
use crate::config::Pipelinefile;
use crate::error::{Error, Result};
use crate::ledger::{Event, Ledger, ReleaseStatus, ReleaseView, find_release, releases, who};
use crate::plan::{self, Plan, Selection};
use crate::runner::{Journal, Runner};
use crate::state;
use crate::targets::fleet::LockHolder;
use crate::targets::ports::{host_ports, serving_name};
use crate::targets::switch::{Switch, switch as switch_target};
use crate::targets::{self, Target};

use super::Ctx;
use super::gates::{self, Promotion, Verdict};
pub use super::gates::{gate, local_flag};

pub fn run(ctx: &Ctx, args: PromoteArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let target = env_target(ctx, &pf, &args.env, args.local)?;
    let kind = target.kind();
    let ledger = Ledger::of(&pf)?;
    if args.break_lock {
        return break_lock(ctx, &pf, &ledger, &args.env, &*target);
    }
    let entries = ledger.checked_entries()?;
    let (views, current) = releases(&entries);
    let source = pf.envs[&args.env]
        .promote_from
        .as_ref()
        .map_or(args.env.clone(), |p| p.value.clone());
    let view = match &args.release {
        Some(key) => find_release(&views, key).map_err(|m| Error::usage(m, None))?,
        None => views
            .iter()
            .rev()
            .find(|v| {
                v.release.env == source
                    && v.release.target == kind
                    && v.status == ReleaseStatus::Verified
            })
            .ok_or_else(|| {
                gate(
                    format!(
                        "no verified {kind} release of env `{source}` to promote into `{}`",
                        args.env
                    ),
                    Some(format!(
                        "bake one first: pipe bake --env {source}{}",
                        local_flag(&pf, &args.env, kind)
                    )),
                )
            })?,
    };
    let verdicts = gates::check(&Promotion::new(&pf, &args.env, &source, kind, false), view);
    let refused = gates::refusal(&verdicts);
    guard(
        ctx,
        &args.env,
        view,
        &verdicts,
        args.plan,
        Kind::Promote,
        refused,
    )?;
    switch(
        ctx,
        &pf,
        &ledger,
        &views,
        &current,
        &args.env,
        &*target,
        view,
        &verdicts,
        args.plan,
        Kind::Promote,
    )?;
    // --plan showed the plan; a gate that refuses still makes it exit 5.
    gates::refusal(&verdicts).map_or(Ok(()), Err)
}

/// `pipe promote ENV --break-lock`: removes the promotion lock a dead run left and records
/// who broke whose lock, then stops: the promotion is run again by hand, once whoever breaks
/// the lock has seen whose it was.
fn break_lock(
    ctx: &Ctx,
    pf: &Pipelinefile,
    ledger: &Ledger,
    env: &str,
    target: &dyn Target,
) -> Result<()> {
    // Runs of this project still alive on this host keep their locks.
    let live: std::collections::BTreeSet<String> =
        crate::runner::journal::list(&state::dir(&pf.root))?
            .into_iter()
            .filter(|(_, f)| crate::runner::journal::is_alive(f))
            .map(|(_, f)| f.run_id)
            .collect();
    // The shared ledger's lock first (every target takes it there), then the target's own.
    let mut broken: Vec<(String, LockHolder)> = Vec::new();
    if let Some(h) = super::lock::break_lock(ledger, env, &live)? {
        broken.push((format!(" in {}", ledger.location()), h));
    }
    if let Some(h) = target.break_lock(pf, env, &live)? {
        broken.push((String::new(), h));
    }
    if broken.is_empty() {
        ctx.printer.result(
            "promote",
            serde_json::json!({"env": env, "break_lock": true, "broken": false}),
            &format!(
                "`{env}` has no promotion lock on {}: nothing to break",
                target.kind()
            ),
        );
        return Ok(());
    }
    let mut removed = Vec::new();
    for (place, holder) in &broken {
        let who_held = holder.who.clone().unwrap_or_else(|| "someone".into());
        ledger.append(
            &who(),
            Event::BreakLock {
                env: env.to_string(),
                holder: who_held.clone(),
                run: holder.run.clone(),
                since: holder.since.clone(),
                release: holder.release.clone(),
            },
        )?;
        let mut held = vec![format!("held by {who_held}")];
        held.extend(holder.since.as_ref().map(|s| format!("since {s}")));
        held.extend(holder.release.as_ref().map(|r| format!("promoting {r}")));
        held.extend(holder.run.as_ref().map(|r| format!("run {r}")));
        removed.push(format!(
            "removed the promotion lock of `{env}`{place} ({}); recorded in the ledger",
            held.join(", ")
        ));
    }
    let holders: Vec<&LockHolder> = broken.iter().map(|(_, h)| h).collect();
    ctx.printer.result(
        "promote",
        serde_json::json!({"env": env, "break_lock": true, "broken": true, "holder": holders[0], "holders": holders}),
        &format!(
            "{}\n  \
             promote again: pipe promote {env}{}\n  \
             what that run left (a template version, a refresh) is rolled back by `pipe clean` on its host",
            removed.join("\n"),
            local_flag(pf, env, target.kind())
        ),
    );
    Ok(())
}

/// Refuses a switch a gate refuses, before anything happens. With `--plan`, a refusal of the
/// environment's gates (`min_soak`, `approval`) lets the plan be shown first (the caller
/// still exits 5 after it); when the release's own gates refuse there is nothing to plan, and
/// the gates alone are shown.
pub fn guard(
    ctx: &Ctx,
    env: &str,
    view: &ReleaseView,
    verdicts: &[Verdict],
    plan: bool,
    kind: Kind,
    refused: Option<Error>,
) -> Result<()> {
    let Some(refused) = refused else {
        return Ok(());
    };
    if plan && gates::blocks_plan(verdicts) {
        let verb = verb(kind);
        let data = serde_json::json!({
            "env": env, "release": view.release.id, "alias": view.release.alias,
            "plan": true, "gates": verdicts,
        });
        let human = format!(
            "would not {verb} `{env}` to release {}:\n{}nothing was changed (--plan)",
            view.release.alias,
            gates::report(verdicts)
        );
        ctx.printer.result(verb, data, &human);
        return Err(refused);
    }
    if plan { Ok(()) } else { Err(refused) }
}

fn verb(kind: Kind) -> &'static str {
    match kind {
        Kind::Promote => "promote",
        Kind::Rollback => "roll back",
    }
}

/// Promotion or rollback: what the ledger records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Promote,
    Rollback,
}

/// The target ENV runs on (`--local`: the local one), opened.
pub fn env_target(ctx: &Ctx, pf: &Pipelinefile, env: &str, local: bool) -> Result<Box<dyn Target>> {
    let env = plan::pick_env(pf, Some(env))?;
    let sel = Selection {
        env: Some(env.clone()),
        local,
        target: None,
        cli_vars: ctx.global.vars.clone(),
    };
    let kind = plan::effective_target(pf, &env, &sel)?;
    let target = targets::open(kind, pf).map_err(|e| super::local::remote_hint(ctx, e, &env))?;
    target
        .can_switch()
        .map_err(|e| super::local::remote_hint(ctx, e, &env))?;
    Ok(target)
}

/// The plan a release runs with: its own environment's, on its own target, so its services and
/// checks run exactly as they were verified.
pub fn release_plan<'a>(ctx: &Ctx, pf: &'a Pipelinefile, view: &ReleaseView) -> Result<Plan<'a>> {
    let r = &view.release;
    let plan = plan_of(ctx, pf, view)?;
    if plan.digests.app.to_string() != r.app_digest {
        ctx.printer.warn(
            format!(
                "the Pipelinefile changed since release {} was baked: its services and checks are taken from the current one",
                r.alias
            ),
            None,
        );
    }
    Ok(plan)
}

/// [`release_plan`] without the warning.
fn plan_of<'a>(ctx: &Ctx, pf: &'a Pipelinefile, view: &ReleaseView) -> Result<Plan<'a>> {
    let r = &view.release;
    if !pf.envs.contains_key(&r.env) {
        return Err(Error::usage(
            format!(
                "release {} belongs to env `{}`, which the Pipelinefile no longer has",
                r.alias, r.env
            ),
            None,
        ));
    }
    let sel = Selection {
        env: Some(r.env.clone()),
        local: false,
        // On the target it was baked on, whatever its env declares (`--local`, `--target`).
        target: Some(r.target.to_string()),
        cli_vars: ctx.global.vars.clone(),
    };
    plan::make(pf, &sel, ctx.printer)
}

/// Makes `view` current in `env` (or only prints the plan), recording the outcome. The gates,
/// the plan, the ledger and the report are the same on every target; the switch itself is
/// [`crate::targets::switch`], over the target. With a shared ledger the environment's
/// promotion lock is held from before the switch until the outcome is recorded
/// ([`super::lock`]).
#[allow(clippy::too_many_arguments)]
pub fn switch(
    ctx: &Ctx,
    pf: &Pipelinefile,
    ledger: &Ledger,
    views: &[ReleaseView],
    current: &BTreeMap<String, String>,
    env: &str,
    target: &dyn Target,
    view: &ReleaseView,
    verdicts: &[Verdict],
    dry_run: bool,
    kind: Kind,
) -> Result<()> {
    crate::interrupt::install();
    let now = || {
        switch_now(
            ctx, pf, ledger, views, current, env, target, view, verdicts, dry_run, kind,
        )
    };
    if dry_run {
        return now();
    }
    let expected = current.get(env).map(String::as_str);
    super::lock::with_lock(ctx, pf, ledger, env, &view.release, expected, now)
}

/// [`switch`] once the lock (if any) is held.
#[allow(clippy::too_many_arguments)]
fn switch_now(
    ctx: &Ctx,
    pf: &Pipelinefile,
    ledger: &Ledger,
    views: &[ReleaseView],
    current: &BTreeMap<String, String>,
    env: &str,
    target: &dyn Target,
    view: &ReleaseView,
    verdicts: &[Verdict],
    dry_run: bool,
    kind: Kind,
) -> Result<()> {
    if let Some(fleet) = target.fleet() {
        return switch_fleet(
            ctx, pf, ledger, current, env, target, fleet, view, verdicts, dry_run, kind,
        );
    }
    let pipeline = pf.pipeline.name.value.clone();
    let r = &view.release;
    let serving = target.serving(pf, env)?;
    let previous = current.get(env).cloned();
    let serving_it = serving
        .iter()
        .any(|s| s.running && s.release.as_deref() == Some(r.id.as_str()));
    if previous.as_deref() == Some(r.id.as_str()) && serving_it {
        return Err(gate(
            format!("release {} is already current in `{env}`", r.alias),
            None,
        ));
    }
    let artifact = target.release_artifact(r)?;
    let ports = host_ports(pf, env)?;
    let name = serving_name(&pipeline, env, &r.alias);
    let noun = target.noun();
    let verb = verb(kind);
    let ports_json: Vec<serde_json::Value> = ports
        .iter()
        .map(
            |p| serde_json::json!({"service": p.service, "host": "127.0.0.1", "port": p.host_port}),
        )
        .collect();
    let running: Vec<&str> = serving
        .iter()
        .filter(|s| s.running)
        .map(|s| s.name.as_str())
        .collect();
    // A stopped machine of this very release is removed before the new one starts.
    let remove: Vec<&str> = serving
        .iter()
        .map(|s| s.name.as_str())
        .filter(|old| *old != name)
        .collect();
    let (details, details_human) = target.switch_details(pf, env, &artifact);
    let mut data = serde_json::json!({
        "env": env, "release": r.id, "alias": r.alias, "target": target.kind().as_str(),
        "artifact": artifact, "machine": name, "ports": ports_json,
    });
    if let (Some(data), serde_json::Value::Object(extra)) = (data.as_object_mut(), details) {
        data.extend(extra);
    }
    if dry_run {
        let mut human = gates::report(verdicts);
        human.push_str(&format!(
            "would {verb} `{env}` to release {} (baked in {} at {}, commit {}{}):\n",
            r.alias,
            r.env,
            r.when,
            r.git_commit,
            if r.git_dirty { ", dirty" } else { "" }
        ));
        human.push_str(&format!(
            "  1. verify {} {artifact} on a fresh machine\n",
            target.artifact_noun()
        ));
        let mut n = 2;
        for old in &running {
            human.push_str(&format!("  {n}. stop the old {noun} {old}\n"));
            n += 1;
        }
        if serving.iter().any(|s| s.name == name) {
            human.push_str(&format!("  {n}. remove the stopped {noun} {name}\n"));
            n += 1;
        }
        let published: Vec<String> = ports
            .iter()
            .map(|p| format!("{} on 127.0.0.1:{}", p.service, p.host_port))
            .collect();
        human.push_str(&format!(
            "  {n}. start {name}{}, wait for its services, verify again\n",
            if published.is_empty() {
                String::new()
            } else {
                format!(" ({})", published.join(", "))
            }
        ));
        n += 1;
        for old in &remove {
            human.push_str(&format!("  {n}. remove the old {noun} {old}\n"));
            n += 1;
        }
        if let Some(then) = target.after_switch(pf, env) {
            human.push_str(&format!("  {n}. {then}\n"));
        }
        human.push_str("nothing was changed (--plan)");
        data["plan"] = true.into();
        data["gates"] = serde_json::to_value(verdicts).expect("verdicts serialize");
        data["stop"] = running.into();
        data["remove"] = remove.into();
        ctx.printer.result(verb, data, &human);
        return Ok(());
    }
    let plan = release_plan(ctx, pf, view)?;
    // What an old machine runs if it has to start again: its own release's services.
    let mut old_services = BTreeMap::new();
    for old in serving.iter().filter(|s| s.running) {
        let own = old
            .release
            .as_deref()
            .and_then(|id| views.iter().find(|v| v.release.id == id))
            .and_then(|v| plan_of(ctx, pf, v).ok());
        if let Some(own) = own {
            old_services.insert(old.name.clone(), own.services());
        }
    }
    let journal = Journal::start(&state::dir(&pf.root), verb, &pipeline)?;
    let mut runner = Runner::new(journal, ctx.printer);
    let s = Switch {
        plan: &plan,
        env,
        release: r,
        artifact: &artifact,
        old: serving.clone(),
        old_services,
        ports: ports.clone(),
    };
    let result = switch_target(&mut runner, target, &s, ctx.printer);
    let result = runner.finish(result);
    match result {
        Ok(new) => {
            record(ledger, kind, r, env, previous.clone(), true, None)?;
            notify(ctx, pf, kind, r, env, previous.as_deref(), None, None);
            let mut human = format!(
                "`{env}` now runs release {} in {new} ({details_human})",
                r.alias
            );
            data["previous"] = previous.clone().into();
            for p in &ports {
                human.push_str(&format!(
                    "\n  {} http://127.0.0.1:{}/",
                    p.service, p.host_port
                ));
            }
            if let Some(prev) = &previous {
                human.push_str(&format!(
                    "\n  previous: {} (undo with `pipe rollback {env}{}`)",
                    &prev[..10.min(prev.len())],
                    local_flag(pf, env, target.kind())
                ));
            }
            ctx.printer.result(verb, data, &human);
            Ok(())
        }
        Err(e) if e.exit_code() == crate::error::exit::INTERRUPTED => {
            // Nothing switched (or it was switched back): nothing to record.
            Err(e)
        }
        Err(e) => {
            record_failure(ctx, pf, ledger, kind, r, env, previous, &e)?;
            Err(e)
        }
    }
}

/// Appends the outcome of a promotion or rollback to the ledger.
fn record(
    ledger: &Ledger,
    kind: Kind,
    r: &crate::ledger::Release,
    env: &str,
    previous: Option<String>,
    ok: bool,
    detail: Option<String>,
) -> Result<()> {
    let (release, env) = (r.id.clone(), env.to_string());
    let event = match kind {
        Kind::Promote => Event::Promote {
            release,
            env,
            ok,
            previous,
            detail,
        },
        Kind::Rollback => Event::Rollback {
            release,
            env,
            ok,
            previous,
            detail,
        },
    };
    ledger.append(&who(), event)?;
    Ok(())
}

/// Records a promotion or rollback that failed (with the error's first line, sensitive values
/// masked) and publishes it.
#[allow(clippy::too_many_arguments)]
fn record_failure(
    ctx: &Ctx,
    pf: &Pipelinefile,
    ledger: &Ledger,
    kind: Kind,
    r: &crate::ledger::Release,
    env: &str,
    previous: Option<String>,
    e: &Error,
) -> Result<()> {
    let text = e.to_string();
    let detail = ctx
        .printer
        .redactor()
        .redact(text.lines().next().unwrap_or(""));
    record(
        ledger,
        kind,
        r,
        env,
        previous.clone(),
        false,
        Some(detail.clone()),
    )?;
    notify(
        ctx,
        pf,
        kind,
        r,
        env,
        previous.as_deref(),
        None,
        Some(&detail),
    );
    Ok(())
}

/// Publishes the outcome of a promotion or rollback that was recorded ([`super::notify`]).
#[allow(clippy::too_many_arguments)]
fn notify(
    ctx: &Ctx,
    pf: &Pipelinefile,
    kind: Kind,
    r: &crate::ledger::Release,
    env: &str,
    previous: Option<&str>,
    details: Option<&serde_json::Value>,
    failed: Option<&str>,
) {
    let notice = super::notify::Notice {
        event: match kind {
            Kind::Promote => "promote",
            Kind::Rollback => "rollback",
        },
        release: r,
        env,
        outcome: if failed.is_some() { "failed" } else { "ok" },
        previous,
        details,
        detail: failed,
    };
    super::notify::send(pf, &notice, ctx.printer);
}

/// [`switch`] on a target that rolls its fleet itself ([`crate::targets::fleet`]): the same
/// gate, plan report and ledger records, the roll-out done by the target.
#[allow(clippy::too_many_arguments)]
fn switch_fleet(
    ctx: &Ctx,
    pf: &Pipelinefile,
    ledger: &Ledger,
    current: &BTreeMap<String, String>,
    env: &str,
    target: &dyn Target,
    fleet: &dyn crate::targets::fleet::Fleet,
    view: &ReleaseView,
    verdicts: &[Verdict],
    dry_run: bool,
    kind: Kind,
) -> Result<()> {
    let r = &view.release;
    let previous = current.get(env).cloned();
    if previous.as_deref() == Some(r.id.as_str()) {
        return Err(gate(
            format!("release {} is already current in `{env}`", r.alias),
            None,
        ));
    }
    let verb = verb(kind);
    let mut data = serde_json::json!({
        "env": env, "release": r.id, "alias": r.alias, "target": target.kind().as_str(),
        "previous": previous,
    });
    let merge = |data: &mut serde_json::Value, extra: serde_json::Value| {
        if let (Some(data), serde_json::Value::Object(extra)) = (data.as_object_mut(), extra) {
            data.extend(extra);
        }
    };
    if dry_run {
        let plan = fleet.plan(pf, env, r)?;
        let mut human = gates::report(verdicts);
        human.push_str(&format!(
            "would {verb} `{env}` to release {} (baked in {} at {}, commit {}{}):\n",
            r.alias,
            r.env,
            r.when,
            r.git_commit,
            if r.git_dirty { ", dirty" } else { "" }
        ));
        for (n, step) in plan.steps.iter().enumerate() {
            human.push_str(&format!("  {}. {step}\n", n + 1));
        }
        human.push_str("nothing was changed (--plan)");
        merge(&mut data, plan.json);
        data["plan"] = true.into();
        data["gates"] = serde_json::to_value(verdicts).expect("verdicts serialize");
        data["steps"] = plan.steps.into();
        ctx.printer.result(verb, data, &human);
        return Ok(());
    }
    let journal = Journal::start(&state::dir(&pf.root), verb, &pf.pipeline.name.value)?;
    let mut runner = Runner::new(journal, ctx.printer);
    let result = fleet.roll_out(&mut runner, pf, env, r, ctx.printer);
    let result = runner.finish(result);
    match result {
        Ok(done) => {
            // The fleet runs the release: the ledger says so even if a follow-up failed.
            let detail = (!done.unfinished.is_empty())
                .then(|| format!("not finished: {}", done.unfinished.join("; ")));
            record(ledger, kind, r, env, previous.clone(), true, detail)?;
            notify(
                ctx,
                pf,
                kind,
                r,
                env,
                previous.as_deref(),
                Some(&done.json),
                None,
            );
            let mut human = format!("`{env}` now runs release {}: {}", r.alias, done.summary);
            if let Some(prev) = &previous {
                human.push_str(&format!(
                    "\n  previous: {} (undo with `pipe rollback {env}`)",
                    &prev[..10.min(prev.len())]
                ));
            }
            merge(&mut data, done.json);
            ctx.printer.result(verb, data, &human);
            if done.unfinished.is_empty() {
                Ok(())
            } else {
                Err(Error::runtime(
                    format!(
                        "`{env}` runs release {}, but these did not finish: {}",
                        r.alias,
                        done.unfinished.join("; ")
                    ),
                    Some(format!(
                        "`pipe status --env {env}` shows what differs; fix it in the console"
                    )),
                ))
            }
        }
        // Refused before anything changed (another run holds the promotion lock): not a
        // promotion that failed, nothing to record.
        Err(e @ Error::Gate { .. }) => Err(e),
        Err(e) => {
            // Interrupted or failed, the roll-out put back what ran before.
            record_failure(ctx, pf, ledger, kind, r, env, previous, &e)?;
            Err(e)
        }
    }
}

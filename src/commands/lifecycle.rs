//! `pipe status`, `pipe halt`, `pipe destroy`, over every local target: docker machines are
//! read from the engine by labels, so they work with `.pipe/` stale or deleted; qemu machines
//! (`pipe up`'s, and the VMs serving promoted releases) from their folders in `.pipe/qemu/`.
//! They rewrite `.pipe/state.json` from what they find. A target that cannot be reached (no
//! Docker engine) is skipped with a warning when another one has machines to show.

use crate::cli::DestroyArgs;
use crate::config::Pipelinefile;
use crate::error::{Error, Result};
use crate::state::State;
use crate::targets::local::{self, LocalTarget};

use super::Ctx;

/// Every local target that opens, and the first failure to open one.
fn local_targets(pf: &Pipelinefile, command: &str) -> (Vec<Box<dyn LocalTarget>>, Option<Error>) {
    let mut opened = Vec::new();
    let mut failed = None;
    for kind in local::kinds() {
        match crate::targets::open_local(kind, pf, command) {
            Ok(t) => opened.push(t),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    (opened, failed)
}

/// `failed` is an error when nothing else was found, a warning otherwise.
fn unreachable(ctx: &Ctx, failed: Option<Error>, found: usize) -> Result<()> {
    match failed {
        Some(e) if found == 0 => Err(e),
        Some(e) => {
            ctx.printer.warn(
                format!("some machines may not be shown: {e}"),
                Some("start the Docker engine to see docker machines too".to_string()),
            );
            Ok(())
        }
        None => Ok(()),
    }
}

/// Whether a machine runs what the Pipelinefile describes now for its env and target.
fn is_current(ctx: &Ctx, pf: &Pipelinefile, env: &str, target: &str, digest: &str) -> Option<bool> {
    crate::plan::make(
        pf,
        &crate::plan::Selection {
            env: Some(env.to_string()),
            local: true,
            target: Some(target.to_string()),
            cli_vars: ctx.global.vars.clone(),
        },
        ctx.printer,
    )
    .ok()
    .map(|p| p.digests.app.to_string() == digest)
}

fn freshness(current: Option<bool>) -> &'static str {
    match current {
        Some(true) => "up to date",
        Some(false) => "stale (run pipe up)",
        None => "unknown",
    }
}

pub fn status(ctx: &Ctx) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let env = ctx.global.env.as_deref();
    if let Some(env) = env {
        let kind = crate::plan::pick_env(&pf, Some(env))
            .ok()
            .and_then(|e| pf.envs.get(&e).map(|e| e.target.value));
        if let Some(kind) = kind
            && !crate::targets::local::kinds().contains(&kind)
        {
            return fleet_status(ctx, &pf, env, kind);
        }
    }
    let (targets, failed) = local_targets(&pf, "status");
    let mut st = State::load(&pf.root);
    let mut rows = Vec::new();
    let mut cells: Vec<Vec<String>> = Vec::new();
    let mut found = 0;
    // `pipe up` machines first, then serving ones, as listed by each target.
    let mut listed = Vec::new();
    for t in &targets {
        let machines = t.machines(&pf, env)?;
        found += machines.len();
        listed.push((t, machines));
    }
    unreachable(ctx, failed, found)?;
    for (t, machines) in &listed {
        let kind = t.kind().as_str();
        for m in machines {
            let (column, mut row) = match (&m.digest, &m.release) {
                (Some(digest), _) => {
                    let current = is_current(ctx, &pf, &m.env, kind, digest);
                    // Watch synced files into it: its image is behind it until `pipe up`.
                    let column = match &m.watched {
                        Some(_) => "changed by watch".to_string(),
                        None => freshness(current).to_string(),
                    };
                    (
                        column,
                        serde_json::json!({"digest": digest, "up_to_date": current, "changed_by_watch": m.watched}),
                    )
                }
                (None, release) => {
                    let release = release.clone().unwrap_or_default();
                    let alias: String = release.chars().take(10).collect();
                    (
                        format!("release {alias}"),
                        serde_json::json!({"release": release, "role": "serving"}),
                    )
                }
            };
            cells.push(vec![
                m.env.clone(),
                m.name.clone(),
                m.state.clone(),
                column,
                m.ports.join(", "),
            ]);
            if let Some(row) = row.as_object_mut() {
                row.insert("env".into(), m.env.clone().into());
                row.insert("target".into(), kind.into());
                row.insert("machine".into(), m.name.clone().into());
                row.insert("state".into(), m.state.clone().into());
                row.insert("ports".into(), m.ports.clone().into());
                if let serde_json::Value::Object(extra) = &m.extra {
                    row.extend(extra.clone());
                }
            }
            rows.push(row);
            if let Some(entry) = &m.state_entry {
                st.machines.insert(m.env.clone(), entry.clone());
            }
        }
    }
    // Forget machines that no longer exist (on targets that answered).
    st.machines.retain(
        |env, m| match targets.iter().find(|t| t.kind().as_str() == m.target) {
            Some(t) => t.still_there(&pf, env, m),
            None => true,
        },
    );
    st.save(&pf.root)?;
    let human = if rows.is_empty() {
        "no machines; create one with `pipe up --local`\n".to_string()
    } else {
        crate::ui::table::table(&["ENV", "MACHINE", "STATE", "IMAGE", "PORTS"], &cells)
    };
    ctx.printer
        .result("status", serde_json::json!({ "machines": rows }), &human);
    Ok(())
}

pub fn halt(ctx: &Ctx) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let (env, target) = super::local::open(ctx, &pf, "halt")?;
    let kind = target.kind().as_str();
    match target.halt(&pf, &env, ctx.printer)? {
        None => ctx.printer.result(
            "halt",
            serde_json::json!({ "env": env, "target": kind, "halted": null }),
            &format!("env `{env}` has no machine"),
        ),
        Some(name) => ctx.printer.result(
            "halt",
            serde_json::json!({ "env": env, "target": kind, "halted": name }),
            &format!("halted {name}; `pipe up` starts it again"),
        ),
    }
    Ok(())
}

pub fn destroy(ctx: &Ctx, args: DestroyArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    // Without --env every machine of the pipeline goes, as `vagrant destroy` does.
    let env = ctx.global.env.as_deref();
    let (targets, failed) = local_targets(&pf, "destroy");
    let mut found = 0;
    // Serving machines: (env, release, machine), for the ledger once they are gone.
    let mut serving = Vec::new();
    for t in &targets {
        let machines = t.machines(&pf, env)?;
        found += machines.len();
        serving.extend(machines.into_iter().filter_map(|m| {
            let release = m.release.filter(|r| !r.is_empty())?;
            Some((m.env, release, m.name))
        }));
    }
    unreachable(ctx, failed, found)?;
    let mut removed = Vec::new();
    let mut images = Vec::new();
    for t in &targets {
        removed.extend(t.destroy_machines(&pf, env, ctx.printer)?);
    }
    if args.layers {
        for t in &targets {
            images.extend(t.destroy_layers(&pf)?);
        }
    }
    let mut st = State::load(&pf.root);
    st.machines.retain(|_, m| !removed.contains(&m.name));
    st.save(&pf.root)?;
    serving.retain(|(_, _, name)| removed.contains(name));
    let unserved = record_unserved(ctx, &pf, serving);
    let human = if removed.is_empty() && images.is_empty() {
        "nothing to destroy".to_string()
    } else {
        let mut s = String::new();
        for r in &removed {
            s.push_str(&format!("removed machine {r}\n"));
        }
        if !images.is_empty() {
            s.push_str(&format!("removed {} layer(s)\n", images.len()));
        }
        for env in &unserved {
            s.push_str(&format!(
                "`{env}` serves nothing now (recorded in the ledger); `pipe promote {env}` serves a release again\n"
            ));
        }
        s
    };
    ctx.printer.result(
        "destroy",
        serde_json::json!({ "machines": removed, "images": images, "unserved": unserved }),
        &human,
    );
    Ok(())
}

/// Records in the ledger that each environment whose current release's serving machine was
/// just removed serves nothing, so `pipe releases` no longer calls that release current and
/// the same release can be promoted again. Returns those environments. The machines are gone
/// either way: a ledger that cannot be read or written is a warning, not a failed destroy.
fn record_unserved(
    ctx: &Ctx,
    pf: &Pipelinefile,
    serving: Vec<(String, String, String)>,
) -> Vec<String> {
    if serving.is_empty() {
        return Vec::new();
    }
    let mut unserved = Vec::new();
    let result = (|| -> Result<()> {
        let ledger = crate::ledger::Ledger::of(pf)?;
        let entries = ledger.checked_entries()?;
        let (_, current) = crate::ledger::releases(&entries);
        for (env, release, machine) in serving {
            if current.get(&env) != Some(&release) || unserved.contains(&env) {
                continue;
            }
            ledger.append(
                &crate::ledger::who(),
                crate::ledger::Event::Destroy {
                    release,
                    env: env.clone(),
                    machine,
                },
            )?;
            unserved.push(env);
        }
        Ok(())
    })();
    if let Err(e) = result {
        ctx.printer.warn(
            format!("the ledger does not record what the destroy removed: {e}"),
            Some("`pipe releases` may still list a removed release as current".into()),
        );
    }
    unserved
}

/// `pipe status --env ENV` for an environment a target runs as a fleet (ec2): what the ledger
/// says serves it, what AWS runs and would launch, and every difference (drift).
fn fleet_status(
    ctx: &Ctx,
    pf: &Pipelinefile,
    env: &str,
    kind: crate::config::TargetKind,
) -> Result<()> {
    let target = crate::targets::open(kind, pf)?;
    let Some(fleet) = target.fleet() else {
        return Err(Error::usage(
            format!("env `{env}` has no fleet to show"),
            None,
        ));
    };
    let ledger = crate::ledger::Ledger::of(pf)?;
    let entries = ledger.checked_entries()?;
    let (views, current) = crate::ledger::releases(&entries);
    let release = current
        .get(env)
        .and_then(|id| views.iter().find(|v| &v.release.id == id))
        .map(|v| &v.release);
    let st = fleet.status(pf, env, release)?;
    let mut human = String::new();
    for (what, value) in &st.rows {
        human.push_str(&format!("{what:<17} {value}\n"));
    }
    if st.drift.is_empty() {
        human.push_str("no drift: AWS runs what the ledger says");
    } else {
        human.push_str(&format!("drift ({}):", st.drift.len()));
        for d in &st.drift {
            human.push_str(&format!("\n  - {d}"));
        }
    }
    let mut data = serde_json::json!({"env": env, "target": kind.as_str(), "release": release.map(|r| r.id.clone())});
    if let (Some(data), serde_json::Value::Object(extra)) = (data.as_object_mut(), st.json) {
        data.extend(extra);
    }
    ctx.printer.result("status", data, &human);
    Ok(())
}

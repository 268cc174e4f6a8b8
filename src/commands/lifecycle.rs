//! `pipe status`, `pipe halt`, `pipe destroy`: docker machines are read from the engine by
//! labels, so they work with `.pipe/` stale or deleted; qemu machines (`pipe up`'s, and the VMs
//! serving promoted releases) from their folders in `.pipe/qemu/` (record, pid file, QMP).
//! They rewrite `.pipe/state.json` from what they find.

use std::time::Duration;

use crate::cli::DestroyArgs;
use crate::config::{LayerName, Pipelinefile, TargetKind};
use crate::engine::docker::DockerClient;
use crate::error::{Error, Result};
use crate::state::{MachineState, State};
use crate::targets::docker::build::label;
use crate::targets::docker::machine::{find_by_role, find_machines};
use crate::targets::qemu::find_serving;

use super::{Ctx, local};

/// The Docker engine, or `None` with a warning when it does not answer and there are qemu
/// machines to act on anyway.
fn docker_if_any(ctx: &Ctx, qemu_machines: usize) -> Result<Option<DockerClient>> {
    match DockerClient::connect() {
        Ok(c) => Ok(Some(c)),
        Err(e) if qemu_machines > 0 => {
            ctx.printer.warn(
                format!("no docker machines shown: {e}"),
                Some("start the Docker engine to see docker machines too".to_string()),
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether a machine runs what the Pipelinefile describes now for its env and target.
fn is_current(
    ctx: &Ctx,
    pf: &Pipelinefile,
    env: &str,
    target: Option<TargetKind>,
    digest: &str,
) -> Option<bool> {
    crate::plan::make(
        pf,
        &crate::plan::Selection {
            env: Some(env.to_string()),
            local: true,
            target: target.map(|t| t.to_string()),
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
    let qemu = local::qemu_machines(&pf, ctx.global.env.as_deref());
    let qemu_serving = find_serving(&pf, ctx.global.env.as_deref());
    let client = docker_if_any(ctx, qemu.len() + qemu_serving.len())?;
    let pipeline = &pf.pipeline.name.value;
    let project = crate::state::project_id(&pf.root);
    let (machines, serving) = match &client {
        Some(client) => (
            find_machines(client, pipeline, &project, ctx.global.env.as_deref())?,
            find_by_role(
                client,
                pipeline,
                &project,
                "serving",
                ctx.global.env.as_deref(),
            )?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let mut st = State::load(&pf.root);
    let mut rows = Vec::new();
    let mut human = String::new();
    for c in &machines {
        let env = c.labels.get(label::ENV).cloned().unwrap_or_default();
        let digest = c.labels.get(label::DIGEST).cloned().unwrap_or_default();
        // Whether the machine runs what the Pipelinefile describes now.
        let current = is_current(ctx, &pf, &env, None, &digest);
        let freshness = freshness(current);
        let ports: Vec<String> = c
            .ports
            .iter()
            .map(|p| format!("{}:{}->{}", p.host_ip, p.host_port, p.container_port))
            .collect();
        human.push_str(&format!(
            "{env:<12} {:<28} {:<8} {:<20} {}\n",
            c.name,
            c.state,
            freshness,
            ports.join(", ")
        ));
        rows.push(serde_json::json!({
            "env": env, "target": "docker", "machine": c.name, "state": c.state,
            "digest": digest, "up_to_date": current, "ports": ports,
        }));
        st.machines.insert(
            env,
            MachineState {
                target: "docker".into(),
                name: c.name.clone(),
                image: c.image.clone(),
                digest,
                updated: chrono::Utc::now().to_rfc3339(),
            },
        );
    }
    for c in &serving {
        let env = c.labels.get(label::ENV).cloned().unwrap_or_default();
        let release = c.labels.get(label::RELEASE).cloned().unwrap_or_default();
        let ports: Vec<String> = c
            .ports
            .iter()
            .map(|p| format!("{}:{}->{}", p.host_ip, p.host_port, p.container_port))
            .collect();
        let alias: String = release.chars().take(10).collect();
        human.push_str(&format!(
            "{env:<12} {:<28} {:<8} {:<20} {}\n",
            c.name,
            c.state,
            format!("release {alias}"),
            ports.join(", ")
        ));
        rows.push(serde_json::json!({
            "env": env, "machine": c.name, "state": c.state, "release": release,
            "role": "serving", "ports": ports,
        }));
    }
    for (dir, rec) in &qemu {
        let state = local::qemu_state(dir, rec);
        let current = is_current(ctx, &pf, &rec.env, Some(TargetKind::Qemu), &rec.digest);
        let mut ports = vec![format!("127.0.0.1:{}->22", rec.vm.ssh_port)];
        ports.extend(
            rec.ports
                .iter()
                .map(|p| format!("127.0.0.1:{}->{}", p.host, p.guest)),
        );
        human.push_str(&format!(
            "{:<12} {:<28} {:<8} {:<20} {}\n",
            rec.env,
            rec.name,
            state,
            freshness(current),
            ports.join(", ")
        ));
        rows.push(serde_json::json!({
            "env": rec.env, "target": "qemu", "machine": rec.name, "state": state,
            "digest": rec.digest, "up_to_date": current, "ports": ports,
            "accel": rec.vm.accel, "console_log": rec.vm.console(),
        }));
        st.machines.insert(rec.env.clone(), rec.state());
    }
    // Serving VMs (`pipe promote` on qemu): their release instead of a freshness.
    for (dir, rec) in &qemu_serving {
        let state = local::qemu_state(dir, rec);
        let release = rec.release.clone().unwrap_or_default();
        let alias: String = release.chars().take(10).collect();
        let ports: Vec<String> = rec
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{}->{}", p.host, p.guest))
            .collect();
        human.push_str(&format!(
            "{:<12} {:<28} {:<8} {:<20} {}\n",
            rec.env,
            rec.name,
            state,
            format!("release {alias}"),
            ports.join(", ")
        ));
        rows.push(serde_json::json!({
            "env": rec.env, "target": "qemu", "machine": rec.name, "state": state,
            "release": release, "role": "serving", "ports": ports,
            "ssh_port": rec.vm.ssh_port, "artifact": rec.layer,
            "accel": rec.vm.accel, "console_log": rec.vm.console(),
        }));
    }
    // Forget machines that no longer exist.
    st.machines.retain(|env, m| match m.target.as_str() {
        "docker" => {
            client.is_none()
                || machines
                    .iter()
                    .any(|c| c.name == m.name && c.labels.get(label::ENV) == Some(env))
        }
        "qemu" => crate::targets::qemu::machine::load_record(&local::qemu_dir(&pf, env))
            .is_some_and(|r| r.name == m.name),
        _ => true,
    });
    st.save(&pf.root)?;
    if machines.is_empty() && serving.is_empty() && qemu.is_empty() && qemu_serving.is_empty() {
        human = "no machines; create one with `pipe up --local`\n".into();
    } else {
        human.insert_str(
            0,
            &format!(
                "{:<12} {:<28} {:<8} {:<20} {}\n",
                "ENV", "MACHINE", "STATE", "IMAGE", "PORTS"
            ),
        );
    }
    ctx.printer
        .result("status", serde_json::json!({ "machines": rows }), &human);
    Ok(())
}

pub fn halt(ctx: &Ctx) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let (env, target) = local::env_and_target(ctx, &pf)?;
    local::require_local(target, "halt")?;
    if target == TargetKind::Qemu {
        return halt_qemu(ctx, &pf, &env);
    }
    let client = DockerClient::connect()?;
    let Some(c) = local::find_machine(&client, &pf, &env)? else {
        ctx.printer.result(
            "halt",
            serde_json::json!({ "env": env, "halted": null }),
            &format!("env `{env}` has no machine"),
        );
        return Ok(());
    };
    if c.running {
        let step = ctx.printer.step(format!("stop {}", c.name));
        client.stop_container(&c.id, Duration::from_secs(10))?;
        step.done(None);
    }
    ctx.printer.result(
        "halt",
        serde_json::json!({ "env": env, "halted": c.name }),
        &format!("halted {}; `pipe up` starts it again", c.name),
    );
    Ok(())
}

/// A graceful stop (QMP power-down, then quit); the machine's disk stays.
fn halt_qemu(ctx: &Ctx, pf: &Pipelinefile, env: &str) -> Result<()> {
    let dir = local::qemu_dir(pf, env);
    let Some(rec) = crate::targets::qemu::machine::load_record(&dir) else {
        ctx.printer.result(
            "halt",
            serde_json::json!({ "env": env, "halted": null }),
            &format!("env `{env}` has no machine"),
        );
        return Ok(());
    };
    if rec.running() {
        let step = ctx.printer.step(format!("power down {}", rec.name));
        crate::targets::qemu::up::halt_dir(&dir)?;
        step.done(None);
    }
    ctx.printer.result(
        "halt",
        serde_json::json!({ "env": env, "target": "qemu", "halted": rec.name }),
        &format!("halted {}; `pipe up` boots the environment again", rec.name),
    );
    Ok(())
}

pub fn destroy(ctx: &Ctx, args: DestroyArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    // Without --env every machine of the pipeline goes, as `vagrant destroy` does.
    let qemu = local::qemu_machines(&pf, ctx.global.env.as_deref());
    let qemu_serving = find_serving(&pf, ctx.global.env.as_deref());
    let client = docker_if_any(ctx, qemu.len() + qemu_serving.len())?;
    let pipeline = &pf.pipeline.name.value;
    let project = crate::state::project_id(&pf.root);
    let mut removed = Vec::new();
    if let Some(client) = &client {
        let mut machines = find_machines(client, pipeline, &project, ctx.global.env.as_deref())?;
        machines.extend(find_by_role(
            client,
            pipeline,
            &project,
            "serving",
            ctx.global.env.as_deref(),
        )?);
        for c in &machines {
            let step = ctx.printer.step(format!("remove {}", c.name));
            client.remove_container(&c.id)?;
            step.done(None);
            removed.push(c.name.clone());
        }
    }
    // Qemu machines: QEMU stopped, overlay and folder (record, key, console log) removed.
    let qemu = qemu
        .iter()
        .map(|(dir, rec)| (dir, rec))
        .chain(qemu_serving.iter().map(|(dir, rec)| (dir, rec)));
    for (dir, rec) in qemu {
        let step = ctx.printer.step(format!("remove {}", rec.name));
        crate::targets::qemu::machine::destroy(dir)?;
        step.done(None);
        removed.push(rec.name.clone());
    }
    let mut images = Vec::new();
    if let (true, Some(client)) = (args.layers, &client) {
        for layer in [LayerName::App, LayerName::Base] {
            let p = format!("{}={pipeline}", label::PIPELINE);
            let l = format!("{}={layer}", label::LAYER);
            for img in client.images_by_labels(&[&p, &l])? {
                if client.remove_image(&img.id, true)? {
                    images.push(img.id.clone());
                }
            }
        }
    }
    if args.layers {
        images.extend(remove_qemu_layers(&pf)?);
    }
    let mut st = State::load(&pf.root);
    st.machines.retain(|_, m| !removed.contains(&m.name));
    st.save(&pf.root)?;
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
        s
    };
    ctx.printer.result(
        "destroy",
        serde_json::json!({ "machines": removed, "images": images }),
        &human,
    );
    Ok(())
}

/// Removes the pipeline's cached qemu layers, except those a remaining machine of this
/// project runs on (its overlay's backing chain); returns the removed files.
fn remove_qemu_layers(pf: &Pipelinefile) -> Result<Vec<String>> {
    use crate::targets::qemu::disk;
    let mut in_use = std::collections::HashSet::new();
    for (_, rec) in local::qemu_machines(pf, None) {
        let mut next = Some(rec.layer.clone());
        while let Some(layer) = next
            .and_then(|l| std::fs::canonicalize(l).ok())
            .filter(|l| in_use.insert(l.clone()))
        {
            next = disk::backing_file(&layer).ok().flatten();
        }
    }
    let dir = disk::layers_dir(&pf.pipeline.name.value);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        let layer = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            (n.starts_with("base-") || n.starts_with("app-")) && n.ends_with(".qcow2")
        });
        let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if !layer || in_use.contains(&canonical) {
            continue;
        }
        std::fs::remove_file(&path)
            .map_err(|e| Error::runtime(format!("removing layer {}: {e}", path.display()), None))?;
        removed.push(path.display().to_string());
    }
    removed.sort();
    Ok(removed)
}

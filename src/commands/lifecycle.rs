//! `pipe status`, `pipe halt`, `pipe destroy`: read from the engine by labels, so they work
//! with `.pipe/` stale or deleted, and they rewrite `.pipe/state.json` from what they find.

use std::time::Duration;

use crate::cli::DestroyArgs;
use crate::config::LayerName;
use crate::error::Result;
use crate::state::{MachineState, State};
use crate::targets::docker::DockerClient;
use crate::targets::docker::build::label;
use crate::targets::docker::machine::{find_by_role, find_machines};

use super::{Ctx, local};

pub fn status(ctx: &Ctx) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let client = DockerClient::connect()?;
    let pipeline = &pf.pipeline.name.value;
    let project = crate::state::project_id(&pf.root);
    let machines = find_machines(&client, pipeline, &project, ctx.global.env.as_deref())?;
    let serving = find_by_role(
        &client,
        pipeline,
        &project,
        "serving",
        ctx.global.env.as_deref(),
    )?;
    let mut st = State::load(&pf.root);
    let mut rows = Vec::new();
    let mut human = String::new();
    for c in &machines {
        let env = c.labels.get(label::ENV).cloned().unwrap_or_default();
        let digest = c.labels.get(label::DIGEST).cloned().unwrap_or_default();
        // Whether the machine runs what the Pipelinefile describes now.
        let current = crate::plan::make(
            &pf,
            &crate::plan::Selection {
                env: Some(env.clone()),
                local: true,
                target: None,
                cli_vars: ctx.global.vars.clone(),
            },
            ctx.printer,
        )
        .ok()
        .map(|p| p.digests.app.to_string() == digest);
        let freshness = match current {
            Some(true) => "up to date",
            Some(false) => "stale (run pipe up)",
            None => "unknown",
        };
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
            "env": env, "machine": c.name, "state": c.state, "digest": digest,
            "up_to_date": current, "ports": ports,
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
    // Forget machines that no longer exist.
    st.machines.retain(|env, m| {
        m.target != "docker"
            || machines
                .iter()
                .any(|c| c.name == m.name && c.labels.get(label::ENV) == Some(env))
    });
    st.save(&pf.root)?;
    if machines.is_empty() && serving.is_empty() {
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
    local::require_docker(target, "halt")?;
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

pub fn destroy(ctx: &Ctx, args: DestroyArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let client = DockerClient::connect()?;
    let pipeline = &pf.pipeline.name.value;
    let project = crate::state::project_id(&pf.root);
    // Without --env every machine of the pipeline goes, as `vagrant destroy` does.
    let mut machines = find_machines(&client, pipeline, &project, ctx.global.env.as_deref())?;
    machines.extend(find_by_role(
        &client,
        pipeline,
        &project,
        "serving",
        ctx.global.env.as_deref(),
    )?);
    let mut removed = Vec::new();
    for c in &machines {
        let step = ctx.printer.step(format!("remove {}", c.name));
        client.remove_container(&c.id)?;
        step.done(None);
        removed.push(c.name.clone());
    }
    let mut images = Vec::new();
    if args.layers {
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
            s.push_str(&format!("removed {} layer image(s)\n", images.len()));
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

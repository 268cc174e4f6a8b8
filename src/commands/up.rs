//! `pipe up`: a running local machine, provisioned exactly like the environment's image.
//! Idempotent: with nothing changed it only checks and says so.

use std::collections::BTreeMap;

use crate::cli::UpArgs;
use crate::communicators::docker::DockerExec;
use crate::config::{LayerName, TargetKind};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::runner::{Journal, Runner};
use crate::state::{self, MachineState, State};
use crate::targets::docker::build::{self, label};
use crate::targets::docker::machine::{self, MachineSpec};
use crate::targets::docker::{ContainerInfo, DockerClient};

use super::{Ctx, local};

pub fn run(ctx: &Ctx, args: UpArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let sel = local::selection(ctx, args.local, args.target.clone());
    let plan = crate::plan::make(&pf, &sel, ctx.printer)?;
    match plan.target {
        TargetKind::Docker => up_docker(ctx, &plan, args.keep_on_error),
        TargetKind::Qemu => Err(Error::NotImplemented("up --target qemu")),
        TargetKind::Ec2 => Err(Error::usage(
            format!(
                "env `{}` targets ec2; `pipe up` runs local machines",
                plan.env
            ),
            Some("add --local to run it on docker, or use `pipe bake`".to_string()),
        )),
    }
}

fn up_docker(ctx: &Ctx, plan: &Plan, keep_on_error: bool) -> Result<()> {
    crate::interrupt::install();
    let pf = plan.pf;
    let client = DockerClient::connect()?;
    let name = machine::machine_name(pf, &plan.env);
    let existing = client.inspect_container(&name)?;
    let digest = plan.digests.app.to_string();
    if let Some(c) = &existing {
        let same = c.labels.get(label::DIGEST) == Some(&digest);
        if same && c.running {
            record(pf, plan, c)?;
            return report(ctx, plan, c, "up to date");
        }
        if same {
            // Halted: start it again and hand it its services.
            let step = ctx.printer.step(format!("start {name}"));
            client.start_container(&c.id)?;
            let comm = DockerExec::new(client.clone(), name.clone());
            let rendered = plan.services();
            machine::deliver_services(&comm, &rendered)?;
            machine::wait_ready(&comm, &rendered, machine::READY_TIMEOUT)?;
            step.done(None);
            let c = client
                .inspect_container(&name)?
                .unwrap_or_else(|| c.clone());
            record(pf, plan, &c)?;
            return report(ctx, plan, &c, "started");
        }
    }
    let journal = Journal::start(&state::dir(&pf.root), "up", &pf.pipeline.name.value)?;
    let mut runner = Runner::new(journal, ctx.printer);
    let result = (|| {
        let box_image = local::docker_box_image(&client, pf, ctx.printer)?;
        let base = build::build_layer(
            &mut runner,
            &client,
            plan,
            LayerName::Base,
            &box_image,
            keep_on_error,
            ctx.printer,
        )?;
        let app = build::build_layer(
            &mut runner,
            &client,
            plan,
            LayerName::App,
            &base,
            keep_on_error,
            ctx.printer,
        )?;
        if let Some(old) = &existing {
            runner.step(&format!("remove the old machine {}", old.name), |_| {
                client.remove_container(&old.id)?;
                Ok(())
            })?;
        }
        let (res, info) = runner.step(&format!("start {name}"), |r| {
            machine::start_machine(
                r,
                &client,
                plan,
                MachineSpec {
                    name: name.clone(),
                    image: &app,
                    publish: true,
                    extra_labels: BTreeMap::new(),
                },
            )
        })?;
        runner.keep(&res)?;
        Ok(info)
    })();
    let info = runner.finish(result)?;
    record(pf, plan, &info)?;
    report(
        ctx,
        plan,
        &info,
        if existing.is_some() {
            "replaced"
        } else {
            "created"
        },
    )
}

fn record(pf: &crate::config::Pipelinefile, plan: &Plan, c: &ContainerInfo) -> Result<()> {
    let mut st = State::load(&pf.root);
    st.machines.insert(
        plan.env.clone(),
        MachineState {
            target: "docker".into(),
            name: c.name.clone(),
            image: c.image.clone(),
            digest: plan.digests.app.to_string(),
            updated: chrono::Utc::now().to_rfc3339(),
        },
    );
    st.save(&pf.root)?;
    Ok(())
}

fn report(ctx: &Ctx, plan: &Plan, c: &ContainerInfo, what: &str) -> Result<()> {
    let ports: Vec<String> = plan
        .pf
        .services
        .iter()
        .filter_map(|s| {
            s.published_port()
                .map(|p| format!("{} http://127.0.0.1:{p}/", s.name.value))
        })
        .collect();
    let mut human = format!(
        "machine {} (env {}) is {what}: app {}",
        c.name,
        plan.env,
        plan.digests.app.short()
    );
    for p in &ports {
        human.push_str(&format!("\n  {p}"));
    }
    ctx.printer.result(
        "up",
        serde_json::json!({
            "env": plan.env,
            "target": "docker",
            "machine": c.name,
            "state": what,
            "base_digest": plan.digests.base.to_string(),
            "app_digest": plan.digests.app.to_string(),
            "ports": plan.pf.services.iter().filter_map(|s| s.published_port().map(|p| serde_json::json!({"service": s.name.value, "host": "127.0.0.1", "port": p}))).collect::<Vec<_>>(),
        }),
        &human,
    );
    Ok(())
}

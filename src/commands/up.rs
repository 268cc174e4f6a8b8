//! `pipe up`: a running local machine, provisioned exactly like the environment's image.
//! Idempotent: with nothing changed it only checks and says so.

use std::collections::BTreeMap;

use crate::cli::UpArgs;
use crate::communicators::docker::DockerExec;
use crate::config::TargetKind;
use crate::engine::docker::{ContainerInfo, DockerClient};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::runner::{Journal, Runner};
use crate::state::{self, MachineState, State};
use crate::targets::Target;
use crate::targets::docker::DockerTarget;
use crate::targets::docker::build::label;
use crate::targets::docker::machine::{self, MachineSpec};
use crate::targets::layers::build_layers;

use super::{Ctx, local};

pub fn run(ctx: &Ctx, args: UpArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let sel = local::selection(ctx, args.local, args.target.clone());
    let plan = crate::plan::make(&pf, &sel, ctx.printer)?;
    match plan.target {
        TargetKind::Docker => up_docker(ctx, &plan, args.keep_on_error),
        TargetKind::Qemu => up_qemu(ctx, &plan, args.keep_on_error),
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
    let project = crate::state::project_id(&pf.root);
    if let Some(c) = &existing
        && c.labels.get(label::PROJECT) != Some(&project)
    {
        let owner = c
            .labels
            .get(label::PROJECT_DIR)
            .map_or("another project".to_string(), |d| {
                format!("the project in {d}")
            });
        return Err(Error::runtime(
            format!("a container named {name} already exists and belongs to {owner}"),
            Some(format!(
                "run `pipe destroy` there, or give this environment another `container_name` (or `docker rm -f {name}` if it is not pipe's)"
            )),
        ));
    }
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
        let target = DockerTarget::new(client.clone());
        let box_image = target.prepare_box(plan, ctx.printer)?;
        let (_, app) = build_layers(
            &mut runner,
            &target,
            plan,
            &box_image,
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

fn up_qemu(ctx: &Ctx, plan: &Plan, keep_on_error: bool) -> Result<()> {
    let (rec, what) = crate::targets::qemu::up::up(plan, keep_on_error, ctx.printer)?;
    let mut st = State::load(&plan.pf.root);
    st.machines.insert(plan.env.clone(), rec.state());
    st.save(&plan.pf.root)?;
    let mut human = format!(
        "machine {} (env {}, qemu, {}) is {what}: app {}\n  ssh -i {} -p {} root@127.0.0.1",
        rec.name,
        plan.env,
        rec.vm.accel,
        plan.digests.app.short(),
        rec.vm.dir.join("id_ed25519").display(),
        rec.vm.ssh_port,
    );
    for p in &rec.ports {
        human.push_str(&format!("\n  {} http://127.0.0.1:{}/", p.service, p.host));
    }
    ctx.printer.result(
        "up",
        serde_json::json!({
            "env": plan.env,
            "target": "qemu",
            "machine": rec.name,
            "state": what,
            "accel": rec.vm.accel,
            "accel_reason": rec.accel_reason,
            "boot_to_ssh_secs": rec.boot_to_ssh,
            "ssh_port": rec.vm.ssh_port,
            "console_log": rec.vm.console(),
            "base_digest": plan.digests.base.to_string(),
            "app_digest": plan.digests.app.to_string(),
            "ports": rec.ports.iter().map(|p| serde_json::json!({"service": p.service, "host": "127.0.0.1", "port": p.host})).collect::<Vec<_>>(),
        }),
        &human,
    );
    Ok(())
}

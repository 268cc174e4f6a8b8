//! `pipe provision`: re-runs the app provisioners in the running machine, then restarts its
//! services. Fast iteration; `pipe up` rebuilds the image from scratch.

use crate::communicators::Communicator;
use crate::communicators::docker::DockerExec;
use crate::config::{LayerName, Pipelinefile, TargetKind};
use crate::engine::docker::DockerClient;
use crate::error::Result;
use crate::plan::Plan;
use crate::provisioners::{self, ProvisionContext};
use crate::targets::docker::machine;
use crate::targets::qemu::machine as qmachine;

use super::exec::QEMU_SSH_TIMEOUT;
use super::{Ctx, local};

pub fn run(ctx: &Ctx) -> Result<()> {
    crate::interrupt::install();
    let pf = ctx.pipelinefile()?;
    let (_, target) = local::env_and_target(ctx, &pf)?;
    local::require_local(target, "provision")?;
    let plan = local::make_plan(ctx, &pf, true)?;
    let name = if target == TargetKind::Qemu {
        provision_qemu(ctx, &pf, &plan)?
    } else {
        provision_docker(ctx, &pf, &plan)?
    };
    ctx.printer.result(
        "provision",
        serde_json::json!({ "env": plan.env, "machine": name }),
        &format!(
            "re-provisioned {name} in place; `pipe up` rebuilds its image when the app layer's inputs change"
        ),
    );
    Ok(())
}

fn provision_docker(ctx: &Ctx, pf: &Pipelinefile, plan: &Plan) -> Result<String> {
    let client = DockerClient::connect()?;
    let c = local::running_machine(&client, pf, &plan.env)?;
    let comm = DockerExec::new(client.clone(), c.name.clone());
    provision_app(ctx, pf, plan, &comm, &c.name)?;
    let step = ctx.printer.step("restart services");
    client.stop_container(&c.id, std::time::Duration::from_secs(10))?;
    client.start_container(&c.id)?;
    let rendered = plan.services();
    machine::deliver_services(&comm, &rendered)?;
    machine::wait_ready(&comm, &rendered, machine::READY_TIMEOUT)?;
    step.done(None);
    Ok(c.name)
}

/// Over SSH to the running VM; its services are restarted as units, not by a reboot.
fn provision_qemu(ctx: &Ctx, pf: &Pipelinefile, plan: &Plan) -> Result<String> {
    let rec = local::running_qemu_machine(pf, &plan.env)?;
    let comm = rec.vm.ssh(QEMU_SSH_TIMEOUT);
    provision_app(ctx, pf, plan, &comm, &rec.name)?;
    let step = ctx.printer.step("restart services");
    let rendered = plan.services();
    qmachine::deliver_units(&comm, &rendered)?;
    qmachine::wait_ready(&comm, &rendered, qmachine::READY_TIMEOUT)?;
    step.done(None);
    Ok(rec.name)
}

/// The app layer's provisioners, with the build trust in place only while they run.
fn provision_app(
    ctx: &Ctx,
    pf: &Pipelinefile,
    plan: &Plan,
    comm: &dyn Communicator,
    machine: &str,
) -> Result<()> {
    let pctx = ProvisionContext {
        comm,
        printer: ctx.printer,
        root: &pf.root,
        template: &plan.template,
        build_env: plan.trust.env(),
    };
    let step = ctx
        .printer
        .step(format!("provision app layer in {machine}"));
    let provisioned = (|| {
        plan.trust.install(&pctx)?;
        provisioners::run_layer(LayerName::App, &pf.app, &pctx)?;
        plan.trust.remove(&pctx)
    })();
    if let Err(e) = provisioned {
        step.failed(None);
        return Err(e.into());
    }
    step.done(None);
    Ok(())
}

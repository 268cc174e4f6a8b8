//! `pipe provision`: re-runs the app provisioners in the running machine, then restarts its
//! services. Fast iteration; `pipe up` rebuilds the image from scratch.

use crate::communicators::docker::DockerExec;
use crate::config::LayerName;
use crate::error::Result;
use crate::provisioners::{self, ProvisionContext};
use crate::targets::docker::DockerClient;
use crate::targets::docker::machine;

use super::{Ctx, local};

pub fn run(ctx: &Ctx) -> Result<()> {
    crate::interrupt::install();
    let pf = ctx.pipelinefile()?;
    let (_, target) = local::env_and_target(ctx, &pf)?;
    local::require_docker(target, "provision")?;
    let plan = local::make_plan(ctx, &pf, true)?;
    let client = DockerClient::connect()?;
    let c = local::running_machine(&client, &pf, &plan.env)?;
    let comm = DockerExec::new(client.clone(), c.name.clone());
    let pctx = ProvisionContext {
        comm: &comm,
        printer: ctx.printer,
        root: &pf.root,
        template: &plan.template,
        build_env: plan.trust.env(),
    };
    let step = ctx
        .printer
        .step(format!("provision app layer in {}", c.name));
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
    let step = ctx.printer.step("restart services");
    client.stop_container(&c.id, std::time::Duration::from_secs(10))?;
    client.start_container(&c.id)?;
    let rendered = plan.services();
    machine::deliver_services(&comm, &rendered)?;
    machine::wait_ready(&comm, &rendered, machine::READY_TIMEOUT)?;
    step.done(None);
    ctx.printer.result(
        "provision",
        serde_json::json!({ "env": plan.env, "machine": c.name }),
        &format!(
            "re-provisioned {} in place; `pipe up` rebuilds its image when the app layer's inputs change",
            c.name
        ),
    );
    Ok(())
}

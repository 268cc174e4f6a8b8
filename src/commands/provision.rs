//! `pipe provision`: re-runs the app provisioners in the running machine, then restarts its
//! services. Fast iteration; `pipe up` rebuilds the image from scratch.

use crate::communicators::Communicator;
use crate::config::{LayerName, Pipelinefile};
use crate::error::Result;
use crate::plan::Plan;
use crate::provisioners::trace::Traced;
use crate::provisioners::{self, ProvisionContext};

use super::{Ctx, local};

pub fn run(ctx: &Ctx) -> Result<()> {
    crate::interrupt::install();
    let pf = ctx.pipelinefile()?;
    let (env, target) = local::open(ctx, &pf, "provision")?;
    let plan = local::make_plan(ctx, &pf, true)?;
    let mut m = target.running(&pf, &env)?;
    // `-v`/`-vv` show what runs in the machine, as in a bake.
    m.comm = Traced::boxed(m.comm, ctx.printer);
    provision_app(ctx, &pf, &plan, &*m.comm, &m.name)?;
    let step = ctx.printer.step("restart services");
    target.restart_services(&pf, &plan, &m)?;
    step.done(None);
    ctx.printer.result(
        "provision",
        serde_json::json!({ "env": plan.env, "machine": m.name }),
        &format!(
            "re-provisioned {} in place; `pipe up` rebuilds its image when the app layer's inputs change",
            m.name
        ),
    );
    Ok(())
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
    let provisioned = provisioners::run_layer(LayerName::App, &pf.app, &pctx, &plan.trust);
    if let Err(e) = provisioned {
        step.failed(None);
        return Err(e.into());
    }
    step.done(None);
    Ok(())
}

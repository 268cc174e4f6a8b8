//! Building layers, once for every target: the base layer on the box, the app layer on the
//! base, each reused when the target already has its digest. A build is: a build machine from
//! the parent, build trust in, the layer's provisioners, build trust out, commit (sealed), and
//! the build machine disposed. With `--keep-on-error` a failed build machine is kept, and the
//! target says how to get in.

use crate::config::{Layer, LayerName};
use crate::error::{Error, Result};
use crate::layers::digest::Digest;
use crate::plan::Plan;
use crate::provisioners::{self, ProvisionContext};
use crate::runner::Runner;
use crate::ui::Printer;

use super::verify::{verdict, verify};
use super::{Artifacts, Target};
use crate::ledger::VerifyOutcome;

/// What a bake made.
#[derive(Debug, Clone)]
pub struct Baked {
    pub base: String,
    pub app: String,
    /// The release's artifacts (the app image; a standalone qcow2; AMIs per region).
    pub artifacts: Artifacts,
    /// `None` with `--skip-verify`.
    pub verify: Option<VerifyOutcome>,
}

/// A release verified before whose verification still holds for this bake (same environment,
/// target, app digest and Pipelinefile), from the ledger.
#[derive(Debug, Clone)]
pub struct VerifiedBefore {
    pub alias: String,
    pub outcome: VerifyOutcome,
}

/// Bakes on any target: the box, the base and app layers (reused by digest), `[verify]` on a
/// fresh machine from the app layer, and the release's artifact. When the app layer is reused
/// and `before` says it was verified with this very Pipelinefile, nothing changed that
/// `[verify]` could see: its outcome stands, and no machine is started (`pipe verify` runs
/// the checks again on demand).
pub fn bake(
    runner: &mut Runner<'_>,
    target: &dyn Target,
    plan: &Plan,
    keep_on_error: bool,
    skip_verify: bool,
    before: Option<&VerifiedBefore>,
    printer: &Printer,
) -> Result<Baked> {
    let parent = target.prepare_box(plan, printer)?;
    let app_there = match before {
        Some(_) if !skip_verify => target
            .find_layer(plan, LayerName::App, &plan.digests.app)?
            .is_some(),
        _ => false,
    };
    let (base, app) = build_layers(runner, target, plan, &parent, keep_on_error, printer)?;
    let verify = if skip_verify {
        None
    } else if let (true, Some(before)) = (app_there, before) {
        let step = printer.step(format!("verify app layer {}", plan.digests.app.short()));
        step.skipped(Some(format!(
            "verified as release {} with this same Pipelinefile and app layer (`pipe verify` checks again)",
            before.alias
        )));
        Some(before.outcome.clone())
    } else {
        let step = format!("verify app layer {}", plan.digests.app.short());
        Some(runner.judged_step(&step, |r| verify(r, target, plan, &app, printer), verdict)?)
    };
    let artifacts = target.seal_artifact(runner, plan, &base, &app, printer)?;
    Ok(Baked {
        base,
        app,
        artifacts,
        verify,
    })
}

/// Builds (or reuses) the base layer on `parent` (the box), then the app layer on it; returns
/// both references.
pub fn build_layers(
    runner: &mut Runner<'_>,
    target: &dyn Target,
    plan: &Plan,
    parent: &str,
    keep_on_error: bool,
    printer: &Printer,
) -> Result<(String, String)> {
    let base = build_layer(
        runner,
        target,
        plan,
        LayerName::Base,
        parent,
        keep_on_error,
        printer,
    )?;
    let app = build_layer(
        runner,
        target,
        plan,
        LayerName::App,
        &base,
        keep_on_error,
        printer,
    )?;
    Ok((base, app))
}

/// Builds one layer on `parent` unless the target has its digest; returns its reference.
///
/// A base with a precache step, on a target that [keeps checkpoints](Target::checkpoints_base),
/// is built in two: its provisioners as a checkpoint layer (found again by the checkpoint
/// digest, so a change of the precache inputs alone reuses it), then the precache step on the
/// checkpoint. Both run in the same order as in one machine, with build trust in and out of
/// each.
pub fn build_layer(
    runner: &mut Runner<'_>,
    target: &dyn Target,
    plan: &Plan,
    name: LayerName,
    parent: &str,
    keep_on_error: bool,
    printer: &Printer,
) -> Result<String> {
    let (digest, layer): (Digest, &Layer) = match name {
        LayerName::Base => (plan.digests.base, &plan.pf.base),
        LayerName::App => (plan.digests.app, &plan.pf.app),
    };
    // Another run building the same layer: wait for it, then reuse its result.
    let _lock = target.lock_layer(plan, name, &digest)?;
    if let Some(found) = find(target, plan, name, &digest, &name.to_string(), printer)? {
        let step = printer.step(format!("{name} layer"));
        step.skipped(Some(format!("reusing {} (digest unchanged)", found.shown)));
        return Ok(found.reference);
    }
    let checkpoint = plan
        .digests
        .checkpoint
        .filter(|_| name == LayerName::Base && target.checkpoints_base());
    let Some(checkpoint) = checkpoint else {
        let part = Part {
            name,
            what: format!("{name} layer"),
            phase: name.to_string(),
            digest,
            steps: layer,
        };
        return build(runner, target, plan, &part, parent, keep_on_error, printer);
    };
    let provisioners = Layer {
        precache: None,
        ..layer.clone()
    };
    let on_checkpoint = {
        let _lock = target.lock_layer(plan, name, &checkpoint)?;
        match find(
            target,
            plan,
            name,
            &checkpoint,
            &format!("{name} checkpoint"),
            printer,
        )? {
            Some(found) => {
                let step = printer.step(format!("{name} checkpoint"));
                step.skipped(Some(format!(
                    "reusing {} (the base's provisioners are unchanged: only the precache step runs)",
                    found.shown
                )));
                found.reference
            }
            None => {
                let part = Part {
                    name,
                    what: format!("{name} checkpoint"),
                    phase: format!("{name} checkpoint"),
                    digest: checkpoint,
                    steps: &provisioners,
                };
                build(runner, target, plan, &part, parent, keep_on_error, printer)?
            }
        }
    };
    let precache_only = Layer {
        provision: Vec::new(),
        ..layer.clone()
    };
    let part = Part {
        name,
        what: format!("{name} layer"),
        phase: name.to_string(),
        digest,
        steps: &precache_only,
    };
    build(
        runner,
        target,
        plan,
        &part,
        &on_checkpoint,
        keep_on_error,
        printer,
    )
}

/// The layer with `digest`, if the target has it (`phase` names the lookup in the profile).
fn find(
    target: &dyn Target,
    plan: &Plan,
    name: LayerName,
    digest: &Digest,
    phase: &str,
    printer: &Printer,
) -> Result<Option<super::FoundLayer>> {
    let _p = printer.phase(format!("{phase}: find layer"));
    target.find_layer(plan, name, digest)
}

/// What one build machine makes: layer `name` committed as `digest`, by the steps of `steps`
/// (all of the layer's, or a part of the base's); `what` names it in its step (`base layer`,
/// `base checkpoint`), `phase` in `PIPE_PROFILE`'s phases (`base`, `base checkpoint`).
struct Part<'a> {
    name: LayerName,
    what: String,
    phase: String,
    digest: Digest,
    steps: &'a Layer,
}

/// Builds `part` on `parent`: a build machine, the provisioners, the commit.
fn build(
    runner: &mut Runner<'_>,
    target: &dyn Target,
    plan: &Plan,
    part: &Part<'_>,
    parent: &str,
    keep_on_error: bool,
    printer: &Printer,
) -> Result<String> {
    let Part {
        name,
        what,
        phase,
        digest,
        steps,
    } = part;
    let (name, digest) = (*name, *digest);
    let on = match target.kind() {
        crate::config::TargetKind::Docker => String::new(),
        kind => format!(" on {kind}"),
    };
    runner.step(&format!("build {what} {}{on}", digest.short()), |r| {
        let machine = {
            let _p = printer.phase(format!("{phase}: build machine"));
            target.start_build_machine(r, plan, name, &digest, parent, printer)?
        };
        let mut build_env = plan.trust.env();
        build_env.extend(machine.build_env.clone());
        let pctx = ProvisionContext {
            comm: &*machine.comm,
            printer,
            root: &plan.pf.root,
            template: &plan.template,
            build_env,
        };
        let provisioned =
            provisioners::run_layer(name, steps, &pctx, &plan.trust).map_err(Error::from);
        let committed = provisioned.and_then(|()| {
            let _p = printer.phase(format!("{phase}: commit"));
            target.commit_layer(r, plan, &machine, name, &digest, parent)
        });
        match committed {
            Ok(reference) => {
                let _p = printer.phase(format!("{phase}: remove build machine"));
                machine.dispose(r)?;
                Ok(reference)
            }
            Err(err) => {
                if keep_on_error && !matches!(err, Error::Interrupted) {
                    machine.keep(r)?;
                    let (message, hint) = target.kept_build_machine(&machine);
                    printer.warn(message, Some(hint));
                }
                Err(err)
            }
        }
    })
}

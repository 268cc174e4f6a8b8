//! What the local-machine commands share: the plan for the chosen environment, the Docker
//! connection, and finding the environment's machine.

use crate::config::{Pipelinefile, TargetKind};
use crate::error::{Error, Result};
use crate::plan::{self, Plan, Selection};
use crate::targets::docker::machine::{self, find_machines};
use crate::targets::docker::{ContainerInfo, DockerClient};

use super::Ctx;

/// The selection from the global flags.
pub fn selection(ctx: &Ctx, local: bool, target: Option<String>) -> Selection {
    Selection {
        env: ctx.global.env.clone(),
        local,
        target,
        cli_vars: ctx.global.vars.clone(),
    }
}

/// A full plan for a local command.
pub fn make_plan<'a>(ctx: &Ctx, pf: &'a Pipelinefile, local: bool) -> Result<Plan<'a>> {
    plan::make(pf, &selection(ctx, local, None), ctx.printer)
}

/// The environment a machine command acts on, and its local target kind.
pub fn env_and_target(ctx: &Ctx, pf: &Pipelinefile) -> Result<(String, TargetKind)> {
    let env = plan::pick_env(pf, ctx.global.env.as_deref())?;
    let target = plan::effective_target(pf, &env, &selection(ctx, true, None))?;
    Ok((env, target))
}

/// Fails for targets whose local machines are not built yet.
pub fn require_docker(target: TargetKind, command: &'static str) -> Result<()> {
    match target {
        TargetKind::Docker => Ok(()),
        TargetKind::Qemu => Err(Error::NotImplemented(command)),
        TargetKind::Ec2 => Err(Error::usage(
            format!("`pipe {command}` works on local machines, and this environment targets ec2"),
            Some("add --local to run it on docker".to_string()),
        )),
    }
}

/// The environment's machine container, running or not.
pub fn find_machine(
    client: &DockerClient,
    pf: &Pipelinefile,
    env: &str,
) -> Result<Option<ContainerInfo>> {
    let name = machine::machine_name(pf, env);
    let project = crate::state::project_id(&pf.root);
    let found = find_machines(client, &pf.pipeline.name.value, &project, Some(env))?;
    Ok(found.into_iter().find(|c| c.name == name).or(None))
}

/// The environment's running machine, or a clear error.
pub fn running_machine(
    client: &DockerClient,
    pf: &Pipelinefile,
    env: &str,
) -> Result<ContainerInfo> {
    match find_machine(client, pf, env)? {
        Some(c) if c.running => Ok(c),
        Some(c) => Err(Error::runtime(
            format!("machine {} of env `{env}` is {}", c.name, c.state),
            Some("start it with `pipe up`".to_string()),
        )),
        None => Err(Error::runtime(
            format!("env `{env}` has no machine"),
            Some("create it with `pipe up --local`".to_string()),
        )),
    }
}

/// The image a docker environment's base layer starts from: the built box, or the named image.
pub fn docker_box_image(
    client: &DockerClient,
    pf: &Pipelinefile,
    printer: &crate::ui::Printer,
) -> Result<String> {
    use crate::config::BoxSource;
    let Some(b) = pf.boxes.get(TargetKind::Docker) else {
        return Err(Error::usage(
            "[box] has no docker entry",
            Some("add `docker = { box = \"debian-12\" }` under [box]".to_string()),
        ));
    };
    match &b.value {
        BoxSource::Recipe(name) => {
            // Built on first use (and rebuilt when the recipe changed), with progress.
            let recipe = crate::boxes::recipe::Recipe::load(
                &pf.root.join("boxes").join(format!("{name}.toml")),
            )?;
            let built = crate::boxes::docker::build_docker_box(client, &recipe, printer, false)?;
            Ok(built.id)
        }
        BoxSource::Image(image) => match client.inspect_image(image)? {
            Some(img) => Ok(img.id),
            None => {
                let step = printer.step(format!("pull {image}"));
                let id = client.pull_image(image, &mut |status| step.set_detail(status))?;
                step.done(None);
                Ok(id)
            }
        },
        other => Err(Error::usage(format!("{other:?} is not a docker box"), None)),
    }
}

/// Hands a machine command's output straight to the terminal (`pipe exec`, `pipe logs`).
pub struct Passthrough<'a>(pub &'a crate::ui::Printer, pub &'static str);

impl crate::communicators::OutputSink for Passthrough<'_> {
    fn chunk(&mut self, stream: crate::communicators::Stream, data: &[u8]) {
        self.0.passthrough(self.1, stream, data);
    }
}

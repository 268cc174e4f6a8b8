//! Switching what serves an environment on a local target, once for every target:
//!
//! 1. verify the release on a fresh machine without ports (the old machine keeps serving; a
//!    failure here changes nothing);
//! 2. stop the old machine cleanly (what it runs on stays);
//! 3. start the new one with the ports, deliver its services, wait for them, run `[verify]`
//!    again in it;
//! 4. remove the old machine.
//!
//! Two machines cannot publish the same host port, so the only downtime is step 3 (seconds).
//! If step 2 or 3 fails, or Ctrl-C/SIGTERM arrives, everything the new machine was made of is
//! removed (first, to free the ports) and the old machine is started again with its services
//! (that goes on after Ctrl-C), so it keeps serving. Once step 3 is over the switch is
//! finished even if Ctrl-C comes, so that what serves and what the ledger says agree.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::ledger::Release;
use crate::plan::Plan;
use crate::runner::Runner;
use crate::services::RenderedService;
use crate::ui::Printer;

use super::checks::run_checks;
use super::ports::{ServicePort, serving_name};
use super::verify::{verdict, verify};
use super::{MachineSpec, Role, Serving, Target};

/// What a switch works from.
pub struct Switch<'a> {
    /// Rendered for the environment the release was baked in: its services and checks run as
    /// they were verified.
    pub plan: &'a Plan<'a>,
    /// The environment to serve.
    pub env: &'a str,
    pub release: &'a Release,
    /// The release's artifact on the target (checked to exist).
    pub artifact: &'a str,
    /// The environment's serving machines now.
    pub old: Vec<Serving>,
    /// The services an old machine gets back if it has to start again, by name (its own
    /// release's; `plan`'s when missing).
    pub old_services: BTreeMap<String, Vec<RenderedService>>,
    /// Where the new machine's services are published.
    pub ports: Vec<ServicePort>,
}

/// Switches the environment to the release (see the module doc); returns the new machine's
/// name.
pub fn switch(
    runner: &mut Runner<'_>,
    target: &dyn Target,
    s: &Switch,
    printer: &Printer,
) -> Result<String> {
    let alias = &s.release.alias;
    let noun = target.noun();
    let outcome = runner.judged_step(
        &format!("verify release {alias} on a fresh machine"),
        |r| verify(r, target, s.plan, s.artifact, printer),
        verdict,
    )?;
    if !outcome.ok {
        return Err(Error::VerifyFailed(format!(
            "release {alias} failed [verify] on a fresh machine; {} keeps serving\n{}",
            s.env, outcome.excerpt
        )));
    }
    let name = serving_name(&s.plan.pf.pipeline.name.value, s.env, alias);
    let mark = runner.mark();
    let mut stopped: Vec<&Serving> = Vec::new();
    let switched = (|| {
        for old in s.old.iter().filter(|o| o.running) {
            // Listed first: a Ctrl-C during the stop ends the step with the machine already
            // stopped, and it must still be brought back (`restore` skips it if it runs).
            stopped.push(old);
            runner.step(&format!("stop the old {noun} {}", old.name), |_| {
                target.stop_serving(old, printer)?;
                crate::runner::pause_point(printer, &format!("old {noun} stopped"));
                Ok(())
            })?;
        }
        // A stopped machine of this very release (the ledger said another one was current):
        // it is made anew, from the artifact, like any other.
        if let Some(same) = s.old.iter().find(|o| o.name == name) {
            runner.step(&format!("remove the stopped {noun} {}", same.name), |_| {
                target.remove_serving(same)
            })?;
            stopped.retain(|o| o.name != name);
        }
        runner.step(&format!("start {name}"), |r| {
            let spec = MachineSpec {
                name: name.clone(),
                role: Role::Serving {
                    env: s.env,
                    release: s.release,
                },
                ports: s.ports.clone(),
            };
            let machine = target.start_machine(r, s.plan, s.artifact, &spec, printer)?;
            let rendered = s.plan.services();
            let timeout = std::time::Duration::from_secs(s.plan.pf.verify.timeout.max(1));
            target.deliver_services(&*machine.comm, &rendered)?;
            target.wait_ready(&*machine.comm, &rendered, timeout)?;
            let outcome = run_checks(&*machine.comm, s.plan, timeout, printer)?;
            if !outcome.ok {
                return Err(Error::VerifyFailed(format!(
                    "the new {noun} {name} failed [verify]\n{}",
                    outcome.excerpt
                )));
            }
            Ok(())
        })
    })();
    // Kept only once the step is over: a Ctrl-C during it still removes the new machine.
    if let Err(e) = switched.and_then(|()| runner.keep_since(mark)) {
        // Free the ports first, then bring the old machine back.
        let mut failures: Vec<String> = Vec::new();
        if let Err(err) = runner.dispose_since(mark) {
            failures.push(err.to_string());
        }
        failures.extend(restore(runner, target, s, &stopped, printer));
        return Err(if failures.is_empty() {
            e
        } else {
            Error::Cleanup {
                error: Some(Box::new(e)),
                failures,
            }
        });
    }
    for old in s.old.iter().filter(|o| o.name != name) {
        let step = printer.step(format!("remove the old {noun} {}", old.name));
        match target.remove_serving(old) {
            Ok(()) => step.done(None),
            Err(e) => {
                step.failed(Some(e.to_string()));
                printer.warn(
                    format!("the old {noun} {} is stopped but still there", old.name),
                    Some("`pipe destroy` removes it".to_string()),
                );
            }
        }
    }
    target.switched(s.plan, s.env, s.artifact, printer);
    Ok(name)
}

/// Starts stopped old machines again with their services; returns what went wrong.
fn restore(
    runner: &mut Runner<'_>,
    target: &dyn Target,
    s: &Switch,
    stopped: &[&Serving],
    printer: &Printer,
) -> Vec<String> {
    let noun = target.noun();
    let fallback = s.plan.services();
    let mut problems = Vec::new();
    for old in stopped {
        let rendered = s.old_services.get(&old.name).unwrap_or(&fallback);
        if let Err(e) = target.restore_serving(runner, s.plan, old, rendered, printer) {
            problems.push(format!(
                "the old {noun} {} could not be started again: {e} (start it again with `pipe promote` of its release)",
                old.name
            ));
        }
    }
    problems
}

//! `[verify]` on a fresh machine, once for every target: a temporary machine from the app layer
//! or a release's artifact (no ports published, a run-specific name), its services delivered
//! and listening, the checks ([`super::checks`]) run inside it, and the machine removed.

use std::time::Duration;

use crate::communicators::Communicator;
use crate::error::{Error, Result};
use crate::ledger::VerifyOutcome;
use crate::plan::Plan;
use crate::runner::Runner;
use crate::ui::Printer;

use super::checks::{excerpt, run_checks};
use super::{MachineSpec, Role, Target, suffix};

/// Verifies `from` on a fresh, temporary machine that is always removed. A failed check is an
/// `Ok` outcome with `ok: false`; only the target's failures and interrupts are errors.
pub fn verify(
    runner: &mut Runner<'_>,
    target: &dyn Target,
    plan: &Plan,
    from: &str,
    printer: &Printer,
) -> Result<VerifyOutcome> {
    let run_id = runner.run_id();
    let spec = MachineSpec {
        name: format!(
            "pipe-{}-verify-{}",
            plan.pf.pipeline.name.value,
            suffix(&run_id)
        ),
        role: Role::Verify,
        ports: Vec::new(),
    };
    let machine = target.start_machine(runner, plan, from, &spec, printer);
    let machine = machine?;
    crate::runner::pause_point(printer, "verify machine started");
    let outcome = start_services_and_check(target, &*machine.comm, plan, printer);
    // Disposed even when the checks were interrupted; the runner would do it too, this is
    // sooner.
    let disposed = machine.dispose(runner);
    let outcome = outcome?;
    disposed?;
    Ok(outcome)
}

/// How a verify step ends: failed when the checks failed (the outcome is still `Ok`, for the
/// ledger), for [`Runner::judged_step`].
pub fn verdict(outcome: &VerifyOutcome) -> Option<String> {
    (!outcome.ok).then(|| "the checks failed".to_string())
}

/// Delivers the services, waits for their ports, runs the checks. Services that never listen
/// fail the verification (with their log), they are not a pipe error.
pub fn start_services_and_check(
    target: &dyn Target,
    comm: &dyn Communicator,
    plan: &Plan,
    printer: &Printer,
) -> Result<VerifyOutcome> {
    let rendered = plan.services();
    let timeout = Duration::from_secs(plan.pf.verify.timeout.max(1));
    target.deliver_services(comm, &rendered)?;
    match target.wait_ready(comm, &rendered, timeout) {
        Ok(()) => {}
        Err(Error::Interrupted) => return Err(Error::Interrupted),
        Err(e) => {
            return Ok(VerifyOutcome {
                ok: false,
                excerpt: excerpt(&e.to_string(), printer),
            });
        }
    }
    run_checks(comm, plan, timeout, printer)
}

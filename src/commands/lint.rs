//! `pipe lint`: the provisioning code checked without a machine; `pipe bake` runs the same
//! checks first.

use crate::config::Pipelinefile;
use crate::error::{Error, Result};
use crate::lint::{self, Severity, Tools};
use crate::ui::Event;

use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let warnings = check(ctx, &pf)?;
    let human = match warnings {
        0 => "lint: no findings".to_string(),
        1 => "lint: no errors, 1 warning".to_string(),
        n => format!("lint: no errors, {n} warnings"),
    };
    ctx.printer.result(
        "lint",
        serde_json::json!({ "errors": 0, "warnings": warnings }),
        &human,
    );
    Ok(())
}

/// Lints `pf`, prints every finding and note, and fails when a finding is an error; the
/// number of warnings otherwise.
pub fn check(ctx: &Ctx, pf: &Pipelinefile) -> Result<usize> {
    let report = lint::lint(pf, &Tools::from_path());
    for note in &report.notes {
        ctx.printer.warn(format!("lint: {note}"), None);
    }
    if !report.findings.is_empty() {
        let events = report
            .findings
            .iter()
            .zip(report.locations(&ctx.cwd))
            .map(|(f, (file, line, column))| Event::Diagnostic {
                file,
                line,
                column,
                message: f.diagnostic.message.clone(),
                hint: f.diagnostic.hint.clone(),
                severity: Some(f.severity.as_str()),
            })
            .collect();
        ctx.printer.diagnostics(&report.render(&ctx.cwd), events);
    }
    match report.count(Severity::Error) {
        0 => Ok(report.count(Severity::Warning)),
        n => Err(Error::Lint(n)),
    }
}

//! `pipe lint`: provisioning code checked without a machine, before a bake spends one.
//!
//! Shell scripts and inline commands go through `shellcheck`, Ansible playbooks through
//! `ansible-playbook --syntax-check` (each when it is installed: a note says so when it is
//! not), and two checks need only the Pipelinefile: `[verify]` URLs on a port no service
//! declares, and services whose `user` no provisioner creates. Findings are diagnostics with
//! file:line:column like the Pipelinefile's, pointing into the script, the playbook or the
//! Pipelinefile itself (an inline command's line is its line in the Pipelinefile).

mod ansible;
mod services;
mod shell;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::Pipelinefile;
use crate::config::diagnostic::{Diagnostic, LineIndex, render_one};
use crate::config::model::Span;

/// How much a finding weighs: an error stops `pipe bake`, a warning is only shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One problem found in a file of the project.
#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    /// The file, absolute (the Pipelinefile, a script, a playbook).
    pub file: PathBuf,
    pub diagnostic: Diagnostic,
}

/// Every finding, the text of each file they point into, and notes about checks that could
/// not run (a tool that is not installed).
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub notes: Vec<String>,
    sources: BTreeMap<PathBuf, String>,
}

impl Report {
    /// Records a finding in `file`, whose text is `source`.
    fn add(&mut self, severity: Severity, file: &Path, source: &str, diagnostic: Diagnostic) {
        self.sources
            .entry(file.to_path_buf())
            .or_insert_with(|| source.to_string());
        self.findings.push(Finding {
            severity,
            file: file.to_path_buf(),
            diagnostic,
        });
    }

    /// How many findings have `severity`.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// The findings in file order (the Pipelinefile's own first, as pipe reads it), then by
    /// place, each rendered as the Pipelinefile's diagnostics are, with paths shown relative
    /// to `cwd`, and a closing count.
    pub fn render(&self, cwd: &Path) -> String {
        let mut out = String::new();
        for (i, f) in self.findings.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let source = self.sources.get(&f.file).map_or("", String::as_str);
            let index = LineIndex::new(source);
            render_one(
                &mut out,
                f.severity.as_str(),
                &f.diagnostic,
                &shown(&f.file, cwd),
                &index,
            );
        }
        if !self.findings.is_empty() {
            let (errors, warnings) = (self.count(Severity::Error), self.count(Severity::Warning));
            let _ = writeln!(
                out,
                "\nlint: {errors} error{}, {warnings} warning{}",
                plural(errors),
                plural(warnings)
            );
        }
        out
    }

    /// File, line and column of each finding (for `--json`), in the order of [`Self::render`].
    pub fn locations(&self, cwd: &Path) -> Vec<(String, usize, usize)> {
        self.findings
            .iter()
            .map(|f| {
                let source = self.sources.get(&f.file).map_or("", String::as_str);
                let (line, col) = f
                    .diagnostic
                    .span
                    .map_or((0, 0), |s| LineIndex::new(source).line_col(s.start));
                (shown(&f.file, cwd).display().to_string(), line, col)
            })
            .collect()
    }

    fn sort(&mut self, pipelinefile: &Path) {
        self.findings.sort_by(|a, b| {
            let key = |f: &Finding| {
                (
                    f.file != pipelinefile,
                    f.file.clone(),
                    f.diagnostic.span.map_or(0, |s| s.start),
                )
            };
            key(a).cmp(&key(b))
        });
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `file` relative to `cwd` when it is below it.
fn shown(file: &Path, cwd: &Path) -> PathBuf {
    file.strip_prefix(cwd).unwrap_or(file).to_path_buf()
}

/// The host tools lint runs; `None` when one is not installed (its check is skipped with a
/// note). Tests point them at other programs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub shellcheck: Option<PathBuf>,
    pub ansible_playbook: Option<PathBuf>,
}

impl Tools {
    /// The tools found on `PATH`.
    pub fn from_path() -> Self {
        Self {
            shellcheck: crate::process::which("shellcheck"),
            ansible_playbook: crate::process::which("ansible-playbook"),
        }
    }
}

/// Runs every check on the Pipelinefile's provisioning code.
pub fn lint(pf: &Pipelinefile, tools: &Tools) -> Report {
    let mut report = Report::default();
    shell::check(pf, tools.shellcheck.as_deref(), &mut report);
    ansible::check(pf, tools.ansible_playbook.as_deref(), &mut report);
    services::check(pf, &mut report);
    report.sort(&pf.path);
    report
}

/// A finding in the Pipelinefile itself.
fn in_pipelinefile(
    report: &mut Report,
    pf: &Pipelinefile,
    severity: Severity,
    message: String,
    span: Span,
    hint: Option<String>,
) {
    let mut d = Diagnostic::new(message, span);
    d.hint = hint;
    report.add(severity, &pf.path, &pf.source, d);
}

//! Shell provisioners through `shellcheck`: a script file is checked as it is and its findings
//! point into it; inline commands are checked as the one script pipe runs them in (`sh -e`),
//! and their findings point at the command's place in the Pipelinefile.
//!
//! shellcheck's `error`, `warning` and `info` findings are errors here (`info` holds the
//! unquoted expansions, SC2086, that split and glob a value at run time); `style` findings
//! are warnings, and so is SC2154 (a variable used but not assigned): the environment a
//! provisioner runs in (its `env`, and what pipe sets there: `npm_config_cache`, the proxy
//! settings) is not visible to shellcheck. SC1091 (a sourced file that is not on the host) is
//! left out: the file lives on the machine. A finding a script means to keep is silenced the usual way, with a
//! `# shellcheck disable=SC2086` comment above the line.

use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::config::diagnostic::{Diagnostic, LineIndex};
use crate::config::model::{Pipelinefile, Span, Template};
use crate::config::{ProvisionerKind, ShellSource};

use super::{Report, Severity};

/// What `shellcheck --format=json1` prints.
#[derive(Debug, Deserialize)]
struct Output {
    comments: Vec<Comment>,
}

#[derive(Debug, Deserialize)]
struct Comment {
    line: usize,
    column: usize,
    #[serde(rename = "endLine")]
    end_line: usize,
    #[serde(rename = "endColumn")]
    end_column: usize,
    level: String,
    code: u32,
    message: String,
}

/// The lines pipe puts before inline commands (`provisioners::shell`), so that shellcheck
/// sees the script that runs.
const INLINE_HEADER: &str = "#!/bin/sh\nset -e\n";

pub fn check(pf: &Pipelinefile, shellcheck: Option<&Path>, report: &mut Report) {
    let shells: Vec<&ShellSource> = [&pf.base, &pf.app]
        .into_iter()
        .flat_map(|l| &l.provision)
        .filter_map(|p| match &p.kind {
            ProvisionerKind::Shell(s) => Some(&s.source),
            _ => None,
        })
        .collect();
    if shells.is_empty() {
        return;
    }
    let Some(shellcheck) = shellcheck else {
        report.notes.push(
            "shellcheck is not installed: shell provisioners were not checked (Debian: apt-get install shellcheck)"
                .to_string(),
        );
        return;
    };
    let mut seen = Vec::new();
    for source in shells {
        match source {
            ShellSource::Script(path) => {
                let file = pf.root.join(&path.value);
                if seen.contains(&file) {
                    continue;
                }
                seen.push(file.clone());
                script(shellcheck, &file, report);
            }
            ShellSource::Inline(lines) => inline(pf, shellcheck, lines, report),
        }
    }
}

/// A script file: findings in the file.
fn script(shellcheck: &Path, file: &Path, report: &mut Report) {
    let Ok(text) = std::fs::read_to_string(file) else {
        // Missing files are the Pipelinefile's error; a binary "script" is not shell.
        return;
    };
    let shell = (!text.starts_with("#!")).then_some("sh");
    let comments = match run(shellcheck, shell, Some(file), None) {
        Ok(c) => c,
        Err(e) => {
            report
                .notes
                .push(format!("shellcheck failed on {}: {e}", file.display()));
            return;
        }
    };
    let index = LineIndex::new(&text);
    for c in comments {
        let start = index.offset(c.line, c.column);
        let end = if c.end_line == c.line {
            index.offset(c.line, c.end_column)
        } else {
            start
        };
        report.add(
            severity(c.code, &c.level),
            file,
            &text,
            diagnostic(&c, Span::new(start, end.max(start))),
        );
    }
}

/// Inline commands, checked together as the script they run in; each finding goes to its
/// command's place in the Pipelinefile.
fn inline(pf: &Pipelinefile, shellcheck: &Path, lines: &[Template], report: &mut Report) {
    let mut text = String::from(INLINE_HEADER);
    // The script line each command starts on (1-based).
    let mut starts = Vec::with_capacity(lines.len());
    for t in lines {
        starts.push(text.lines().count() + 1);
        text.push_str(&masked(&t.raw));
        text.push('\n');
    }
    let comments = match run(shellcheck, Some("sh"), None, Some(&text)) {
        Ok(c) => c,
        Err(e) => {
            report
                .notes
                .push(format!("shellcheck failed on inline commands: {e}"));
            return;
        }
    };
    for c in comments {
        // Findings about the header itself (none expected) have no command to point at.
        let Some(i) = starts.iter().rposition(|s| *s <= c.line) else {
            continue;
        };
        let t = &lines[i];
        let start = pipelinefile_offset(&pf.source, t, c.line - starts[i], c.column);
        let end = if c.end_line == c.line {
            pipelinefile_offset(&pf.source, t, c.line - starts[i], c.end_column)
        } else {
            start
        };
        report.add(
            severity(c.code, &c.level),
            &pf.path,
            &pf.source,
            diagnostic(&c, Span::new(start, end.max(start))),
        );
    }
}

/// `{{ ... }}` replaced by as many `x` as it is long: shellcheck sees a plain word where pipe
/// will put a value, and columns stay where they were.
fn masked(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}") else {
            break;
        };
        out.push_str(&rest[..open]);
        let len = rest[open..open + close + 2].chars().count();
        out.extend(std::iter::repeat_n('x', len));
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    out
}

/// The offset in the Pipelinefile of `line` (0-based, within the command) and `column`
/// (1-based) of an inline command. When the string is written with escapes, so that its text
/// is not in the source as it is, the start of the string.
fn pipelinefile_offset(source: &str, t: &Template, line: usize, column: usize) -> usize {
    let written = source.get(t.span.start..t.span.end).unwrap_or("");
    let Some(at) = written.find(&t.raw).filter(|_| !t.raw.is_empty()) else {
        return t.span.start;
    };
    let base = t.span.start + at;
    let index = LineIndex::new(&t.raw);
    base + index.offset(line + 1, column)
}

fn severity(code: u32, level: &str) -> Severity {
    match (code, level) {
        (_, "style") | (2154, _) => Severity::Warning,
        _ => Severity::Error,
    }
}

fn diagnostic(c: &Comment, span: Span) -> Diagnostic {
    Diagnostic::new(format!("SC{}: {}", c.code, c.message), span).with_hint(format!(
        "see https://www.shellcheck.net/wiki/SC{}; to keep it, put `# shellcheck disable=SC{}` above the line",
        c.code, c.code
    ))
}

/// Runs shellcheck on `file`, or on `stdin` as a script; its comments.
fn run(
    shellcheck: &Path,
    shell: Option<&str>,
    file: Option<&Path>,
    stdin: Option<&str>,
) -> Result<Vec<Comment>, String> {
    let mut cmd = Command::new(shellcheck);
    cmd.args(["--format=json1", "--exclude=SC1091"]);
    if let Some(shell) = shell {
        cmd.arg(format!("--shell={shell}"));
    }
    match file {
        Some(f) => {
            cmd.arg(f);
            if let Some(dir) = f.parent() {
                cmd.current_dir(dir);
            }
        }
        None => {
            cmd.arg("-");
        }
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| crate::process::ProcessError::start(&cmd, e).to_string())?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        use std::io::Write as _;
        input
            .write_all(text.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    // 0: nothing found, 1: findings; anything else is shellcheck failing.
    if !matches!(out.status.code(), Some(0 | 1)) {
        return Err(
            crate::process::ProcessError::exited(&cmd, out.status, &out.stderr).to_string(),
        );
    }
    serde_json::from_slice::<Output>(&out.stdout)
        .map(|o| o.comments)
        .map_err(|e| format!("unreadable shellcheck output: {e}"))
}

#[cfg(test)]
mod tests {

    #[test]
    fn unquoted_expansions_stop_a_bake_and_the_environment_is_not_judged() {
        assert_eq!(severity(2086, "info"), Severity::Error);
        assert_eq!(severity(2034, "warning"), Severity::Error);
        assert_eq!(severity(2154, "warning"), Severity::Warning);
        assert_eq!(severity(2250, "style"), Severity::Warning);
    }

    use super::*;

    #[test]
    fn templates_are_masked_keeping_columns() {
        assert_eq!(masked("echo {{ vars.a }} $X"), "echo xxxxxxxxxxxx $X");
        assert_eq!(masked("a {{ b"), "a {{ b");
    }

    #[test]
    fn inline_findings_point_into_the_string() {
        let source = "inline = [\"echo $X\"]\n";
        let t = Template {
            raw: "echo $X".into(),
            span: Span::new(10, 19),
        };
        // Column 6 of the command is `$X`.
        assert_eq!(&source[pipelinefile_offset(source, &t, 0, 6)..][..2], "$X");
        let escaped = Template {
            raw: "echo \"$X\"".into(),
            span: Span::new(10, 23),
        };
        assert_eq!(
            pipelinefile_offset("inline = [\"echo \\\"$X\\\"\"]", &escaped, 0, 6),
            10
        );
    }
}

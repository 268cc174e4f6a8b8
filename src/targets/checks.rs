//! The `[verify]` checks, the same on every target: commands run with `sh -c` inside the
//! machine, HTTP checks with the machine's `curl`, so verification never depends on host ports.
//!
//! Checks are retried together until they all pass or `[verify].timeout` runs out; the outcome
//! keeps the last attempt's transcript (its last lines, secrets masked) for the release.

use std::time::{Duration, Instant};

use crate::communicators::{Collect, Communicator, ExecError, ExecRequest};
use crate::error::{Error, Result};
use crate::ledger::VerifyOutcome;
use crate::plan::Plan;
use crate::ui::{Printer, Redactor};

/// How many lines of output a release keeps.
pub const EXCERPT_LINES: usize = 20;
/// The longest one check may run in one attempt.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a body a failed HTTP check shows.
const BODY_CHARS: usize = 300;
/// Pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Runs every `[verify]` check until all pass in one attempt or `timeout` passes.
pub fn run_checks(
    comm: &dyn Communicator,
    plan: &Plan,
    timeout: Duration,
    printer: &Printer,
) -> Result<VerifyOutcome> {
    let verify = &plan.pf.verify;
    let commands: Vec<String> = verify.commands.iter().map(|c| plan.render(c)).collect();
    let http: Vec<(String, u16, Option<String>)> = verify
        .http
        .iter()
        .map(|h| {
            (
                plan.render(&h.url),
                h.status,
                h.contains.as_ref().map(|c| plan.render(c)),
            )
        })
        .collect();
    let started = Instant::now();
    loop {
        let remaining = timeout.saturating_sub(started.elapsed());
        let per_check = remaining.clamp(Duration::from_secs(1), CHECK_TIMEOUT);
        let mut transcript = String::new();
        let mut ok = true;
        for cmd in &commands {
            let req = ExecRequest {
                timeout: Some(per_check),
                ..ExecRequest::shell(cmd.clone())
            };
            let (code, out) = exec(comm, &req)?;
            transcript.push_str(&format!("$ {cmd}\n{out}"));
            match code {
                Some(0) => transcript.push_str("ok\n"),
                Some(c) => {
                    ok = false;
                    transcript.push_str(&format!("failed: exit code {c}\n"));
                }
                None => {
                    ok = false;
                    transcript.push_str(&format!(
                        "failed: no exit within {}s\n",
                        per_check.as_secs()
                    ));
                }
            }
        }
        for (url, status, contains) in &http {
            let req = ExecRequest {
                argv: vec![
                    "curl".into(),
                    "-sS".into(),
                    "-m".into(),
                    per_check.as_secs().max(1).to_string(),
                    "-w".into(),
                    "\n%{http_code}".into(),
                    url.clone(),
                ],
                timeout: Some(per_check + Duration::from_secs(5)),
                ..Default::default()
            };
            let (code, out) = exec(comm, &req)?;
            let (passed, line) = judge_http(
                url,
                *status,
                contains.as_deref(),
                code,
                &out,
                printer.redactor(),
            );
            ok &= passed;
            transcript.push_str(&line);
        }
        if ok || started.elapsed() >= timeout {
            let mut text = transcript;
            if !ok {
                text.push_str(&format!(
                    "verification still failing after {}s\n",
                    timeout.as_secs()
                ));
            }
            return Ok(VerifyOutcome {
                ok,
                excerpt: excerpt(&text, printer),
            });
        }
        let pause = Instant::now();
        while pause.elapsed() < RETRY_PAUSE {
            if crate::interrupt::requested() {
                return Err(Error::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs one command; `None` as the code when it timed out.
fn exec(comm: &dyn Communicator, req: &ExecRequest) -> Result<(Option<i32>, String)> {
    let mut out = Collect::default();
    let code = match comm.exec(req, &mut out) {
        Ok(c) => Some(c),
        Err(ExecError::TimedOut(_)) => None,
        Err(ExecError::Interrupted) => return Err(Error::Interrupted),
        Err(e) => {
            return Err(Error::runtime(
                format!("verify: running a check in {}: {e}", comm.describe()),
                None,
            ));
        }
    };
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((code, text))
}

/// Judges curl's output (body, then the status on the last line); returns the verdict and a
/// transcript line.
fn judge_http(
    url: &str,
    status: u16,
    contains: Option<&str>,
    code: Option<i32>,
    out: &str,
    redactor: &Redactor,
) -> (bool, String) {
    let head = format!("GET {url}");
    match code {
        None => return (false, format!("{head}: no answer in time\n")),
        Some(127) => {
            return (
                false,
                format!("{head}: curl is not installed in the image (HTTP checks need it)\n"),
            );
        }
        Some(0) => {}
        Some(c) => {
            return (
                false,
                format!("{head}: curl failed (exit code {c}): {}\n", out.trim()),
            );
        }
    }
    let (body, got) = match out.rsplit_once('\n') {
        Some((b, s)) => (b, s.trim()),
        None => ("", out.trim()),
    };
    let got: u16 = got.parse().unwrap_or(0);
    if got != status {
        return (
            false,
            format!(
                "{head}: status {got}, expected {status}; body: {}\n",
                shown_body(body, redactor)
            ),
        );
    }
    if let Some(want) = contains {
        if !body.contains(want) {
            return (
                false,
                format!(
                    "{head}: status {got}, but the body does not contain `{want}`; body: {}\n",
                    shown_body(body, redactor)
                ),
            );
        }
        return (true, format!("{head}: {got}, body contains `{want}`: ok\n"));
    }
    (true, format!("{head}: {got}: ok\n"))
}

/// The start of a body for a failure, on one line: secrets masked first (so a cut never leaves
/// part of one), control characters escaped, at most [`BODY_CHARS`] characters, quoted.
fn shown_body(body: &str, redactor: &Redactor) -> String {
    let masked = redactor.redact(body);
    let mut shown = String::new();
    let mut chars = 0;
    for c in masked.chars() {
        let piece = match c {
            '\n' => "\\n".to_string(),
            '\r' => "\\r".to_string(),
            '\t' => "\\t".to_string(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        };
        if chars + piece.chars().count() > BODY_CHARS {
            return format!(
                "\"{shown}\" (first {chars} characters of {})",
                masked.chars().count()
            );
        }
        chars += piece.chars().count();
        shown.push_str(&piece);
    }
    if shown.is_empty() {
        return "(empty)".into();
    }
    format!("\"{shown}\"")
}

/// The last [`EXCERPT_LINES`] lines, secrets masked.
pub fn excerpt(text: &str, printer: &Printer) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(EXCERPT_LINES)..];
    printer.redactor().redact(&tail.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_status_and_body() {
        let r = Redactor::default();
        let (ok, _) = judge_http("u", 200, Some("hi"), Some(0), "say hi\n200", &r);
        assert!(ok);
        let (ok, line) = judge_http("u", 200, Some("bye"), Some(0), "say hi\n200", &r);
        assert!(!ok && line.contains("does not contain"), "{line}");
        let (ok, line) = judge_http("u", 200, None, Some(0), "nope\n503", &r);
        assert!(!ok && line.contains("status 503"), "{line}");
        let (ok, line) = judge_http("u", 200, None, Some(7), "refused", &r);
        assert!(!ok && line.contains("exit code 7"), "{line}");
    }

    /// A body that does not match is shown: its start, on one line, control characters
    /// escaped, secrets masked even where the cut falls inside one (issue 13).
    #[test]
    fn a_body_that_does_not_match_is_shown_escaped_masked_and_cut() {
        let r = Redactor::default();
        r.add("hunter22");
        let body = "<h1>maintenance</h1>\n\ttoken=hunter22\x1b[0m";
        let (ok, line) = judge_http(
            "u",
            200,
            Some("welcome"),
            Some(0),
            &format!("{body}\n200"),
            &r,
        );
        assert!(!ok);
        assert_eq!(
            line,
            "GET u: status 200, but the body does not contain `welcome`; body: \
             \"<h1>maintenance</h1>\\n\\ttoken=********\\u{1b}[0m\"\n"
        );
        let (_, line) = judge_http("u", 200, None, Some(0), "oops\n500", &r);
        assert!(line.ends_with("body: \"oops\"\n"), "{line}");
        let long = format!("{}hunter22{}", "x".repeat(BODY_CHARS - 3), "y".repeat(500));
        let shown = shown_body(&long, &r);
        assert!(!shown.contains("hun"), "{shown}");
        assert!(shown.contains("(first 300 characters of 805)"), "{shown}");
        assert_eq!(shown_body("", &r), "(empty)");
    }
}

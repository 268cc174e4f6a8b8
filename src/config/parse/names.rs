//! One rule for the names that become container names, VM folders, unit files, log paths and
//! image tags (environments, services, like `[pipeline].name`), and checks for the other
//! strings that end up in unit files and paths on the machine. A name that breaks out of its
//! folder (`../x`), a newline that adds a line to a unit, a NUL byte: each is a Pipelinefile
//! error at its use.

use crate::config::model::{Span, Template};
use crate::config::walk::Walker;

use super::pipeline::{is_valid_name, sanitize_name};

/// Checks a name that becomes part of paths and machine names.
pub fn check_name(w: &mut Walker, what: &str, name: &str, span: Span) {
    if is_valid_name(name) {
        return;
    }
    let fixed = sanitize_name(name);
    let example = match (fixed.is_empty(), what) {
        (false, _) => fixed,
        (true, "environment") => "dev".to_string(),
        (true, _) => "web".to_string(),
    };
    w.error_hint(
        format!("invalid {what} name `{}`", name.escape_debug()),
        span,
        format!(
            "use lowercase letters, digits and `-` (it names containers, VM folders, units and logs), e.g. `{example}`"
        ),
    );
}

/// Docker's own rule for a container name.
pub fn check_container_name(w: &mut Walker, name: &str, span: Span) {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        w.error_hint(
            format!("invalid container_name `{}`", name.escape_debug()),
            span,
            "Docker takes letters, digits, `_`, `.` and `-`, starting with a letter or digit",
        );
    }
}

/// A one-line, non-empty string (it becomes a line of a unit file or an argument).
pub fn check_line(w: &mut Walker, what: &str, value: &str, span: Span) {
    if value.trim().is_empty() {
        w.error_hint(
            format!("{what} is empty"),
            span,
            "give it a value, or leave the key out",
        );
    } else if value.chars().any(char::is_control) {
        w.error_hint(
            format!("{what} `{}` contains a control character", value.escape_debug()),
            span,
            "it must be one line without control characters: it becomes a path, an argument or a line of a systemd unit (a newline would add one)",
        );
    }
}

/// An absolute path on the machine (templates are checked as written; one that starts with
/// `{{` is checked when it is rendered).
pub fn check_machine_path(w: &mut Walker, what: &str, t: &Template) {
    check_line(w, what, &t.raw, t.span);
    let raw = t.raw.trim();
    if !raw.is_empty() && !raw.starts_with('/') && !raw.starts_with("{{") {
        w.error_hint(
            format!("{what} `{}` is not an absolute path", raw.escape_debug()),
            t.span,
            format!("paths on the machine start with `/`, e.g. `/{raw}`"),
        );
    }
}

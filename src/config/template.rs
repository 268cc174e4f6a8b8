//! `{{ ... }}` interpolation.
//!
//! Grammar: `{{` spaces? expr spaces? `}}`, where expr is one of `vars.NAME`, `env.NAME`,
//! `pipeline.name`, `environment`, `timestamp`, `git.commit`. `{{{{` writes a literal `{{`.
//! Rendering never fails on a reference that validation accepted: validation calls
//! [`parse`] on every template and reports what it finds.

use std::collections::BTreeMap;

/// One `{{ ... }}` reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    /// `vars.NAME`
    Var(String),
    /// `env.NAME`: the host environment.
    HostEnv(String),
    /// `pipeline.name`
    PipelineName,
    /// `environment`: the environment's name.
    Environment,
    /// `timestamp`: the run's start, UTC, `YYYYMMDDHHMMSS`.
    Timestamp,
    /// `git.commit`: the commit of the Pipelinefile's repository (short), or `unknown`.
    GitCommit,
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// A reference and its byte range within the template string (the whole `{{ ... }}`).
    Ref(Reference, std::ops::Range<usize>),
}

/// A problem in a template, with its byte range within the template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
    pub hint: Option<String>,
    pub range: std::ops::Range<usize>,
}

/// The expressions a template may use, for hints.
pub const KNOWN: &[&str] = &[
    "vars.NAME",
    "env.NAME",
    "pipeline.name",
    "environment",
    "timestamp",
    "git.commit",
];

/// Splits a template into text and references; collects every bad `{{ }}`.
pub fn parse(raw: &str) -> (Vec<Piece>, Vec<TemplateError>) {
    let mut pieces = Vec::new();
    let mut errors = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while i < raw.len() {
        if raw[i..].starts_with("{{{{") {
            text.push_str("{{");
            i += 4;
            continue;
        }
        if raw[i..].starts_with("{{") {
            let Some(close) = raw[i + 2..].find("}}") else {
                errors.push(TemplateError {
                    message: "unclosed `{{`".into(),
                    hint: Some("close it with `}}`, or write `{{{{` for a literal `{{`".into()),
                    range: i..raw.len(),
                });
                text.push_str(&raw[i..]);
                break;
            };
            let end = i + 2 + close + 2;
            let expr = raw[i + 2..i + 2 + close].trim();
            match parse_expr(expr) {
                Ok(r) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Ref(r, i..end));
                }
                Err((message, hint)) => errors.push(TemplateError {
                    message,
                    hint,
                    range: i..end,
                }),
            }
            i = end;
            continue;
        }
        let ch = raw[i..].chars().next().expect("in bounds");
        text.push(ch);
        i += ch.len_utf8();
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    (pieces, errors)
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn parse_expr(expr: &str) -> Result<Reference, (String, Option<String>)> {
    if expr.is_empty() {
        return Err(("empty `{{ }}`".into(), Some(known_hint())));
    }
    if let Some(name) = expr.strip_prefix("vars.").filter(|n| is_ident(n)) {
        return Ok(Reference::Var(name.to_string()));
    }
    if let Some(name) = expr.strip_prefix("env.").filter(|n| is_ident(n)) {
        return Ok(Reference::HostEnv(name.to_string()));
    }
    match expr {
        "pipeline.name" => Ok(Reference::PipelineName),
        "environment" => Ok(Reference::Environment),
        "timestamp" => Ok(Reference::Timestamp),
        "git.commit" => Ok(Reference::GitCommit),
        _ => Err((
            format!("unknown expression `{expr}`"),
            Some(unknown_hint(expr)),
        )),
    }
}

/// A did-you-mean for a misspelt expression, else the list of expressions.
fn unknown_hint(expr: &str) -> String {
    const FIXED: &[&str] = &["pipeline.name", "environment", "timestamp", "git.commit"];
    if matches!(expr, "vars" | "env") {
        return format!("name the variable: `{expr}.NAME`");
    }
    let guess = match expr.split_once('.') {
        // `var.x`, `envs.X`: a misspelt prefix with a plausible name.
        Some((prefix, name)) if is_ident(name) && !FIXED.iter().any(|f| f.starts_with(prefix)) => {
            super::suggest::closest(prefix, ["vars", "env"]).map(|p| format!("{p}.{name}"))
        }
        _ => None,
    }
    .or_else(|| {
        // `git.sha`, `pipeline.id`: the right object, the wrong field.
        let prefix = expr.split_once('.').map(|(p, _)| p)?;
        FIXED
            .iter()
            .find(|f| f.split_once('.').is_some_and(|(p, _)| p == prefix))
            .map(|f| f.to_string())
    })
    .or_else(|| super::suggest::closest(expr, FIXED.iter().copied()).map(str::to_string));
    match guess {
        Some(g) => format!("did you mean `{g}`?"),
        None => known_hint(),
    }
}

fn known_hint() -> String {
    format!("expressions are {}", KNOWN.join(", "))
}

/// The references a template makes (ignoring malformed ones).
pub fn references(raw: &str) -> Vec<Reference> {
    parse(raw)
        .0
        .into_iter()
        .filter_map(|p| match p {
            Piece::Ref(r, _) => Some(r),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Everything a template can be rendered against.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub vars: BTreeMap<String, String>,
    pub host_env: BTreeMap<String, String>,
    pub pipeline_name: String,
    pub environment: String,
    pub timestamp: String,
    pub git_commit: String,
}

/// Renders a template. An unknown var or host variable renders as an empty string; validation
/// has already rejected undefined vars, and a missing host variable is the user's choice.
pub fn render(raw: &str, ctx: &Context) -> String {
    let mut out = String::with_capacity(raw.len());
    for piece in parse(raw).0 {
        match piece {
            Piece::Text(t) => out.push_str(&t),
            Piece::Ref(r, _) => out.push_str(match &r {
                Reference::Var(n) => ctx.vars.get(n).map(String::as_str).unwrap_or(""),
                Reference::HostEnv(n) => ctx.host_env.get(n).map(String::as_str).unwrap_or(""),
                Reference::PipelineName => &ctx.pipeline_name,
                Reference::Environment => &ctx.environment,
                Reference::Timestamp => &ctx.timestamp,
                Reference::GitCommit => &ctx.git_commit,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_expression() {
        let refs = references(
            "{{vars.a}}{{ env.HOME }}{{ pipeline.name }}{{environment}}{{ timestamp }}{{ git.commit }}",
        );
        assert_eq!(
            refs,
            vec![
                Reference::Var("a".into()),
                Reference::HostEnv("HOME".into()),
                Reference::PipelineName,
                Reference::Environment,
                Reference::Timestamp,
                Reference::GitCommit,
            ]
        );
    }

    #[test]
    fn reports_bad_expressions_with_ranges() {
        let (_, errors) = parse("a {{ vars }} b {{ nope.x }} c {{ open");
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0].range, 2..12);
        assert_eq!(errors[0].message, "unknown expression `vars`");
        assert_eq!(errors[1].message, "unknown expression `nope.x`");
        assert_eq!(errors[2].message, "unclosed `{{`");
    }

    #[test]
    fn renders_and_escapes() {
        let mut ctx = Context::default();
        ctx.vars.insert("who".into(), "world".into());
        ctx.environment = "staging".into();
        assert_eq!(
            render("hello {{ vars.who }} in {{environment}} {{{{x}}", &ctx),
            "hello world in staging {{x}}"
        );
    }
}

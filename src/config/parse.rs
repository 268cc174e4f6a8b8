//! Spanned TOML → validated [`Pipelinefile`], collecting every problem.
//!
//! The TOML is parsed with error recovery into a spanned tree, then walked by hand (serde would
//! stop at the first error): each section has its own module below, and `validate` runs the
//! checks that need the whole file (templates against declared vars, referenced files, ports,
//! promotion graph).

mod boxes;
mod ec2;
mod env;
mod layer;
mod ledger;
mod names;
mod notify;
mod pipeline;
mod service;

use std::path::Path;

pub use notify::topic_region;
pub use pipeline::{is_valid_name, sanitize_name};

use toml::de::DeTable;

use super::diagnostic::Diagnostic;
use super::keys::SECTIONS;
use super::known::Known;
use super::model::{LayerName, Pipelinefile, Span};
use super::validate;
use super::walk::{self, Tbl, Walker};

/// Parses and validates; on failure returns every diagnostic and the source back.
pub fn parse(path: &Path, source: String) -> Result<Pipelinefile, (Vec<Diagnostic>, String)> {
    let root_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut w = Walker::default();
    let syntax_spans: Vec<Span>;
    let syntax_count: usize;
    let (pf, known) = {
        let (doc, errors) = DeTable::parse_recoverable(&source);
        let errors: Vec<Diagnostic> = errors
            .iter()
            .map(|e| syntax_diagnostic(e, &source))
            .collect();
        // What the parser recovered around a syntax error is a guess: nothing else is said
        // about those places (after an unclosed bracket, about the rest of the file).
        let mut guessed: Vec<Span> = errors.iter().filter_map(|d| d.span).collect();
        let (errors, unclosed_from) = collapse_unclosed(errors, &source);
        if let Some(open) = unclosed_from {
            guessed.push(Span::new(open, source.len().max(open + 1)));
        }
        let mut seen = std::collections::HashSet::new();
        for d in errors {
            if seen.insert((d.message.clone(), d.span.map(|s| (s.start, s.end)))) {
                w.push(d);
            }
        }
        syntax_count = w.diags.len();
        syntax_spans = merged(guessed);
        let root = Tbl::new(doc.get_ref(), walk::span(&doc), "the Pipelinefile");
        let known = Known::read(&root);
        for (key, key_span, _) in root.entries() {
            if !SECTIONS.contains(&key) {
                let mut d = walk::unknown_key(key, key_span, "the Pipelinefile", SECTIONS);
                if let Some(table) = home_of(key) {
                    d.hint = Some(format!("`{key}` belongs in {table}"));
                }
                w.push(d);
            }
        }
        let pipeline = pipeline::pipeline(&mut w, &root, &root_dir);
        let vars = pipeline::vars(&mut w, &root);
        let boxes = boxes::boxes(&mut w, &root, &root_dir);
        let build = boxes::build(&mut w, &root, &root_dir);
        let base = layer::layer(&mut w, &root, LayerName::Base);
        let app = layer::layer(&mut w, &root, LayerName::App);
        let services = service::services(&mut w, &root);
        let verify = service::verify(&mut w, &root);
        let envs = env::envs(&mut w, &root, &known);
        let ledger = ledger::ledger(&mut w, &root);
        let notify = notify::notify(&mut w, &root);
        let pf = Pipelinefile {
            path: path.to_path_buf(),
            root: root_dir.clone(),
            source: String::new(),
            pipeline,
            vars,
            boxes,
            build,
            base,
            app,
            services,
            verify,
            envs,
            ledger,
            notify,
        };
        (pf, known)
    };
    validate::check(&mut w, &pf, &known, &source);
    // A value the parser recovered from a syntax error is a guess: whatever else is said
    // about the same place would only repeat the syntax error.
    let mut i = 0;
    w.diags.retain(|d| {
        i += 1;
        i <= syntax_count || !d.span.is_some_and(|s| overlaps_any(&syntax_spans, s))
    });
    if w.diags.is_empty() {
        return Ok(Pipelinefile { source, ..pf });
    }
    // Source order; whole-file problems first. The sort is stable, so problems at the same
    // place keep the order they were found in.
    w.diags
        .sort_by_key(|d| d.span.map_or((0, 0), |s| (1, s.start)));
    Err((w.diags, source))
}

fn overlaps(a: Span, b: Span) -> bool {
    let a_end = a.end.max(a.start + 1);
    let b_end = b.end.max(b.start + 1);
    a.start < b_end && b.start < a_end
}

/// Spans sorted by start and merged where they overlap, for [`overlaps_any`].
fn merged(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| s.start);
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        let s = Span::new(s.start, s.end.max(s.start + 1));
        match out.last_mut() {
            Some(last) if s.start < last.end => last.end = last.end.max(s.end),
            _ => out.push(s),
        }
    }
    out
}

/// Whether `s` overlaps one of `merged` (sorted, disjoint): a binary search, so thousands of
/// diagnostics cost no more than their count.
fn overlaps_any(merged: &[Span], s: Span) -> bool {
    let end = s.end.max(s.start + 1);
    let i = merged.partition_point(|m| m.end <= s.start);
    merged
        .get(i)
        .is_some_and(|m| overlaps(*m, Span::new(s.start, end)))
}

/// An array or inline table that is never closed makes the parser trip over everything after
/// it; the cause is the opening bracket. When there is one, the errors from there on are
/// replaced by one at that bracket.
fn collapse_unclosed(errors: Vec<Diagnostic>, source: &str) -> (Vec<Diagnostic>, Option<usize>) {
    let unclosed = errors.iter().any(|d| {
        d.message.starts_with("unclosed array") || d.message.starts_with("unclosed inline table")
    });
    let Some(open) = unclosed.then(|| first_unclosed(source)).flatten() else {
        return (errors, None);
    };
    let (kind, close) = if source[open..].starts_with('{') {
        ("inline table", '}')
    } else {
        ("array", ']')
    };
    let mut out: Vec<Diagnostic> = errors
        .into_iter()
        .filter(|d| d.span.is_none_or(|s| s.start < open))
        .collect();
    out.push(
        Diagnostic::new(
            format!(
                "unclosed {kind}: this `{}` is never closed",
                &source[open..open + 1]
            ),
            Span::new(open, open + 1),
        )
        .with_hint(format!("close it with `{close}` where its values end")),
    );
    (out, Some(open))
}

/// The byte offset of the first value bracket (`[` or `{` after `=` or inside a value) that
/// is never closed; strings, comments and table headers are skipped.
fn first_unclosed(source: &str) -> Option<usize> {
    let b = source.as_bytes();
    let mut stack: Vec<usize> = Vec::new();
    let mut i = 0;
    let mut line_start = true;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line_start = true;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                let triple = b.get(i..i + 3) == Some(&[c, c, c][..]);
                let quote_len = if triple { 3 } else { 1 };
                i += quote_len;
                while i < b.len() {
                    if c == b'"' && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if !triple && b[i] == b'\n' {
                        break;
                    }
                    if b[i] == c && (!triple || b.get(i..i + 3) == Some(&[c, c, c][..])) {
                        i += quote_len;
                        break;
                    }
                    i += 1;
                }
            }
            b'[' if line_start && stack.is_empty() => {
                // A table header: skip to the end of its line.
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'[' | b'{' => {
                stack.push(i);
                i += 1;
            }
            b']' | b'}' => {
                stack.pop();
                i += 1;
            }
            _ => i += 1,
        }
        line_start = false;
    }
    stack.first().copied()
}

/// A TOML syntax error as a diagnostic; the parser's wording for a missing value is
/// replaced by a plainer one.
fn syntax_diagnostic(e: &toml::de::Error, source: &str) -> Diagnostic {
    let Some(range) = e.span() else {
        return Diagnostic::whole_file(e.message().to_string());
    };
    let message = e.message().trim_end_matches('\n');
    let rest = source.get(range.start..).unwrap_or("");
    let next = rest.trim_start_matches([' ', '\t']).chars().next();
    let missing_value = range.is_empty()
        && message.contains("literal string")
        && matches!(next, None | Some('}' | ',' | ']' | '\n' | '\r' | '#'));
    if missing_value {
        return Diagnostic::new("expected a value", range.into())
            .with_hint("write a value after `=`, e.g. a quoted string");
    }
    if message == "duplicate key" {
        let key = source.get(range.clone()).unwrap_or("");
        return Diagnostic::new(format!("duplicate key `{key}`"), range.into())
            .with_hint("a key may be set only once per table: remove one of them");
    }
    let d = Diagnostic::new(message.to_string(), range.clone().into());
    match source.get(range) {
        Some(word) if message.starts_with("string values must be quoted") => {
            d.with_hint(format!("put it in quotes: `\"{word}\"`"))
        }
        _ => d,
    }
}

/// The table a key misplaced at the top level belongs in.
fn home_of(key: &str) -> Option<&'static str> {
    Some(match key {
        "name" | "description" => "[pipeline]",
        "provision" => "[base] or [app]",
        "precache" => "[base]",
        "commands" | "http" => "[verify]",
        "target" | "promote_from" => "an [env.NAME] table",
        "command" | "port" => "a [[service]] table",
        "proxy" | "ca_certificates" | "keep_build_trust" | "package_cache" => "[build]",
        "backend" | "bucket" | "prefix" => "[ledger]",
        _ => return None,
    })
}

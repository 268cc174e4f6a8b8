//! Checks that need the whole file: templates against declared vars, referenced files,
//! unique service names and ports, and the promotion graph.

use std::collections::HashMap;
use std::path::Path;

use super::known::Known;
use super::model::{Pipelinefile, ProvisionerKind, ShellSource, Span, Spanned};
use super::suggest;
use super::template::{self, Piece, Reference};
use super::walk::Walker;

/// Runs every whole-file check on the (possibly partial) model.
pub fn check(w: &mut Walker, pf: &Pipelinefile, known: &Known, source: &str) {
    templates(w, known, source);
    secrets(w, pf, source);
    files(w, pf);
    services(w, pf, source);
    promotions(w, pf, known);
}

/// Where `range` (bytes within the string's value) is in the source: exact for strings
/// written without escapes, else the whole string.
fn inner_span(value: &str, span: Span, range: std::ops::Range<usize>, source: &str) -> Span {
    let raw = source.get(span.start..span.end).unwrap_or("");
    for quote in ["\"\"\"", "'''", "\"", "'"] {
        if raw.len() == value.len() + 2 * quote.len()
            && raw.starts_with(quote)
            && raw.ends_with(quote)
            && &raw[quote.len()..raw.len() - quote.len()] == value
        {
            let start = span.start + quote.len();
            return Span::new(start + range.start, start + range.end);
        }
    }
    span
}

fn templates(w: &mut Walker, known: &Known, source: &str) {
    let declared = || known.vars.iter().map(String::as_str);
    for t in std::mem::take(&mut w.templates) {
        let (pieces, errors) = template::parse(&t.raw);
        for e in errors {
            let span = inner_span(&t.raw, t.span, e.range, source);
            let mut d = super::Diagnostic::new(e.message, span);
            d.hint = e.hint;
            w.push(d);
        }
        for piece in pieces {
            let Piece::Ref(Reference::Var(name), range) = piece else {
                continue;
            };
            if known.vars.contains(&name) {
                continue;
            }
            let hint = suggest::closest(&name, declared())
                .map(|c| format!("did you mean `vars.{c}`?"))
                .unwrap_or_else(|| format!("declare it in [vars], e.g. `{name} = \"...\"`"));
            w.error_hint(
                format!("undefined var `{name}`"),
                inner_span(&t.raw, t.span, range, source),
                hint,
            );
        }
    }
}

/// Sensitive values go only where they stay out of images and records: the environments of
/// commands and services (and the tmpfs files pipe writes for them). A service command
/// becomes a unit file's `ExecStart` (world-readable, in the image), a file's `to` a path in
/// the layer, a verify URL a line in the release's transcript: a sensitive var there is an
/// error at its use.
fn secrets(w: &mut Walker, pf: &Pipelinefile, source: &str) {
    let sensitive: Vec<&str> = pf
        .vars
        .values()
        .filter(|v| v.sensitive)
        .map(|v| v.name.as_str())
        .collect();
    if sensitive.is_empty() {
        return;
    }
    let mut places: Vec<(&str, &super::model::Template)> = Vec::new();
    for svc in &pf.services {
        places.push(("a service command", &svc.command));
    }
    for layer in [&pf.base, &pf.app] {
        for p in &layer.provision {
            if let ProvisionerKind::File { to, .. } = &p.kind {
                places.push(("a file's `to`", to));
            }
        }
    }
    for h in &pf.verify.http {
        places.push(("a verify URL", &h.url));
    }
    for (place, t) in places {
        let (pieces, _) = template::parse(&t.raw);
        for piece in pieces {
            let Piece::Ref(Reference::Var(name), range) = piece else {
                continue;
            };
            if sensitive.contains(&name.as_str()) {
                w.error_hint(
                    format!("sensitive var `{name}` in {place}"),
                    inner_span(&t.raw, t.span, range, source),
                    format!(
                        "sensitive values only reach environments: pass it as `env = {{ {} = \"{{{{ vars.{name} }}}}\" }}` and read ${} there",
                        name.to_uppercase(),
                        name.to_uppercase()
                    ),
                );
            }
        }
    }
}

/// What kind of path a reference must be.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    File,
    Any,
}

fn must_exist(
    w: &mut Walker,
    root: &Path,
    host_paths: &[std::path::PathBuf],
    what: &str,
    path: &Spanned<String>,
    expect: Expect,
) {
    let full = root.join(path.value.trim_end_matches('/'));
    let hint = "paths are relative to the Pipelinefile's folder";
    match std::fs::metadata(&full) {
        Ok(m) if expect == Expect::File && m.is_dir() => w.error_hint(
            format!("{what} `{}` is a folder, not a file", path.value),
            path.span,
            format!(
                "name a file in it, e.g. `{}/...`",
                path.value.trim_end_matches('/')
            ),
        ),
        Ok(m) if path.ends_with('/') && !m.is_dir() => w.error_hint(
            format!("`{}` ends with `/` but is a file", path.value),
            path.span,
            "a trailing `/` uploads a folder's contents; remove it to upload the file",
        ),
        Ok(_) if !super::confine::is_allowed(root, host_paths, Path::new(&path.value)) => {
            w.error_hint(
                format!("{what} `{}` is outside the project", path.value),
                path.span,
                format!(
                    "a Pipelinefile reads host files only inside its folder; to allow this one, add `host_paths = [\"{}\"]` to [build]",
                    super::confine::resolve(root, Path::new(&path.value)).display()
                ),
            )
        }
        Ok(_) => {}
        Err(_) => {
            let sibling = sibling_suggestion(&full);
            w.error_hint(
                format!("{what} `{}` does not exist", path.value),
                path.span,
                match sibling {
                    Some(s) => format!("did you mean `{s}`? ({hint})"),
                    None => hint.to_string(),
                },
            );
        }
    }
}

/// The closest existing name next to a missing path, spelled like the path was.
fn sibling_suggestion(full: &Path) -> Option<String> {
    let trimmed = full.to_str()?.trim_end_matches('/');
    let full = Path::new(trimmed);
    let name = full.file_name()?.to_str()?;
    let parent = full.parent()?;
    let names: Vec<String> = std::fs::read_dir(parent)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let best = suggest::closest(name, names.iter().map(String::as_str))?;
    Some(best.to_string())
}

fn files(w: &mut Walker, pf: &Pipelinefile) {
    let root = &pf.root;
    let host = &pf.build.host_paths;
    if let Some(p) = &pf.base.precache {
        for f in &p.files {
            must_exist(w, root, host, "precache file", f, Expect::File);
        }
    }
    for prov in pf.base.provision.iter().chain(&pf.app.provision) {
        match &prov.kind {
            ProvisionerKind::File { source, .. } => {
                must_exist(w, root, host, "file", source, Expect::Any);
            }
            ProvisionerKind::Shell(s) => {
                if let ShellSource::Script(script) = &s.source {
                    must_exist(w, root, host, "script", script, Expect::File);
                }
            }
            ProvisionerKind::Ansible { playbook, .. } => {
                must_exist(w, root, host, "playbook", playbook, Expect::File);
            }
        }
    }
}

fn services(w: &mut Walker, pf: &Pipelinefile, source: &str) {
    let index = super::diagnostic::LineIndex::new(source);
    let line_of = |span: Span| index.line_col(span.start).0;
    let mut names: HashMap<&str, Span> = HashMap::new();
    let mut ports: HashMap<u16, (&str, Span)> = HashMap::new();
    let mut host_ports: HashMap<u16, (&str, Span)> = HashMap::new();
    for s in &pf.services {
        if let Some(first) = names.get(s.name.as_str()) {
            w.error_hint(
                format!("duplicate service name `{}`", s.name.value),
                s.name.span,
                format!(
                    "first used on line {}; service names must be unique",
                    line_of(*first)
                ),
            );
        } else {
            names.insert(&s.name, s.name.span);
        }
        let mut port_taken = false;
        if let Some(port) = &s.port {
            if let Some((other, _)) = ports.get(&port.value) {
                port_taken = true;
                w.error_hint(
                    format!("port {} is already used by service `{other}`", port.value),
                    port.span,
                    "two services cannot listen on the same port",
                );
            } else {
                ports.insert(port.value, (&s.name, port.span));
            }
        }
        if let Some(hp) = s.published_port() {
            let span = s
                .host_port
                .as_ref()
                .or(s.port.as_ref())
                .map_or(s.span, |p| p.span);
            if let Some((other, _)) = host_ports.get(&hp) {
                // The same port was just reported as a duplicate `port`: one error is enough.
                if s.host_port.is_some() || !port_taken {
                    w.error_hint(
                        format!("host port {hp} is already published by service `{other}`"),
                        span,
                        "set a different `host_port`, or `publish = false`",
                    );
                }
            } else {
                host_ports.insert(hp, (&s.name, span));
            }
        }
    }
}

fn promotions(w: &mut Walker, pf: &Pipelinefile, known: &Known) {
    for env in pf.envs.values() {
        let Some(from) = &env.promote_from else {
            continue;
        };
        if from.value == env.name.value {
            w.error_hint(
                format!("env `{}` promotes from itself", env.name.value),
                from.span,
                "`promote_from` names the environment whose verified releases this one receives, e.g. staging for production",
            );
        } else if !known.envs.contains(&from.value) {
            let others = known
                .envs
                .iter()
                .map(String::as_str)
                .filter(|n| *n != env.name.as_str());
            let hint = suggest::did_you_mean(from, others.clone())
                .unwrap_or_else(|| format!("environments are {}", suggest::list(others)));
            w.error_hint(
                format!("`promote_from` names unknown env `{}`", from.value),
                from.span,
                hint,
            );
        }
    }
    // Cycles: follow promote_from from each env; a walk that comes back to where it started
    // is a cycle. Report it once, at the first env of the cycle in file order.
    let mut reported: Vec<&str> = Vec::new();
    for env in pf.envs.values() {
        let start = env.name.as_str();
        let mut path = vec![start];
        let mut cur = start;
        while let Some(next) = pf
            .envs
            .get(cur)
            .and_then(|e| e.promote_from.as_ref())
            .map(|f| f.as_str())
        {
            if next == cur {
                break; // promotes from itself: reported above
            }
            if next == start {
                path.push(next);
                if !path[..path.len() - 1].iter().any(|n| reported.contains(n)) {
                    reported.extend(&path);
                    let from = env.promote_from.as_ref().expect("in a cycle");
                    w.error_hint(
                        format!("`promote_from` cycle: {}", path.join(" -> ")),
                        from.span,
                        "read `->` as \"promotes from\"; releases must flow one way, so one environment in the cycle must not promote from another",
                    );
                }
                break;
            }
            if path.contains(&next) {
                break; // a cycle that does not include `start`; found from one of its members
            }
            path.push(next);
            cur = next;
        }
    }
}

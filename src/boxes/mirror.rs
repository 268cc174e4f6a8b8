//! Which Debian mirror a box is built from: the recipe's `mirror`, else `PIPE_BOX_MIRROR`, else
//! the one the host's apt already uses for the suite. No mirror host is ever written in pipe.

use std::path::Path;

use super::{BoxError, Recipe};

/// Overrides the host's mirror when a recipe names none.
pub const MIRROR_ENV: &str = "PIPE_BOX_MIRROR";

/// Where a box's packages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    /// For `suite` and `suite-updates`.
    pub main: String,
    /// For `suite-security`, when the host has one.
    pub security: Option<String>,
}

/// Resolves the mirrors for `recipe` from the recipe, the environment, then `/etc/apt`.
pub fn resolve(recipe: &Recipe) -> Result<Mirrors, BoxError> {
    resolve_in(
        recipe,
        Path::new("/etc/apt"),
        std::env::var(MIRROR_ENV).ok(),
    )
}

fn resolve_in(recipe: &Recipe, apt_dir: &Path, env: Option<String>) -> Result<Mirrors, BoxError> {
    let entries = host_entries(apt_dir);
    let security = find(&entries, &format!("{}-security", recipe.suite));
    let main = recipe
        .mirror
        .clone()
        .or(env.filter(|m| !m.is_empty()))
        .or_else(|| find(&entries, &recipe.suite))
        .ok_or_else(|| BoxError::NoMirror {
            suite: recipe.suite.clone(),
        })?;
    Ok(Mirrors { main, security })
}

/// One `deb` source of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    uris: Vec<String>,
    suites: Vec<String>,
}

fn find(entries: &[Entry], suite: &str) -> Option<String> {
    entries
        .iter()
        .find(|e| e.suites.iter().any(|s| s == suite))
        .and_then(|e| e.uris.first().cloned())
        .map(|u| u.trim_end_matches('/').to_string())
}

/// The host's `deb` entries: deb822 files first, then one-line lists.
fn host_entries(apt_dir: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let list_dir = apt_dir.join("sources.list.d");
    let mut files: Vec<_> = std::fs::read_dir(&list_dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "sources"))
    {
        if let Ok(text) = std::fs::read_to_string(f) {
            out.extend(parse_deb822(&text));
        }
    }
    let mut lists = vec![apt_dir.join("sources.list")];
    lists.extend(
        files
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "list")),
    );
    for f in lists {
        if let Ok(text) = std::fs::read_to_string(f) {
            out.extend(parse_one_line(&text));
        }
    }
    out
}

fn parse_deb822(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in para.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(last) = fields.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |k: &str| {
            fields
                .iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let enabled = get("enabled").first().is_none_or(|v| v != "no");
        if enabled && get("types").iter().any(|t| t == "deb") {
            out.push(Entry {
                uris: get("uris"),
                suites: get("suites"),
            });
        }
    }
    out
}

fn parse_one_line(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let rest = line.strip_prefix("deb ")?.trim_start();
            // Options: `[arch=amd64 signed-by=...]`.
            let rest = match rest.strip_prefix('[') {
                Some(r) => r.split_once(']')?.1.trim_start(),
                None => rest,
            };
            let mut words = rest.split_whitespace();
            let uri = words.next()?.to_string();
            let suite = words.next()?.to_string();
            Some(Entry {
                uris: vec![uri],
                suites: vec![suite],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCES: &str = "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm-backports\nComponents: main\n\nTypes: deb\n# a comment\nURIs: http://mirror.invalid/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://security.invalid/debian-security\nSuites: bookworm-security\nComponents: main\n";

    fn recipe(mirror: Option<&str>) -> Recipe {
        let mut text = String::from("[box]\nsuite = \"bookworm\"\n");
        if let Some(m) = mirror {
            text.push_str(&format!("mirror = \"{m}\"\n"));
        }
        Recipe::parse("t", Path::new("t.toml"), &text).unwrap()
    }

    #[test]
    fn takes_the_hosts_mirror_for_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(dir.path().join("sources.list.d/debian.sources"), SOURCES).unwrap();
        let m = resolve_in(&recipe(None), dir.path(), None).unwrap();
        assert_eq!(m.main, "http://mirror.invalid/debian");
        assert_eq!(
            m.security.as_deref(),
            Some("http://security.invalid/debian-security")
        );
        let m = resolve_in(&recipe(Some("http://other.invalid/d")), dir.path(), None).unwrap();
        assert_eq!(m.main, "http://other.invalid/d");
        let m = resolve_in(
            &recipe(None),
            dir.path(),
            Some("http://env.invalid/d".into()),
        )
        .unwrap();
        assert_eq!(m.main, "http://env.invalid/d");
    }

    #[test]
    fn reads_one_line_lists_and_fails_without_a_match() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sources.list"),
            "# x\ndeb [arch=amd64] http://list.invalid/debian bookworm main\n",
        )
        .unwrap();
        let m = resolve_in(&recipe(None), dir.path(), None).unwrap();
        assert_eq!(m.main, "http://list.invalid/debian");
        assert!(m.security.is_none());
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            resolve_in(&recipe(None), empty.path(), None),
            Err(BoxError::NoMirror { .. })
        ));
    }
}

//! The module structure ARCHITECTURE.md describes, checked against the code: every top-level
//! module of `src/` has a layer, a module imports only from layers below its own, and no two
//! sibling modules (at any depth) import each other, directly or around a cycle. A new module
//! gets a layer in [`LAYERS`] (and a line in ARCHITECTURE.md); a new import that points up, or
//! closes a cycle, fails here with the file and line that made it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, bottom first; a module may import from lower layers only.
const LAYERS: &[&[&str]] = &[
    &[
        "engine",
        "process",
        "interrupt",
        "config",
        "cli",
        "services",
    ],
    &["error", "state"],
    &["layers", "ledger", "lint", "import"],
    &["communicators"],
    &["ui"],
    &["boxes", "provisioners", "runner"],
    &["plan"],
    &["targets"],
    &["commands"],
];

/// An import found in the code: from the module of `file:line` to `to`.
#[derive(Debug, Clone)]
struct Import {
    from: Vec<String>,
    to: Vec<String>,
    file: PathBuf,
    line: usize,
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are module `a::b`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The module paths a line names: `crate::a::b::...` and `super::...` (resolved), up to the
/// first segment that is not a module name (lower case).
fn imports_in(module: &[String], is_mod_rs: bool, line: &str) -> Vec<Vec<String>> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let words: Vec<&str> = code
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.contains("::"))
        .collect();
    for w in words {
        let segs: Vec<&str> = w.split("::").filter(|s| !s.is_empty()).collect();
        let (mut base, rest): (Vec<String>, &[&str]) = match segs.first() {
            Some(&"crate") => (Vec::new(), &segs[1..]),
            Some(&"super") => {
                // In `a/b.rs` (module a::b) `super` is `a`; in `a/b/mod.rs` too.
                let mut m = module_of_parent(module, is_mod_rs);
                let mut i = 1;
                while segs.get(i) == Some(&"super") {
                    m.pop();
                    i += 1;
                }
                (m, &segs[i..])
            }
            _ => continue,
        };
        for s in rest {
            if s.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                base.push(s.to_string());
            } else {
                break;
            }
        }
        if !base.is_empty() {
            out.push(base);
        }
    }
    out
}

fn module_of_parent(module: &[String], _is_mod_rs: bool) -> Vec<String> {
    let mut m = module.to_vec();
    m.pop();
    m
}

/// Expands a use tree (`a::{b, c::{d, E}}`, whitespace removed) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(p).into_iter().map(move |e| format!("{prefix}{e}")))
        .collect()
}

fn imports() -> Vec<Import> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = Vec::new();
    for file in files {
        let module = module_of(&src, &file);
        if module.is_empty() || module == ["lib"] || module == ["main"] {
            continue;
        }
        let is_mod_rs = file.file_name().is_some_and(|n| n == "mod.rs");
        let text = std::fs::read_to_string(&file).unwrap();
        // A `use` may span lines: gathered until its `;`, then expanded.
        let mut pending: Option<(usize, String)> = None;
        for (i, line) in text.lines().enumerate() {
            // Unit tests may reach anywhere.
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            let code = line.split("//").next().unwrap_or("");
            let trimmed = code.trim_start();
            let statement = match pending.take() {
                Some((at, mut s)) => {
                    s.push_str(code);
                    Some((at, s))
                }
                None if trimmed.starts_with("use ") || trimmed.starts_with("pub use ") => {
                    Some((i + 1, trimmed.trim_start_matches("pub ").to_string()))
                }
                None => None,
            };
            let paths: Vec<(usize, String)> = match statement {
                Some((at, s)) if s.contains(';') => {
                    let tree: String = s
                        .trim_start_matches("use ")
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .chars()
                        .filter(|c| !c.is_whitespace())
                        .collect();
                    expand(&tree).into_iter().map(|p| (at, p)).collect()
                }
                Some(open) => {
                    pending = Some(open);
                    continue;
                }
                None => vec![(i + 1, code.to_string())],
            };
            for (at, text) in paths {
                for to in imports_in(&module, is_mod_rs, &text) {
                    out.push(Import {
                        from: module.clone(),
                        to,
                        file: file.clone(),
                        line: at,
                    });
                }
            }
        }
    }
    out
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn every_top_level_module_has_a_layer_and_imports_only_from_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let name = e
            .unwrap()
            .path()
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if name != "lib" && name != "main" && layer_of(&name).is_none() {
            problems.push(format!(
                "src/{name}: no layer in tests/architecture.rs LAYERS"
            ));
        }
    }
    for imp in imports() {
        let (from, to) = (&imp.from[0], &imp.to[0]);
        if from == to {
            continue;
        }
        match (layer_of(from), layer_of(to)) {
            (Some(a), Some(b)) if b < a => {}
            (Some(_), Some(_)) => problems.push(format!(
                "{}:{}: `{from}` imports `{to}`, which is not in a lower layer",
                imp.file.display(),
                imp.line
            )),
            _ => {}
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn no_sibling_modules_import_each_other_around_a_cycle() {
    // Edges between siblings: children of the same parent, at every depth.
    let mut edges: BTreeMap<Vec<String>, BTreeMap<String, BTreeMap<String, Import>>> =
        BTreeMap::new();
    for imp in imports() {
        let common = imp
            .from
            .iter()
            .zip(&imp.to)
            .take_while(|(a, b)| a == b)
            .count();
        // A module and its own ancestors or descendants are not siblings.
        if common == imp.from.len() || common == imp.to.len() {
            continue;
        }
        let parent = imp.from[..common].to_vec();
        let (a, b) = (imp.from[common].clone(), imp.to[common].clone());
        edges
            .entry(parent)
            .or_default()
            .entry(a)
            .or_default()
            .entry(b)
            .or_insert(imp);
    }
    let mut cycles = Vec::new();
    for (parent, graph) in &edges {
        let nodes: BTreeSet<&String> = graph.keys().collect();
        for start in nodes {
            // A path from `start` back to `start`, found depth first.
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            let mut seen = BTreeSet::new();
            while let Some((node, path)) = stack.pop() {
                for next in graph.get(&node).map(|m| m.keys()).into_iter().flatten() {
                    if next == start {
                        let mut hops = Vec::new();
                        let mut full = path.clone();
                        full.push(start.clone());
                        for w in full.windows(2) {
                            let imp = &graph[&w[0]][&w[1]];
                            hops.push(format!(
                                "{} -> {} ({}:{})",
                                w[0],
                                w[1],
                                imp.file.display(),
                                imp.line
                            ));
                        }
                        cycles.push(format!(
                            "in `{}`: {}",
                            if parent.is_empty() {
                                "crate".to_string()
                            } else {
                                parent.join("::")
                            },
                            hops.join(", ")
                        ));
                    } else if seen.insert(next.clone()) {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push((next.clone(), p));
                    }
                }
            }
        }
    }
    cycles.sort();
    cycles.dedup();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checker_sees_imports_the_way_the_compiler_does() {
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    assert_eq!(
        imports_in(&m("targets::qemu::vm"), false, "use super::accel::Choice;"),
        vec![m("targets::qemu::accel")]
    );
    assert_eq!(
        imports_in(&m("targets::qemu"), true, "use super::ready;"),
        vec![m("targets::ready")]
    );
    assert_eq!(
        imports_in(
            &m("commands::up"),
            false,
            "let x = crate::targets::local::open(k); // crate::boxes::Box"
        ),
        vec![m("targets::local::open")]
    );
    assert!(imports_in(&m("a"), false, "use std::path::Path;").is_empty());
    assert_eq!(
        expand("super::{accel,disk::{self,Disk},vm::Vm}"),
        vec![
            "super::accel",
            "super::disk::self",
            "super::disk::Disk",
            "super::vm::Vm"
        ]
    );
}
